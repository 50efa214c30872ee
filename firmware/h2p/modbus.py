# Modbus RTU master for asyncio, written for MicroPython (no maintained,
# cleanly licensed one is installable here). Function codes 3, 4, 6, 16.
#
# The transport is passed in (a board's UART with its RS-485 driver-enable
# pin, or RTU frames over TCP to the simulator); it offers
#   await send(buf, n)                 write n bytes of buf
#   await recv_into(mv, timeout_ms)    read what is there into mv, 0 on timeout
#   discard()                          drop anything still in the input
#   await settle()                     after an error: wait for line silence
# A dead device costs one timeout, never a stall: every wait is bounded.
# Replies with a bad CRC, wrong unit, wrong function or wrong length are
# rejected and counted, never used.
from h2p.compat import const, ticks_diff
from h2p.crc import crc16  # noqa: F401 - also the simulator's and the tests' (from here)

_BUF = const(260)  # longest RTU frame is 256 bytes

# Counters, indices into Master.stats.
_ST_OK = const(0)
_ST_TIMEOUT = const(1)
_ST_CRC = const(2)
_ST_UNIT = const(3)
_ST_FUNC = const(4)
_ST_LEN = const(5)
_ST_EXC = const(6)
STAT_NAMES = ("ok", "timeout", "bad_crc", "wrong_unit", "wrong_function", "wrong_length", "exception")


class ModbusError(Exception):
    # kind is one of STAT_NAMES[1:]; code is the exception code for replies.
    def __init__(self, kind, unit, code=0):
        super().__init__(kind)
        self.kind = kind
        self.unit = unit
        self.code = code


def char_time_us(baud):
    # 11 bits per character on the wire (start, 8 data, parity/2nd stop, stop).
    return 11_000_000 // baud


def gap_us(baud):
    # t3.5: 3.5 characters up to 19200 baud, fixed 1750 us above.
    return (char_time_us(baud) * 7) // 2 if baud <= 19200 else 1750


class Master:
    # frame_max: the longest frame this master sends or receives (the pile's
    # longest read reply or write, h2p.devices.frame_max): its two buffers
    # are that long, not the 256 B the protocol allows (~450 B of heap).
    def __init__(self, transport, clock, baud=115200, timeout_ms=60, retries=0, frame_max=_BUF):
        self.t = transport
        self.clock = clock
        self.baud = baud
        self.timeout_ms = timeout_ms
        self.retries = retries
        self._tx = bytearray(frame_max)
        self._rx = bytearray(frame_max)
        self._rxmv = memoryview(self._rx)
        self.stats = [0] * len(STAT_NAMES)
        self._gap_ms = max(1, gap_us(baud) // 1000)
        self._last = clock.ms()
        self.on_write = None  # hook: fn(unit, addr, values) for logs

    def _frame(self, n):
        c = crc16(self._tx, n)
        self._tx[n] = c & 0xFF
        self._tx[n + 1] = c >> 8
        return n + 2

    async def _transact1(self, n, unit, fc, expect):
        # One request, one reply of `expect` bytes (whole frame incl. CRC).
        # Returns the reply length; raises ModbusError on anything wrong.
        # The callers wait for line silence after an error that is not an
        # exception reply (read, write): one generator less per
        # transaction than a wrapper around this one (garbage per read).
        clock = self.clock
        t = self.t
        # Keep the inter-frame silence the wire demands before talking.
        quiet = self._gap_ms - ticks_diff(clock.ms(), self._last)
        if quiet > 0:
            await clock.sleep_ms(quiet)
        t.discard()
        await t.send(self._tx, n)
        rx = self._rxmv
        got = 0
        start = clock.ms()
        need = expect
        while got < need:
            left = self.timeout_ms - ticks_diff(clock.ms(), start)
            if left <= 0:
                break
            k = await t.recv_into(rx[got:need], left)
            got += k
            if got >= 2 and self._rx[1] & 0x80:
                need = 5  # exception reply
            elif got >= 3 and (fc == 3 or fc == 4) and self._rx[2] != expect - 5:
                break  # byte count disagrees with what we asked for
        self._last = clock.ms()
        if got == 0:
            self.stats[_ST_TIMEOUT] += 1
            raise ModbusError("timeout", unit)
        b = self._rx
        if got < need or (need == expect and (fc == 3 or fc == 4) and self._rx[2] != expect - 5):
            self.stats[_ST_LEN] += 1
            t.discard()
            raise ModbusError("wrong_length", unit)
        c = crc16(b, need - 2)
        if b[need - 2] != c & 0xFF or b[need - 1] != c >> 8:
            self.stats[_ST_CRC] += 1
            t.discard()
            raise ModbusError("bad_crc", unit)
        if b[0] != unit:
            self.stats[_ST_UNIT] += 1
            raise ModbusError("wrong_unit", unit)
        if b[1] == fc | 0x80:
            self.stats[_ST_EXC] += 1
            raise ModbusError("exception", unit, b[2])
        if b[1] != fc:
            self.stats[_ST_FUNC] += 1
            raise ModbusError("wrong_function", unit)
        self.stats[_ST_OK] += 1
        return need

    async def read(self, unit, fc, addr, count):
        # FC03 / FC04. Returns a memoryview of the 2*count data bytes; valid
        # until the next call (the buffer is reused, nothing is allocated).
        tx = self._tx
        tx[0] = unit
        tx[1] = fc
        tx[2] = addr >> 8
        tx[3] = addr & 0xFF
        tx[4] = count >> 8
        tx[5] = count & 0xFF
        n = self._frame(6)
        tries = self.retries + 1
        while True:
            tries -= 1
            try:
                await self._transact1(n, unit, fc, 5 + 2 * count)
                break
            except ModbusError as e:
                if e.kind != "exception":
                    # A late or broken reply must not be read as the next one:
                    # wait until the line has been quiet, as a master on a real
                    # RS-485 line waits for bus idle after a fault.
                    await self.t.settle()
                if tries <= 0 or e.kind == "exception":
                    raise
        return self._rxmv[3 : 3 + 2 * count]

    async def write(self, unit, addr, values, count):
        # FC06 for one register, FC16 for several; values[0:count] are words.
        tx = self._tx
        tx[0] = unit
        tx[2] = addr >> 8
        tx[3] = addr & 0xFF
        if count == 1:
            fc = 6
            tx[4] = (values[0] >> 8) & 0xFF
            tx[5] = values[0] & 0xFF
            n = 6
        else:
            fc = 16
            tx[4] = 0
            tx[5] = count
            tx[6] = 2 * count
            for i in range(count):
                tx[7 + 2 * i] = (values[i] >> 8) & 0xFF
                tx[8 + 2 * i] = values[i] & 0xFF
            n = 7 + 2 * count
        tx[1] = fc
        n = self._frame(n)
        if self.on_write:
            self.on_write(unit, addr, values, count)
        try:
            await self._transact1(n, unit, fc, 8)
        except ModbusError as e:
            if e.kind != "exception":
                await self.t.settle()  # as in read()
            raise
        # The echo must name what we wrote; anything else is a wrong reply.
        r = self._rx
        if (r[2] << 8 | r[3]) != addr:
            # counted once, as what it is (not also as "ok")
            self.stats[_ST_OK] -= 1
            self.stats[_ST_LEN] += 1
            raise ModbusError("wrong_length", unit)
