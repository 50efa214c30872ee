# The device drivers (h2p.devices), built from the register maps in
# registers.py: once, at boot; then this module is dropped (h2p.app), as are
# the maps. What it holds (the plausible ranges, the field packing, the
# config keys it reads) is not needed while the pile runs.
from array import array

from h2p import codes as K  # (folded in by the build: K.F32)
from h2p.devices import NF, Block, Device
from h2p.readings import SCALES


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


def _ratio(f):
    # A factor as a small fraction num/den (10/1, 1/10, 10000/1 ...), or
    # None if it is not one.
    for den in (1, 10, 100, 1000, 10000):
        num = f * den
        if abs(num - round(num)) < 1e-9 * max(1.0, abs(num)) and abs(num) < 1 << 20:
            return int(round(num)), den
    return None


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
            scaled = scaled or factor != 1 or typ == K.F32
        out.append(Block(fc, start, end - start, packed, ratios if scaled else None))
    return out


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
        if len(b.packed) == NF and b.packed[0] == INDEX["met_wh"]:
            b.fast = False
    devs.append(Device("meter", units["meter"], mblocks, ()))
    return devs
