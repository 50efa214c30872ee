"""bench.wire: the wire's limits the benches hold the loop to (issue 16's EV stop)."""

from __future__ import annotations

import pytest

from bench.wire import Layout


@pytest.fixture(scope="module")
def lay() -> Layout:
    return Layout()


def test_the_worst_reaction_at_9600_counted_by_hand(lay: Layout) -> None:
    # 9600 Bd: 1,145 us a character (11 bits), t3.5 = 4,007 us; 2 ms turnaround.
    # Charger status: 9 registers (8 B request, 23 B reply); safety: 3 (8 B, 11 B);
    # the charger's command write: 5 registers (19 B request).
    c, g, t = 1145e-6, 4007e-6, 0.002
    tail = t + 23 * c + g
    safety = 8 * c + g + t + 11 * c + g
    charger = 8 * c + g + t + 23 * c + g
    write = 19 * c + g
    got = lay.reaction_floor_s(9600, "chg_pilot", "charger", t, [lay.dev["safety"].blocks[0]])
    assert got == pytest.approx(tail + safety + charger + write, abs=1e-9)


def test_each_block_read_between_adds_its_whole_transaction(lay: Layout) -> None:
    meter = lay.dev["meter"].blocks[0]
    none = lay.reaction_floor_s(115200, "chg_pilot", "charger", 0.002, [])
    one = lay.reaction_floor_s(115200, "chg_pilot", "charger", 0.002, [meter])
    assert one - none == pytest.approx(lay.read_s(115200, meter.count, 0.002), abs=1e-9)


def test_this_schedule_is_no_better_than_the_best_one(lay: Layout) -> None:
    for baud in (9600, 19200, 115200):
        this, best = lay.ev_stop_floors_s(baud, 0.002)
        # One charger read + its write is the wire bound: both floors are above it.
        assert this > best > lay.reaction_bound_s(baud, "chg_pilot", "charger")
