"""h2p.app's session records (Pile._drain / _session_tick) on CPython, with
the real journal and recorder and readings put by hand: the bookkeeping
between the supervisor's session events and the billing meter's readings."""

from types import SimpleNamespace

from h2p import app
from h2p import config as C
from h2p.readings import INDEX
from tests.helpers.fakes import FakeClock

WH = INDEX["met_wh"]


def _pile(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "forget", lambda *names: None)  # keep h2p.registers for the other tests
    clock = FakeClock()
    board = SimpleNamespace(clock=clock, line=None, reset_cause="power_on", fs_sync=True, unix_time=lambda: None,
                            console=False, name="test")
    p = app.Pile(board, C.from_dict({"pile_id": "t1", "data_dir": str(tmp_path / "data")}))
    p._open_journal()
    closed = []
    p.listeners.append(lambda kind, a, b: closed.append(a) if kind == "bill" else None)
    return p, clock, closed


def _meter(p, clock, wh, dt=100):
    # One energy reading (0.1 Wh units) dt ms later, as the bus task hands it over.
    clock.t += dt
    p.rd.put(WH, int(round(wh * 10)), clock.t)
    p._session_tick(True)


def _event(p, clock, *ev):
    clock.t += 5
    p.sup.events.append(ev)
    p._drain()


def test_an_ev_that_plugs_in_before_the_last_session_closed_gets_its_own_record(tmp_path, monkeypatch):
    # The next EV plugs in at once: the supervisor starts session 2 before a
    # meter reading has closed session 1. One reading (the contactor is open
    # in between) ends the one and starts the other. It used to be skipped:
    # session 2 had no record, the pending close closed the next one at 0 Wh
    # and left it waiting for a start value on the slow schedule, and the
    # pile stopped it with meter_timeout while the EV asked.
    p, clock, closed = _pile(tmp_path, monkeypatch)
    _event(p, clock, "session_start", 1, "")
    assert p.sup.hold_close  # no energy before the start meter value
    _meter(p, clock, 1000.0)
    assert not p.sup.hold_close
    _meter(p, clock, 1300.0, 20000)
    _event(p, clock, "session_stop", 1, "ev_stopped")
    _event(p, clock, "session_start", 2, "")  # before the end value of session 1
    assert p.sup.hold_close
    _meter(p, clock, 1301.5)
    assert len(closed) == 1 and closed[0]["energy_wh"] == 301.5 and closed[0]["reason"] == "ev_stop", closed
    assert p.rec.active and not p.sup.hold_close and not p.force_slow  # session 2, its start value: 1301.5
    _meter(p, clock, 1600.0, 20000)
    _event(p, clock, "session_stop", 2, "ev_stopped")
    _meter(p, clock, 1600.0)
    assert len(closed) == 2 and closed[1]["energy_wh"] == 298.5, closed
    assert closed[0]["id"] != closed[1]["id"]
    assert closed[1]["meter0"] == 1301.5 and closed[1]["meter1"] == 1600.0


def test_a_session_waits_for_its_start_value(tmp_path, monkeypatch):
    p, clock, closed = _pile(tmp_path, monkeypatch)
    _event(p, clock, "session_start", 1, "tag")
    assert p.sup.hold_close and p.force_slow and p.rec.active
    p._session_tick(False)  # the meter did not answer
    assert p.sup.hold_close
    _meter(p, clock, 42.0)
    assert not p.sup.hold_close and p.rec.s["m0"] == 42.0


def test_energy_figures_are_kept_across_reboots_and_junk_is_ignored(tmp_path, monkeypatch):
    # The energy manager's measured premix per kWh and warm-up (h2p.energy
    # slots 0, 1) are stored in the journal when it says so (slot 5) and
    # put back by the next boot; a stored value that makes no sense is not.
    p, clock, _ = _pile(tmp_path, monkeypatch)
    a = p.sup.em
    assert (a[0], a[1]) == (950, 10)  # the config's figures until measured
    a[0], a[1], a[5] = 884, 7, 1
    _meter(p, clock, 1000.0)
    assert a[5] == 0  # stored: the count is cleared
    p2, _, _ = _pile(tmp_path, monkeypatch)
    assert (p2.sup.em[0], p2.sup.em[1]) == (884, 7)
    for junk in ([10, 1], [900, 9999], "x", [1]):
        p2.rec.j.set_meta("energy", junk)
        p3, _, _ = _pile(tmp_path, monkeypatch)
        assert (p3.sup.em[0], p3.sup.em[1]) == (950, 10), junk
        p2 = p3
