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
        self.stats = {
            "connects": 0, "conn_fails": 0, "drops": 0, "refused": 0,
            "tx": 0, "rx": 0, "acked": 0, "retransmits": 0,
            "dropped_qos0": 0, "dropped_qos1": 0, "too_big": 0,
            "bad_packets": 0, "oversize": 0, "ping_timeouts": 0,
            "sub_fails": 0, "cb_errors": 0, "last_error": "",
        }
        self._ka_ms = keepalive * 1000
        self._tick_ms = min(500, self._ka_ms // 4)
        self._retry_ms = retry_ms or self._ka_ms
        self._bo_min = backoff_min_ms
        self._bo_max = backoff_max_ms
        self._subs = []  # [topic bytes, qos]
        self._sub_sent = 0
        self._acks = []  # PUBACKs owed to the broker
        self._pid = 0
        # preallocated outgoing queue, index 0 = oldest
        n = max_queue
        self._qmax = n
        self._qn = 0
        self._qt = [None] * n
        self._qp = [None] * n
        self._qf = bytearray(n)
        self._qid = [0] * n
        self._qts = [0] * n
        self._tbuf = bytearray(max_payload + _TOPIC_MAX + 9)
        self._tmv = memoryview(self._tbuf)
        self._rbuf = memoryview(bytearray(_CHUNK))
        self._ev = asyncio.Event()
        self._reset_link()

    # ---- public API ------------------------------------------------------
    def subscribe(self, topic, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        if isinstance(topic, str):
            topic = topic.encode()
        self._subs.append([topic, qos])
        self._ev.set()

    def publish(self, topic, payload, retain=False, qos=0):
        # Enqueue; True if queued. Never awaits the network.
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(payload, str):
            payload = payload.encode()
        st = self.stats
        if len(payload) > self.max_payload or len(topic) > _TOPIC_MAX:
            st["too_big"] += 1
            return False
        if qos == 0:
            if not self.connected or self._qn >= self._qmax:
                st["dropped_qos0"] += 1
                return False
        elif self._qn >= self._qmax:
            qf = self._qf
            i = 0
            while i < self._qn and qf[i] & _F_QOS:
                i += 1
            if i < self._qn:
                st["dropped_qos0"] += 1
            else:
                i = 0
                st["dropped_qos1"] += 1
            self._remove(i)
        i = self._qn
        self._qt[i] = topic
        self._qp[i] = payload
        self._qf[i] = qos | (_F_RETAIN if retain else 0)
        self._qid[i] = 0
        self._qn = i + 1
        self._ev.set()
        return True

    def queued(self):
        return self._qn

    async def run(self):
        bo = self._bo_min
        while True:
            self._up = False
            try:
                await self._session()
            except Exception as e:  # anything: log, back off, retry
                try:
                    self.stats["last_error"] = repr(e)[:80]
                except Exception:
                    pass
            if self._up:
                self.stats["drops"] += 1
                if ticks_diff(ticks_ms(), self._t_up) >= _STABLE_MS:
                    bo = self._bo_min
            else:
                self.stats["conn_fails"] += 1
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
                self.stats["dropped_qos0"] += 1
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
        self._fail = None
        self._ping_due = False
        self._ping_out = False
        self._tx_busy = False
        now = ticks_ms()
        self._ping_t = self._last_rx = self._last_tx = self._tx_t = now
        self._sub_sent = 0
        self._acks = []
        self._up = False
        self._t_up = now

    async def _session(self):
        self._reset_link()
        rx = tx = None
        try:
            await asyncio.wait_for(self._connect(), self.connect_timeout)
            self._up = True
            self._t_up = self._last_rx = self._last_tx = ticks_ms()
            self.connected = True
            self.stats["connects"] += 1
            rx = asyncio.create_task(self._rx_loop(self._r))
            tx = asyncio.create_task(self._tx_loop(self._w))
            if self.on_connect:
                try:
                    self.on_connect()
                except Exception:
                    self.stats["cb_errors"] += 1
            self._ev.set()
            await self._supervise()
        finally:
            self.connected = False
            for t in (rx, tx):
                if t is not None:
                    t.cancel()
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
            self.stats["bad_packets"] += 1
            raise OSError("bad CONNACK")
        if p[3] != 0:
            self.stats["refused"] += 1
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

    async def _write(self, w, data):
        self._tx_t = ticks_ms()
        self._tx_busy = True
        # CPython's (TLS) transport may keep a reference to the data: copy.
        w.write(data if MICROPYTHON else bytes(data))
        await w.drain()
        self._tx_busy = False
        self._last_tx = ticks_ms()

    async def _supervise(self):
        ka = self._ka_ms
        while True:
            await sleep_ms(self._tick_ms)
            if self._fail is not None:
                raise self._fail
            now = ticks_ms()
            if self._tx_busy and ticks_diff(now, self._tx_t) > ka:
                raise OSError("write stalled")
            if self._ping_out:
                if ticks_diff(now, self._ping_t) > ka and ticks_diff(now, self._last_rx) > ka:
                    self.stats["ping_timeouts"] += 1
                    raise OSError("no PINGRESP")
            elif (ticks_diff(now, self._last_rx) >= ka >> 1
                  or ticks_diff(now, self._last_tx) >= ka >> 1):
                self._ping_due = True
                self._ev.set()
            if self._qn and self._next_due(now) >= 0:
                self._ev.set()

    # ---- sending (only this task writes once connected) --------------------
    async def _tx_loop(self, w):
        try:
            while True:
                await self._ev.wait()
                self._ev.clear()
                if self._sub_sent < len(self._subs):
                    await self._send_subscribe(w)
                while self._acks:
                    pid = self._acks.pop(0)
                    await self._write(w, bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))
                if self._ping_due:
                    self._ping_due = False
                    self._ping_out = True
                    self._ping_t = ticks_ms()
                    await self._write(w, _PING)
                while True:
                    i = self._next_due(ticks_ms())
                    if i < 0:
                        break
                    await self._send_publish(w, i)
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
                self.stats["retransmits"] += 1
            pid = self._qid[i] or self._next_pid()
            self._qid[i] = pid
            self._qf[i] = f | _F_SENT | _F_EVER
            self._qts[i] = ticks_ms()
        else:
            self._remove(i)
        lt = len(topic)
        rl = 2 + lt + (2 if qos else 0) + len(payload)
        b = self._tbuf
        mv = self._tmv
        n = _hdr(b, typ, rl)
        b[n] = lt >> 8
        b[n + 1] = lt & 0xFF
        n += 2
        mv[n:n + lt] = topic
        n += lt
        if qos:
            b[n] = pid >> 8
            b[n + 1] = pid & 0xFF
            n += 2
        mv[n:n + len(payload)] = payload
        n += len(payload)
        self.stats["tx"] += 1
        await self._write(w, mv[:n])

    # ---- receiving -----------------------------------------------------------
    async def _rx_loop(self, r):
        try:
            st = self.stats
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
                        st["bad_packets"] += 1
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
                            st["acked"] += 1
                            break
                elif t == _PINGRESP and rl == 0:
                    self._ping_out = False
                elif t == _SUBACK and 3 <= rl <= 64:
                    p = await r.readexactly(rl)
                    for i in range(2, rl):
                        if p[i] & 0x80:
                            st["sub_fails"] += 1
                elif t == _UNSUBACK and rl == 2:
                    await r.readexactly(2)
                else:
                    st["bad_packets"] += 1
                    if rl > 64:
                        raise ValueError("unexpected packet")
                    await self._drain(r, rl)
                self._last_rx = ticks_ms()
        except Exception as e:
            self._fail = e

    async def _drain(self, r, n):
        # Read and discard n bytes without allocating n bytes.
        buf = self._rbuf
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
        st = self.stats
        qos = (typ >> 1) & 3
        if qos > 1 or rl < 2:
            st["bad_packets"] += 1
            raise ValueError("bad PUBLISH")
        if rl > self.drain_limit:
            st["oversize"] += 1
            raise ValueError("PUBLISH too long")
        p = await r.readexactly(2)
        lt = (p[0] << 8) | p[1]
        hl = 2 + lt + (2 if qos else 0)
        if hl > rl:
            st["bad_packets"] += 1
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
            st["oversize"] += 1
            await self._drain(r, plen)
        else:
            payload = await r.readexactly(plen)
            st["rx"] += 1
            try:
                topic = topic.decode()
            except Exception:
                topic = None
                st["bad_packets"] += 1
            if topic is not None and self.on_message:
                try:
                    self.on_message(topic, payload)
                except Exception:
                    st["cb_errors"] += 1
        if qos:
            self._acks.append(pid)
            self._ev.set()


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
