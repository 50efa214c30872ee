"""1. Fault reaction: hazard at the device -> corrective command on the wire.

One running pile per baud (speed 1, warm start), many trials on it: bring
the pile to `charging` with current flowing, wait a random fraction of a
second (so the hazard falls anywhere in the poll cycle), make the hazard
appear at once at the device (bench.simhost's `bench_hazard`: the log's
`inject` record is that instant), find the first write in the simulator's
log that fixes it, clear, recover. EV events recover by a new plug-in;
latched faults (E-stop, H2, stack over-temperature) need a technician's
reset, done here as a firmware reboot on the same simulator.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench import stats
from bench.pile import QUICK_CONFIG, QUICK_PLANT, WARM, BenchPile
from bench.wire import TURNAROUND_S, Layout


# kind: (hazard op, reading that shows it, device whose write fixes it,
#        {fix name: [(cmd, value), ...]}, debounce ms, latched)
def _debounce(name):
    from h2p import interlocks as IL

    return IL.TABLE[IL.ROW[name]][4]


KINDS = {
    "ev_stop": ("ev_stop", "chg_pilot", "charger", {"chg_contactor=0": [("chg_contactor", 0)]}, 0, False),
    "ev_unplug": ("ev_unplug", "chg_pilot", "charger", {"chg_contactor=0": [("chg_contactor", 0)]}, 0, False),
    "h2_trip": ("h2", "sio_h2_lel", "charger",
                {"chg_contactor=0": [("chg_contactor", 0)], "ref_mode_cmd=0": [("ref_mode_cmd", 0)]},
                "h2_trip", True),
    "estop": ("estop", "sio_status", "charger", {"chg_contactor=0": [("chg_contactor", 0)]}, "estop_chain", True),
    "stack_overtemp": ("stack_overtemp", "fc_stack_c", "fuelcell",
                       {"fc_enable=0|fc_current_sp=0": [("fc_enable", 0), ("fc_current_sp", 0)]},
                       "stack_overtemp", True),
}
FIX_DEV = {"chg_contactor=0": "charger", "ref_mode_cmd=0": "reformer", "fc_enable=0|fc_current_sp=0": "fuelcell"}


class TrialError(Exception):
    pass


async def _plant(pr):
    return (await pr.request({"op": "status"}))["status"]


async def _to_charging(pr, timeout=40.0):
    """Bring the pile to charging with current flowing. A session the
    firmware ends with the EV still asking (seen: insulation_timeout) is
    retried with a new plug-in and counted in pr.retries."""
    end = time.monotonic() + timeout
    asking_ready = None
    while time.monotonic() < end:
        if pr.fw.returncode is not None:
            raise TrialError("firmware exited:\n" + pr.tail())
        st = await _plant(pr)
        if pr.state == "charging" and st["contactor"] and st["ev_a"] > 5:
            return st
        if not st["ev_present"] and pr.state == "ready":
            await pr.inject("ev_plug", soc=30, kwh=60, target=90)
            asking_ready = None
        elif st["ev_present"] and pr.state == "ready":
            if not st["ev_asking"]:
                await pr.inject("ev_unplug")  # a fresh plug-in starts the next session
                await asyncio.sleep(0.15)
            elif asking_ready is None:
                asking_ready = time.monotonic()
            elif time.monotonic() - asking_ready > 1.0:
                stops = [e["b"] for e in pr.events if e["kind"] == "session_stop"]
                pr.retries.append(stops[-1] if stops else "no session")
                await pr.inject("ev_unplug")
                await asyncio.sleep(0.15)
                asking_ready = None
        else:
            asking_ready = None
        await asyncio.sleep(0.05)
    raise TrialError(f"no charging within {timeout:.0f} s (state {pr.state}):\n" + pr.tail())


def _first_fix(records, t0, fixes):
    for r in records:
        if r.get("kind") == "write" and r["t"] >= t0 and (r["cmd"], r["value"]) in fixes:
            return r
    return None


async def trial(pr, kind, rng):
    op, _reading, _dev, fixes, _deb, latched = KINDS[kind]
    await _to_charging(pr)
    await asyncio.sleep(rng.uniform(0.3, 0.8))
    pr.read_log()
    base = len(pr.records)
    r = await pr.request({"op": "bench_hazard", "kind": op})
    if not r.get("ok"):
        raise TrialError(str(r))
    t0 = r["t"]
    got: dict = {}
    end = time.monotonic() + 5.0
    while time.monotonic() < end and len(got) < len(fixes):
        await asyncio.sleep(0.02)
        pr.read_log()
        recs = pr.records[base:]
        for name, pairs in fixes.items():
            if name not in got:
                w = _first_fix(recs, t0, {(c, float(v)) for c, v in pairs} | set(pairs))
                if w:
                    got[name] = (w["t"] - t0) * 1000.0
    del pr.records[:]  # keep memory flat over many trials
    # Recover.
    if latched:
        await pr.request({"op": "bench_recover"})
        await pr.restart_firmware()
        if not await pr.wait_for(lambda: pr.state in ("ready", "charging"), 60):
            raise TrialError("not ready after reboot:\n" + pr.tail())
    elif kind == "ev_stop":
        await pr.wait_for(lambda: pr.state == "ready", 10)
    return got


async def run_baud(baud, kinds, trials, seed=1, log=print, heap="256K", mqtt=True, window_s=4.0):
    """Reaction trials at one baud, then bus use and jitter in steady
    charging on the same pile. Returns (reaction dict, bus dict, wall s)."""
    from bench import busjitter

    lay = Layout(dict(QUICK_CONFIG, auto_start=True, auto_charge=True))
    rng = random.Random(seed + baud)
    params = dict(WARM)
    params.update(QUICK_PLANT)
    pr = BenchPile(speed=1.0, baud=baud, params=params, config=dict(QUICK_CONFIG, auto_charge=True), heap=heap,
                   mqtt=mqtt)
    pr.retries = []
    out = {}
    t_wall = time.monotonic()
    try:
        await pr.start()
        if not await pr.wait_state("ready", 90):
            raise TrialError("pile never ready:\n" + pr.tail())
        for kind in kinds:
            op, reading, _dev, fixes, deb, _l = KINDS[kind]
            deb_ms = _debounce(deb) if isinstance(deb, str) else deb
            vals: dict = {name: [] for name in fixes}
            missed = 0
            for _ in range(trials):
                got = await trial(pr, kind, rng)
                for name in fixes:
                    if name in got:
                        vals[name].append(got[name])
                    else:
                        missed += 1
            for name, xs in vals.items():
                wdev = FIX_DEV[name]
                bound = lay.reaction_bound_s(baud, reading, wdev) * 1000
                bound_ta = lay.reaction_bound_s(baud, reading, wdev, TURNAROUND_S) * 1000
                s = stats.summary(xs)
                out[f"{kind} -> {name} @{baud}"] = {
                    "kind": kind, "fix": name, "baud": baud, "n": len(xs), "missed": missed,
                    "debounce_ms": deb_ms, "raw_ms": s, "minus_debounce_ms": stats.summary([x - deb_ms for x in xs]),
                    "bound_ms": round(bound, 2), "bound_turnaround_ms": round(bound_ta, 2),
                    "samples_ms": [round(x, 2) for x in xs],
                }
                log(f"  {baud:>6} {kind:>15} -> {name:<28} n={len(xs):>3} "
                    f"p50 {s['p50']:7.1f}  max {s['max']:7.1f} ms  (debounce {deb_ms}, bound {bound:.1f})")
        await _to_charging(pr)
        await asyncio.sleep(1.0)
        bus = await busjitter.measure(pr, lay, baud, window_s)
        bus["mqtt"] = mqtt
        bus["session_retries"] = list(pr.retries)
        if pr.retries:
            log(f"  {baud:>6} sessions the firmware ended early with the EV asking: {pr.retries}")
        log(f"  {baud:>6} poll cycle {bus.get('cycle_ms')} ms vs reads {bus.get('reads_wire_ms')} ms wire "
            f"({bus.get('reads_wire_turnaround_ms')} with turnaround); step lateness "
            f"{bus.get('step_lateness_ms')}")
    finally:
        await pr.stop()
    return out, bus, time.monotonic() - t_wall
