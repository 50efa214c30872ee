# The control core timed on the board itself (MicroPython; the same file on
# the unix port and, as main.py, on the emulated Pico W: bench/core_steps.py).
#
# A pile on a bench (tests/helpers/pilebench.py: the real config, drivers,
# readings and supervisor; readings set by a crude plant) is brought to
# `ready` and then `charging`. In each state it is stepped as the bus task
# steps it: after every read, with only that read's block of readings new,
# in the poll schedule's order (charger and safety I/O before every other
# block), one transaction's wire time apart. Timed with ticks_us:
#   step      Supervisor.step, whole
#   parts     interlocks, contactor supervision, arbiters, the energy manager,
#             the readings taken, the guard, the state's own logic (each
#             wrapped by a Python call that times it: the wrapper's cost,
#             ~0.1 ms on the board, is in each part and in "charging_wrapped")
#   decode    Device.store of one reply (the charger's status block)
#   gc        gc.collect() with the session's live data
# One line: CORE {json}.
import gc
import json
import time

from pilebench import Bench, follow_plant

from h2p.readings import SCALES, Readings

_WIRE_MS = 9  # one read transaction at 115200 Bd, about
_N = 240  # steps per state: 20 poll cycles


def _schedule(b):
    hot = ("charger", "safety")
    ch = [blk for d in b.devs if d.name in hot for blk in d.blocks]
    out = []
    for d in b.devs:
        if d.name in hot:
            continue
        for blk in d.blocks:
            out.extend(ch)
            out.append(blk)
    return [(blk, [f[0] for f in blk.fields], d) for blk in out for d in b.devs if blk in d.blocks]


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def _summary(xs):
    return {"p50": _pct(xs, 0.5), "p99": _pct(xs, 0.99), "max": max(xs), "n": len(xs)}


class _Timed:
    # Wraps obj.name: the time spent in it, per step.
    def __init__(self, obj, name):
        self.f = getattr(obj, name)
        self.us = 0
        setattr(obj, name, self)

    def __call__(self, *a):
        t = time.ticks_us()
        r = self.f(*a)
        self.us += time.ticks_diff(time.ticks_us(), t)
        return r


def _steps(b, sched, k, n, parts=None):
    rd = b.rd
    out = []
    per = {}
    for _ in range(n):
        blk, idx, dev = sched[k % len(sched)]
        k += 1
        follow_plant(b)
        b.now += _WIRE_MS
        v = b.values
        for i in idx:
            name = NAME[i]
            if name in v:
                rd.put(i, int(round(v[name] / SCALES[i])), b.now)
        dev.ok_ms = b.now
        if parts:
            for p in parts.values():
                p.us = 0
        t = time.ticks_us()
        b.sup.step(b.now, rd)
        out.append(time.ticks_diff(time.ticks_us(), t))
        if parts:
            for name, p in parts.items():
                per.setdefault(name, []).append(p.us)
    return k, out, per


NAME = {}


def main():
    from h2p.readings import INDEX

    for name, i in INDEX.items():
        NAME[i] = name
    b = Bench()
    sched = _schedule(b)
    res = {}
    if not b.until("ready", each=follow_plant):
        raise SystemExit("no ready")
    k, xs, _ = _steps(b, sched, 0, _N)
    res["ready"] = _summary(xs)
    b.set(chg_pilot=3, chg_ev_req_a=200, chg_ev_req_v=380)  # C: the EV asks
    for _ in range(400):
        follow_plant(b)
        b.step(100)
        if b.state() == "charging":
            break
    if b.state() != "charging":
        raise SystemExit("no charging: " + b.state())
    k, xs, _ = _steps(b, sched, k, _N)
    res["charging"] = _summary(xs)
    sup = b.sup
    from h2p import supervisor as SV

    parts = {"interlocks": _Timed(sup.il, "step"), "contactor": _Timed(sup.contactor, "supervise"),
             "ev_arbiter": _Timed(sup.ev_arb, "decide"), "charging_logic": _Timed(sup, "_charging"),
             "stack_logic": _Timed(sup, "_run_stack"), "ev_claims": _Timed(sup, "_ev_claims"),
             "stack_arbiter": _Timed(sup.st_arb, "decide"), "energy": _Timed(SV.E, "step"),
             "readings_taken": _Timed(SV, "fresh"), "guard": _Timed(sup, "_guard"),
             "ev_outputs": _Timed(sup, "_ev")}
    k, xs, per = _steps(b, sched, k, _N, parts)
    res["charging_parts"] = {name: _summary(v) for name, v in per.items()}
    res["charging_wrapped"] = _summary(xs)
    # one reply decoded (the charger's first block), into scratch readings
    dev = b.devs[0]
    blk = dev.blocks[0]
    buf = bytearray(2 * blk.count)
    scratch = Readings(1000)
    ds = []
    for _ in range(50):
        t = time.ticks_us()
        dev.store(blk, buf, scratch, b.now)
        ds.append(time.ticks_diff(time.ticks_us(), t))
    res["decode_charger_block"] = _summary(ds)
    gs = []
    for _ in range(5):
        t = time.ticks_us()
        gc.collect()
        gs.append(time.ticks_diff(time.ticks_us(), t))
    res["gc_collect"] = _summary(gs)
    res["heap_alloc"] = gc.mem_alloc()
    res["state"] = b.state()

    print("CORE " + json.dumps(res))


main()
