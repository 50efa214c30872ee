"""2. Bus use and 4. control-loop jitter, from the simulator's request log.

Measured from outside the firmware: bench.simhost stamps every Modbus
request when the simulator is handed it, with the time it then waits for
the wire and the device's turnaround (delay_s). With the pile in steady
charging (MQTT publishing, the bus polling):

- poll cycle: the interval between successive reads of the BMS block (read
  once a cycle), against the wire time of the same cycle's reads
  (bench.wire.Layout.cycle_reads_s), with and without device turnaround;
- lateness of the control step: the firmware steps after every read, so
  the next request is due when the previous reply is on the wire; the gap
  (arrival of request k+1) - (arrival of request k + delay_k) is the time
  the firmware spent between a reply and its next request (decode, step,
  flush, MQTT, the asyncio loop, the master's own inter-frame silence) plus
  loopback and pymodbus on the simulator's side. A firmware hook would be
  better: ticks_us at each step and a histogram of the intervals in STATUS.
"""

from __future__ import annotations

import asyncio

from bench import stats
from bench.wire import TURNAROUND_S, Layout
from h2p.modbus import gap_us


async def measure(pr, lay: Layout, baud: int, window_s: float = 4.0) -> dict:
    seq0 = (await pr.request({"op": "bench_requests", "since": 1 << 60}))["next"]
    await asyncio.sleep(window_s)
    r = await pr.request({"op": "bench_requests", "since": seq0})
    rows = r["rows"]
    speed = r["speed"]
    return analyse(rows, lay, baud, speed)


def analyse(rows, lay: Layout, baud: int, speed: float = 1.0) -> dict:
    bms = lay.dev["bms"].unit
    # [seq, wall_s, sim_s, unit, fc, count, is_write, delay_s(wall)]
    starts = [row[2] for row in rows if row[3] == bms and not row[6]]
    cyc = [b - a for a, b in zip(starts, starts[1:])]
    n_cycles = len(cyc)
    out: dict = {"baud": baud, "cycles": n_cycles}
    if n_cycles < 2:
        return out
    t0, t1 = starts[0], starts[-1]
    inside = [row for row in rows if t0 <= row[2] < t1]
    writes = [row for row in inside if row[6]]
    busy_s = sum(row[7] for row in inside) * speed
    cycle_s = (t1 - t0) / n_cycles
    reads_wire = lay.cycle_reads_s(baud)
    reads_ta = lay.cycle_reads_s(baud, TURNAROUND_S)
    w_per_cycle = len(writes) / n_cycles
    write_busy = sum(row[7] for row in writes) * speed / n_cycles
    out.update({
        "cycle_ms": round(cycle_s * 1000, 2),
        "cycle_ms_p99": round(stats.pct(cyc, 99) * 1000, 2),
        "reads_wire_ms": round(reads_wire * 1000, 2),
        "reads_wire_turnaround_ms": round(reads_ta * 1000, 2),
        "ratio_wire": round(cycle_s / reads_wire, 3),
        "ratio_wire_turnaround": round(cycle_s / reads_ta, 3),
        "writes_per_cycle": round(w_per_cycle, 2),
        "write_busy_ms_per_cycle": round(write_busy * 1000, 2),
        "bus_busy_fraction": round(busy_s / (t1 - t0), 3),
        "master_gap_ms": max(1, gap_us(baud) // 1000),
    })
    # Lateness: time between a reply leaving the simulator and the next request.
    late = []
    for a, b in zip(rows, rows[1:]):
        late.append((b[1] - a[1] - a[7]) * 1000.0 * speed)
    # Per control step: between consecutive reads, minus every wire wait in between.
    step_late = []
    idx = [i for i, row in enumerate(rows) if not row[6]]
    for i, j in zip(idx, idx[1:]):
        waits = sum(rows[k][7] for k in range(i, j))
        step_late.append((rows[j][1] - rows[i][1] - waits) * 1000.0 * speed)
    out["gap_after_reply_ms"] = stats.summary(late)
    out["step_lateness_ms"] = stats.summary(step_late)
    out.update(charger_read_delays(rows, lay, speed))
    return out


def charger_read_delays(rows, lay: Layout, speed: float = 1.0) -> dict:
    """Issue 16's charger read delay, as bench.picow_loop measures it on the emulated
    board (turn_delays), from the simulator's request log."""
    from bench.picow_loop import turn_delays

    ch = lay.dev["charger"]
    key = (ch.unit, ch.blocks[0].count)
    hot = (ch.unit, lay.dev["safety"].unit)
    ev = [(row[1] * 1000.0 * speed, (row[3], row[5]), bool(row[6])) for row in rows]
    d = turn_delays(ev, lambda k: k == key, lambda k: k[0] in hot)
    return {"charger_read_late_ms": d["late_ms"], "charger_turn_ms": d["turn_ms"]}
