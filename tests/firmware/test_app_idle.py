"""The parked poll cycle (h2p.app's bus_task, bus.idle_cycle_ms) on CPython: the real Pile,
its Modbus master and poll schedule against a line that answers every request at once, on a
clock that moves only when something sleeps on it (the master's inter-frame silence, the
parked cycle's pause). While the pile is off, one poll cycle per idle period and every block
still read in it, the chores still served; running, back to back; the period kept under half
the data age and half the devices' comm watchdog."""

from h2p import chores
from h2p import states as S
from tests.helpers.app_pile import fake_pile, run_until
from tests.helpers.fakes import AnsweringLine, FakeClock


def _pile(tmp_path, monkeypatch, bus=None):
    clock = FakeClock()
    log: list = []  # (kind, unit, ..., clock ms)
    return fake_pile(tmp_path, monkeypatch, AnsweringLine(log, clock), clock, bus), clock, log, []


def _run_until(p, clock, t_ms, served=None):
    async def chore():
        # One that asks for a turn again as soon as it has run (the uplink
        # with a queue of messages).
        while True:
            await p.chores.turn(chores.UPLINK)
            served.append(clock.t)

    run_until([p.bus_task()] + ([chore()] if served is not None else []), lambda: clock.t >= t_ms)


def test_off_the_pile_polls_one_cycle_per_idle_period_and_every_block_in_it(tmp_path, monkeypatch):
    p, clock, log, served = _pile(tmp_path, monkeypatch)
    assert p.sup.state == S.OFF and p.idle_ms == 1000  # the default
    opened: list = []
    open_journal = p._open_journal
    monkeypatch.setattr(p, "_open_journal", lambda: (opened.append(clock.t), open_journal())[1])
    _run_until(p, clock, 10_000, served)
    assert 11 <= p.cycles <= 12, p.cycles
    # Each cycle's reads come together at its start, then the line is quiet.
    charger = p.devices[0].unit
    starts = [e[3] for e in log if e[0] == "read" and e[1] == charger]
    firsts = [t for i, t in enumerate(starts) if i == 0 or t - starts[i - 1] > 500]
    # The first two cycles back to back (one group): the journal opens after
    # the second at once, not two periods after boot. Then one per period.
    assert len(firsts) == p.cycles - 1
    assert opened and opened[0] < firsts[1] and opened[0] < 100, (opened, firsts)
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert 1000 < gaps[0] < 1100 and gaps[1:] == [1000] * (len(gaps) - 1), firsts
    # Every fast block of the schedule was read in every cycle.
    fast = {(d.unit, b.start) for d, b in p.schedule if b.fast}
    for a in firsts[:-1]:
        seen = {(e[1], e[2]) for e in log if e[0] == "read" and a <= e[3] < a + 1000}
        assert fast <= seen, (a, fast - seen)
    # The chores are still served, in every cycle.
    for a in firsts[:-1]:
        assert any(a <= t < a + 1000 for t in served), (a, served)


def test_running_or_idle_cycle_0_the_pile_polls_back_to_back(tmp_path, monkeypatch):
    p, clock, _log, _ = _pile(tmp_path, monkeypatch, {"idle_cycle_ms": 0})
    assert p.idle_ms == 0
    _run_until(p, clock, 2_000)
    assert p.cycles > 20, p.cycles  # the master's inter-frame silences only

    p, clock, _log, _ = _pile(tmp_path, monkeypatch)
    p.sup.state = S.READY
    p.sup.step = lambda now, rd: None  # stays ready: not parked
    _run_until(p, clock, 2_000)
    assert p.cycles > 20, p.cycles


def test_the_idle_period_stays_under_half_the_data_age_and_the_comm_watchdog(tmp_path, monkeypatch):
    assert _pile(tmp_path, monkeypatch, {"data_age_ms": 1000})[0].idle_ms == 500
    assert _pile(tmp_path, monkeypatch, {"comm_timeout_ms": 600})[0].idle_ms == 300
    # comm_timeout_ms 0 is twice the data age: the data age's half decides
    assert _pile(tmp_path, monkeypatch, {"data_age_ms": 1600, "idle_cycle_ms": 2000})[0].idle_ms == 800
    assert _pile(tmp_path, monkeypatch, {"idle_cycle_ms": 250})[0].idle_ms == 250
