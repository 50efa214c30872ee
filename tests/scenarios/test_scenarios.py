"""Every scenario under tests/scenarios/ run headless: the simulator and the
firmware on the MicroPython unix port (host_tools.pilerun.PileRun).

The scenarios run concurrently (two at a time) in one module fixture, on one
xdist worker (make test uses --dist loadfile); each test
then reads its scenario's result. A scenario with `xfail = "..."` documents
a firmware misbehaviour it exposes: it is marked xfail (not strict).
"""

import asyncio
import glob
import os

import pytest

from host_tools.scenario.loader import load
from host_tools.scenario.runner import run
from host_tools.scenario.verdict import latency_ms

pytestmark = [pytest.mark.micropython]


HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = sorted(glob.glob(os.path.join(HERE, "*.toml")))
# Two at a time: each is a simulator plus a MicroPython process, and the CI
# machine has two cores; more makes timing-sensitive scenarios flaky.
CONCURRENCY = int(os.environ.get("H2P_SCENARIO_JOBS", "2"))


def _param(path):
    sc = load(path)
    marks = [pytest.mark.xfail(strict=False, reason=sc.xfail)] if sc.xfail else []
    return pytest.param(path, id=sc.name, marks=marks)


def _wall_bound(sc):
    return sc.duration / sc.speed


@pytest.fixture(scope="module")
def results(tmp_path_factory, fw_build):
    out_dir = tmp_path_factory.mktemp("scenarios")
    fw = fw_build

    async def main():
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(path):
            sc = load(path)
            async with sem:
                try:
                    return path, await run(sc, log_path=str(out_dir / (sc.name + ".jsonl")), firmware_build=fw)
                except Exception as e:  # reported by the scenario's own test
                    return path, e

        # Longest first (at most its duration in wall seconds): the two
        # speed-1 latency runs and the 45-minute cold start no longer start
        # last and run alone at the end.
        order = sorted(PATHS, key=lambda p: -_wall_bound(load(p)))
        return dict(await asyncio.gather(*(one(p) for p in order)))

    return asyncio.run(main())


@pytest.mark.parametrize("path", [_param(p) for p in PATHS])
def test_scenario(results, path):
    res = results[path]
    if isinstance(res, Exception):
        raise res
    failed = [text for ok, text in res.checks if not ok]
    assert not failed, f"{res.scenario.name} (log {res.log_path}): " + "; ".join(failed)


def test_every_fault_event_has_a_scenario():
    from sim import faults

    used = set()
    for p in PATHS:
        used.update(ev.name for ev in load(p).events)
    missing = set(faults.EVENTS) - used
    assert not missing, f"events without a scenario: {sorted(missing)}"


def test_ev_stop_latency_is_measured_from_the_log(results):
    # C->B (injected ev_stop) to the firmware's chg_contactor=0 write, in
    # simulated ms, from the run's JSON-lines log (inject and write records
    # share the simulator's clock). IEC 61851 wants <= 100 ms; the scenario
    # checks that (xfail while the firmware misses it); here: it is measured,
    # positive, and within one slow poll cycle.
    res = results[os.path.join(HERE, "ev_stop_latency.toml")]
    assert not isinstance(res, Exception), res
    ms = res.latency_ms("ev_stop", "chg_contactor", 0)
    assert ms is not None, "no chg_contactor=0 write after ev_stop"
    print(f"ev_stop -> chg_contactor=0: {ms:.1f} ms simulated")
    assert 0 < ms < 400
    # The same figure from the log file on disk.
    from host_tools.report import read_log

    recs = read_log(res.log_path)
    assert latency_ms(recs, "ev_stop", "chg_contactor", 0) == pytest.approx(ms)
    kinds = {r["kind"] for r in recs}
    assert {"run", "state", "write", "inject", "sample", "verdict"} <= kinds
    state = next(r for r in recs if r["kind"] == "state")
    assert isinstance(state["t"], float) and state["wall"] > 1e9  # simulated and wall time
