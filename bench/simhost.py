"""The simulator as `python -m sim` runs it, plus two bench-only control ops.

`python -m bench.simhost` takes the same arguments as `python -m sim`. The
physics, the wire timing and the standard control ops are sim's own; this
wrapper only adds (in its own process, sim/ is not changed):

  {"op": "bench_hazard", "kind": "h2" | "stack_overtemp" | "estop" | ...}
      make a hazard appear *at once* at the device and log an `inject`
      record with that instant: h2 sets the H2 reading to 30 % LEL (trip is
      25), stack_overtemp sets the stack to 196 degC with the oil cooler
      failed (trip is 195). Standard events (ev_stop, ev_unplug, estop)
      are passed to sim.faults unchanged.
  {"op": "bench_recover", "stack_c": 165}
      after a trial: clear every injected fault, zero the H2 reading, put
      the stack back at its operating temperature.
  {"op": "bench_requests", "since": k}
      the request log: [seq, wall_s, sim_s, unit, fc, count, is_write,
      delay_s] for every Modbus request the simulator served, from seq k
      (a ring of the last 20000).

The request log times each request when pymodbus hands it to the device
(after decoding), and delay_s is the wire time + turnaround the simulator
waits before replying.
"""

from __future__ import annotations

import collections
import sys
import time

from sim import __main__ as sim_main
from sim import control, faults, server
from sim.server import PileSim, wire_time_s

_ORIG_HANDLE = control.handle_request
_RING = 20000


class BenchSim(PileSim):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reqlog = collections.deque(maxlen=_RING)
        self.seq = 0

    async def _action(self, dev, dev_fields, fc, start, address, count, regs, values):
        wall = time.monotonic()
        if values is None:
            req, reply = 8, 5 + 2 * count
        else:
            reply = 8
            req = 8 if fc == 6 else 9 + 2 * len(values)
        delay = (wire_time_s(self.baud, req, reply) + self.turnaround_s) if self.wire_timing else 0.0
        self.reqlog.append((self.seq, round(wall, 6), round(self.now(), 6), self.units[dev], fc,
                            count if values is None else len(values), values is not None,
                            round(delay / self.speed, 7)))
        self.seq += 1
        return await super()._action(dev, dev_fields, fc, start, address, count, regs, values)


def _hazard(sim, kind):
    p = sim.plant
    sim.advance()
    if kind == "h2":
        p.h2_target = 30.0
        p.h2_rate = 1000.0
        p.h2_lel = 30.0
    elif kind == "stack_overtemp":
        p.stack.temp = 196.0
        p.stack.overheat = 3000.0  # cooler failed, slow further rise
    else:
        faults.apply(sim, kind, {})
    rec = {"kind": "inject", "t": round(sim.now(), 4), "event": kind, "args": {}, "tag": "bench"}
    sim.log(rec)
    return rec


def handle_request(sim, line, on_event=None):
    import json

    try:
        req = json.loads(line)
    except ValueError:
        return _ORIG_HANDLE(sim, line, on_event)
    op = req.get("op") if isinstance(req, dict) else None
    if op == "bench_hazard":
        kind = req.get("kind")
        if kind not in ("h2", "stack_overtemp") and kind not in faults.EVENTS:
            return {"ok": False, "error": f"unknown hazard {kind!r}"}
        return {"ok": True, "t": _hazard(sim, kind)["t"]}
    if op == "bench_recover":
        faults.apply(sim, "clear", {"fault": "all"})
        p = sim.plant
        p.h2_lel = 0.0
        p.stack.temp = float(req.get("stack_c", 165.0))
        p.stack.overheat = 0.0
        return {"ok": True, "t": sim.now()}
    if op == "bench_requests":
        since = int(req.get("since", 0))
        rows = [r for r in getattr(sim, "reqlog", ()) if r[0] >= since]
        return {"ok": True, "rows": rows, "next": getattr(sim, "seq", 0), "baud": sim.baud,
                "speed": sim.speed}
    return _ORIG_HANDLE(sim, line, on_event)


def main(argv=None) -> int:
    control.handle_request = handle_request  # this process only
    # sim.__main__ looks the class up in sim.server when it starts
    server.PileSim = BenchSim
    return sim_main.main(argv)


if __name__ == "__main__":
    sys.exit(main())
