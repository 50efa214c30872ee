"""The simulator's own rates in simulated seconds, at any time factor: the
server advances the plant every 20 ms of wall time, i.e. by 0.02 s at speed 1
and by 1.2 s at 60x. The charger modules' current ramp (50 A/s), its setpoint
latency and the stack current following its setpoint must not depend on how
large those advances are (issue 13 item 7). Pure CPython."""

import pytest

from sim import params as P
from sim.plant import Plant

WALL_TICK_S = 0.02  # sim.server.Simulator.physics_task(every_s)


def _charging_plant():
    p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0})
    plant = Plant(p)
    plant.ev.plug(soc=30, kwh=60, target=90)
    plant.command("chg_lock", 1)
    plant.advance(p["lock_s"] + p["imd_s"] + 0.5)
    plant.command("chg_contactor", 1)
    plant.advance(plant.t + 0.2)
    assert plant.charger.closed
    return p, plant


def _trace(plant, speed, seconds, value):
    # (t, value) after every advance the server would make at this speed.
    out = []
    t_end = plant.t + seconds
    while plant.t < t_end - 1e-9:
        plant.advance(min(t_end, plant.t + WALL_TICK_S * speed))
        out.append((plant.t, value(plant)))
    return out


def _ev_ramp(speed):
    p, plant = _charging_plant()
    t0 = plant.t
    plant.command("chg_enable", 1)
    plant.command("chg_limit_a", 100.0)
    return [(t - t0, a) for t, a in _trace(plant, speed, 4.0, lambda x: x.ev_a)], p


def _at(trace, t):
    return min(trace, key=lambda x: abs(x[0] - t))[1]


def test_charger_current_ramp_in_amps_per_second_at_speed_1_and_60():
    real, p = _ev_ramp(1.0)
    fast, _ = _ev_ramp(60.0)
    # at speed 1: 50 A/s between 20 and 80 A, after the 50 ms setpoint latency
    ramp = [(t, a) for t, a in real if 20.0 <= a <= 80.0]
    rate = (ramp[-1][1] - ramp[0][1]) / (ramp[-1][0] - ramp[0][0])
    assert rate == pytest.approx(p["chg_ramp_a_per_s"], rel=0.10)
    first = next(t for t, a in real if a > 0)
    assert p["chg_latency_s"] <= first <= p["chg_latency_s"] + 2 * WALL_TICK_S
    # at 60x the plant is advanced 1.2 s at a time: the same current at the
    # same simulated time
    assert len(fast) >= 3
    for t, a in fast:
        assert a == pytest.approx(_at(real, t), abs=1.0), (t, a, _at(real, t))


def test_stack_current_follows_its_setpoint_alike_at_speed_1_and_60():
    def run(speed):
        p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0, "evap_delay_s": 1.0})
        plant = Plant(p)
        plant.command("ref_mode_cmd", 2)  # run
        plant.command("ref_pump_sp", 60.0)
        plant.advance(5.0)
        plant.command("fc_enable", 1)
        plant.command("fc_current_sp", 20.0)
        tr = _trace(plant, speed, 3.6, lambda x: x.stack.current)
        return tr[-1][1], next(t for t, a in tr if a >= 10.0)

    a1, t1 = run(1.0)
    a60, t60 = run(60.0)
    assert a1 == pytest.approx(20.0, rel=0.02) and a60 == pytest.approx(a1, rel=0.02)
    # halfway (~0.35 s after the step with its 0.5 s time constant), within one 60x advance
    assert abs(t60 - t1) <= WALL_TICK_S * 60
