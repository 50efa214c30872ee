# The pile as operators see it: MQTT under h2pile/v1/<pile>/ (the contract
# is topics.py). status/meta on every connect, state on change, tele past
# deadbands or at the heartbeat, evt for faults and sessions, signed
# commands in and acks out, bills out until the ledger acks them. Nothing
# here waits on the network: the client only queues.
from h2p.compat import asyncio, ticks_ms, ticks_diff
from h2p.log import log
from h2p.mqtt import MQTTClient, make_tls_context
from h2p.publisher import Publisher, tele_due
from h2p.readings import INDEX as I
from h2p.topics import TELE_MAX_INTERVAL_S, topic
from h2p import VERSION

_EVT_MAX = 16  # events queued while offline beyond this are counted, not kept


class Uplink:
    def __init__(self, pile):
        self.pile = pile
        cfg = pile.cfg
        m = cfg["mqtt"]
        self.pid = pid = cfg["pile_id"]
        tls = None
        if m["tls"]:
            with open(m["ca_file"], "rb") as f:
                tls = make_tls_context(cadata=f.read())
        self.c = MQTTClient(pid, m["host"], m["port"], m["user"] or pid, m["password"] or None,
                            m["keepalive_s"], tls=tls, server_hostname=m["server_hostname"] or None,
                            max_queue=16, max_payload=1024)
        self.heartbeat_ms = m["heartbeat_s"] * 1000
        self.key = m["cmd_key"]
        self.cmd_topic = topic(pid, "cmd")
        self.pub = None
        self.cmds = None
        self.bill = None
        self.evts = []
        self.evt_lost = 0
        self.last_state = None
        self.last_tele = {}
        self.tele_ms = 0
        lim = cfg["limits"]
        self._l_per_kwh = lim["premix_l_per_kwh"]
        self._bat_kwh = lim["bat_kwh"]
        self._soc_min = lim["bat_soc_min"]
        self._eff = lim["charger_eff"]

    # ---- command target (h2p.cmdhandler) ------------------------------------
    def start(self, auth, limit_a):
        return self.pile.sup.start(auth or "", limit_a)

    def stop(self):
        return self.pile.sup.stop()

    def set_limit(self, amps):
        return self.pile.sup.set_limit(amps)

    def reset(self):
        return self.pile.sup.reset()

    def shutdown(self):
        return self.pile.sup.shutdown()

    def wake(self):
        return self.pile.sup.wake()

    def resend_meta(self):
        self._connected()
        return True, ""

    # ---- MQTT callbacks ------------------------------------------------------
    def _connected(self):
        self.pub.pub("status", {"online": True})
        self.pub.pub("meta", {
            "fw": VERSION, "board": self.pile.board.name,
            "caps": ["charge", "signed_cmd", "bill"],
            "units": {"power": "kW", "energy": "kWh", "current": "A", "temp": "degC", "premix": "L"},
        })
        self.last_state = None  # re-send state now
        if self.bill:
            self.bill.wake()

    def _message(self, t, payload):
        if t == self.cmd_topic:
            if self.cmds is None:
                ack = {"id": None, "op": None, "ok": False, "reason": "no command key provisioned"}
            else:
                ack = self.cmds.handle(payload, self.pile.board.unix_time())
            log("cmd", ack.get("op"), "ok" if ack.get("ok") else "rejected", ack.get("reason"))
            self.pub.pub("cmd/ack", ack)
        elif self.bill:
            self.bill.on_message(t, payload)

    def _event(self, kind, a, b):
        if kind in ("faults", "session_start", "session_stop", "selftest", "idle_shutdown"):
            if len(self.evts) >= _EVT_MAX:
                self.evt_lost += 1
                self.evts.pop(0)
            self.evts.append({"kind": kind, "a": a, "b": b})

    # ---- what goes out ------------------------------------------------------
    def _state(self):
        s = self.pile.sup
        st = (s.state, tuple(s.il.names_in_force()), s.ev_arb.owner)
        if st != self.last_state:
            self.last_state = st
            d = s.status(self.pile.clock.ms())
            self.pub.pub("state", {"state": d["state"], "faults": d["faults"], "limit_by": d["ev_limit_by"],
                                   "limit_a": d["ev_limit_a"], "stack_limit_by": d["stack_limit_by"]})

    def _tele(self):
        p = self.pile
        now = p.clock.ms()
        v = p.rd.value

        def r(name, scale=1.0, nd=2):
            x = v(I[name], now)
            return None if x is None else round(x * scale, nd)

        bv, ba = v(I["bat_v"], now), v(I["bat_a"], now)
        fv, fa = v(I["fc_dcdc_v"], now), v(I["fc_dcdc_a"], now)
        cur = {
            "p_kw": r("met_w", 0.001), "v_out": r("met_v", 1, 1), "i_out": r("met_a", 1, 1),
            "e_kwh": round(p.session_wh() / 1000, 3), "ev_soc": r("chg_ev_soc", 1, 1),
            "bat_soc": r("bat_soc", 1, 1), "fc_t": r("fc_stack_c", 1, 1), "ref_t": r("ref_bed_c", 1, 1),
            "premix_l": r("ref_tank_l", 1, 1), "h2_lel": r("sio_h2_lel", 1, 1),
            "bat_kw": None if bv is None or ba is None else round(bv * ba / 1000, 2),
            "fc_kw": None if fv is None or fa is None else round(fv * fa / 1000, 2),
            "limit_a": p.sup.ev_limit / 10,
        }
        cur["deliver_kwh"] = self._deliverable(cur)
        wall = ticks_ms()
        if tele_due(self.last_tele, cur) or ticks_diff(wall, self.tele_ms) > self.heartbeat_ms:
            self.last_tele = dict(cur)
            self.tele_ms = wall
            cur["state"] = p.sup.status(now)["state"]
            self.pub.pub("tele", cur)

    def _deliverable(self, t):
        # kWh the pile can still give an EV: premix through the stack plus
        # the battery above its floor, both through the charger.
        kwh = 0.0
        if t["premix_l"] is not None:
            kwh += t["premix_l"] / self._l_per_kwh
        if t["bat_soc"] is not None and t["bat_soc"] > self._soc_min:
            kwh += (t["bat_soc"] - self._soc_min) / 100 * self._bat_kwh
        return round(kwh * self._eff, 1)

    async def run(self):
        p = self.pile
        # Ids and the boot counter come from the journal: wait for it.
        while p.rec is None:
            await asyncio.sleep_ms(50)
        c = self.c
        self.pub = Publisher(c, self.pid, p.boot_no)
        c.will = self.pub.will()
        if self.key:
            from h2p.cmdhandler import CommandHandler

            self.cmds = CommandHandler(self.pid, self.key, self)
        from h2p.billing import Billing

        self.bill = Billing(p.rec.j, self.pid, lambda t, m, qos=1: c.publish(t, m, False, qos),
                            online=lambda: c.connected)
        p.listeners.append(self._event)
        c.on_connect = self._connected
        c.on_message = self._message
        c.subscribe(self.cmd_topic, 1)
        for t, q in self.bill.subscriptions():
            c.subscribe(t, q)
        asyncio.create_task(c.run())
        self.heartbeat_ms = min(self.heartbeat_ms, TELE_MAX_INTERVAL_S * 1000)
        while True:
            await asyncio.sleep_ms(500)
            if not c.connected:
                continue
            try:
                self._state()
                self._tele()
                while self.evts:
                    self.pub.pub("evt", self.evts.pop(0))
                self.bill.poll(p.uptime_s())
            except Exception as e:  # noqa: BLE001 - reporting must not stop the pile
                p.report_errors += 1
                log("uplink", "error", type(e).__name__, e)
