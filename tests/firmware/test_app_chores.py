"""Housekeeping in the bus task's turns (h2p.chores, h2p.app's bus_task) on CPython: the
real Pile, its Modbus master and poll schedule against a line that answers every request
at once, the real status task. What is checked is the order of things, not their timing:
a chore (gc.collect(), the STATUS line, the uplink's telemetry) runs only where a
non-hot block would be read, after the charger and safety reads of that turn have been
answered, stepped and written; one chore per turn; the charger and safety are read again
before the block whose turn it took, and every block is still read once a cycle."""

import asyncio
import sys
from types import SimpleNamespace

import pytest

from h2p import app, chores
from tests.helpers.app_pile import fake_pile, run_until
from tests.helpers.fakes import AnsweringLine, FakeClock


class Console:
    def __init__(self, on_line):
        self.on_line = on_line

    def write(self, s):
        if s == "STATUS ":
            self.on_line()


def _pile(tmp_path, monkeypatch, log):
    # Back to back (idle_cycle_ms 0): the turns while the bus polls; the parked
    # cycle's own serving of chores is tests/firmware/test_app_idle.py's.
    p = fake_pile(tmp_path, monkeypatch, AnsweringLine(log), FakeClock(), {"idle_cycle_ms": 0})

    def mark(what):
        # A chore, as it runs: what the bus task has done by then.
        charger = p.devices[0]
        log.append(("chore", what, p.steps, sum(1 for e in log if e[0] == "read"), charger.dirty()))

    monkeypatch.setattr(app, "gc", SimpleNamespace(collect=lambda: mark("gc"), mem_alloc=lambda: 1, mem_free=lambda: 2))
    monkeypatch.setattr(app, "sys", SimpleNamespace(stdout=Console(lambda: mark("status"))))
    return p, mark


async def _uplink(p, mark):
    # The uplink's loop as h2p.uplink has it: a tick, then its chore in a turn.
    while True:
        await asyncio.sleep(0.001)
        await p.chores.turn(chores.UPLINK)
        mark("uplink")


def _run(p, mark, log, n_chores):
    run_until([p.bus_task(), p.status_task(1), _uplink(p, mark)],
              lambda: sum(1 for e in log if e[0] == "chore") >= n_chores, poll_s=0.005)


def test_chores_run_only_in_the_turn_of_a_block_after_the_hot_reads(tmp_path, monkeypatch):
    log: list = []
    p, mark = _pile(tmp_path, monkeypatch, log)
    _run(p, mark, log, 40)
    units = {d.name: d.unit for d in p.devices}
    hot = [(units[d.name], b.start) for d, b in p.schedule[:p.n_hot]]
    assert [d.name for d, _b in p.schedule[:p.n_hot]] == ["charger", "safety"]
    reads = [e for e in log if e[0] != "write"]
    kinds = {e[1] for e in reads if e[0] == "chore"}
    assert kinds == {"gc", "status", "uplink"}, kinds
    for i, e in enumerate(reads):
        if e[0] != "chore":
            continue
        _c, what, steps, n_reads, charger_dirty = e
        # The turn's hot reads were the last requests, answered and stepped, the
        # charger's command written: nothing of the control loop is pending.
        assert [(r[1], r[2]) for r in reads[i - p.n_hot:i]] == hot, (what, reads[i - 4:i + 1])
        assert steps == n_reads, (what, steps, n_reads)
        assert not charger_dirty, what
        # One chore per turn; after it, the hot reads again before anything else.
        after = reads[i + 1:i + 1 + p.n_hot]
        if len(after) == p.n_hot:
            assert [(r[1], r[2]) for r in after] == hot, (what, after)


def test_every_block_is_still_read_once_a_cycle_in_the_schedules_order(tmp_path, monkeypatch):
    log: list = []
    p, mark = _pile(tmp_path, monkeypatch, log)
    _run(p, mark, log, 30)
    units = {d.name: d.unit for d in p.devices}
    hot_units = {units["charger"], units["safety"]}
    rest = [(units[d.name], b.start) for d, b in p.schedule if d.unit not in hot_units and b.fast]
    got = [(e[1], e[2]) for e in log if e[0] == "read" and e[1] not in hot_units
           and (e[1], e[2]) in rest]
    n = len(got) // len(rest)
    assert n >= 3, got
    assert got[:n * len(rest)] == rest * n  # no block lost or read twice to a chore


def test_a_turn_wakes_one_chore_in_turn_and_nothing_without_a_bus():
    async def main():
        ch = chores.Chores()
        await asyncio.wait_for(ch.turn(chores.GC), 1)  # no bus task (maintenance): at once
        ch.bus = True
        ran = []

        async def chore(k):
            for _ in range(2):
                await ch.turn(k)
                ran.append(k)

        tasks = [asyncio.create_task(chore(k)) for k in (chores.GC, chores.STATUS, chores.UPLINK)]
        await asyncio.sleep(0)
        assert ch.want == 0b111 and not ran
        while len(ran) < 6:
            assert ch.give()
            assert ch.busy  # the bus task yields until the chore has run
            n = len(ran)
            for _ in range(3):
                await asyncio.sleep(0)
            assert len(ran) == n + 1, ran  # one chore per turn, even one that asks again at once
            assert not ch.busy
        assert ran == [0, 1, 2, 0, 1, 2]  # in turn
        assert not ch.give()  # nobody waits
        await asyncio.gather(*tasks)

    asyncio.run(main())


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython")
def test_the_chores_module_is_small():
    # Resident on the board: a few hundred bytes, not a scheduler.
    import inspect

    assert len(inspect.getsource(chores).splitlines()) < 80
