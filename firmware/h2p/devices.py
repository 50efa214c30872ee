# One driver per device on the RS-485 line. Each is built from the register
# maps in registers.py: it knows its blocks (few, large reads), decodes them
# into the Readings store, and holds the command registers the control core
# wants written. Values outside a sensor's plausible range (or NaN from a
# float meter) are stored as UNKNOWN: a sensor fault, never a value.
from array import array

from h2p.compat import const, ticks_diff
from h2p.readings import SCALES, UNKNOWN

# The register types of h2p.codes, as constants of this module: h2p.codes
# is dropped after boot, and every field of every read compares them
# (tests/firmware/test_codes_copies.py checks they match).
_U16 = const(0)
_I16 = const(1)
_U32 = const(2)
_F32 = const(3)


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
    if typ != _F32 and abs(f - 1) < 1e-9:
        f = 1
    return (i, off, typ, f, lo, hi)


def _blocks_from(fields, fc, ranges, max_gap=8):
    # Merge fields into as few reads as possible (gaps up to max_gap words).
    from h2p.codes import TYPE_WORDS  # boot only

    groups = []  # [start, end, [fields]]
    for f in sorted(fields, key=lambda f: f[1]):
        end = f[1] + TYPE_WORDS[f[2]]
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
            scaled = scaled or factor != 1 or typ == _F32
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
