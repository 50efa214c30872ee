"""Checks of the bench's own arithmetic (fast; `pytest bench/test_bench.py`).
The measurements themselves are `python -m bench.run`."""

import pytest

from bench import stats
from bench.busjitter import analyse
from bench.session import best_point
from bench.wire import TURNAROUND_S, Layout
from sim.server import wire_time_s


def test_wire_matches_domain_figures():
    # domain.md section 4: a 2-register read (8 + 9 bytes, two gaps).
    assert wire_time_s(9600, 8, 9) * 1000 == pytest.approx(27.5, abs=0.1)
    assert wire_time_s(19200, 8, 9) * 1000 == pytest.approx(13.7, abs=0.1)
    assert wire_time_s(115200, 8, 9) * 1000 == pytest.approx(5.1, abs=0.1)


def test_layout_follows_firmware_schedule():
    lay = Layout()
    names = [d.name for d, _b in lay.schedule]
    # The charger and the safety I/O are read before every other read.
    assert names[0::3] == ["charger"] * (len(names) // 3)
    assert names[1::3] == ["safety"] * (len(names) // 3)
    # EV stop: charger block read (9 regs) + the charger's command block
    # written (FC16: 9 bytes + 2 a register; its count from the firmware's map,
    # the comm watchdog's register included).
    n = len(lay.dev["charger"].want)
    assert n >= 5
    b = lay.reaction_bound_s(115200, "chg_pilot", "charger")
    assert b == pytest.approx(wire_time_s(115200, 8, 23) + wire_time_s(115200, 9 + 2 * n, 8))


def _rows(lay, baud, overhead_s):
    rows, t, seq = [], 0.0, 0
    for _c in range(5):
        for d, blk in lay.schedule:
            if not blk.fast:
                continue
            delay = lay.read_s(baud, blk.count, TURNAROUND_S)
            rows.append([seq, t, t, d.unit, 4, blk.count, False, delay])
            seq += 1
            t += delay + overhead_s
    return rows


def test_analyse_perfect_bus_is_ratio_one():
    lay = Layout()
    out = analyse(_rows(lay, 115200, 0.0), lay, 115200)
    # Only the slow block (pro rata in the bound) is missing from the rows.
    assert out["ratio_wire_turnaround"] == pytest.approx(1.0, abs=0.03)
    assert out["step_lateness_ms"]["max"] == pytest.approx(0.0, abs=1e-6)


def test_analyse_sees_overhead():
    lay = Layout()
    out = analyse(_rows(lay, 115200, 0.003), lay, 115200)
    assert out["step_lateness_ms"]["p50"] == pytest.approx(3.0, abs=1e-3)
    assert out["ratio_wire_turnaround"] > 1.3


def test_percentiles_and_best_point():
    assert stats.pct([1, 2, 3, 4], 50) == 2.5
    assert stats.summary([])["max"] is None
    bp = best_point()
    assert 0.6 < bp["l_per_kwh"] < 1.3  # domain: 0.85-1.0 target, < 0.6 not physical


def test_turn_delays_measure_a_chore_against_the_turn_it_took():
    from bench.picow_loop import contactor_writes, turn_delays

    ch, sf = ("ch",), ("sf",)
    ev, t = [], 0.0

    def turn(block, ms, writes=0):
        nonlocal t
        ev.append((t, ch, False))
        ev.append((t + 5, sf, False))
        if block is not None:
            ev.append((t + 10, (block,), False))
        for k in range(writes):
            ev.append((t + 12 + k, None, True))
        t += ms

    for _ in range(5):
        turn("a", 40)
        turn("b", 45)
    turn(None, 52)  # a chore took b's turn: 7 ms longer than b's
    turn("b", 45)
    turn("a", 60)  # something else held a turn that read a: 20 ms late
    turn("a", 40, writes=1)
    turn("a", 40)
    d = turn_delays(ev, lambda k: k == ch, lambda k: k in (ch, sf))
    assert d["turns_without_block"] == 1
    assert d["late_ms"]["max"] == 20.0
    late = [x[3] for x in d["turns"]]
    assert late[10] == 7.0 and late[12] == 20.0 and late[13] == 0.0  # the write's turn has its own median
    # The contactor's word in the charger's command block, FC16 and FC06.
    rows = [[0, 1.0, None, bytes([4, 16, 1, 0, 0, 5, 10, 0, 0, 0, 3])],
            [0, 2.0, None, bytes([4, 6, 1, 0, 0, 1, 0, 0])], [0, 3.0, None, bytes([4, 4, 0, 0, 0, 9, 0, 0])]]
    assert contactor_writes(rows, 4, 256) == [(1.0, 0), (2.0, 1)]
