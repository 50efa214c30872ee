# The pile as operators see it: MQTT under h2pile/v1/<pile>/ (the contract
# is topics.py). status/meta on every connect, state on change, tele past
# deadbands or at the heartbeat, evt for faults and sessions, signed
# commands in and acks out, bills out until the ledger acks them. Nothing
# here waits on the network: the client only queues.
#
# Every message is stamped with "seq" (per-boot sequence number, from 1; 0
# is the last will) and "boot" (boot counter) and published with its
# topic's QoS/retain from h2p.topics. seq counts messages handed over even
# if the client drops them, so a gap in seq at the receiver shows a loss.
# (h2p.publisher does the same for tools and tests.)
#
# RAM: h2p.topics is read once while setting up and then dropped; command
# verification (h2p.cmdhandler, h2p.sign, h2p.cmdspec) is imported when a
# command arrives and dropped after it. Only the command memory (a fixed
# replay table and a few integers, made once) is kept between commands. tele is formatted straight from the
# readings into its JSON text (no dict, no float kept per field); its
# deadbands, the values last sent and the limits are one array of doubles.
# The client's queue is sized to what one round publishes (_QUEUE), and
# events and bills wait in the pile while it is half full.
#
# RAM: imports used once are made where they are used, so that the module's
# globals stay few.
import json
from math import nan

from h2p.compat import asyncio, const, forget, ticks_ms, ticks_diff
from h2p.chores import UPLINK
from h2p.log import log
from h2p.mqtt import MQTTClient
from h2p import VERSION
from h2p import states as S

cmdgate = None  # h2p.cmdgate, imported in _setup: after the journal is open (heap layout at boot)


def _indices(*names):
    # Reading indices by name, resolved while loading: the index by name is
    # dropped after boot (h2p.readings.release).
    from h2p.readings import INDEX

    return bytes([INDEX[n] for n in names])


# The readings tele carries: _RD[_MET_W] is the index of met_w, and so on.
_RD = _indices("met_w", "met_v", "met_a", "chg_ev_soc", "bat_soc", "fc_stack_c", "ref_bed_c", "ref_tank_l",
               "sio_h2_lel", "bat_v", "bat_a", "fc_dcdc_v", "fc_dcdc_a")
del _indices
_MET_W = const(0)
_MET_V = const(1)
_MET_A = const(2)
_EV_SOC = const(3)
_BAT_SOC = const(4)
_FC_T = const(5)
_REF_T = const(6)
_TANK = const(7)
_H2_LEL = const(8)
_BAT_V = const(9)
_BAT_A = const(10)
_FC_V = const(11)
_FC_A = const(12)

_CMD_TABLE = const(320)  # h2p.cmdhandler._TABLE_BYTES (tests/firmware/test_cmdhandler.py checks)
_CMD_INTS = const(87)  # h2p.cmdhandler._N_INTS, then the uplink's:
_U_T0 = const(83)  # about when the pile booted (wall ticks)
_U_BOOT = const(84)  # the boot's Unix time once the clock is set (0: not yet)
_U_FLOOR = const(85)  # the journal's "cmd_floor"
_U_BUSY = const(86)  # commands refused over the rate since the last log line
_EVT_MAX = const(16)  # events queued while offline beyond this are counted, not kept
_QUEUE = const(8)  # MQTT queue slots: status, meta, state, tele, events and bills of one round

# The tele message: its fields in the order of TELE (their deadbands are
# topics.TELE_DEADBAND), then state, seq and boot. A missing reading is null.
_TELE_JSON = ('{"p_kw": %s, "v_out": %s, "i_out": %s, "e_kwh": %s, "ev_soc": %s, "bat_soc": %s, '
              '"fc_t": %s, "ref_t": %s, "premix_l": %s, "h2_lel": %s, "bat_kw": %s, "fc_kw": %s, '
              '"limit_a": %s, "deliver_kwh": %s, "state": "%s", "seq": %d, "boot": %d}')
_N_TELE = const(14)
# self.tele: [0, _N_TELE) deadbands, [_N_TELE, 2 * _N_TELE) the values last
# sent (NaN: was null).
_SENT = const(14)
_DELIVER = const(13)  # deliver_kwh's deadband (x10 for the retained state message: each is held until acked)
_STATE_WH = const(28)  # the estimate the last state message carried, Wh
_TELE_SIZE = const(29)

_EM_DELIVER = const(4)  # the energy manager's slot (h2p.energy's contract)


class Uplink:
    def __init__(self, pile):
        self.pile = pile
        cfg = pile.cfg
        m = cfg["mqtt"]
        self.pid = pid = cfg["pile_id"]
        tls = None
        if m["tls"]:
            from h2p.mqtt import make_tls_context

            with open(m["ca_file"], "rb") as f:
                tls = make_tls_context(cadata=f.read())
        self.c = MQTTClient(pid, m["host"], m["port"], m["user"] or pid, m["password"] or None,
                            m["keepalive_s"], tls=tls, server_hostname=m["server_hostname"] or None,
                            max_queue=_QUEUE, max_payload=1024)
        self.heartbeat_ms = m["heartbeat_s"] * 1000
        self.key = m["cmd_key"]
        from array import array

        self.cmdmem = None  # the command memory (h2p.cmdhandler), made in _setup
        self.seq = 0
        self.evts = []  # (kind, a, b) not yet published
        self.evt_lost = 0
        self.last_state = None

        self.tele = array("d", bytes(8 * _TELE_SIZE))
        self.tele_ms = 0
        # Everything that needs h2p.topics, here at boot (h2p.app._start),
        # then it is dropped. It used to be read in _setup, after the
        # journal: by then the heap is cut into pieces, and the module's
        # globals table needs one block of 1280 B: at 96K the uplink waited
        # for it for good (it never came up).
        from h2p import topics

        self.cmd_topic = topics.topic(pid, "cmd")
        self.prefix = topics.PREFIX + pid + "/"  # the pile id was checked by topic() above
        # The bill topics, until _setup makes the Billing (in its place: an
        # attribute more would grow this instance's table).
        self.bill = (topics.topic(pid, "bill"), topics.topic(pid, "bill/ack"))
        self.flags = {}  # topic name -> qos | 2 if retained
        for row in topics.TOPICS:
            if row[topics.T_DIR] == "pub":
                self.flags[row[0]] = row[1] | (2 if row[2] else 0)
        # the deadband of each tele field, by its key: the first _N_TELE
        # quoted names of _TELE_JSON (one key at a time: no list of pieces)
        k = 0
        for i in range(_N_TELE):
            j = _TELE_JSON.index('"', k) + 1
            k = _TELE_JSON.index('"', j)
            self.tele[i] = topics.TELE_DEADBAND[_TELE_JSON[j:k]]
            self.tele[_SENT + i] = nan
            k += 1
        self.heartbeat_ms = min(self.heartbeat_ms, topics.TELE_MAX_INTERVAL_S * 1000)
        topics = row = None
        forget("h2p.topics", "h2p.cmdspec")

    # ---- MQTT callbacks ------------------------------------------------------
    def _connected(self):
        # On every CONNACK, and the resend_meta command (ok, reason).
        self._pub("status", {"online": True})
        p = self.pile
        self._pub("meta", {
            "fw": VERSION, "board": p.board.name,
            "reset": p.board.reset_cause, "last_crash": p.last_crash,
            # WiFi: how often it dropped and was joined since boot (the state
            # itself is "up" whenever this can be read)
            "link": p.link_state(), "link_drops": p.link.drops if p.link else 0,
            "link_joins": p.link.joins if p.link else 0,
            "maintenance": p.maintenance is not None,
            "caps": ["charge", "signed_cmd", "bill"],
            "units": {"power": "kW", "energy": "kWh", "current": "A", "temp": "degC", "premix": "L"},
        })
        self.last_state = None  # re-send state now
        if not isinstance(self.bill, tuple):  # (a tuple: not set up yet, the bill topics)
            self.bill.wake()
        return True, ""

    resend_meta = _connected  # the command (h2p.cmdhandler)

    def _message(self, t, payload):
        if t != self.cmd_topic:
            if payload is not None:  # None: too large to read
                self.bill.on_message(t, payload)
            return
        # Every command gets its ack, whatever its size or shape: the
        # handler never raises; if even loading it fails, a bare one.
        p = self.pile
        op = cmdgate.peek(payload, b'"op"')
        n = self.cmdmem[1]
        if payload is not None and not cmdgate.admit(n, p.clock.ms(), op):
            # Over the command rate: answered from the raw bytes, nothing
            # parsed or loaded (h2p.cmdgate).
            try:
                n[_U_BUSY] += 1  # logged as a count by run(): a line each would be garbage in a flood
                self._pub("cmd/ack", {"id": cmdgate.peek(payload, b'"id"'), "op": op if op is None or len(op) <= 16
                                      else None, "ok": False, "reason": "busy"})
            except MemoryError:
                p.report_errors += 1
            return
        try:
            ack = self._handle(payload, op, n)
            if (ack is None or ack["reason"] == "no memory") and cmdgate.safety(op):
                # A stop must not fail for want of a block to load or run the
                # handler in: let go of the acks already written (only their
                # PUBACK is awaited) and of what a half-done load left; again.
                forget("h2p.cmdhandler", "h2p.sign", "h2p.cmdspec")
                self.c.shed()
                ack = self._handle(payload, op, n)
            if ack is None:
                p.report_errors += 1
                ack = {"id": cmdgate.peek(payload, b'"id"'), "op": op if op is None or len(op) <= 16 else None,
                       "ok": False, "reason": "no memory"}
            # The ack goes out first: what it allocates does not land in the
            # blocks the modules free, which the next command's load reuses.
            self._cmd_ack(ack)
        except MemoryError:  # said (counted); the modules are dropped all the same
            p.report_errors += 1
        finally:
            ack = None
            # RAM: loaded for one command, dropped after it (over the rate,
            # nothing is loaded: a flood costs no loading at all), also when
            # the ack itself found no memory (they stayed loaded: 3.4 KB)
            forget("h2p.cmdhandler", "h2p.sign", "h2p.cmdspec")

    def _handle(self, payload, op, n):
        # -> the handler's ack, or None if it could not be loaded or run
        p = self.pile
        try:
            from h2p import cmdhandler

            # the supervisor carries out the ops, resend_meta is ours
            targets = (p.sup, self) if p.maintenance is None else (p.maintenance, p.sup, self)
            now_s = p.board.unix_time()
            self._boot_time(now_s)
            return cmdhandler.handle(payload, now_s, self.pid, self.key, targets, self.cmdmem,
                                     op, self.c.rx_retained, p.rec.j, n[_U_BOOT])
        except Exception as e:  # noqa: BLE001 - MemoryError above all: said, not silent
            log("cmd", "not handled:", type(e).__name__, e)
            return None

    def _cmd_ack(self, ack):
        # with the pile clock, as events have it: when it was handled
        log("cmd", self.pile.clock.ms(), ack["op"], "ok" if ack["ok"] else "rejected", ack["reason"])
        self._pub("cmd/ack", ack)

    def _boot_time(self, now_s):
        # The boot's Unix time, worked out as soon as the clock is set (the
        # ticks since boot wrap after days): commands issued at or before
        # it are refused (h2p.cmdhandler). Seconds since boot rounded down
        # from a clock rounded down: never after the boot's second, so no
        # command from before the boot gets in. A command accepted before
        # the reboot but issued ahead of the clock may still be newer than
        # the boot: the journal's cmd_floor.
        n = self.cmdmem[1]
        if not n[_U_BOOT] and now_s is not None:
            n[_U_BOOT] = max(int(now_s) - ticks_diff(ticks_ms(), n[_U_T0]) // 1000, n[_U_FLOOR])

    def _event(self, kind, a, b):
        # The pile's events (faults, selftest, session_start, session_stop,
        # idle_shutdown) go out on evt; state changes go on state, closed
        # sessions on bill.
        if kind != "state" and kind != "bill":
            if len(self.evts) >= _EVT_MAX:
                self.evt_lost += 1
                self.evts.pop(0)
            self.evts.append((kind, a, b))

    # ---- what goes out ------------------------------------------------------
    def _pub(self, name, msg):
        # msg: a dict, stamped here (in place) and serialised; or the JSON
        # text of tele, stamped by _tele. -> bool queued
        if not isinstance(msg, str):
            self.seq += 1
            msg["seq"] = self.seq
            msg["boot"] = self.pile.boot_no
            msg = json.dumps(msg)
        f = self.flags[name]
        return self.c.publish((self.prefix + name).encode(), msg, f & 2, f & 1)

    def _state(self):
        # Retained: what a dispatcher reads first, the estimate included
        # (sent again when it moves by its deadband, as in tele). Its JSON
        # text is formatted here, as tele's: no dict built (RAM).
        s = self.pile.sup
        t = self.tele
        wh = s.em[_EM_DELIVER]
        names = s.il.names_in_force()
        st = (s.state, tuple(names), s.ev_arb.owner, s.st_arb.owner)
        if st != self.last_state or abs(wh - t[_STATE_WH]) > t[_DELIVER] * 10000:
            self.last_state = st
            t[_STATE_WH] = wh
            self.seq += 1
            # (fields as topics_doc.STATE_FIELDS; the format is a constant
            # of this method, not a module global: the uplink stays at 17)
            self._pub("state", ('{"state": "%s", "faults": [%s], "limit_by": "%s", "limit_a": %s, '
                                '"stack_limit_by": "%s", "deliver_kwh": %s, "seq": %d, "boot": %d}') % (
                S.NAMES[s.state], '"' + '", "'.join(names) + '"' if names else "", s.ev_arb.in_charge(),
                s.ev_limit / 10, s.st_arb.in_charge(),
                "null" if wh < 0 else round(wh / 1000, 1), self.seq, self.pile.boot_no))

    def _reading(self, k, now, div, nd):
        # Reading _RD[k] as tele carries it: scaled down by div, rounded to
        # nd decimals; the JSON text null when it is missing.
        x = self.pile.rd.value(_RD[k], now)
        return "null" if x is None else round(x / div, nd)

    def _tele(self):
        p = self.pile
        now = p.clock.ms()
        r = self._reading
        v = p.rd.value
        t = self.tele
        premix = r(_TANK, now, 1, 1)
        bat_soc = r(_BAT_SOC, now, 1, 1)
        bv, ba = v(_RD[_BAT_V], now), v(_RD[_BAT_A], now)
        fv, fa = v(_RD[_FC_V], now), v(_RD[_FC_A], now)
        # kWh the pile can still give an EV: the energy manager's estimate
        # (h2p.energy: measured premix per kWh, warm-up, battery).
        wh = p.sup.em[_EM_DELIVER]
        # The message's values, in the order of _TELE_JSON (seq as it will
        # be if this is sent).
        vals = (r(_MET_W, now, 1000, 2), r(_MET_V, now, 1, 1), r(_MET_A, now, 1, 1),
                round(p.session_wh() / 1000, 3), r(_EV_SOC, now, 1, 1), bat_soc,
                r(_FC_T, now, 1, 1), r(_REF_T, now, 1, 1), premix, r(_H2_LEL, now, 1, 1),
                "null" if bv is None or ba is None else round(bv * ba / 1000, 2),
                "null" if fv is None or fa is None else round(fv * fa / 1000, 2),
                p.sup.ev_limit / 10, "null" if wh < 0 else round(wh / 1000, 1),
                S.NAMES[p.sup.state], self.seq + 1, p.boot_no)
        wall = ticks_ms()
        # Sent at the heartbeat, or when a field moved by more than its
        # deadband from the value last sent, or appeared/disappeared.
        send = ticks_diff(wall, self.tele_ms) > self.heartbeat_ms
        i = 0
        while not send and i < _N_TELE:
            a = t[_SENT + i]
            b = vals[i]
            if a != a or b == "null":  # a != a: NaN, was null
                send = (a != a) != (b == "null")
            else:
                send = abs(b - a) > t[i]
            i += 1
        if send:
            for i in range(_N_TELE):
                b = vals[i]
                t[_SENT + i] = nan if b == "null" else b
            self.tele_ms = wall
            self.seq += 1
            self._pub("tele", _TELE_JSON % vals)

    def _setup(self):
        # What needs the journal (ids, the boot counter, bills); the topics
        # were read at boot (__init__).
        p = self.pile
        c = self.c
        f = self.flags["status"]
        c.will = ((self.prefix + "status").encode(), json.dumps({"online": False, "seq": 0, "boot": p.boot_no}),
                  bool(f & 2), f & 1)
        from h2p.billing import Billing

        b = self.bill
        if isinstance(b, tuple):  # (not on a try again: made by the last one)
            self.bill = Billing(p.rec.j, self.pid, c.publish, online=lambda: c.connected, topics=b)
        global cmdgate
        from h2p import cmdgate

        # The command memory, made once, fixed in size.
        # (RAM: the uplink's own command integers are in it too, _U_*: an
        # attribute more each would grow the instance's table.)
        from array import array

        self.cmdmem = (bytearray(_CMD_TABLE), array("i", bytes(4 * _CMD_INTS)))
        n = self.cmdmem[1]
        n[_U_T0] = ticks_ms()  # a little after the boot: the floor errs late, i.e. safe
        n[_U_FLOOR] = p.rec.j.get_meta("cmd_floor", 0)
        # Last, so that a try again (out of memory above) does not subscribe twice.
        c.subscribe(self.cmd_topic, 1)
        for t, q in self.bill.subscriptions():
            c.subscribe(t, q)

    async def run(self):
        p = self.pile
        # Ids and the boot counter come from the journal: wait for it.
        while p.rec is None:
            await asyncio.sleep_ms(50)
        c = self.c
        while True:
            # The set-up loads h2p.billing and h2p.cmdgate: in a heap the
            # boot has just cut up they may not fit yet. Not a crash: said,
            # and tried again once the boot's leftovers are gone; the pile
            # charges meanwhile, offline.
            try:
                self._setup()
                break
            except MemoryError as e:
                # What a half-done load left (what was made is kept for the next try).
                forget(*((("h2p.billing",) if isinstance(self.bill, tuple) else ()) +
                         (("h2p.cmdgate",) if cmdgate is None else ())))
                log("uplink", "setup waits for memory:", e)
                await asyncio.sleep_ms(2000)
        p.listeners.append(self._event)
        c.on_connect = self._connected
        c.on_message = self._message
        if c._tls is None:
            c.link_ok = p.link_ready
        else:
            # TLS checks the broker certificate's dates: not before SNTP
            # has set the clock (a board starts at 2000 or 2021).
            c.link_ok = lambda: p.link_ready() and p.board.unix_time() is not None
        asyncio.create_task(c.run())
        while True:
            await asyncio.sleep_ms(500)
            self._boot_time(p.board.unix_time())
            n = self.cmdmem[1]
            if n[_U_BUSY]:
                log("cmd", p.clock.ms(), "busy", n[_U_BUSY], "refused over the rate")
                n[_U_BUSY] = 0
            if not c.connected:
                continue
            # Formatting and queueing in a turn of the bus task (h2p.chores):
            # never while a charger read is due.
            await p.chores.turn(UPLINK)
            try:
                self._state()
                self._tele()
                # Events and bills wait here while the client's queue is
                # half full (QoS 1 messages hold their slot until acked):
                # a full queue would evict the oldest message, e.g. status.
                while self.evts and c.queued() < _QUEUE // 2:
                    kind, a, b = self.evts.pop(0)
                    self._pub("evt", {"kind": kind, "a": a, "b": b})
                if c.queued() < _QUEUE // 2:
                    self.bill.poll(p.uptime_s())
            except Exception as e:  # noqa: BLE001 - reporting must not stop the pile
                p.report_errors += 1
                log("uplink", "error", type(e).__name__, e)
