"""Fuzz h2p.modbus's reply parser (Master._transact1 through read/write).

Any reply bytes, in any chunking, to a read (FC03/FC04) or a write
(FC06/FC16): the master either returns the data of a reply that is a valid
frame for the request, or raises ModbusError with a kind from STAT_NAMES and
counts exactly that kind; never another exception, never a stall, the same
outcome however the bytes arrive, and no allocation that grows with the
reply (the receive buffer is preallocated).
"""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from h2p.modbus import STAT_NAMES, Master, ModbusError, crc16
from tests.fuzz import kit

TARGET = "modbus"
EXAMPLES = 400
PEAK_MAX = 4096  # bytes per transaction, whatever the reply (CPython: coroutines, the exception and its traceback; measured <= 2.3 KB)


class Clock:
    def __init__(self):
        self.t = 0

    def ms(self):
        return self.t

    async def sleep_ms(self, ms):
        self.t += ms


class Line:
    # Delivers the reply in the given chunk sizes; when it has nothing left
    # the whole timeout passes (a silent line).
    def __init__(self, reply, chunks, clock):
        self.reply = reply
        self.chunks = list(chunks)
        self.clock = clock
        self.pending = b""
        self.settled = 0
        self.recvs = 0

    def discard(self):
        self.pending = b""

    async def settle(self):
        self.settled += 1

    async def send(self, buf, n):
        self.pending = self.reply

    async def recv_into(self, mv, timeout_ms):
        self.recvs += 1
        if self.recvs > 600:
            raise AssertionError("the master keeps reading: a stall")
        if not self.pending:
            self.clock.t += timeout_ms
            return 0
        k = min(len(mv), len(self.pending), self.chunks.pop(0) if self.chunks else 260)
        mv[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        return k


def drive(coro):
    # No event loop: the master's awaits all complete at once here, and a
    # loop's own allocation would hide the master's in the peak.
    try:
        while True:
            coro.send(None)
    except StopIteration as s:
        return s.value


def frame(*b):
    buf = bytearray(b)
    c = crc16(buf, len(buf))
    return bytes(buf) + bytes((c & 0xFF, c >> 8))


def transact(req, reply, chunks):
    """-> (("ok", data bytes) or (kind, exception code), the master's
    counters, bytes allocated at the peak of the transaction); raises on
    anything else."""
    unit, fc, addr, count = req
    clock = Clock()
    line = Line(reply, chunks, clock)
    m = Master(line, clock)  # its buffers: allocated once, not measured
    values = list(range(count))
    with kit.Peak() as p:
        try:
            if fc in (3, 4):
                data = drive(m.read(unit, fc, addr, count))
                out = None
            else:
                drive(m.write(unit, addr, values, count))
                out = ("ok", b"")
        except ModbusError as e:
            out = e
    if out is None:
        out = ("ok", bytes(data))
    elif isinstance(out, ModbusError):
        assert out.kind in STAT_NAMES[1:], out.kind
        assert out.unit == unit
        out = (out.kind, out.code)
    return out, m.stats, p.bytes


def expected(req, reply):
    """The outcome a correct master must give, from the first bytes of the
    reply alone (None where only 'rejected' is certain)."""
    unit, fc, addr, count = req
    if len(reply) >= 5 and reply[1] & 0x80 and reply[:5] == frame(*reply[:3]):
        if reply[0] == unit and reply[1] == fc | 0x80:
            return ("exception", reply[2])
        return None
    n = 5 + 2 * count if fc in (3, 4) else 8
    r = reply[:n]
    if len(r) < n or r != frame(*r[:-2]) or r[0] != unit or r[1] != fc:
        return None
    if fc in (3, 4):
        return ("ok", r[3:-2]) if r[2] == 2 * count else None
    return ("ok", b"") if (r[2] << 8 | r[3]) == addr else None


def check(req, reply, chunks):
    got, stats, peak = transact(req, reply, chunks)
    assert peak < PEAK_MAX, "%d bytes allocated for a %d-byte reply" % (peak, len(reply))
    # exactly one counter per transaction, the outcome's own
    assert sum(stats) == 1 and stats[STAT_NAMES.index(got[0] if got[0] != "ok" else "ok")] == 1, (got, stats)
    want = expected(req, reply)
    if want is not None:
        assert got == want, (req, reply.hex(), got, want)
    else:
        assert got[0] != "ok", "accepted a reply that is no valid frame for %r: %s" % (req, reply.hex())
    # however the bytes arrive, the same outcome
    assert transact(req, reply, ())[0] == got


# ---------------------------------------------------------------- inputs
units = st.integers(1, 247)


@st.composite
def requests(draw):
    unit = draw(units)
    fc = draw(st.sampled_from((3, 4, 6, 16)))
    addr = draw(st.integers(0, 0xFFFF))
    count = draw(st.integers(1, 125)) if fc in (3, 4) else (1 if fc == 6 else draw(st.integers(2, 123)))
    return unit, fc, addr, count


def valid_reply(req, draw):
    unit, fc, addr, count = req
    if fc in (3, 4):
        return frame(unit, fc, 2 * count, *draw(st.binary(min_size=2 * count, max_size=2 * count)))
    return frame(unit, fc, addr >> 8, addr & 0xFF, 0, count)


@st.composite
def replies(draw, req):
    kind = draw(st.sampled_from(("random", "valid", "mutated", "forged", "exception", "cut", "long")))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "exception":
        b = frame(draw(st.sampled_from((req[0], draw(units)))), req[1] | 0x80, draw(st.integers(0, 255)))
        return b + draw(st.binary(max_size=8))
    r = valid_reply(req, draw)
    if kind == "valid":
        return r
    if kind == "cut":
        return r[: draw(st.integers(0, len(r) - 1))]
    if kind == "long":
        return r + draw(st.binary(min_size=1, max_size=40))
    b = bytearray(r)  # a few bytes changed: header, count, data, CRC
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(b) - 1))
        b[i] ^= draw(st.integers(1, 255))
    if kind == "forged":  # ... and the CRC made to fit: only the content is wrong
        return frame(*b[:-2])
    return bytes(b)


@st.composite
def cases(draw):
    req = draw(requests())
    return req, draw(replies(req)), draw(st.lists(st.integers(1, 64), max_size=12))


def _case(data):
    # corpus file: unit, fc, addr hi/lo, count, then the reply bytes
    return (data[0], data[1], data[2] << 8 | data[3], data[4]), data[5:]


# ----------------------------------------------------------------- tests
@pytest.fixture(scope="module", autouse=True)
def _traced():
    with kit.started():
        yield


@pytest.mark.parametrize("data", kit.corpus_params(TARGET))
def test_corpus(data):
    req, reply = _case(data)
    kit.keep(TARGET, data, lambda d: check(req, reply, ()))
    kit.keep(TARGET, data, lambda d: check(req, reply, (1,) * len(reply)))


@kit.budget(EXAMPLES)
@given(cases())
@example(((1, 3, 0, 1), frame(1, 3, 2, 0, 5), ()))
def test_any_reply(case):
    req, reply, chunks = case
    unit, fc, addr, count = req
    data = bytes((unit, fc, addr >> 8, addr & 0xFF, count)) + reply
    kit.keep(TARGET, data, lambda d: check(req, reply, chunks))


def test_oracle_sees_what_it_must():
    # The checker itself: a valid reply is expected accepted, a bad CRC not.
    req = (1, 3, 0, 1)
    assert expected(req, frame(1, 3, 2, 0, 5)) == ("ok", b"\x00\x05")
    assert expected(req, frame(1, 3, 2, 0, 5)[:-1] + b"\x00") is None
    assert expected(req, frame(1, 0x83, 2)) == ("exception", 2)
    assert expected((1, 6, 7, 1), frame(1, 6, 0, 7, 0, 1)) == ("ok", b"")
