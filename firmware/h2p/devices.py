# One driver per device on the RS-485 line. Each is built from the register
# maps in registers.py: it knows its blocks (few, large reads), decodes them
# into the Readings store, and holds the command registers the control core
# wants written. Values outside a sensor's plausible range (or NaN from a
# float meter) are stored as UNKNOWN: a sensor fault, never a value.
from array import array

from h2p import codes as K
from h2p.compat import const, ticks_diff
from h2p.readings import SCALES, UNKNOWN


def plausible_ranges():
    # Plausible physical ranges; outside means a broken sensor or garbage.
    # Built when asked (by build(), once, and the docs), not kept: lists,
    # not tuples, because constant tuples would stay in RAM with the module.
    return {
        "ref_burner_c": [-40, 900],
        "ref_evap_c": [-40, 600],
        "ref_bed_c": [-40, 600],
        "ref_tank_l": [0, 1000],
        "fc_stack_c": [-40, 300],
        "fc_stack_v": [0, 200],
        "fc_min_cell_v": [0, 1.3],
        "bat_soc": [0, 100],
        "bat_v": [0, 1000],
        "bat_c": [-40, 120],
        "chg_pilot": [0, 5],
        "chg_ev_soc": [0, 100],
        "chg_out_v": [0, 1100],
        "sio_h2_lel": [0, 100],
        "met_v": [0, 1200],
        "met_a": [-1000, 1000],
        "met_w": [-1e6, 1e6],
        "met_wh": [0, 1e8],  # 100 MWh in 0.1 Wh fits the int32 readings
    }


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


def _ratio(f):
    # A factor as a small fraction num/den (10/1, 1/10, 10000/1 ...), or
    # None if it is not one.
    for den in (1, 10, 100, 1000, 10000):
        num = f * den
        if abs(num - round(num)) < 1e-9 * max(1.0, abs(num)) and abs(num) < 1 << 20:
            return int(round(num)), den
    return None


# Ints per field in Block.packed: reading index, word offset, type, and the
# plausible raw range lo, hi (limits already in stored units).
_NF = const(5)


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


def _field(name, off, typ, wire_scale, ranges):
    from h2p.readings import INDEX  # boot only: not kept in this module

    i = INDEX[name]
    f = wire_scale / SCALES[i]  # wire raw * f = stored raw
    lo, hi = ranges.get(name, (-1e9, 1e9))
    # Integer bounds in stored units, so the check on every read compares
    # small ints and allocates nothing (floats are boxed on MicroPython).
    lo = int(round(lo / SCALES[i])) if lo > -1e9 else -0x3FFFFFFE
    hi = int(round(hi / SCALES[i])) if hi < 1e9 else 0x3FFFFFFE
    if typ != K.F32 and abs(f - 1) < 1e-9:
        f = 1
    return (i, off, typ, f, lo, hi)


def _blocks_from(fields, fc, ranges, max_gap=8):
    # Merge fields into as few reads as possible (gaps up to max_gap words).
    groups = []  # [start, end, [fields]]
    for f in sorted(fields, key=lambda f: f[1]):
        end = f[1] + K.TYPE_WORDS[f[2]]
        if groups and f[1] - groups[-1][1] <= max_gap:
            g = groups[-1]
            g[2].append(f)
            g[1] = max(g[1], end)
        else:
            groups.append([f[1], end, [f]])
    out = []
    for start, end, fl in groups:
        packed = array("i")
        ratios = array("i")
        scaled = False
        for f in fl:
            i, off, typ, factor, lo, hi = _field(f[0], f[1] - start, f[2], f[3], ranges)
            for v in (i, off, typ, lo, hi):  # array.extend wants a buffer before v1.24
                packed.append(v)
            nd = _ratio(factor)
            if nd is None:
                # A register map error, found at boot: the store has no
                # float path (a float object per read).
                raise ValueError("register map: field %s: wire scale / store scale = %r is not n/1..n/10000"
                                 % (f[0], factor))
            ratios.append(nd[0])
            ratios.append(nd[1])
            scaled = scaled or factor != 1 or typ == K.F32
        out.append(Block(fc, start, end - start, packed, ratios if scaled else None))
    return out


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


def build(config):
    # All drivers for this pile, in poll order (safety-relevant first). The
    # register maps are read here once; the board may unload them after.
    from h2p import registers as R
    from h2p.readings import INDEX

    units = config["units"]
    bus = config["bus"]
    wd_ms = bus["comm_timeout_ms"] or 2 * bus["data_age_ms"]
    ranges = plausible_ranges()
    devs = []
    for name in ("charger", "safety", "fuelcell", "reformer", "bms"):
        d = R.DEVICES[name]
        dev = Device(name, units[name], _blocks_from(d["readings"], 4, ranges), d["commands"])
        wd = R.COMM_TIMEOUT.get(name)
        if wd:
            # Written with the device's first commands, and again with each
            # refresh: a device that rebooted (watchdog off) gets it back.
            for i, f in enumerate(d["commands"]):
                if f[0] == wd:
                    dev.want[i] = int(round(wd_ms / 1000 / f[3]))  # <= 6000 (config range)
            dev.wd_ms = wd_ms
        devs.append(dev)
    prof = R.METER_PROFILES[config["meter_profile"]]
    mblocks = _blocks_from(prof["fields"], prof["fc"], ranges)
    # Energy is billing data: read it every few cycles, not every cycle.
    for b in mblocks:
        if len(b.packed) == _NF and b.packed[0] == INDEX["met_wh"]:
            b.fast = False
    devs.append(Device("meter", units["meter"], mblocks, ()))
    return devs
