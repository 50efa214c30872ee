"""Run a scenario: the simulator and the firmware (host_tools.pilerun.PileRun)
at the scenario's speed, its events injected at their time or when their
condition holds, until its duration ends or `until` has held for `settle`;
then the merged log, the verdict, and the log and plot files."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from host_tools.scenario import records as REC
from host_tools.scenario.loader import data_age_too_short
from host_tools.scenario.model import Scenario, ScenarioError
from host_tools.scenario.verdict import Result, evaluate

if TYPE_CHECKING:
    from host_tools.pilerun import PileRun


def rig_config(sc: Scenario, speed: float) -> dict:
    """The firmware configuration the run uses: the scenario's, with the
    rig's data age at `speed` where the scenario sets none (the firmware's
    default is for real time; host_tools.pilerun.min_data_age_ms)."""
    from host_tools.pilerun import rig_data_age_ms

    cfg = dict(sc.config)
    bus = dict(cfg.get("bus") or {})
    bus.setdefault("data_age_ms", rig_data_age_ms(speed))
    cfg["bus"] = bus
    return cfg


async def run(sc: Scenario, speed: float | None = None, log_path: str | None = None,
              plot_path: str | None = None, echo: Callable[[str], object] | None = None,
              firmware_build: str | None = None) -> Result:
    """Run sc; the Result holds the checks, the merged log and the plant at the end.
    RuntimeError/OSError: the run itself failed (simulator or firmware would not start,
    an event refused)."""
    from host_tools.pilerun import PileRun

    speed = float(speed or sc.speed)
    too_short = data_age_too_short(sc, speed)
    if too_short:  # a --speed faster than the scenario's own
        raise ScenarioError(sc.path, 0, f"at --speed {speed:g}: {too_short}")
    wall0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="h2pile-scn-")
    sim_log = os.path.join(tmp, "sim.jsonl")
    sample_s = sc.sample or max(0.5, sc.duration / 800.0)
    sim_args = ["--sample-s", str(sample_s)]
    for k, v in sc.plant_params().items():
        sim_args += ["--param", f"{k}={v!r}"]
    pr = PileRun(speed=speed, heap=sc.heap, config=rig_config(sc, speed), sim_args=sim_args, log_path=sim_log,
                 firmware_build=firmware_build)
    wake = asyncio.Event()
    pr.on_line = lambda line: wake.set() if line.startswith("LOG event") else None
    fired = [False] * len(sc.events)
    notes: list[str] = []
    plant: dict = {}
    until_t = None
    try:
        await pr.start()

        def now() -> float:
            return (time.time_ns() - pr.epoch_ns) / 1e9 * speed

        for ev in sc.events:
            if ev.at is not None:
                r = await pr.control({"op": "inject", "event": ev.name, "args": ev.args, "at": ev.at,
                                      "tag": f"event{ev.index + 1}"})
                if not r.get("ok"):
                    raise RuntimeError(f"event {ev.index + 1}: {r.get('error')}")
                fired[ev.index] = True
        while True:
            t = now()
            if t >= sc.duration:
                break
            if pr.fw.returncode is not None:
                notes.append(f"firmware exited with code {pr.fw.returncode}")
                break
            # Firmware events first, then a fresh plant sample: the plant is
            # never older than the events it is judged with.
            fw = _fw_context(pr, t)
            plant = await pr.plant()
            ctx = dict(plant)
            ctx.update(fw)
            for ev in sc.events:
                if not fired[ev.index] and ev.when is not None and ev.when.eval(ctx):
                    fired[ev.index] = True
                    req = {"op": "inject", "event": ev.name, "args": ev.args, "tag": f"event{ev.index + 1}"}
                    if ev.delay:
                        req["at"] = t + ev.delay
                    r = await pr.control(req)
                    if not r.get("ok"):
                        raise RuntimeError(f"event {ev.index + 1}: {r.get('error')}")
                    if echo:
                        echo(f"  t={t:9.1f}s  {ev.name} {ev.args or ''} (when {ev.when.text})")
            if sc.until is not None and until_t is None and sc.until.eval(ctx):
                until_t = t
            if until_t is not None and t >= until_t + sc.settle:
                break
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        try:
            plant = await pr.plant()
        except OSError:
            notes.append("simulator gone at the end")
        alive = pr.fw.returncode is None
    finally:
        await pr.stop()
    records = REC.merge(sc, speed, pr, sim_log)
    checks = evaluate(sc, records, plant, pr.state, alive, until_t, fired, notes)
    wall = time.monotonic() - wall0
    res = Result(sc, checks, records, plant, pr.state, wall)
    records.append({"kind": "verdict", "t": plant.get("t"), "wall": round(time.time(), 4),
                    "passed": res.passed,
                    "checks": [[ok, text] for ok, text in checks], "wall_s": round(wall, 2)})
    if log_path:
        REC.write_jsonl(records, log_path)
        res.log_path = log_path
    if plot_path:
        from host_tools import report

        report.plot(records, plot_path, title=f"{sc.name} (speed {speed:g})")
        res.plot_path = plot_path
    try:
        os.remove(sim_log)
        os.rmdir(tmp)
    except OSError:
        pass
    return res


def _fw_context(pr: PileRun, t: float) -> dict:
    # sessions: started; stops: ended. The firmware reports a session's
    # start just before its state goes ready -> charging, so "sessions >= 1
    # and state == 'ready'" can hold for that instant: "after a session"
    # is stops >= 1.
    faults_now: list = []
    sessions = stops = 0
    for e in pr.events:
        if e["kind"] == "faults":
            faults_now = [] if e["a"] == "none" else e["a"].split(",")
        elif e["kind"] == "session_start":
            sessions += 1
        elif e["kind"] == "session_stop":
            stops += 1
    return {"state": pr.state, "t": t, "faults": faults_now, "sessions": sessions, "stops": stops}

