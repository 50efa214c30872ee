# Small resilient asyncio MQTT 3.1.1 client for MicroPython (runs unchanged on
# CPython for tests and the simulator).
#
#   c = MQTTClient("P1", "10.0.0.2", user="P1", password=pw, keepalive=15,
#                  will=(topic, payload, True, 1), tls=ctx)
#   c.on_connect = fn()                 # after every CONNACK
#   c.on_message = fn(topic, payload)   # topic str, payload bytes (None: too
#                                       # large, drained); c.rx_retained
#   c.subscribe(topic, qos)             # remembered, re-sent on reconnect
#   c.publish(topic, payload, retain=False, qos=0) -> bool   # never awaits
#   await c.run()                       # forever; cancel the task to stop
#   c.connected, c.stats
#
# Design (the complaints in docs/domain.md section 5 are the spec):
# - Never blocks the event loop: asyncio streams only; the connect (TCP + TLS
#   + CONNECT/CONNACK) runs under a timeout. Exception: on MicroPython,
#   open_connection() resolves a host NAME with a blocking getaddrinfo();
#   configure the broker as an IP address on boards where DNS may hang.
# - After ANY failure (refused, timeout, TLS error, broker gone, dead link,
#   malformed packet, bug in a callback) run() reconnects for ever with
#   jittered exponential backoff (backoff_min_ms doubling to backoff_max_ms,
#   +-25 %; by default 0.5 s to 3 s: back within 5 s of a broker's return,
#   while a fleet that lost it together spreads its attempts over the
#   jitter, tests/system/test_reconnect_storm.py); the backoff resets only
#   after a connection stayed up
#   _STABLE_MS, so a broker that accepts and drops at once does not cause a
#   reconnect storm. Clean session; subscriptions are re-sent on every
#   connect.
# - Dead link: PINGREQ when nothing was sent or received for keepalive/2;
#   no PINGRESP (and nothing else received) within keepalive -> drop and
#   reconnect. A write that does not complete within keepalive -> drop.
# - Outgoing queue: max_queue preallocated slots, FIFO. Size it to the
#   traffic: a QoS 1 message holds its slot until PUBACK, so the queue must
#   hold what the application publishes in one burst (the pile: 8, see
#   h2p.uplink) plus what is still unacknowledged.
#   QoS 0: only queued while connected; when offline or the queue is full the
#   message is dropped and counted (stats["dropped_qos0"]); queued QoS 0
#   messages are discarded on disconnect (stale telemetry is worse than none;
#   retained state is re-published from on_connect).
#   QoS 1: kept until PUBACK, re-sent with DUP after retry_ms and after every
#   reconnect. When the queue is full a new QoS 1 message evicts the oldest
#   queued QoS 0 message, else the OLDEST QoS 1 message (stats
#   ["dropped_qos1"]): newest state wins. This queue is not durable: records
#   that must survive (billing) are kept by the application until acked.
# - Incoming packets larger than max_payload are drained and counted
#   ("oversize"), and on_message is given None for the payload (so that the
#   application can still answer, e.g. "too large"); longer than
#   drain_limit -> disconnect ("oversize"+"drops").
# - Back-pressure: before a message is handed to on_message, the rx task
#   waits while the outgoing queue is full of messages not yet written (or
#   too many PUBACKs are owed), so a flood of incoming messages cannot make
#   the answers to them push each other out of the queue unsent, nor grow
#   the PUBACKs owed; the broker holds the rest (its in-flight window).
#   Malformed packets are counted ("bad_packets") and cause a reconnect.
#   Exceptions in callbacks are counted ("cb_errors") and swallowed.
# - RAM: the counters, settings, timers and the queue's per-slot flags are
#   one integer array (c.stats builds the dict when asked) and the queued
#   topics and payloads one list, so the client has few attributes; a str
#   payload is queued as a memoryview of its UTF-8 bytes on MicroPython (no
#   copy); a PUBLISH is written as a small header and the queued payload,
#   so there is no buffer the size of max_payload; the tx task runs only
#   while there is something to send (no asyncio.Event, see _kick).
# Error texts stay whole (they end up in operators' logs): ~32 B each.
# RAM: module globals and class attributes are kept few (imports used once
# are made where they are used), so their dicts stay at a small size step.
from h2p.compat import MICROPYTHON, asyncio, const, ticks_ms, ticks_diff, sleep_ms

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)

# queue slot flags
_F_QOS = const(0x03)
_F_RETAIN = const(0x04)
_F_SENT = const(0x08)  # sent on the current connection
_F_EVER = const(0x10)  # sent at least once -> next send carries DUP

# link state flags (c._n[_LINK])
_L_UP = const(1)  # this connection got its CONNACK (at c._n[_T_UP])
_L_PING_DUE = const(2)  # the tx task is to send a PINGREQ
_L_PING_OUT = const(4)  # a PINGREQ sent at c._n[_PING_T] is unanswered
_L_WRITING = const(8)  # a write began at c._n[_TX_T] and has not completed

_STABLE_MS = const(10000)
_TOPIC_MAX = const(200)
_CHUNK = const(256)
_HDR = const(5)  # room for a fixed header (type + up to 4 length bytes)

# The counters in c._n, in the order of the c.stats keys (see stats).
_S_CONNECTS = const(0)
_S_CONN_FAILS = const(1)
_S_DROPS = const(2)
_S_REFUSED = const(3)
_S_TX = const(4)
_S_RX = const(5)
_S_ACKED = const(6)
_S_RETRANSMITS = const(7)
_S_DROPPED_QOS0 = const(8)
_S_DROPPED_QOS1 = const(9)
_S_TOO_BIG = const(10)
_S_BAD_PACKETS = const(11)
_S_OVERSIZE = const(12)
_S_PING_TIMEOUTS = const(13)
_S_SUB_FAILS = const(14)
_S_CB_ERRORS = const(15)
# after the counters in c._n: settings,
_KA_MS = const(16)
_RETRY_MS = const(17)
_BO_MIN = const(18)
_BO_MAX = const(19)
_TIMEOUT_MS = const(20)
_MAX_PAYLOAD = const(21)
_DRAIN_LIMIT = const(22)
_PORT = const(23)
# the link's state (ticks_ms times),
_PID = const(24)  # last packet id used
_QN = const(25)  # messages queued
_SUB_SENT = const(26)  # subscriptions sent on this connection
_LAST_RX = const(27)
_LAST_TX = const(28)
_PING_T = const(29)
_TX_T = const(30)
_T_UP = const(31)
_LINK = const(32)  # _L_* flags
# then two per queue slot: flags | packet id << 8, when it was last sent.
_Q0 = const(33)


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=15, will=None, tls=None, server_hostname=None,
                 max_queue=32, max_payload=2048, connect_timeout=10,
                 backoff_min_ms=500, backoff_max_ms=3000, retry_ms=None,
                 drain_limit=1 << 21):
        if keepalive < 1:
            raise ValueError("keepalive must be >= 1 s")
        self.client_id = client_id
        self.host = host
        self.user = user
        self.password = password
        self.will = will  # (topic, payload, retain, qos) or None
        # tls: an ssl.SSLContext (see make_tls_context) or None
        self._tls = None if tls is None else (tls, server_hostname or host)
        self.on_connect = None
        self.on_message = None
        self.rx_retained = False  # the retain flag of the message on_message is given
        self.link_ok = None  # fn() -> bool: may the network be tried now (WiFi up)
        self.connected = False
        self.last_error = ""
        # RAM: every integer in one array (the _S_*, settings and link
        # indexes above). 64-bit on CPython: its ticks_ms is not wrapped.
        from array import array

        size = 4 if MICROPYTHON else 8
        n = self._n = array("i" if MICROPYTHON else "q", bytes(size * (_Q0 + 2 * max_queue)))
        n[_KA_MS] = keepalive * 1000
        n[_RETRY_MS] = retry_ms or keepalive * 1000
        n[_BO_MIN] = backoff_min_ms
        n[_BO_MAX] = backoff_max_ms
        n[_TIMEOUT_MS] = int(connect_timeout * 1000)
        n[_MAX_PAYLOAD] = max_payload
        n[_DRAIN_LIMIT] = drain_limit
        n[_PORT] = port
        self._q = [None] * (2 * max_queue)  # topic, payload of each slot; index 0 = oldest
        self._subs = []  # (topic as given, qos): the caller's object, no copy
        self._acks = []  # PUBACKs owed to the broker on this connection
        self._w = None  # the stream writer while connected
        self._tx = None  # the task writing now, see _kick
        self._fail = None  # what stopped the rx or tx task

    # ---- public API ------------------------------------------------------
    @property
    def stats(self):
        # The counters as a dict (a new one on every call), plus last_error.
        # The names are one string, split when c.stats is read (tests,
        # tools): the pile never reads them, and 16 names kept as separate
        # strings would stay in its RAM.
        d = {}
        i = 0
        for k in ("connects conn_fails drops refused tx rx acked retransmits dropped_qos0 dropped_qos1 "
                  "too_big bad_packets oversize ping_timeouts sub_fails cb_errors").split():
            d[k] = self._n[i]
            i += 1
        d["last_error"] = self.last_error
        return d

    def subscribe(self, topic, qos=1):
        if not 0 <= qos <= 1:
            raise ValueError("qos 0 or 1")
        self._subs.append((topic, qos))
        self._kick()

    def publish(self, topic, payload, retain=False, qos=0):
        # Enqueue; True if queued. Never awaits the network.
        if not 0 <= qos <= 1:
            raise ValueError("qos 0 or 1")
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(payload, str):
            # RAM: on MicroPython a str is its UTF-8 bytes: a view, no copy
            payload = memoryview(payload) if MICROPYTHON else payload.encode()
        n = self._n
        if len(payload) > n[_MAX_PAYLOAD] or len(topic) > _TOPIC_MAX:
            n[_S_TOO_BIG] += 1
            return False
        full = n[_QN] >= len(self._q) >> 1
        if qos == 0:
            if full or not self.connected:
                n[_S_DROPPED_QOS0] += 1
                return False
        elif full:
            i = 0
            while i < n[_QN] and n[_Q0 + 2 * i] & _F_QOS:
                i += 1
            if i < n[_QN]:
                n[_S_DROPPED_QOS0] += 1
            else:
                i = 0
                n[_S_DROPPED_QOS1] += 1
            self._remove(i)
        i = n[_QN]
        self._q[2 * i] = topic
        self._q[2 * i + 1] = payload
        n[_Q0 + 2 * i] = qos | (_F_RETAIN if retain else 0)
        n[_QN] = i + 1
        self._kick()
        return True

    def queued(self):
        return self._n[_QN]

    def shed(self):
        # Memory is short: drop the QoS 1 messages already written on this
        # connection (only their PUBACK is awaited; counted as dropped).
        n = self._n
        i = 0
        while i < n[_QN]:
            if n[_Q0 + 2 * i] & _F_SENT:
                n[_S_DROPPED_QOS1] += 1
                self._remove(i)
            else:
                i += 1
        import gc

        gc.collect()

    async def run(self):
        try:
            from random import getrandbits
        except ImportError:  # pragma: no cover
            def getrandbits(n):
                return 0
        n = self._n
        bo = n[_BO_MIN]
        while True:
            if self.link_ok is not None and not self.link_ok():
                # No network (WiFi down): nothing to try until it is back,
                # and then at once, not after a backoff grown meanwhile.
                while not self.link_ok():
                    await sleep_ms(250)
                bo = n[_BO_MIN]
            try:
                await self._session()
            except Exception as e:  # anything: log, back off, retry
                try:
                    self.last_error = repr(e)[:80]
                except Exception:
                    pass
            if n[_LINK] & _L_UP:  # it was connected
                n[_S_DROPS] += 1
                if ticks_diff(ticks_ms(), n[_T_UP]) >= _STABLE_MS:
                    bo = n[_BO_MIN]
            else:
                n[_S_CONN_FAILS] += 1
            # jitter: bo * (0.75 .. 1.25)
            await sleep_ms(bo - (bo >> 2) + (((bo >> 1) * getrandbits(10)) >> 10))
            bo = min(bo * 2, n[_BO_MAX])

    # ---- queue -------------------------------------------------------------
    def _remove(self, i):
        n = self._n
        q = self._q
        last = n[_QN] - 1
        while i < last:
            q[2 * i] = q[2 * i + 2]
            q[2 * i + 1] = q[2 * i + 3]
            n[_Q0 + 2 * i] = n[_Q0 + 2 * i + 2]
            n[_Q0 + 2 * i + 1] = n[_Q0 + 2 * i + 3]
            i += 1
        q[2 * last] = q[2 * last + 1] = None
        n[_QN] = last

    def _next_pid(self):
        n = self._n
        while True:
            pid = n[_PID] = n[_PID] % 65535 + 1
            for i in range(n[_QN]):
                if n[_Q0 + 2 * i] >> 8 == pid:
                    break
            else:
                return pid

    def _next_due(self, now):
        # the oldest slot to send now (new, or QoS 1 past retry_ms), or -1
        n = self._n
        for i in range(n[_QN]):
            f = n[_Q0 + 2 * i]
            if not f & _F_SENT:
                return i
            if f & _F_QOS and ticks_diff(now, n[_Q0 + 2 * i + 1]) >= n[_RETRY_MS]:
                return i
        return -1

    # ---- link --------------------------------------------------------------
    async def _session(self):
        # One connection, from connect to its end (raises why it ended).
        n = self._n
        self._w = self._tx = self._fail = None
        self._acks = []
        n[_SUB_SENT] = n[_LINK] = 0
        n[_LAST_RX] = n[_LAST_TX] = ticks_ms()
        rx = None
        try:
            r = await asyncio.wait_for(self._connect(), n[_TIMEOUT_MS] / 1000)
            n[_T_UP] = n[_LAST_RX] = n[_LAST_TX] = ticks_ms()
            n[_LINK] |= _L_UP
            self.connected = True
            n[_S_CONNECTS] += 1
            rx = asyncio.create_task(self._rx_loop(r))
            if self.on_connect:
                try:
                    self.on_connect()
                except Exception:
                    n[_S_CB_ERRORS] += 1
            self._kick()
            # supervise: a failed task, a stalled write, keepalive, retries
            ka = n[_KA_MS]
            while True:
                await sleep_ms(min(500, ka >> 2))
                if self._fail is not None:
                    raise self._fail
                if self.link_ok is not None and not self.link_ok():
                    # WiFi went down: this TCP connection is dead even if no
                    # write has failed yet (a half-open socket would hold the
                    # session until the keepalive ran out: 1.5 x keepalive_s).
                    # Ended now, run() reconnects the moment the link is back.
                    raise OSError("link down")
                now = ticks_ms()
                f = n[_LINK]
                if f & _L_WRITING and ticks_diff(now, n[_TX_T]) > ka:
                    raise OSError("write stalled")
                if f & _L_PING_OUT:
                    if ticks_diff(now, n[_PING_T]) > ka and ticks_diff(now, n[_LAST_RX]) > ka:
                        n[_S_PING_TIMEOUTS] += 1
                        raise OSError("no PINGRESP")
                elif ticks_diff(now, n[_LAST_RX]) >= ka >> 1 or ticks_diff(now, n[_LAST_TX]) >= ka >> 1:
                    n[_LINK] = f | _L_PING_DUE
                    self._kick()
                if n[_QN] and self._next_due(now) >= 0:
                    self._kick()
        finally:
            self.connected = False
            for t in (rx, self._tx):
                if t is not None:
                    t.cancel()
            self._tx = None
            w = self._w
            self._w = None
            if w is not None:
                try:
                    w.close()
                except Exception:
                    pass
                if MICROPYTHON:
                    try:
                        await w.wait_closed()
                    except Exception:
                        pass
            # Link down: QoS 0 messages are dropped; QoS 1 will be re-sent (with DUP).
            i = 0
            while i < n[_QN]:
                if n[_Q0 + 2 * i] & _F_QOS:
                    n[_Q0 + 2 * i] &= ~_F_SENT
                    i += 1
                else:
                    n[_S_DROPPED_QOS0] += 1
                    self._remove(i)

    async def _connect(self):
        # TCP (+ TLS), CONNECT, CONNACK; returns the stream reader.
        n = self._n
        if self._tls is not None:
            r, w = await asyncio.open_connection(
                self.host, n[_PORT], ssl=self._tls[0], server_hostname=self._tls[1])
        else:
            r, w = await asyncio.open_connection(self.host, n[_PORT])
        self._w = w
        # after the fixed header's room: protocol name, level 4, flags, keepalive
        p = bytearray(b"\x00\x00\x00\x00\x00\x00\x04MQTT\x04\x02\x00\x00")
        ka = n[_KA_MS] // 1000
        p[_HDR + 8] = ka >> 8
        p[_HDR + 9] = ka & 0xFF
        _str(p, self.client_id)
        fl = 0x02  # clean session
        if self.will:
            t, m, ret, q = self.will
            fl |= 0x04 | (q << 3) | (0x20 if ret else 0)
            _str(p, t)
            _str(p, m)
        if self.user is not None:
            fl |= 0x80
            _str(p, self.user)
            if self.password is not None:
                fl |= 0x40
                _str(p, self.password)
        p[_HDR + 7] = fl
        await self._send(w, _CONNECT, p)
        p = await r.readexactly(4)
        if p[0] != _CONNACK or p[1] != 2:
            n[_S_BAD_PACKETS] += 1
            raise OSError("bad CONNACK")
        if p[3] != 0:
            n[_S_REFUSED] += 1
            raise OSError("CONNACK refused rc=%d" % p[3])
        return r

    async def _send(self, w, typ, p, payload=None):
        # One packet: p is its variable part after _HDR spare bytes, where
        # the fixed header is put; the payload (if any) follows as it is.
        n = self._n
        rl = len(p) - _HDR + (len(payload) if payload else 0)
        k = 1  # bytes of the remaining length, 7 bits each, low ones first
        while rl >> (7 * k):
            k += 1
        i = _HDR - 1 - k
        p[i] = typ
        j = i + 1
        while True:
            b = rl & 0x7F
            rl >>= 7
            p[j] = (b | 0x80) if rl else b
            j += 1
            if not rl:
                break
        n[_TX_T] = ticks_ms()
        n[_LINK] |= _L_WRITING
        # CPython's (TLS) transport may keep a reference to the data: copy.
        h = memoryview(p)[i:]
        w.write(h if MICROPYTHON else bytes(h))
        if payload:
            w.write(payload if MICROPYTHON else bytes(payload))
        await w.drain()
        n[_LINK] &= ~_L_WRITING
        n[_LAST_TX] = ticks_ms()

    # ---- sending (only the one tx task writes once connected) ---------------
    def _kick(self):
        # There is something to send: start the tx task unless it runs or we
        # are not connected (_session kicks once CONNACK is in). It ends when
        # nothing is left, so no task or event waits while idle (RAM: an
        # asyncio.Event would pull in the asyncio.event module, ~1 KB). _tx is
        # set here and cleared only by the task itself when it ends with
        # nothing left to send, or when the link goes down: never two writers.
        if self._tx is None and self.connected and self._w is not None:
            self._tx = asyncio.create_task(self._tx_run(self._w))

    async def _tx_run(self, w):
        n = self._n
        q = self._q
        subs = self._subs
        acks = self._acks
        try:
            while True:
                if n[_SUB_SENT] < len(subs):
                    # one SUBSCRIBE for all those not sent on this connection
                    end = len(subs)
                    p = bytearray(_HDR + 2)
                    pid = self._next_pid()
                    p[_HDR] = pid >> 8
                    p[_HDR + 1] = pid & 0xFF
                    for i in range(n[_SUB_SENT], end):
                        t, qos = subs[i]
                        _str(p, t)
                        p.append(qos)
                    n[_SUB_SENT] = end
                    await self._send(w, _SUBSCRIBE, p)
                while acks:
                    pid = acks.pop(0)
                    p = bytearray(_HDR + 2)
                    p[_HDR] = pid >> 8
                    p[_HDR + 1] = pid & 0xFF
                    await self._send(w, _PUBACK, p)
                if n[_LINK] & _L_PING_DUE:
                    n[_PING_T] = ticks_ms()
                    n[_LINK] = (n[_LINK] & ~_L_PING_DUE) | _L_PING_OUT
                    await self._send(w, _PINGREQ, bytearray(_HDR))
                while True:
                    i = self._next_due(ticks_ms())
                    if i < 0:
                        break
                    f = n[_Q0 + 2 * i]
                    topic = q[2 * i]
                    payload = q[2 * i + 1]
                    qos = f & _F_QOS
                    typ = _PUBLISH | (qos << 1) | (1 if f & _F_RETAIN else 0)
                    if qos:
                        if f & _F_EVER:
                            typ |= 0x08  # DUP
                            n[_S_RETRANSMITS] += 1
                        pid = (f >> 8) or self._next_pid()
                        n[_Q0 + 2 * i] = (f & 0xFF) | _F_SENT | _F_EVER | (pid << 8)
                        n[_Q0 + 2 * i + 1] = ticks_ms()
                    else:
                        self._remove(i)
                    # topic and packet id here; the payload is written from
                    # the queue as it is (no copy into a buffer of max_payload)
                    lt = len(topic)
                    p = bytearray(_HDR + 2 + lt + (2 if qos else 0))
                    p[_HDR] = lt >> 8
                    p[_HDR + 1] = lt & 0xFF
                    p[_HDR + 2:_HDR + 2 + lt] = topic
                    if qos:
                        p[-2] = pid >> 8
                        p[-1] = pid & 0xFF
                    n[_S_TX] += 1
                    await self._send(w, typ, p, payload)
                # Kicked while writing (a subscribe, an ack owed, a ping)?
                # Another round; else end (no await in between: nothing can
                # be queued between this check and _tx = None).
                if not (n[_SUB_SENT] < len(subs) or acks or n[_LINK] & _L_PING_DUE):
                    self._tx = None
                    return
        except Exception as e:
            self._fail = e

    # ---- receiving -----------------------------------------------------------
    async def _room(self):
        # Back-pressure on what comes in: wait (yielding to the tx task)
        # while the queue is full and holds a message not yet written, or
        # while more PUBACKs are owed than a round of the queue. A full
        # queue of messages already written (QoS 1 waiting for PUBACK) does
        # not wait: their PUBACKs come in on this very task, and pushing
        # out one of them loses no data on the wire.
        n = self._n
        while self.connected:
            if len(self._acks) < len(self._q) >> 1:
                if n[_QN] < len(self._q) >> 1:
                    return
                for i in range(n[_QN]):
                    if not n[_Q0 + 2 * i] & _F_SENT:
                        break
                else:
                    return
            self._kick()
            await sleep_ms(1)

    async def _rx_loop(self, r):
        n = self._n
        try:
            while True:
                typ = (await r.readexactly(1))[0]
                rl = 0
                sh = 0
                while True:
                    c = (await r.readexactly(1))[0]
                    rl |= (c & 0x7F) << sh
                    sh += 7
                    if not c & 0x80:
                        break
                    if sh >= 28:
                        n[_S_BAD_PACKETS] += 1
                        raise ValueError("bad remaining length")
                n[_LAST_RX] = ticks_ms()
                t = typ & 0xF0
                if t == _PUBLISH:
                    qos = (typ >> 1) & 3
                    if qos > 1 or rl < 2:
                        n[_S_BAD_PACKETS] += 1
                        raise ValueError("bad PUBLISH")
                    if rl > n[_DRAIN_LIMIT]:
                        n[_S_OVERSIZE] += 1
                        raise ValueError("PUBLISH too long")
                    p = await r.readexactly(2)
                    lt = (p[0] << 8) | p[1]
                    hl = 2 + lt + (2 if qos else 0)
                    if hl > rl:
                        n[_S_BAD_PACKETS] += 1
                        raise ValueError("bad PUBLISH")
                    topic = None
                    if lt <= _TOPIC_MAX:
                        topic = await r.readexactly(lt)
                    else:
                        await _drain(r, lt, n)
                    pid = 0
                    if qos:
                        p = await r.readexactly(2)
                        pid = (p[0] << 8) | p[1]
                    plen = rl - hl
                    payload = None
                    if topic is None or plen > n[_MAX_PAYLOAD]:
                        n[_S_OVERSIZE] += 1
                        await _drain(r, plen, n)
                    else:
                        try:
                            payload = await r.readexactly(plen)
                            n[_S_RX] += 1
                        except MemoryError:
                            # No room for it now (the socket read allocates
                            # before it takes the bytes): drained and counted
                            # as oversize; the connection stays in step.
                            n[_S_OVERSIZE] += 1
                            await _drain(r, plen, n)
                            topic = None
                    if topic is not None:
                        try:
                            topic = topic.decode()
                        except Exception:
                            topic = None
                            n[_S_BAD_PACKETS] += 1
                    if topic is not None and self.on_message:
                        # What the callback publishes (an ack) must not
                        # push out a message never written: let the tx
                        # task empty the queue of those first.
                        await self._room()
                        self.rx_retained = bool(typ & 1)
                        try:
                            self.on_message(topic, payload)
                        except Exception:
                            n[_S_CB_ERRORS] += 1
                    if qos:
                        self._acks.append(pid)
                        self._kick()
                elif t == _PUBACK and rl == 2:
                    p = await r.readexactly(2)
                    pid = (p[0] << 8) | p[1]
                    for i in range(n[_QN]):
                        f = n[_Q0 + 2 * i]
                        if f >> 8 == pid and f & _F_SENT:
                            self._remove(i)
                            n[_S_ACKED] += 1
                            break
                elif t == _PINGRESP and rl == 0:
                    n[_LINK] &= ~_L_PING_OUT
                elif t == _SUBACK and 3 <= rl <= 64:
                    p = await r.readexactly(rl)
                    for i in range(2, rl):
                        if p[i] & 0x80:
                            n[_S_SUB_FAILS] += 1
                elif t == _UNSUBACK and rl == 2:
                    await r.readexactly(2)
                else:
                    n[_S_BAD_PACKETS] += 1
                    if rl > 64:
                        raise ValueError("unexpected packet")
                    await _drain(r, rl, n)
                n[_LAST_RX] = ticks_ms()
        except Exception as e:
            self._fail = e



async def _drain(r, size, n):
    # Read and discard size bytes without allocating them (rare: the chunk
    # buffer is made here, not kept); n: the client's c._n.
    buf = memoryview(bytearray(_CHUNK))
    while size > 0:
        k = size if size < _CHUNK else _CHUNK
        if MICROPYTHON:
            got = await r.readinto(buf[:k])
        else:
            got = len(await r.read(k))
        if not got:
            raise EOFError
        size -= got
        n[_LAST_RX] = ticks_ms()


def _str(buf, s):
    if isinstance(s, str):
        s = s.encode()
    buf.append(len(s) >> 8)
    buf.append(len(s) & 0xFF)
    buf.extend(s)


def make_tls_context(cadata=None, cafile=None):
    # A client context that REQUIRES a server certificate signed by the given
    # CA (DER bytes in cadata, or a file) and checks the host name given as
    # server_hostname. Same code on MicroPython and CPython. The board's clock
    # must be set (certificate validity is checked).
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cafile is not None:
        with open(cafile, "rb") as f:
            cadata = f.read()
    if cadata is None:
        raise ValueError("a CA certificate is required")
    ctx.load_verify_locations(cadata=cadata)
    return ctx
