# Small resilient asyncio MQTT 3.1.1 client for MicroPython (runs unchanged on
# CPython for tests and the simulator).
#
#   c = MQTTClient("P1", "10.0.0.2", user="P1", password=pw, keepalive=15,
#                  will=(topic, payload, True, 1), tls=ctx)
#   c.on_connect = fn()                 # after every CONNACK
#   c.on_message = fn(topic, payload)   # topic str, payload bytes
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
#   +-25 %); the backoff resets only after a connection stayed up
#   _STABLE_MS, so a broker that accepts and drops at once does not cause a
#   reconnect storm. Clean session; subscriptions are re-sent on every
#   connect.
# - Dead link: PINGREQ when nothing was sent or received for keepalive/2;
#   no PINGRESP (and nothing else received) within keepalive -> drop and
#   reconnect. A write that does not complete within keepalive -> drop.
# - Outgoing queue: max_queue preallocated slots, FIFO.
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
#   ("oversize"); longer than drain_limit -> disconnect ("oversize"+"drops").
#   Malformed packets are counted ("bad_packets") and cause a reconnect.
#   Exceptions in callbacks are counted ("cb_errors") and swallowed.
# - RAM: the counters are an array (c.stats builds the dict when asked);
#   a PUBLISH is written as a small header and the queued payload, so there
#   is no buffer the size of max_payload; the tx task runs only while there
#   is something to send (no asyncio.Event, see _kick).
from array import array

from h2p.compat import MICROPYTHON, asyncio, const, ticks_ms, ticks_diff, sleep_ms

try:
    from random import getrandbits
except ImportError:  # pragma: no cover
    def getrandbits(n):
        return 0

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

_STABLE_MS = const(10000)
_TOPIC_MAX = const(200)
_CHUNK = const(256)

_PING = b"\xc0\x00"

# c.stats keys, in the order of the counters in c._n (the _S_* indexes).
# One string, split when c.stats is read (tests, tools): the pile never
# reads them, and 16 names kept as separate strings would stay in its RAM.
STATS = ("connects conn_fails drops refused tx rx acked retransmits dropped_qos0 dropped_qos1 "
         "too_big bad_packets oversize ping_timeouts sub_fails cb_errors")
_N_STATS = const(16)
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


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=15, will=None, tls=None, server_hostname=None,
                 max_queue=32, max_payload=2048, connect_timeout=10,
                 backoff_min_ms=500, backoff_max_ms=30000, retry_ms=None,
                 drain_limit=1 << 21):
        if keepalive < 1:
            raise ValueError("keepalive must be >= 1 s")
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.will = will  # (topic, payload, retain, qos) or None
        self.tls = tls  # ssl.SSLContext (see make_tls_context) or None
        self.server_hostname = server_hostname or host
        self.max_payload = max_payload
        self.drain_limit = drain_limit
        self.connect_timeout = connect_timeout
        self.on_connect = None
        self.on_message = None
        self.connected = False
        self._n = array("I", bytes(4 * _N_STATS))  # counters, see STATS
        self.last_error = ""
        self._ka_ms = keepalive * 1000
        self._retry_ms = retry_ms or self._ka_ms
        self._bo_min = backoff_min_ms
        self._bo_max = backoff_max_ms
        self._subs = []  # (topic as given, qos): the caller's object, no copy
        self._sub_sent = 0
        self._acks = []  # PUBACKs owed to the broker
        self._pid = 0
        # preallocated outgoing queue, index 0 = oldest
        n = max_queue
        self._qn = 0
        self._qt = [None] * n
        self._qp = [None] * n
        self._qf = bytearray(n)
        self._qid = array("H", [0] * n)
        self._qts = [0] * n
        self._reset_link()

    # ---- public API ------------------------------------------------------
    @property
    def stats(self):
        # The counters as a dict (a new one on every call), plus last_error.
        d = {}
        i = 0
        for k in STATS.split():
            d[k] = self._n[i]
            i += 1
        d["last_error"] = self.last_error
        return d

    def subscribe(self, topic, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        self._subs.append((topic, qos))
        self._kick()

    def publish(self, topic, payload, retain=False, qos=0):
        # Enqueue; True if queued. Never awaits the network.
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(payload, str):
            payload = payload.encode()
        st = self._n
        if len(payload) > self.max_payload or len(topic) > _TOPIC_MAX:
            st[_S_TOO_BIG] += 1
            return False
        if qos == 0:
            if not self.connected or self._qn >= len(self._qf):
                st[_S_DROPPED_QOS0] += 1
                return False
        elif self._qn >= len(self._qf):
            qf = self._qf
            i = 0
            while i < self._qn and qf[i] & _F_QOS:
                i += 1
            if i < self._qn:
                st[_S_DROPPED_QOS0] += 1
            else:
                i = 0
                st[_S_DROPPED_QOS1] += 1
            self._remove(i)
        i = self._qn
        self._qt[i] = topic
        self._qp[i] = payload
        self._qf[i] = qos | (_F_RETAIN if retain else 0)
        self._qid[i] = 0
        self._qn = i + 1
        self._kick()
        return True

    def queued(self):
        return self._qn

    async def run(self):
        bo = self._bo_min
        while True:
            self._t_up = None
            try:
                await self._session()
            except Exception as e:  # anything: log, back off, retry
                try:
                    self.last_error = repr(e)[:80]
                except Exception:
                    pass
            if self._t_up is not None:  # it was connected
                self._n[_S_DROPS] += 1
                if ticks_diff(ticks_ms(), self._t_up) >= _STABLE_MS:
                    bo = self._bo_min
            else:
                self._n[_S_CONN_FAILS] += 1
            # jitter: bo * (0.75 .. 1.25)
            await sleep_ms(bo - (bo >> 2) + (((bo >> 1) * getrandbits(10)) >> 10))
            bo = min(bo * 2, self._bo_max)

    # ---- queue -------------------------------------------------------------
    def _remove(self, i):
        n = self._qn - 1
        qt, qp, qf, qid, qts = self._qt, self._qp, self._qf, self._qid, self._qts
        while i < n:
            qt[i] = qt[i + 1]
            qp[i] = qp[i + 1]
            qf[i] = qf[i + 1]
            qid[i] = qid[i + 1]
            qts[i] = qts[i + 1]
            i += 1
        qt[n] = None
        qp[n] = None
        self._qn = n

    def _after_link_down(self):
        # QoS 0 messages are dropped; QoS 1 will be re-sent (with DUP).
        i = 0
        qf = self._qf
        while i < self._qn:
            if qf[i] & _F_QOS:
                qf[i] &= ~_F_SENT
                i += 1
            else:
                self._n[_S_DROPPED_QOS0] += 1
                self._remove(i)

    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            for i in range(self._qn):
                if self._qid[i] == self._pid:
                    break
            else:
                return self._pid

    def _next_due(self, now):
        qf = self._qf
        for i in range(self._qn):
            f = qf[i]
            if not f & _F_SENT:
                return i
            if f & _F_QOS and ticks_diff(now, self._qts[i]) >= self._retry_ms:
                return i
        return -1

    # ---- link --------------------------------------------------------------
    def _reset_link(self):
        self._r = self._w = None
        self._tx = None  # the task writing now, see _kick
        self._fail = None
        self._ping_due = False
        self._ping_t = None  # when the PINGREQ now unanswered was sent
        self._tx_t = None  # when the write now in progress began
        self._t_up = None  # when this connection came up
        self._last_rx = self._last_tx = ticks_ms()
        self._sub_sent = 0
        self._acks = []

    async def _session(self):
        self._reset_link()
        rx = None
        try:
            await asyncio.wait_for(self._connect(), self.connect_timeout)
            self._t_up = self._last_rx = self._last_tx = ticks_ms()
            self.connected = True
            self._n[_S_CONNECTS] += 1
            rx = asyncio.create_task(self._rx_loop(self._r))
            if self.on_connect:
                try:
                    self.on_connect()
                except Exception:
                    self._n[_S_CB_ERRORS] += 1
            self._kick()
            await self._supervise()
        finally:
            self.connected = False
            for t in (rx, self._tx):
                if t is not None:
                    t.cancel()
            self._tx = None
            w = self._w
            self._r = self._w = None
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
            self._after_link_down()

    async def _connect(self):
        if self.tls is not None:
            r, w = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=self.server_hostname)
        else:
            r, w = await asyncio.open_connection(self.host, self.port)
        self._r, self._w = r, w
        await self._write(w, self._connect_packet())
        p = await r.readexactly(4)
        if p[0] != _CONNACK or p[1] != 2:
            self._n[_S_BAD_PACKETS] += 1
            raise OSError("bad CONNACK")
        if p[3] != 0:
            self._n[_S_REFUSED] += 1
            raise OSError("CONNACK refused rc=%d" % p[3])

    def _connect_packet(self):
        vh = bytearray(b"\x00\x04MQTT\x04\x02\x00\x00")
        ka = self._ka_ms // 1000
        vh[8] = ka >> 8
        vh[9] = ka & 0xFF
        body = bytearray()
        _str(body, self.client_id)
        fl = 0x02  # clean session
        if self.will:
            t, m, ret, q = self.will
            fl |= 0x04 | (q << 3) | (0x20 if ret else 0)
            _str(body, t)
            _str(body, m)
        if self.user is not None:
            fl |= 0x80
            _str(body, self.user)
            if self.password is not None:
                fl |= 0x40
                _str(body, self.password)
        vh[7] = fl
        pkt = bytearray(5)
        n = _hdr(pkt, _CONNECT, len(vh) + len(body))
        return bytes(pkt[:n]) + vh + body

    async def _write(self, w, data, more=None):
        # data, then more (if any), as one piece of the byte stream
        self._tx_t = ticks_ms()
        # CPython's (TLS) transport may keep a reference to the data: copy.
        w.write(data if MICROPYTHON else bytes(data))
        if more:
            w.write(more if MICROPYTHON else bytes(more))
        await w.drain()
        self._tx_t = None
        self._last_tx = ticks_ms()

    async def _supervise(self):
        ka = self._ka_ms
        while True:
            await sleep_ms(min(500, ka >> 2))
            if self._fail is not None:
                raise self._fail
            now = ticks_ms()
            t = self._tx_t
            if t is not None and ticks_diff(now, t) > ka:
                raise OSError("write stalled")
            t = self._ping_t
            if t is not None:
                if ticks_diff(now, t) > ka and ticks_diff(now, self._last_rx) > ka:
                    self._n[_S_PING_TIMEOUTS] += 1
                    raise OSError("no PINGRESP")
            elif (ticks_diff(now, self._last_rx) >= ka >> 1
                  or ticks_diff(now, self._last_tx) >= ka >> 1):
                self._ping_due = True
                self._kick()
            if self._qn and self._next_due(now) >= 0:
                self._kick()

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
        try:
            while True:
                if self._sub_sent < len(self._subs):
                    await self._send_subscribe(w)
                while self._acks:
                    pid = self._acks.pop(0)
                    await self._write(w, bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))
                if self._ping_due:
                    self._ping_due = False
                    self._ping_t = ticks_ms()
                    await self._write(w, _PING)
                while True:
                    i = self._next_due(ticks_ms())
                    if i < 0:
                        break
                    await self._send_publish(w, i)
                # Kicked while writing (a subscribe, an ack owed, a ping)?
                # Another round; else end (no await in between: nothing can
                # be queued between this check and _tx = None).
                if not (self._sub_sent < len(self._subs) or self._acks or self._ping_due):
                    self._tx = None
                    return
        except Exception as e:
            self._fail = e

    async def _send_subscribe(self, w):
        start = self._sub_sent
        end = len(self._subs)
        body = bytearray(2)
        pid = self._next_pid()
        body[0] = pid >> 8
        body[1] = pid & 0xFF
        for i in range(start, end):
            t, q = self._subs[i]
            _str(body, t)
            body.append(q)
        pkt = bytearray(5)
        n = _hdr(pkt, _SUBSCRIBE, len(body))
        self._sub_sent = end
        await self._write(w, bytes(pkt[:n]) + body)

    async def _send_publish(self, w, i):
        f = self._qf[i]
        topic = self._qt[i]
        payload = self._qp[i]
        qos = f & _F_QOS
        typ = _PUBLISH | (qos << 1) | (1 if f & _F_RETAIN else 0)
        pid = 0
        if qos:
            if f & _F_EVER:
                typ |= 0x08  # DUP
                self._n[_S_RETRANSMITS] += 1
            pid = self._qid[i] or self._next_pid()
            self._qid[i] = pid
            self._qf[i] = f | _F_SENT | _F_EVER
            self._qts[i] = ticks_ms()
        else:
            self._remove(i)
        # fixed header, topic and packet id here; the payload is written
        # from the queue as it is (no copy into a buffer of max_payload)
        lt = len(topic)
        rl = 2 + lt + (2 if qos else 0) + len(payload)
        b = bytearray(lt + 9)
        n = _hdr(b, typ, rl)
        b[n] = lt >> 8
        b[n + 1] = lt & 0xFF
        n += 2
        b[n:n + lt] = topic
        n += lt
        if qos:
            b[n] = pid >> 8
            b[n + 1] = pid & 0xFF
            n += 2
        self._n[_S_TX] += 1
        await self._write(w, memoryview(b)[:n], payload)

    # ---- receiving -----------------------------------------------------------
    async def _rx_loop(self, r):
        try:
            st = self._n
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
                        st[_S_BAD_PACKETS] += 1
                        raise ValueError("bad remaining length")
                self._last_rx = ticks_ms()
                t = typ & 0xF0
                if t == _PUBLISH:
                    await self._rx_publish(r, typ, rl)
                elif t == _PUBACK and rl == 2:
                    p = await r.readexactly(2)
                    pid = (p[0] << 8) | p[1]
                    for i in range(self._qn):
                        if self._qid[i] == pid and self._qf[i] & _F_SENT:
                            self._remove(i)
                            st[_S_ACKED] += 1
                            break
                elif t == _PINGRESP and rl == 0:
                    self._ping_t = None
                elif t == _SUBACK and 3 <= rl <= 64:
                    p = await r.readexactly(rl)
                    for i in range(2, rl):
                        if p[i] & 0x80:
                            st[_S_SUB_FAILS] += 1
                elif t == _UNSUBACK and rl == 2:
                    await r.readexactly(2)
                else:
                    st[_S_BAD_PACKETS] += 1
                    if rl > 64:
                        raise ValueError("unexpected packet")
                    await self._drain(r, rl)
                self._last_rx = ticks_ms()
        except Exception as e:
            self._fail = e

    async def _drain(self, r, n):
        # Read and discard n bytes without allocating n bytes (rare: the
        # chunk buffer is made here, not kept).
        buf = memoryview(bytearray(_CHUNK))
        while n > 0:
            k = n if n < _CHUNK else _CHUNK
            if MICROPYTHON:
                got = await r.readinto(buf[:k])
            else:
                got = len(await r.read(k))
            if not got:
                raise EOFError
            n -= got
            self._last_rx = ticks_ms()

    async def _rx_publish(self, r, typ, rl):
        st = self._n
        qos = (typ >> 1) & 3
        if qos > 1 or rl < 2:
            st[_S_BAD_PACKETS] += 1
            raise ValueError("bad PUBLISH")
        if rl > self.drain_limit:
            st[_S_OVERSIZE] += 1
            raise ValueError("PUBLISH too long")
        p = await r.readexactly(2)
        lt = (p[0] << 8) | p[1]
        hl = 2 + lt + (2 if qos else 0)
        if hl > rl:
            st[_S_BAD_PACKETS] += 1
            raise ValueError("bad PUBLISH")
        topic = None
        if lt <= _TOPIC_MAX:
            topic = await r.readexactly(lt)
        else:
            await self._drain(r, lt)
        pid = 0
        if qos:
            p = await r.readexactly(2)
            pid = (p[0] << 8) | p[1]
        plen = rl - hl
        if topic is None or plen > self.max_payload:
            st[_S_OVERSIZE] += 1
            await self._drain(r, plen)
        else:
            payload = await r.readexactly(plen)
            st[_S_RX] += 1
            try:
                topic = topic.decode()
            except Exception:
                topic = None
                st[_S_BAD_PACKETS] += 1
            if topic is not None and self.on_message:
                try:
                    self.on_message(topic, payload)
                except Exception:
                    st[_S_CB_ERRORS] += 1
        if qos:
            self._acks.append(pid)
            self._kick()


def _hdr(buf, typ, rl):
    # fixed header into buf; returns its length
    buf[0] = typ
    i = 1
    while True:
        b = rl & 0x7F
        rl >>= 7
        if rl:
            b |= 0x80
        buf[i] = b
        i += 1
        if not rl:
            return i


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
