# One driver per device on the RS-485 line. Each is built from the register
# maps in registers.py: it knows its blocks (few, large reads), decodes them
# into the Readings store, and holds the command registers the control core
# wants written. Values outside a sensor's plausible range (or NaN from a
# float meter) are stored as UNKNOWN: a sensor fault, never a value.
from array import array

from h2p import codes as R
from h2p.readings import INDEX, SCALES, UNKNOWN

# Plausible physical ranges; outside means a broken sensor or garbage.
PLAUSIBLE = {
    "ref_burner_c": (-40, 900),
    "ref_evap_c": (-40, 600),
    "ref_bed_c": (-40, 600),
    "ref_tank_l": (0, 1000),
    "fc_stack_c": (-40, 300),
    "fc_stack_v": (0, 200),
    "fc_min_cell_v": (0, 1.3),
    "bat_soc": (0, 100),
    "bat_v": (0, 1000),
    "bat_c": (-40, 120),
    "chg_pilot": (0, 5),
    "chg_ev_soc": (0, 100),
    "chg_out_v": (0, 1100),
    "sio_h2_lel": (0, 100),
    "met_v": (0, 1200),
    "met_a": (-1000, 1000),
    "met_w": (-1e6, 1e6),
    "met_wh": (0, 1e8),  # 100 MWh in 0.1 Wh fits the int32 readings
}


def _words(buf, o):
    return (buf[o] << 8) | buf[o + 1]


def decode(buf, off, typ):
    # Register bytes at word offset `off` -> int (or float for F32).
    o = 2 * off
    w = _words(buf, o)
    if typ == R.U16:
        return w
    if typ == R.I16:
        return w - 0x10000 if w & 0x8000 else w
    w2 = _words(buf, o + 2)
    if typ == R.U32:
        return (w << 16) | w2
    import struct

    return struct.unpack(">f", bytes((buf[o], buf[o + 1], buf[o + 2], buf[o + 3])))[0]


class Block:
    # One read request: fc, start, count, and how to decode it:
    # fields are (reading index, word offset, type, wire-to-store factor,
    # raw lo, raw hi) with limits already in stored units.
    def __init__(self, fc, start, count, fields, fast=True):
        self.fc = fc
        self.start = start
        self.count = count
        self.fields = fields
        self.fast = fast


def _field(name, off, typ, wire_scale):
    i = INDEX[name]
    f = wire_scale / SCALES[i]  # wire raw * f = stored raw
    lo, hi = PLAUSIBLE.get(name, (-1e9, 1e9))
    # Integer bounds in stored units, so the check on every read compares
    # small ints and allocates nothing (floats are boxed on MicroPython).
    lo = int(round(lo / SCALES[i])) if lo > -1e9 else -0x3FFFFFFE
    hi = int(round(hi / SCALES[i])) if hi < 1e9 else 0x3FFFFFFE
    if typ != R.F32 and abs(f - 1) < 1e-9:
        f = 1
    return (i, off, typ, f, lo, hi)


def _blocks_from(fields, fc, max_gap=8):
    # Merge fields into as few reads as possible (gaps up to max_gap words).
    groups = []  # [start, end, [fields]]
    for f in sorted(fields, key=lambda f: f[1]):
        end = f[1] + R.TYPE_WORDS[f[2]]
        if groups and f[1] - groups[-1][1] <= max_gap:
            g = groups[-1]
            g[2].append(f)
            g[1] = max(g[1], end)
        else:
            groups.append([f[1], end, [f]])
    out = []
    for start, end, fl in groups:
        dec = tuple(_field(f[0], f[1] - start, f[2], f[3]) for f in fl)
        out.append(Block(fc, start, end - start, dec))
    return out


class Device:
    # A device on the bus: readings in, commands out.
    def __init__(self, name, unit, blocks, commands):
        self.name = name
        self.unit = unit
        self.blocks = blocks
        self.commands = commands  # ((name, addr, type, scale), ...)
        n = len(commands)
        self.cmd_base = commands[0][1] if n else 0
        self.want = array("i", [0] * n)  # words the core wants
        self.sent = array("i", [-1] * n)  # words last acknowledged
        self.ok_ms = 0  # last time any block of this device was read
        self.silent = True
        self.errors = 0

    def cmd_index(self, name):
        for i, c in enumerate(self.commands):
            if c[0] == name:
                return i
        raise KeyError(name)

    def set(self, i, raw):
        self.want[i] = raw & 0xFFFF

    def dirty(self):
        for i in range(len(self.want)):
            if self.want[i] != self.sent[i]:
                return True
        return False

    def store(self, block, buf, readings, now):
        for i, off, typ, f, lo, hi in block.fields:
            v = decode(buf, off, typ)
            if f != 1 or typ == R.F32:
                v = v * f
                if v - v != 0:  # NaN or +-inf from a float meter (inf - inf is NaN)
                    readings.put(i, UNKNOWN, now)
                    continue
                v = int(v)
            if v < lo or v > hi:  # implausible: a broken sensor, not a value
                readings.put(i, UNKNOWN, now)
            else:
                readings.put(i, v, now)
        self.ok_ms = now
        self.silent = False


def build(config):
    # All drivers for this pile, in poll order (safety-relevant first). The
    # register maps are read here once; the board may unload them after.
    from h2p import registers as M

    units = config["units"]
    devs = []
    for name in ("charger", "safety", "fuelcell", "reformer", "bms"):
        d = M.DEVICES[name]
        devs.append(Device(name, units[name], _blocks_from(d["readings"], 4), d["commands"]))
    prof = M.METER_PROFILES[config["meter_profile"]]
    mblocks = _blocks_from(prof["fields"], prof["fc"])
    # Energy is billing data: read it every few cycles, not every cycle.
    for b in mblocks:
        if any(f[0] == INDEX["met_wh"] for f in b.fields) and len(b.fields) == 1:
            b.fast = False
    devs.append(Device("meter", units["meter"], mblocks, ()))
    return devs
