# Test doubles shared by the core tests (CPython and MicroPython).
from h2p.compat import asyncio


class FakeClock:
    def __init__(self):
        self.t = 0
        self.floor = 1

    def ms(self):
        return self.t

    async def sleep_ms(self, ms):
        self.t += ms
        await asyncio.sleep(0)


class FakeLine:
    # A transport that answers each request with the next canned reply.
    def __init__(self, replies, clock=None):
        self.clock = clock
        self.replies = list(replies)
        self.sent = []
        self.pending = b""
        self.settled = 0

    def discard(self):
        self.pending = b""

    async def settle(self):
        self.settled += 1

    async def send(self, buf, n):
        self.sent.append(bytes(buf[:n]))
        self.pending = self.replies.pop(0) if self.replies else b""

    async def recv_into(self, mv, timeout_ms):
        if not self.pending and self.clock:
            self.clock.t += timeout_ms  # nothing comes: the whole timeout passes
        k = min(len(mv), len(self.pending))
        mv[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        return k


def frame(*b):
    from h2p.modbus import crc16

    buf = bytearray(b)
    c = crc16(buf, len(buf))
    buf.append(c & 0xFF)
    buf.append(c >> 8)
    return bytes(buf)


def run(coro):
    return asyncio.run(coro)


class AnsweringLine:
    # Every read is answered with zeros, every write with its echo; each request logged
    # (with the clock's time last, when given one).
    def __init__(self, log, clock=None):
        self.log = log
        self.clock = clock
        self.pending = b""

    def discard(self):
        self.pending = b""

    async def settle(self):
        pass

    async def send(self, buf, n):
        req = bytes(buf[:n])
        unit, fc = req[0], req[1]
        if fc in (3, 4):
            count = req[4] << 8 | req[5]
            self.pending = frame(unit, fc, 2 * count, *([0] * 2 * count))
            self.log.append(("read", unit, req[2] << 8 | req[3]))
        else:
            self.pending = frame(*req[:6])
            self.log.append(("write", unit))
        if self.clock is not None:
            self.log[-1] = self.log[-1] + (self.clock.t,)
        await asyncio.sleep(0)

    async def recv_into(self, mv, timeout_ms):
        k = min(len(mv), len(self.pending))
        mv[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        return k
