"""The log of a run: the firmware's events (state changes, faults,
sessions) and the simulator's records (writes, injections, plant samples)
merged into one list ordered by simulated time, written as JSON lines."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from host_tools.scenario.model import Scenario

if TYPE_CHECKING:
    from host_tools.pilerun import PileRun

def merge(sc: Scenario, speed: float, pr: PileRun, sim_log: str) -> list[dict]:
    """The run's log: a "run" record, then every firmware event and simulator
    record by simulated time."""
    recs = [{"kind": "run", "t": 0.0, "wall": round(pr.epoch_ns / 1e9, 4), "scenario": sc.name,
             "path": sc.path, "speed": speed, "params": sc.plant_params(), "config": sc.config}]
    wall_off = time.time() - time.monotonic() + pr.t0  # PileRun's wall is monotonic - t0
    for e in pr.events:
        rec = {"t": e["t"], "wall": round(e["wall"] + wall_off, 4)}
        if e["kind"] == "state":
            rec.update({"kind": "state", "from": e["a"], "to": e["b"]})
        else:
            rec.update({"kind": "fw", "event": e["kind"], "a": e["a"], "b": e["b"]})
        recs.append(rec)
    try:
        with open(sim_log) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    recs[1:] = sorted(recs[1:], key=lambda r: r.get("t") or 0.0)
    return recs


def write_jsonl(records: list[dict], path: str) -> None:
    """The log as JSON lines (its directory made if missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
