"""h2p.app's session caps (Pile._step, Pile._session_tick) on CPython: the
real journal, recorder and supervisor object, with a small charger and
billing meter in the loop instead of the bus. The charger's current follows
the limit the supervisor would write at a fixed ramp; the meter's energy
register is read on the slow schedule unless the pile asks for it; a stop
ramps the current down to the contactor's stop current before the session
ends, as h2p.supervisor does. The clock is a fake in ms, so the time cap is
checked at speed 1 (150 ms poll cycles) as well as at 60x (1.5 s)."""

from types import SimpleNamespace

import pytest

from h2p import app
from h2p import config as C
from h2p.readings import INDEX
from tests.helpers.fakes import FakeClock

WH, W, V = INDEX["met_wh"], INDEX["met_w"], INDEX["met_v"]
SPEED_1_MS = 150  # a poll cycle at 115200 Bd, simulated ms
SPEED_60_MS = 1500  # the same cycle's wall time seen by a clock 60x faster


class Loop:
    """The pile's shell between the supervisor's events and the meter."""

    def __init__(self, tmp_path, monkeypatch, cycle_ms, volts=400.0, ev_a=125.0, ramp_a_s=50.0, meter_v=True):
        monkeypatch.setattr(app, "forget", lambda *names: None)
        self.clock = FakeClock()
        board = SimpleNamespace(clock=self.clock, line=None, reset_cause="power_on", fs_sync=True, unix_time=lambda: None,
                                console=False, name="test", estop_pressed=lambda: False)
        p = self.p = app.Pile(board, C.from_dict({"pile_id": "t1", "data_dir": str(tmp_path / "data")}))
        p.sup.step = lambda now, rd: None  # the state machine is played by this loop
        p._open_journal()
        self.bills = []
        p.listeners.append(lambda kind, a, b: self.bills.append(a) if kind == "bill" else None)
        self.cycle_ms, self.volts, self.ev_a, self.ramp = cycle_ms, volts, ev_a, ramp_a_s
        self.meter_v = meter_v  # False: a meter profile that gives no voltage
        self.amps = 0.0
        self.wh = 12345.0  # the meter's register
        self.n = 0
        self.stop_at = None  # (ms, energy counted, power) when the pile asked to stop
        self.n_sessions = 0

    def start(self, **caps):
        sup = self.p.sup
        assert sup.start("sponsor:acme:1", None, caps.get("cap_kwh"), caps.get("cap_min")) == (True, "")
        self.n_sessions += 1
        sup.session_active = True
        sup.stop_req = ""
        self.event("session_start", self.n_sessions, sup.session_auth)
        self.t_start = self.clock.t

    def event(self, *ev):
        self.p.sup.events.append(ev)
        self.p._drain()

    def cycle(self):
        # One poll cycle: the charger moves towards the limit, the meter
        # counts, the control step runs, the energy block is read when due.
        p, sup = self.p, self.p.sup
        dt = self.cycle_ms / 1000
        self.clock.t += self.cycle_ms
        target = 0.0 if sup.stop_req or not sup.session_active else min(sup.session_limit / 10, self.ev_a)
        sup.ev_limit = int(target * 10)
        a0 = self.amps
        step = self.ramp * dt
        self.amps = min(target, a0 + step) if target > a0 else max(target, a0 - step)
        self.wh += self.volts * (a0 + self.amps) / 2 * dt / 3600
        now = self.clock.t
        if self.meter_v:
            p.rd.put(V, int(self.volts * 10), now)
        p.rd.put(W, int(self.volts * self.amps), now)
        p._step()
        if sup.stop_req and self.stop_at is None:
            self.stop_at = (now, p.rec.s["e"], self.volts * self.amps)
        if sup.session_active and sup.stop_req and self.amps <= sup.stop_a / 10:
            sup.session_active = False  # the contactor opens below the stop current
            self.event("session_stop", self.n_sessions, sup.stop_req)
        if self.n % 10 == 0 or p.force_slow:  # bus.slow_every
            p.rd.put(WH, int(round(self.wh * 10)), now)
            p._session_tick(True)
        self.n += 1

    def run(self, until, limit_s):
        end = self.clock.t + limit_s * 1000
        while not until() and self.clock.t < end:
            self.cycle()
        assert until(), "not done in %d s: %r" % (limit_s, self.p.rec.s)


def cycle_wh(loop):
    # One poll cycle's energy at the session's full power.
    return loop.volts * loop.ev_a * loop.cycle_ms / 1000 / 3600


@pytest.mark.parametrize("cycle_ms", [SPEED_1_MS, SPEED_60_MS])
@pytest.mark.parametrize("cap_kwh,ramp_a_s", [(1.0, 50.0), (0.1, 50.0), (2.0, 25.0)])
def test_the_energy_cap_ends_the_session_at_the_cap_on_the_billing_meter(tmp_path, monkeypatch, cycle_ms,
                                                                          cap_kwh, ramp_a_s):
    lp = Loop(tmp_path, monkeypatch, cycle_ms, ramp_a_s=ramp_a_s)
    lp.start(cap_kwh=cap_kwh)
    base = lp.p.sup.session_limit
    lp.run(lambda: lp.bills, 3600)
    bill = lp.bills[0]
    cap_wh = cap_kwh * 1000
    print("\ncap %.0f Wh, cycle %d ms, ramp %g A/s: bill %.1f Wh (%+.1f), %d s" % (
        cap_wh, cycle_ms, ramp_a_s, bill["energy_wh"], bill["energy_wh"] - cap_wh, bill["dur_s"]))
    assert bill["reason"] == "energy_cap" and bill["cap_kwh"] == cap_kwh and bill["cap_min"] is None
    # The bill's energy is the meter's, and never more than one poll cycle's
    # energy over the cap; it stops a few Wh short of it, not more.
    assert bill["energy_wh"] == pytest.approx(bill["meter1"] - bill["meter0"], abs=0.1)
    assert cap_wh - 10 <= bill["energy_wh"] <= cap_wh + cycle_wh(lp), bill
    # The session was charged at full current until the last few seconds.
    full_s = cap_wh * 3600 / (lp.volts * lp.ev_a)
    assert bill["dur_s"] < full_s + 60
    # The taper's limit is not the next session's.
    assert lp.p.sup.session_limit == base and lp.p.cap is None


def test_an_ev_that_draws_less_than_the_limit_still_stops_at_the_cap(tmp_path, monkeypatch):
    lp = Loop(tmp_path, monkeypatch, SPEED_1_MS, ev_a=20.0)
    lp.start(cap_kwh=0.5)
    lp.run(lambda: lp.bills, 3600)
    bill = lp.bills[0]
    assert bill["reason"] == "energy_cap" and 490 <= bill["energy_wh"] <= 500 + cycle_wh(lp)


def test_without_a_voltage_reading_the_register_still_stops_it(tmp_path, monkeypatch):
    # No estimate of what is left in time: no taper, the stop comes on the
    # first energy reading at or past the cap (on the slow schedule).
    lp = Loop(tmp_path, monkeypatch, SPEED_1_MS, meter_v=False)
    lp.start(cap_kwh=1.0)
    lp.run(lambda: lp.bills, 3600)
    bill = lp.bills[0]
    slow = 10 * cycle_wh(lp)  # one slow-schedule interval at full power
    assert bill["reason"] == "energy_cap" and 1000 <= bill["energy_wh"] <= 1000 + slow + 20, bill


@pytest.mark.parametrize("cycle_ms", [SPEED_1_MS, SPEED_60_MS])
def test_the_time_cap_ends_the_session_on_the_clock(tmp_path, monkeypatch, cycle_ms):
    lp = Loop(tmp_path, monkeypatch, cycle_ms)
    lp.start(cap_min=2, cap_kwh=400)  # the energy cap is out of reach
    lp.run(lambda: lp.stop_at is not None, 600)
    # Asked to stop in the first control step at or after 2 min on the clock.
    late = lp.stop_at[0] - lp.t_start - 120000
    assert 0 <= late < cycle_ms, late
    lp.run(lambda: lp.bills, 60)
    bill = lp.bills[0]
    assert bill["reason"] == "time_cap" and bill["cap_min"] == 2 and bill["cap_kwh"] == 400
    assert lp.p.sup.session_limit == lp.p.sup.chg_max  # never tapered


def test_a_session_without_caps_is_not_capped(tmp_path, monkeypatch):
    lp = Loop(tmp_path, monkeypatch, SPEED_60_MS)
    lp.start()
    assert lp.p.cap is None
    for _ in range(400):  # 10 simulated minutes, ~8 kWh
        lp.cycle()
    assert not lp.p.sup.stop_req and lp.p.rec.s["e"] > 8000 and lp.p.rec.s["cap"] is None
    lp.p.sup.stop_req = "operator"
    lp.run(lambda: lp.bills, 60)
    assert lp.bills[0]["reason"] == "user" and "cap_kwh" not in lp.bills[0]


def test_a_stop_for_another_reason_keeps_that_reason(tmp_path, monkeypatch):
    # The EV stops asking just before the cap: its reason, not the cap's.
    lp = Loop(tmp_path, monkeypatch, SPEED_1_MS)
    lp.start(cap_kwh=1.0)
    lp.run(lambda: lp.p.rec.s["e"] > 900, 600)
    lp.p.sup.stop_req = "operator"
    lp.run(lambda: lp.bills, 60)
    assert lp.bills[0]["reason"] == "user" and lp.bills[0]["cap_kwh"] == 1.0


def test_the_next_start_gives_the_next_session_its_own_caps(tmp_path, monkeypatch):
    lp = Loop(tmp_path, monkeypatch, SPEED_60_MS)
    lp.start(cap_kwh=0.2)
    lp.run(lambda: lp.bills, 600)
    lp.start(cap_min=1)
    lp.run(lambda: len(lp.bills) == 2, 600)
    assert [(b["reason"], b["cap_kwh"], b["cap_min"]) for b in lp.bills] == [
        ("energy_cap", 0.2, None), ("time_cap", None, 1)]
