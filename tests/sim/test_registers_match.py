"""The simulator serves every register of the map from the plant: the plant's
readings and the register maps name the same registers, and a register the
plant does not produce stops the simulator at startup, named."""

import pytest

from h2p import registers as R
from sim import params as P
from sim.plant import Plant
from sim.server import PileSim, RegisterMismatch


def _register_readings():
    names = [f[0] for dev in R.DEVICE_ORDER for f in R.DEVICES[dev]["readings"]]
    for profile in R.METER_PROFILES.values():
        assert [f[0] for f in profile["fields"]] == list(R.METER_FIELDS)
    return names + list(R.METER_FIELDS)


def test_plant_readings_and_register_map_name_the_same_registers():
    maps = _register_readings()
    assert len(maps) == len(set(maps))
    plant = set(Plant(P.defaults()).readings())
    assert not set(maps) - plant, "in registers.py, not produced by the plant: %s" % sorted(set(maps) - plant)
    assert not plant - set(maps), "produced by the plant, no register: %s" % sorted(plant - set(maps))


@pytest.mark.parametrize("profile", sorted(R.METER_PROFILES))
def test_simulator_starts_with_every_meter_profile(profile):
    sim = PileSim(P.defaults(), meter_profile=profile, wire_timing=False)
    assert len(sim.devices()) == len(R.DEVICE_ORDER)


@pytest.mark.parametrize("missing", ["bat_c", "met_wh"])
def test_a_register_the_plant_lacks_stops_the_simulator_at_startup(monkeypatch, missing):
    real = Plant.readings

    def readings(self):
        r = real(self)
        del r[missing]
        return r

    monkeypatch.setattr(Plant, "readings", readings)
    with pytest.raises(RegisterMismatch) as e:
        PileSim(P.defaults())
    assert repr(missing) in str(e.value) and "registers.py" in str(e.value)


def test_python_m_sim_says_which_register(monkeypatch, capsys):
    from sim import __main__ as sim_main

    async def no_serving(*args):  # should the check not stop it, do not serve forever
        raise OSError("serving")

    real = Plant.readings
    monkeypatch.setattr(Plant, "readings", lambda self: {k: v for k, v in real(self).items() if k != "chg_c"})
    monkeypatch.setattr(PileSim, "serve_tcp", no_serving)
    assert sim_main.main(["--port", "0"]) == 1
    assert "'chg_c'" in capsys.readouterr().err
