"""`make bench`: measure the compiled firmware on the MicroPython unix port
against the simulator (wire timing on) and print each figure beside its
physical limit or goal as a ratio. Writes bench/results.json and
bench/README-figures.md. No pass/fail: timing on a shared machine is noisy.

    python -m bench.run                 # quick: a few minutes
    python -m bench.run --full          # 50 trials per hazard and baud, finer bisection
    python -m bench.run --trials 20 --only reaction,bus --bauds 115200

Section `gateway` runs `h2pile gateway` with 1,000 emulated piles against mosquitto
and an in-process OCPP 2.0.1 CSMS (bench/gateway.py, under a minute): memory per
pile, CPU per message, MQTT -> OCPP latency.

Section `picow` runs the firmware on an emulated Raspberry Pi Pico W (bench/picow.py:
32-bit heap, poll cycle, CPU busy) when a MicroPython Pico W image is available
($H2P_UF2 or ../shared/mcu/), and prints one line saying why not otherwise.
Section `core` times the control step and its parts on that board and on the
unix port (bench/core_steps.py), beside issue 16's goal. Section `loop` runs the pile
charging on that board at each baud (bench/picow_loop.py): how late charger reads go
out (housekeeping stalls) and EV stop -> contactor open, beside issue 16's goals.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time

from host_tools import ROOT
from host_tools.pilerun import HEAP

SECTIONS = ("footprint", "alloc", "simspeed", "memory", "session", "energy", "reaction", "picow", "core", "loop",
            "gateway")
HERE = os.path.join(ROOT, "bench")


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=None,
                    help="trials per hazard and baud (default 5; --full: 50)")
    ap.add_argument("--full", action="store_true",
                    help="50 trials, heap bisection to 4 KB, longer bus windows, higher pile speeds")
    ap.add_argument("--bauds", default="9600,19200,115200", help="comma-separated baud rates")
    ap.add_argument("--kinds", default="ev_stop,ev_unplug,estop,h2_trip,stack_overtemp",
                    help="hazards for the reaction trials")
    ap.add_argument("--only", default="", help="comma-separated sections: " + ", ".join(SECTIONS) +
                    " (bus use and jitter are measured with 'reaction')")
    ap.add_argument("--heap", default="256K", help="-X heapsize for the timing runs (default 256K)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--figures", default=os.path.join(HERE, "README-figures.md"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serial", action="store_true",
                    help="run the bauds one after another (default: side by side, one pile each; the "
                         "piles at speed 1 mostly wait on the simulated wire)")
    a = ap.parse_args(argv)
    if a.trials is None:
        a.trials = 50 if a.full else 5
    if a.trials < 1:
        ap.error(f"--trials must be >= 1 (got {a.trials})")
    try:
        a.bauds = [int(x) for x in a.bauds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--bauds must be numbers separated by commas (got {a.bauds!r})")
    from h2p.config import BUS

    for b in a.bauds:
        if BUS["baud"][2](b):
            ap.error(f"--bauds: {b} is not a baud the firmware supports (9600, 19200, 38400, 57600, 115200)")
    from bench.reaction import KINDS

    a.kinds = [k for k in a.kinds.split(",") if k.strip()]
    for k in a.kinds:
        if k not in KINDS:
            ap.error(f"--kinds: unknown hazard {k!r} (known: {', '.join(KINDS)})")
    a.only = [s for s in a.only.split(",") if s.strip()] or list(SECTIONS)
    for s in a.only:
        if s not in SECTIONS:
            ap.error(f"--only: unknown section {s!r} (known: {', '.join(SECTIONS)})")
    return a


def say(*x):
    print(*x, flush=True)


def _r(x, nd=2):
    return None if x is None else round(x, nd)


# ---- the table ------------------------------------------------------------
def rows_from(res: dict) -> list[tuple]:
    """(section, figure, measured, limit/goal, ratio, note)"""
    rows = []
    for key, r in res.get("reaction", {}).items():
        raw, md = r["raw_ms"], r["minus_debounce_ms"]
        if not raw["n"]:
            rows.append(("reaction", key, "no corrective write seen", "", "", f"missed {r['missed']}"))
            continue
        b = r["bound_ms"]
        ratio = md["max"] / b
        goal = f"bound {b:.1f} ms, goal <= 2x"
        note = f"raw p50/p99/max {raw['p50']:.1f}/{raw['p99']:.1f}/{raw['max']:.1f}; debounce {r['debounce_ms']} ms"
        if r["baud"] == 115200:
            goal += "; <= 100 ms"
            note += f"; raw max/100 ms = {raw['max'] / 100:.2f}"
        rows.append(("reaction", f"{r['kind']} -> {r['fix']} @{r['baud']} (n={raw['n']})",
                     f"{md['p50']:.1f}/{md['p99']:.1f}/{md['max']:.1f} ms", goal, f"{ratio:.2f}x", note))
    for baud, b in res.get("bus", {}).items():
        if "cycle_ms" not in b:
            continue
        rows.append(("bus", f"poll cycle @{baud}", f"{b['cycle_ms']:.1f} ms",
                     f"reads {b['reads_wire_turnaround_ms']:.1f} ms (wire+2 ms turnaround); goal <= 1.25",
                     f"{b['ratio_wire_turnaround']:.2f}x",
                     f"vs wire only {b['reads_wire_ms']:.1f} ms: {b['ratio_wire']:.2f}x; "
                     f"{b['writes_per_cycle']} writes/cycle; bus busy {b['bus_busy_fraction'] * 100:.0f} %"))
        sl = b["step_lateness_ms"]
        rows.append(("jitter", f"control step lateness @{baud}", f"p99 {sl['p99']:.1f} / max {sl['max']:.1f} ms",
                     f"one charger read {b['charger_read_ms']:.1f} ms", f"{sl['p99'] / b['charger_read_ms']:.2f}x",
                     f"p50 {sl['p50']:.1f} ms; includes the master's {b['master_gap_ms']} ms inter-frame wait; "
                     "MQTT on"))
        cl = b.get("charger_read_late_ms")
        if cl and cl.get("n"):
            cg = b["charger_turn_ms"]
            rows.append(("jitter", f"charger read delay @{baud} (unix port, p50 / p99 / max)",
                         f"{cl['p50']:.1f} / {cl['p99']:.1f} / {cl['max']:.1f} ms", "<= 5 ms", f"{cl['max'] / 5:.2f}x",
                         f"beyond the schedule's own work (bench.picow_loop); turn (charger to charger) "
                         f"p50 {cg['p50']:.1f} / max {cg['max']:.1f} ms"))
    m = res.get("memory", {})
    if m:
        s = m.get("session_96k", {})
        pk = m.get("peak_session", {})
        if pk.get("peak_alloc"):
            rows.append(("memory", f"peak heap in use, full session at {pk['heap']}",
                         f"{pk['peak_alloc'] / 1024:.1f} KB", "<= 48 KB", f"{pk['peak_alloc'] / 1024 / 48:.2f}x",
                         "96K: " + ("completes" if s.get("completed") else f"fails ({s.get('reason')})")
                         + f"; the budget ({HEAP}): " + ("completes" if m.get("session_budget", {}).get("completed")
                                                         else "fails")))
        for key, what in (("no_mqtt", "without MQTT"), ("code_in_heap", "bytecode loaded into the heap")):
            v = m.get(key, {})
            if v.get("peak_alloc"):
                rows.append(("memory", f"peak heap in use, {what}", f"{v['peak_alloc'] / 1024:.1f} KB", "",
                             "", "for comparison"))
        sm = m.get("smallest")
        if sm:
            k = sm.get("smallest_k")
            rows.append(("memory", "smallest heap for a full session", f"{k} KB" if k else sm.get("note"),
                         "64 KB", f"{k / 64:.2f}x" if k else "", f"bisection, {sm.get('resolution_k', '?')} KB steps"))
    a = res.get("alloc", {})
    if "step_bytes_max" in a:
        rows.append(("memory", "bytes allocated per control step (charging)", f"{a['step_bytes_max']} B max",
                     "0 B", "-" if a["step_bytes_max"] == 0 else "over",
                     f"mean {a['step_bytes_mean']:.0f} B over {a['n']} steps, state {a['state']}"))
        worst = sorted(a["store_bytes"].items(), key=lambda kv: -kv[1])[:2]
        rows.append(("memory", "bytes allocated per poll cycle (decode + steps)", f"{a['cycle_bytes_mean']:.0f} B",
                     "0 B", "over" if a["cycle_bytes_mean"] else "-",
                     "Device.store per read: " + ", ".join(f"{k} {v} B" for k, v in worst)))
    if "picow" in res:
        from bench import picow

        unix = {}
        pk = res.get("memory", {}).get("peak_session", {})
        if pk.get("peak_alloc"):
            unix["peak_alloc"] = pk["peak_alloc"]
        ch = res.get("memory", {}).get("code_in_heap", {})
        if ch.get("peak_alloc"):
            unix["peak_alloc_code_in_heap"] = ch["peak_alloc"]
        b = res.get("bus", {}).get("115200", {})
        if "cycle_ms" in b:
            unix["cycle_ms"] = b["cycle_ms"]
        rows += picow.rows(res["picow"], unix)
    if "core" in res:
        from bench import core_steps

        rows += core_steps.rows(res["core"])
    if "loop" in res:
        from bench import picow_loop

        rows += picow_loop.rows(res["loop"], res.get("bus"))
    if "gateway" in res:
        from bench import gateway

        rows += gateway.rows(res["gateway"])
    sp = res.get("simspeed", {})
    if sp:
        rows.append(("sim speed", "simulator alone (scripted controller)", f"{sp['sim_per_wall']:.0f}x",
                     ">= 200x", f"{sp['sim_per_wall'] / 200:.2f}x",
                     f"{sp['sim_s']:.0f} s simulated cold start to off in {sp['wall_s']:.2f} s"))
    for ps in res.get("session", {}).get("runs", []):
        ok = ps.get("reached_off") and not ps.get("faults_after_selftest")
        rows.append(("sim speed", f"whole pile at speed {ps['speed']:g}", f"{ps.get('sim_per_wall', 0):.0f}x",
                     ">= 200x", f"{ps.get('sim_per_wall', 0) / 200:.2f}x",
                     ("cold start to off, no faults" + (f", {ps['replugs']} re-plug(s) after early stops {ps.get('early_stops')}" if ps.get("replugs") else "") if ok else f"did not get through: stage {ps.get('stage')}, "
                      f"faults {ps.get('faults_after_selftest')}") + f", {ps.get('wall_s')} s wall"))
    fu = res.get("fuel", {})
    if fu.get("l_per_kwh"):
        bp = fu["best_point"]["l_per_kwh"]
        rows.append(("fuel", "premix per kWh to the EV, 30 kWh session + warm-up", f"{fu['l_per_kwh']:.3f} L/kWh",
                     f"best point {bp:.3f} L/kWh", f"{fu['l_per_kwh'] / bp:.2f}x",
                     f"battery gave {fu['battery_kwh']:.1f} kWh of {fu['delivered_kwh']:.1f}"))
        if fu.get("l_per_kwh_fuel_share"):
            rows.append(("fuel", "premix per kWh the premix paid for (battery share out)",
                         f"{fu['l_per_kwh_fuel_share']:.3f} L/kWh", f"best point {bp:.3f} L/kWh",
                         f"{fu['l_per_kwh_fuel_share'] / bp:.2f}x",
                         f"{fu['from_fuel_kwh']:.2f} kWh from premix, warm-up included"))
    rows += energy_rows(res.get("energy", {}))
    for board, f in res.get("footprint", {}).items():
        rows.append(("footprint", f"compiled firmware, {board}", f"{f['mpy_bytes'] / 1024:.1f} KB",
                     "-", "-", f"{f['modules']} .mpy + main.py {f['main_py_bytes']} B; largest "
                     f"{f['largest'][0][0]} {f['largest'][0][1]} B"))
    return rows


def energy_rows(en: dict) -> list[tuple]:
    """Issue 17's goals: the day, the dispatch estimate, the ramp at speed 1."""
    rows = []
    d = en.get("day")
    if d and d.get("l_per_kwh"):
        rows.append(("energy", f"premix per kWh delivered, simulated day ({len(d['sessions'])} sessions, "
                     "cold start, warm-up included)", f"{d['l_per_kwh']:.3f} L/kWh", f"<= {d['goal_l_per_kwh']} L/kWh",
                     f"{d['l_per_kwh'] / d['goal_l_per_kwh']:.2f}x",
                     f"{d['delivered_kwh']:.0f} kWh, {d['premix_l']:.0f} L in {d['sim_h']:.0f} h simulated "
                     f"({d['wall_s']:.0f} s wall); warm-up {d['warm_up_l']:.2f} L"))
        rows.append(("energy", "battery SOC when the day ends", f"{d['bat_soc_end']:.1f} %",
                     f">= target {d['bat_soc_target']:.0f} %", f"{d['bat_soc_end'] / d['bat_soc_target']:.2f}x",
                     "the pile cooled down on its own: " + ("yes" if d.get("cooled") else "NO")))
        if d.get("bed_c_fed"):
            lo, hi = d["bed_c_fed"]
            dev = max(abs(lo - d["bed_setpoint_c"]), abs(hi - d["bed_setpoint_c"]))
            rows.append(("energy", "reformer bed while fed, furthest from its setpoint", f"{dev:.1f} K",
                         f"<= {d['goal_bed_k']:.0f} K", f"{dev / d['goal_bed_k']:.2f}x",
                         f"{lo:.1f}-{hi:.1f} degC (setpoint {d['bed_setpoint_c']:.0f}); burner fired "
                         f"{d['burner_l']:.2f} L of the day's premix"))
        ue = d.get("until_empty") or {}
        if ue.get("error") is not None:
            rows.append(("energy", "deliver_kwh against a run until empty", f"{ue['error'] * 100:+.1f} %",
                         f"within {ue['goal_error'] * 100:.0f} %", f"{abs(ue['error']) / ue['goal_error']:.2f}x",
                         f"estimated {ue['estimate_kwh']:.1f} kWh, delivered {ue['delivered_kwh']:.1f} kWh"))
    r = en.get("ramp_speed1")
    if r and r.get("up") is not None:
        err = max(abs(r["up"] / r["want_up"] - 1), abs(r["down"] / r["want_down"] - 1))
        rows.append(("energy", "stack ramp-rate error at speed 1 (up, down)", f"{err * 100:.1f} %", "<= 10 %",
                     f"{err / 0.10:.2f}x", f"up {r['up']:.3f} A/s of {r['want_up']:.3f}, down {r['down']:.3f} of "
                     f"{r['want_down']:.3f} (firmware on the unix port, real time)"))
    return rows


def table(rows) -> str:
    hdr = ("section", "figure", "measured", "limit / goal", "ratio")
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(5)]
    out = ["  ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr)),
           "  ".join("-" * w[i] for i in range(5))]
    for r in rows:
        out.append("  ".join(str(r[i]).ljust(w[i]) for i in range(5)))
        if r[5]:
            out.append(" " * (w[0] + 2) + "  " + r[5])
    return "\n".join(out)


def markdown(rows, meta) -> str:
    out = ["<!-- written by `python -m bench.run`; paste into the README -->",
           f"Latest figures ({meta['date']}, `{meta['command']}`, {meta['wall_s']:.0f} s; "
           f"{meta['machine']}; load average before/after {meta['load_before']} / {meta['load_after']}; "
           "timing is noisy on a shared machine). Reaction: simulated ms from the hazard at the device "
           "to the corrective write, minus the interlock's debounce, p50/p99/max.", "",
           "| figure | measured | limit / goal | ratio |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r[1]} | {r[2]} | {r[3]} | {r[4]} |")
    return "\n".join(out) + "\n"


# ---- running ---------------------------------------------------------------
async def amain(a) -> dict:
    res: dict = {}
    from bench import footprint, memory, reaction, session
    from bench.pile import firmware_build

    firmware_build()
    if "footprint" in a.only:
        say("footprint: building every board ...")
        res["footprint"] = footprint.measure()
    if "alloc" in a.only:
        say("memory: bytes allocated per control step (MicroPython, compiled core) ...")
        res["alloc"] = memory.alloc_per_cycle(1000 if a.full else 200)
        say("  ", {k: v for k, v in res["alloc"].items() if k != "store_bytes"})
    if "simspeed" in a.only:
        say("sim speed: simulator alone, scripted controller, cold start to off ...")
        res["simspeed"] = session.scripted_session()
        say("  ", res["simspeed"])
    if "memory" in a.only:
        say(f"memory: a full short session (speed 20, MQTT on) at the budget ({HEAP}) and at 96K, then the smallest heap ...")
        m = {"session_budget": await memory.session(HEAP), "session_96k": await memory.session("96K")}
        say("   96K:", "completes" if m["session_96k"]["completed"] else m["session_96k"]["reason"],
            "peak", m["session_96k"]["peak_alloc"])
        if m["session_96k"]["completed"]:
            m["peak_session"] = m["session_96k"]
        else:
            m["peak_session"] = await memory.session("256K")
            say("  256K: peak in use", m["peak_session"]["peak_alloc"])
        # Nothing smaller than the live data can work: start the bisection there.
        step = 4 if a.full else 8
        lo = max(32, int(m["peak_session"]["peak_alloc"] / 1024) // step * step)
        m["smallest"] = await memory.smallest_heap(lo, 256, step, log=say)
        # For comparison: the pile without MQTT, and with its code in the heap.
        m["no_mqtt"] = await memory.session("256K", mqtt=False)
        m["code_in_heap"] = await memory.session("512K", rom=False)
        say("   without MQTT: peak", m["no_mqtt"]["peak_alloc"], "; code in the heap: peak",
            m["code_in_heap"]["peak_alloc"])
        for v in (m["session_budget"], m["session_96k"], m["peak_session"], m["no_mqtt"], m["code_in_heap"]):
            v.pop("tail", None) if v.get("completed") else None
        res["memory"] = m
    if "session" in a.only:
        speeds = (200, 400, 800) if a.full else (200,)
        runs = []
        for sp in speeds:
            say(f"sim speed + fuel: whole pile, cold start to off at speed {sp} ...")
            ps = await session.pile_session(speed=sp, heap=a.heap)
            say("  ", {k: v for k, v in ps.items() if k not in ("error", "fw_events")})
            runs.append(ps)
            if not ps.get("reached_off"):
                break
        res["session"] = {"runs": runs}
        first = runs[0]
        fu = session.fuel_figures(first)
        fu["best_point"] = session.best_point()
        fu["delivered_kwh"] = first.get("delivered_kwh")
        fu["premix_l"] = first.get("premix_l")
        res["fuel"] = fu
    if "energy" in a.only:
        from bench import day

        say("energy: a simulated day (8 sessions, cold start; the core against the plant), then run until empty ...")
        d, _cs = await asyncio.to_thread(day.day, a.seed, 0, say)
        d["until_empty"] = await asyncio.to_thread(day.until_empty, _cs, say)
        _cs = None
        say("  ", {k: v for k, v in d.items() if k not in ("sessions", "plan_kwh_gap_min")})
        say("energy: the stack's ramp at speed 1 (firmware on the unix port against the simulator, ~40 s) ...")
        import tempfile

        from tests.system import test_rates_realtime as rr

        up, _upp, down, _dp, _st = await asyncio.to_thread(rr.measure, 1.0, tempfile.mkdtemp(prefix="h2pile-rate-"))
        res["energy"] = {"day": d, "ramp_speed1": {"up": up, "down": down, "want_up": rr.RATED_A * rr.UP,
                                                    "want_down": -rr.RATED_A * rr.DOWN}}
        say("   ramp at speed 1:", res["energy"]["ramp_speed1"])
    if "reaction" in a.only:
        res["reaction"], res["bus"] = {}, {}
        from bench.wire import Layout

        lay = Layout()

        async def one(baud):
            say(f"reaction: {a.trials} trials of {', '.join(a.kinds)} at {baud} baud (speed 1, warm, MQTT on) ...")
            out, bus, wall = await reaction.run_baud(baud, a.kinds, a.trials, seed=a.seed, log=say, heap=a.heap,
                                                     window_s=10.0 if a.full else 4.0)
            bus["charger_read_ms"] = round(lay.read_s(baud, lay.dev["charger"].blocks[0].count) * 1000, 2)
            bus["wall_s"] = round(wall, 1)
            say(f"   {baud} done ({wall:.0f} s)")
            return baud, out, bus

        if a.serial:
            done = [await one(b) for b in a.bauds]
        else:
            done = await asyncio.gather(*(one(b) for b in a.bauds))
        for baud, out, bus in done:
            res["reaction"].update(out)
            res["bus"][str(baud)] = bus
        res["reaction_parallel"] = not a.serial
    if "picow" in a.only:
        from bench import picow
        from host_tools.emu.uf2 import NoImage

        try:
            res["picow"] = await asyncio.to_thread(picow.measure, 12.0 if a.full else 6.0, None, say)
            say("  ", {k: v for k, v in res["picow"].items() if k != "bridge"})
        except NoImage as e:
            res["picow"] = {"skipped": str(e)}
            say(f"picow: skipped: {e}")
    if "core" in a.only:
        from bench import core_steps
        from host_tools.emu.uf2 import NoImage

        say("core: the control step and its parts, unix port and emulated Pico W ...")
        res["core"] = {"unix": await asyncio.to_thread(core_steps.unix)}
        try:
            res["core"]["picow"] = await asyncio.to_thread(core_steps.picow, None, say)
        except NoImage as e:
            res["core"]["picow"] = {"skipped": str(e)}
    if "loop" in a.only:
        from bench import picow_loop
        from host_tools.emu.uf2 import NoImage

        res["loop"] = {}
        for baud in sorted(a.bauds, reverse=True):
            say(f"loop: the pile charging on the emulated Pico W at {baud} Bd: charger read delays, EV stops ...")
            try:
                res["loop"][str(baud)] = await asyncio.to_thread(picow_loop.run, baud, 6 if a.full else 3,
                                                                 8.0 if a.full else 4.0, None, a.seed, say)
            except NoImage as e:
                res["loop"][str(baud)] = {"skipped": str(e)}
                break
            except Exception as e:  # the other bauds' and sections' figures still count
                res["loop"][str(baud)] = {"error": f"{type(e).__name__}: {e}"[:300]}
    if "gateway" in a.only:
        from bench import gateway

        say("gateway: h2pile gateway, 1,000 emulated piles, mosquitto, an in-process OCPP 2.0.1 CSMS ...")
        try:
            res["gateway"] = await gateway.measure(1000, 30.0 if a.full else 20.0, log=say)
        except Exception as e:  # the other sections' figures still count
            res["gateway"] = {"error": f"{type(e).__name__}: {e}"}
        say("  ", res["gateway"])
    return res


def loadavg():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv=None) -> int:
    a = parse(argv)
    t0 = time.monotonic()
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "make bench" if not argv and len(sys.argv) <= 1 else
            "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
            "load_before": loadavg(), "trials": a.trials, "bauds": a.bauds, "heap_timing": a.heap}
    from bench.pile import cleanup

    try:
        res = asyncio.run(amain(a))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a broken run says what broke, not a traceback wall
        import traceback

        tb = traceback.format_exc().strip().splitlines()
        print(f"bench: failed: {type(e).__name__}: {e}\n  " + "\n  ".join(tb[-6:]), file=sys.stderr)
        return 1
    finally:
        cleanup()
    meta["wall_s"] = time.monotonic() - t0
    meta["load_after"] = loadavg()
    res["meta"] = meta
    rows = rows_from(res)
    say("")
    say(table(rows))
    say(f"\n{meta['wall_s']:.0f} s wall; load average before {meta['load_before']}, after {meta['load_after']}")
    if a.out:
        prev = {}
        if set(a.only) != set(SECTIONS) and os.path.exists(a.out):
            try:
                with open(a.out) as f:
                    prev = json.load(f)
            except (OSError, ValueError):
                prev = {}
        prev.update(res)
        with open(a.out, "w") as f:
            json.dump(prev, f, indent=1)
        say(f"wrote {os.path.relpath(a.out)}")
        if a.figures:
            with open(a.figures, "w") as f:
                f.write(markdown(rows_from(prev), dict(prev.get("meta", {}), **meta)))
            say(f"wrote {os.path.relpath(a.figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
