# One driver per device on the RS-485 line. Each is built from the register
# maps in registers.py: it knows its blocks (few, large reads), decodes them
# into the Readings store, and holds the command registers the control core
# wants written. Values outside a sensor's plausible range (or NaN from a
# float meter) are stored as UNKNOWN: a sensor fault, never a value.
from array import array

from h2p import codes as K  # (folded in by the build: not loaded on a board)
from h2p.compat import const, ticks_diff
from h2p.readings import UNKNOWN


def decode(buf, off, typ):
    # Register bytes at word offset `off` -> int (or float for F32).
    o = 2 * off
    w = (buf[o] << 8) | buf[o + 1]  # registers are big-endian
    if typ == K.U16:
        return w
    if typ == K.I16:
        return w - 0x10000 if w & 0x8000 else w
    w2 = (buf[o + 2] << 8) | buf[o + 3]
    if typ == K.U32:
        return (w << 16) | w2
    import struct

    return struct.unpack(">f", bytes((buf[o], buf[o + 1], buf[o + 2], buf[o + 3])))[0]


def scaled(v, typ, num, den):
    # A register value times num/den, truncated toward zero, in integers:
    # a float product would be a new object on every read. For F32, v is
    # the IEEE-754 bit pattern (decode_bits); None for NaN or infinity.
    # The same result as int(float_value * num / den).
    neg = False
    if typ == K.F32:
        e = (v >> 23) & 0xFF
        if e == 0xFF:
            return None  # NaN or +-inf
        if e == 0:
            return 0  # zero or subnormal: far below any unit we store
        neg = v & 0x80000000
        sh = e - 150  # value = mantissa * 2**sh
        v = ((v & 0x7FFFFF) | 0x800000) * num
        if sh >= 0:
            v = (v << sh) // den
        elif sh > -48:  # mantissa * num < 2**48
            v = v // (den << -sh)
        else:
            v = 0
    else:
        if v < 0:
            neg = True
            v = -v
        v = v * num // den
    return -v if neg else v


def decode_bits(buf, off, typ):
    # Like decode(), but an F32 comes back as its raw 32-bit pattern.
    if typ == K.F32:
        return decode(buf, off, K.U32)
    return decode(buf, off, typ)


# Ints per field in Block.packed: reading index, word offset, type, and the
# plausible raw range lo, hi (limits already in stored units).
_NF = const(5)
NF = _NF  # (h2p.devbuild packs them)


class Block:
    # One read request: fc, start, count, and how to decode it. The fields
    # are packed into one array (_NF ints each): a tuple per field cost
    # ~70 B of RAM, boxed floats more. `ratios` is None when every field is
    # stored as read (integer registers in their own scale); else each
    # field's wire-to-store factor as an integer fraction (num, den), so a
    # scaled or float32 value is stored without a float ever being made.
    def __init__(self, fc, start, count, packed, ratios, fast=True):
        self.fc = fc
        self.start = start
        self.count = count
        self.packed = packed
        self.ratios = ratios
        self.fast = fast
        # Every field one 16-bit register stored as read (no ratio, no U32 or
        # F32): the block is decoded as machine code (_put_words).
        w16 = ratios is None
        for k in range(2, len(packed), _NF):
            if packed[k] != K.U16 and packed[k] != K.I16:
                w16 = False
        self.words16 = w16

    @property
    def fields(self):
        # ((reading index, word offset, type, factor, lo, hi), ...), built
        # when asked: for code that runs once (the poll schedule, tools).
        p = self.packed
        r = self.ratios
        out = []
        for k in range(0, len(p), _NF):
            j = 2 * (k // _NF)
            f = 1 if r is None else (r[j] if r[j + 1] == 1 else r[j] / r[j + 1])
            out.append((p[k], p[k + 1], p[k + 2], f, p[k + 3], p[k + 4]))
        return tuple(out)


class Device:
    # A device on the bus: readings in, commands out.
    def __init__(self, name, unit, blocks, commands):
        self.name = name
        self.unit = unit
        self.blocks = blocks
        # commands are the register map's ((name, addr, type, scale), ...),
        # consecutive registers from cmd_base. Their names are not kept: the
        # supervisor addresses them by index (the `commands` property below
        # names them for tools and tests).
        n = len(commands)
        self.cmd_base = commands[0][1] if n else 0
        self.want = array("i", [0] * n)  # words the core wants
        self.sent = array("i", [-1] * n)  # words last acknowledged
        self.ok_ms = 0  # last time any block of this device was read
        self.silent = True
        self.errors = 0
        # The device's comm watchdog (ms; 0: it has none). A read after a
        # gap this long (half of it: the two clocks differ) finds it may
        # have gone safe and reset its commands: all are sent again.
        self.wd_ms = 0

    @property
    def commands(self):
        # The register map's rows of this device's commands, for tools and
        # tests: it re-imports registers.py, so not for the running pile.
        from h2p import registers as R

        return R.DEVICES[self.name]["commands"]

    def set(self, i, raw):
        self.want[i] = raw & 0xFFFF

    # Asked after every read for each device that takes commands (h2p.app
    # _flush): machine code on a board with a native emitter (see
    # _put_words). Words compare equal as loaded, signed or not.
    # @micropython.viper
    def dirty(self) -> bool:
        w = self.want  # ptr32
        s = self.sent  # ptr32
        n = int(len(self.want))
        i = 0
        while i < n:
            if w[i] != s[i]:
                return True
            i += 1
        return False

    def store(self, block, buf, readings, now):
        if self.wd_ms and ticks_diff(now, self.ok_ms) > self.wd_ms >> 1:
            for i in range(len(self.sent)):
                self.sent[i] = -1
        p = block.packed
        if block.words16:  # the hot blocks (charger, safety I/O): machine code
            _put_words(p, buf, readings, now)
            self.ok_ms = now
            self.silent = False
            return
        ratios = block.ratios
        for k in range(0, len(p), _NF):
            i = p[k]
            typ = p[k + 2]
            if ratios is not None:
                j = 2 * (k // _NF)
                v = scaled(decode_bits(buf, p[k + 1], typ), typ, ratios[j], ratios[j + 1])
                if v is None:  # NaN or +-inf from a float meter
                    readings.put(i, UNKNOWN, now)
                    continue
            else:
                v = decode(buf, p[k + 1], typ)
            if v < p[k + 3] or v > p[k + 4]:  # implausible: a broken sensor, not a value
                readings.put(i, UNKNOWN, now)
            else:
                readings.put(i, v, now)
        self.ok_ms = now
        self.silent = False


# Device.store of a block of 16-bit registers stored as read, as machine
# code on a board with a native emitter (host_tools.build makes it viper,
# after folding K.I16 and UNKNOWN into it; see h2p.interlocks._judge): on an
# RP2040 a field cost two Python calls, decode() and Readings.put(), ~0.6 ms
# for the charger's block, read before every other block (issue 16). What
# it does per field is Readings.put of the decoded value, UNKNOWN outside
# the field's plausible range: tests/core/test_devices.py holds it to the
# Python path. Viper's pointers load unsigned words: the range's bounds,
# which can be negative, have their sign restored (a no-op on 32-bit words).
# @micropython.viper
def _put_words(p, buf, rd, now: int):
    f = p  # ptr32
    b = buf  # ptr8
    raw = rd.raw  # ptr32
    ts = rd.ts  # ptr32
    seen = rd.seen  # ptr8
    dirty = rd.dirty  # ptr8
    nd = int(rd.nd)
    cap = int(len(rd.dirty))
    n = int(len(p))
    one = 1
    sign = one << 31  # (not folded: 2**31 is no small int on a 32-bit board)
    wrap = sign << 1  # 2**32 on 64-bit words, 0 on 32-bit ones
    k = 0
    while k < n:
        i = int(f[k])
        o = int(f[k + 1]) * 2
        w = (int(b[o]) << 8) | int(b[o + 1])  # registers are big-endian
        if int(f[k + 2]) == K.I16 and w & 0x8000:
            w -= 0x10000
        lo = int(f[k + 3])
        if lo >= sign:
            lo -= wrap
        hi = int(f[k + 4])
        if hi >= sign:
            hi -= wrap
        if w < lo or w > hi:  # implausible: a broken sensor, not a value
            w = UNKNOWN
        raw[i] = w
        ts[i] = now
        seen[i] = 1
        if nd < cap:  # (Readings.put: noted for the interlocks)
            dirty[nd] = i
            nd += 1
        else:
            nd = cap + 1
        k += _NF
    rd.nd = nd


def frame_max(devices):
    # The longest Modbus frame the pile exchanges with these devices: a read
    # reply (5 + 2 a register) or a write of a command block (9 + 2 a register).
    n = 8
    for d in devices:
        for b in d.blocks:
            n = max(n, 5 + 2 * b.count)
        n = max(n, 9 + 2 * len(d.want))
    return n


def __getattr__(name):
    # The drivers are built once, at boot, by h2p.devbuild (build,
    # plausible_ranges, ...): not kept in RAM with this module, which the
    # running pile needs (decode, the drivers). Reachable here as before
    # (PEP 562; MicroPython has it too).
    if name not in ("build", "plausible_ranges", "_ratio", "_field", "_blocks_from"):
        raise AttributeError(name)
    from h2p import devbuild

    return getattr(devbuild, name)
