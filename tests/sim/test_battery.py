"""The simulated BMS behaves like a real one: its charge and discharge
limits follow SOC and cell temperature (no charge below 0 degC, derated
from 45 degC, nothing and an over-temperature alarm from 60 degC), so the
firmware's claims on them have something real to follow. Pure CPython."""

import pytest

from sim import faults
from sim import params as P
from sim.plant import Plant


def _battery(**kw):
    p = P.merged(dict({"bat_soc": 50.0}, **kw))
    return Plant(p).battery


def test_limits_follow_the_cell_temperature():
    b = _battery()
    full_chg, full_dis = b.chg_limit(), b.dis_limit()
    assert full_chg == pytest.approx(0.5 * b.ah) and full_dis == pytest.approx(b.ah)
    b.temp = -5.0
    assert b.chg_limit() == 0.0 and b.dis_limit() == pytest.approx(full_dis) and b.alarms() == 0
    b.temp = 52.5  # halfway from 45 to 60 degC
    assert b.chg_limit() == pytest.approx(full_chg / 2) and b.dis_limit() == pytest.approx(full_dis / 2)
    assert b.alarms() == 0
    b.temp = 60.0
    assert b.chg_limit() == 0.0 and b.dis_limit() == 0.0 and b.alarms() & 1


def test_alarm_word_on_the_register_and_the_injected_temperature_clears():
    class Sim:  # what faults.apply needs of a running simulator
        plant = Plant(P.merged({}))
        silent: set = set()
        bad_crc: set = set()
        garbage: set = set()

        def advance(self):
            pass

    s = Sim()
    faults.check("battery_temp", {"c": 61.0})
    faults.apply(s, "battery_temp", {"c": 61.0})
    r = s.plant.readings()
    assert r["bat_c"] == 61.0 and r["bat_alarms"] & 1 and r["bat_chg_lim_a"] == 0.0
    faults.apply(s, "clear", {"fault": "battery_temp"})
    assert s.plant.readings()["bat_alarms"] == 0
