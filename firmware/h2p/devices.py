# One driver per device on the RS-485 line. Each is built from the register
# maps in registers.py: it knows its blocks (few, large reads), decodes them
# into the Readings store, and holds the command registers the control core
# wants written. Values outside a sensor's plausible range (or NaN from a
# float meter) are stored as UNKNOWN: a sensor fault, never a value.
from array import array

from h2p.compat import const, ticks_diff
from h2p.readings import UNKNOWN

# The register types of h2p.codes, as constants of this module: h2p.codes
# is dropped after boot, and every field of every read compares them
# (tests/firmware/test_codes_copies.py checks they match).
_U16 = const(0)
_I16 = const(1)
_U32 = const(2)
_F32 = const(3)


def decode(buf, off, typ):
    # Register bytes at word offset `off` -> int (or float for F32).
    o = 2 * off
    w = (buf[o] << 8) | buf[o + 1]  # registers are big-endian
    if typ == _U16:
        return w
    if typ == _I16:
        return w - 0x10000 if w & 0x8000 else w
    w2 = (buf[o + 2] << 8) | buf[o + 3]
    if typ == _U32:
        return (w << 16) | w2
    import struct

    return struct.unpack(">f", bytes((buf[o], buf[o + 1], buf[o + 2], buf[o + 3])))[0]


def scaled(v, typ, num, den):
    # A register value times num/den, truncated toward zero, in integers:
    # a float product would be a new object on every read. For F32, v is
    # the IEEE-754 bit pattern (decode_bits); None for NaN or infinity.
    # The same result as int(float_value * num / den).
    neg = False
    if typ == _F32:
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
    if typ == _F32:
        return decode(buf, off, _U32)
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

    def dirty(self):
        for i in range(len(self.want)):
            if self.want[i] != self.sent[i]:
                return True
        return False

    def store(self, block, buf, readings, now):
        if self.wd_ms and ticks_diff(now, self.ok_ms) > self.wd_ms >> 1:
            for i in range(len(self.sent)):
                self.sent[i] = -1
        p = block.packed
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
