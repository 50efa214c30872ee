# The pile as operators see it: MQTT under h2pile/v1/<pile>/ (the contract
# is topics.py). status/meta on every connect, state on change, tele past
# deadbands or at the heartbeat, evt for faults and sessions, signed
# commands in and acks out, bills out until the ledger acks them. Nothing
# here waits on the network: the client only queues.
#
# RAM: h2p.topics is read once while setting up and then dropped; command
# verification (h2p.cmdhandler, h2p.sign, h2p.cmdspec) is imported
# when a command arrives and dropped after it. Only the replay cache's
# entries (a plain list) are kept between commands.
from array import array

from h2p.compat import asyncio, forget, ticks_ms, ticks_diff
from h2p.log import log
from h2p.mqtt import MQTTClient, make_tls_context
from h2p.publisher import Publisher
from h2p.readings import INDEX as I
from h2p import VERSION
from h2p import states as S

_EVT_MAX = 16  # events queued while offline beyond this are counted, not kept
_NONE = float("nan")  # a telemetry field that was None when last sent


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
        self.replay = []  # the command replay cache's entries (h2p.sign.verify_command)
        self.cmd_topic = None
        self.pub = None
        self.bill = None
        self.evts = []
        self.evt_lost = 0
        self.last_state = None
        # Telemetry as last sent, one slot per deadband field (h2p.topics
        # TELE_DEADBAND, in the order of tele_keys); NaN = was None.
        self.tele_keys = ()
        self.tele_db = None
        self.tele_sent = None
        self.tele_ms = 0
        lim = cfg["limits"]
        self._l_per_kwh = lim["premix_l_per_kwh"]
        self._bat_kwh = lim["bat_kwh"]
        self._soc_min = lim["bat_soc_min"]
        self._eff = lim["charger_eff"]

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
            self.pub.pub("cmd/ack", self._command(payload))
        elif self.bill:
            self.bill.on_message(t, payload)

    def _command(self, raw):
        if not self.key:
            ack = {"id": None, "op": None, "ok": False, "reason": "no command key provisioned"}
        else:
            from h2p import cmdhandler

            try:
                # the supervisor carries out the ops, resend_meta is ours
                ack = cmdhandler.handle(raw, self.pile.board.unix_time(), self.pid, self.key,
                                        (self.pile.sup, self), self.replay)
            finally:
                cmdhandler = None
                forget("h2p.cmdhandler", "h2p.sign", "h2p.cmdspec")
        log("cmd", ack.get("op"), "ok" if ack.get("ok") else "rejected", ack.get("reason"))
        return ack

    def resend_meta(self):  # the command (h2p.cmdhandler)
        self._connected()
        return True, ""

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

    def _r(self, name, now, scale=1.0, nd=1):
        x = self.pile.rd.value(I[name], now)
        return None if x is None else round(x * scale, nd)

    def _tele(self):
        p = self.pile
        now = p.clock.ms()
        r = self._r
        v = p.rd.value
        bv, ba = v(I["bat_v"], now), v(I["bat_a"], now)
        fv, fa = v(I["fc_dcdc_v"], now), v(I["fc_dcdc_a"], now)
        cur = {}
        cur["p_kw"] = r("met_w", now, 0.001, 2)
        cur["v_out"] = r("met_v", now)
        cur["i_out"] = r("met_a", now)
        cur["e_kwh"] = round(p.session_wh() / 1000, 3)
        cur["ev_soc"] = r("chg_ev_soc", now)
        cur["bat_soc"] = r("bat_soc", now)
        cur["fc_t"] = r("fc_stack_c", now)
        cur["ref_t"] = r("ref_bed_c", now)
        cur["premix_l"] = r("ref_tank_l", now)
        cur["h2_lel"] = r("sio_h2_lel", now)
        cur["bat_kw"] = None if bv is None or ba is None else round(bv * ba / 1000, 2)
        cur["fc_kw"] = None if fv is None or fa is None else round(fv * fa / 1000, 2)
        cur["limit_a"] = p.sup.ev_limit / 10
        cur["deliver_kwh"] = self._deliverable(cur)
        wall = ticks_ms()
        if self._tele_moved(cur) or ticks_diff(wall, self.tele_ms) > self.heartbeat_ms:
            keys, sent = self.tele_keys, self.tele_sent
            for i in range(len(keys)):
                x = cur.get(keys[i])
                sent[i] = _NONE if x is None else x
            self.tele_ms = wall
            cur["state"] = S.NAMES[p.sup.state]
            self.pub.pub("tele", cur)

    def _tele_moved(self, cur):
        # True if any field moved by more than its deadband from the value
        # last sent, or appeared/disappeared (None <-> a value).
        keys, sent, db = self.tele_keys, self.tele_sent, self.tele_db
        for i in range(len(keys)):
            a = sent[i]
            b = cur.get(keys[i])
            if a != a or b is None:  # a != a: NaN, was None
                if (a != a) != (b is None):
                    return True
            elif abs(b - a) > db[i]:
                return True
        return False

    def _deliverable(self, t):
        # kWh the pile can still give an EV: premix through the stack plus
        # the battery above its floor, both through the charger.
        kwh = 0.0
        if t["premix_l"] is not None:
            kwh += t["premix_l"] / self._l_per_kwh
        if t["bat_soc"] is not None and t["bat_soc"] > self._soc_min:
            kwh += (t["bat_soc"] - self._soc_min) / 100 * self._bat_kwh
        return round(kwh * self._eff, 1)

    def _setup(self):
        # Everything that needs h2p.topics, in one call so that no local
        # keeps it; then it is dropped.
        p = self.pile
        c = self.c
        from h2p import topics

        self.cmd_topic = topics.topic(self.pid, "cmd")
        db = topics.TELE_DEADBAND
        self.tele_keys = tuple(db)
        self.tele_db = array("d", [db[k] for k in self.tele_keys])
        self.tele_sent = array("d", [_NONE] * len(self.tele_keys))
        self.heartbeat_ms = min(self.heartbeat_ms, topics.TELE_MAX_INTERVAL_S * 1000)
        self.pub = Publisher(c, self.pid, p.boot_no)
        c.will = self.pub.will()
        from h2p.billing import Billing

        self.bill = Billing(p.rec.j, self.pid, c.publish, online=lambda: c.connected)
        c.subscribe(self.cmd_topic, 1)
        for t, q in self.bill.subscriptions():
            c.subscribe(t, q)
        topics = db = None
        forget("h2p.topics", "h2p.cmdspec")

    async def run(self):
        p = self.pile
        # Ids and the boot counter come from the journal: wait for it.
        while p.rec is None:
            await asyncio.sleep_ms(50)
        c = self.c
        self._setup()
        p.listeners.append(self._event)
        c.on_connect = self._connected
        c.on_message = self._message
        asyncio.create_task(c.run())
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
