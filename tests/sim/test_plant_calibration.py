"""Calibration of the simulator's physics against the reference figures
(domain.md section 2). Pure CPython: sim.plant.Plant driven by a small,
sane controller written here, with large time steps; no network."""

import pytest

from h2p import registers as R
from sim import params as P
from sim.plant import EV, Battery, F, Plant

RATED_A = 75.0
MIN_A = 18.75
UTIL = 0.78


def flow_for(p, amps):
    """Premix ml/min that carries `amps` at the design utilisation, +5 %."""
    return amps * p["cells"] / (2 * F) / UTIL / p["premix_h2_mol_per_l"] * 60000 * 1.05


class BedLoop:
    """A sane bed controller: PI on the bed temperature through the burner
    command (the firmware's is h2p.reformer)."""

    def __init__(self, plant, sp=265.0):
        self.plant, self.sp, self.acc = plant, sp, 0.0

    def __call__(self, dt):
        e = self.sp - self.plant.reformer.bed
        out = 8.0 + 5.0 * e + self.acc
        if 0.0 < out < 100.0:
            self.acc += 1.5 / 60.0 * e * dt
        self.plant.command("ref_burner_sp", min(100.0, max(0.0, out)))


def cold_start(p, plant, limit_s=3 * 3600, dt=1.0):
    """Warm the pile from cold to rated stack current the way a sane
    controller would; returns the simulated seconds to rated."""
    plant.command("sio_fan", 60)
    plant.command("ref_mode_cmd", R.REF_MODE_PREHEAT)
    phase, since, sp, t = "preheat", 0.0, 0.0, 0.0
    bed = BedLoop(plant)
    while t < limit_s:
        t += dt
        plant.advance(t, max_dt=dt)
        rf, st = plant.reformer, plant.stack
        if phase != "preheat":
            bed(dt)
        if phase == "preheat" and rf.bed >= 240.0:
            phase, since = "reform", t
            plant.command("ref_mode_cmd", R.REF_MODE_RUN)
            plant.command("ref_pump_sp", flow_for(p, MIN_A))
        elif phase == "reform" and st.temp >= 130.0 and t - since >= p["evap_delay_s"] + 5:
            phase, sp = "stack", MIN_A / 2
            plant.command("fc_enable", 1)
        elif phase == "stack":
            target = RATED_A if st.temp >= 150.0 else MIN_A
            sp = min(target, sp + 0.01 * RATED_A * dt)  # 1 %/s of rated
            plant.command("fc_current_sp", sp)
            # Feed-forward: the pump leads the current by the transport delay.
            lead = min(target, sp + 0.01 * RATED_A * (p["evap_delay_s"] + 5))
            plant.command("ref_pump_sp", flow_for(p, max(lead, MIN_A)))
            if st.current >= RATED_A - 0.1:
                return t
    raise AssertionError("never reached rated current")


@pytest.fixture(scope="module")
def rated():
    p = P.defaults()
    plant = Plant(p)
    t = cold_start(p, plant)
    return p, plant, t


def test_cold_start_to_rated_in_30_to_45_minutes(rated):
    _p, plant, t = rated
    assert 30 * 60 <= t <= 45 * 60, f"cold start to rated took {t / 60:.1f} min"
    assert 160.0 <= plant.stack.temp <= 180.0
    # Warm-up fuel: the burner ate 0.3-0.8 L of premix (5-8 MJ, domain 2).
    assert 0.3 <= plant.reformer.burnt_l <= 0.8


def test_premix_per_kwh_net_at_rated_load(rated):
    p, plant, _t = rated
    bed = BedLoop(plant)
    _hold(plant, 600)  # settle
    fuel0 = plant.reformer.fed_l + plant.reformer.burnt_l
    kwh = 0.0
    for _ in range(3600):
        bed(1.0)
        plant.advance(plant.t + 1.0, max_dt=1.0)
        kwh += (plant.dcdc_w - plant.bop_w) / 3.6e6
    litres = plant.reformer.fed_l + plant.reformer.burnt_l - fuel0
    per_kwh = litres / kwh
    assert 0.85 <= per_kwh <= 1.0, f"{per_kwh:.3f} L/kWh"
    assert 4.0 <= kwh <= 6.0  # ~5 kW net class


def test_polarisation_fit_points():
    p = P.defaults()
    plant = Plant(p)
    cv = plant.stack.cell_v
    assert cv(0.2, 160.0, 0.0) == pytest.approx(0.65, abs=0.01)
    assert cv(0.5, 160.0, 0.0) == pytest.approx(0.52, abs=0.015)
    assert cv(0.0, 160.0, 0.0) == pytest.approx(0.95, abs=0.01)  # OCV
    assert cv(0.2, 170.0, 0.0) - cv(0.2, 160.0, 0.0) == pytest.approx(0.015, abs=1e-6)
    assert cv(0.2, 160.0, 1.0) - cv(0.2, 160.0, 0.0) == pytest.approx(-0.015, abs=1e-6)
    # Monotonic falling with current density.
    vs = [cv(j / 100, 165.0, 1.0) for j in range(0, 100)]
    assert all(a > b for a, b in zip(vs, vs[1:]))


def test_stack_self_heats_under_load(rated):
    _p, plant, _t = rated
    st = plant.stack
    assert st.current == pytest.approx(RATED_A, abs=0.5)
    # At rated load the waste heat holds it at the cooler's setpoint (above
    # 160 degC) with the warm-up heater off.
    _hold(plant, 1800)
    assert 163.0 <= st.temp <= 172.0


def _hold(plant, seconds, dt=1.0):
    bed = BedLoop(plant)
    for _ in range(int(seconds / dt)):
        bed(dt)
        plant.advance(plant.t + dt, max_dt=dt)


def test_starvation_collapses_min_cell(rated):
    p, plant, _t = rated
    _hold(plant, 120)
    healthy = plant.stack.min_cell
    assert healthy > 0.5
    plant.p["starvation_fraction"] = 0.3
    plant.advance(plant.t + 5, max_dt=0.5)
    assert plant.stack.min_cell < 0.2
    assert plant.stack.v_cell < 0.62
    plant.p["starvation_fraction"] = 1.0
    plant.advance(plant.t + 5, max_dt=0.5)
    assert plant.stack.min_cell > 0.5


def test_current_outrunning_fuel_starves():
    # Current raised to rated with the pump still at minimum load: the
    # weakest cell collapses, the transport delay means no quick rescue.
    p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0})
    plant = Plant(p)
    plant.command("ref_mode_cmd", R.REF_MODE_RUN)
    plant.command("ref_pump_sp", flow_for(p, MIN_A))
    plant.command("fc_enable", 1)
    plant.command("fc_current_sp", MIN_A)
    plant.advance(120.0, max_dt=0.5)
    assert plant.stack.min_cell > 0.55
    plant.command("fc_current_sp", RATED_A)
    plant.command("ref_pump_sp", flow_for(p, RATED_A))
    plant.advance(plant.t + 5.0, max_dt=0.5)
    assert plant.stack.min_cell < 0.2
    plant.advance(plant.t + p["evap_delay_s"] + 5, max_dt=0.5)
    assert plant.stack.min_cell > 0.5  # the feed has arrived


def test_reformer_warm_up_at_full_fire_and_conversion():
    # The controller's own warm-up: full fire (burner_eff of it into the
    # bed's heat capacity) up to 10 K below the setpoint, then it holds.
    p = P.defaults()
    plant = Plant(p)
    plant.command("ref_mode_cmd", R.REF_MODE_PREHEAT)
    plant.advance(60.0, max_dt=1.0)
    rate = (plant.reformer.bed - p["ambient_c"]) / 60.0
    want = p["burner_eff"] * p["burner_full_kw"] / p["bed_heat_kj_per_k"]
    assert rate == pytest.approx(want, rel=0.05)
    while plant.reformer.bed < 240.0:
        plant.advance(plant.t + 1.0, max_dt=1.0)
    assert 10 * 60 <= plant.t <= 16 * 60, plant.t  # domain 2: the bed is the short part of a 30-45 min start
    plant.advance(plant.t + 1800, max_dt=1.0)
    assert 255.0 <= plant.reformer.bed <= 265.0
    rf = plant.reformer
    convs = []
    for bed in (200.0, 220.0, 235.0, 240.0, 265.0):
        rf.bed = bed
        convs.append(rf.conversion())
    assert convs[0] == 0.0 and convs[1] < convs[2] < convs[3] == 1.0 == convs[4]
    rf.bed = 250.0
    co_lo = rf.co_pct()
    rf.bed = 290.0
    assert rf.co_pct() > co_lo > 0


def _fed(amps, burner_pct, seconds, step_to=None):
    """A hot pile in run mode at `amps`, the burner at a fixed command;
    optionally a load step to `step_to` A (pump and current together)
    halfway. Returns the bed temperatures, one a second."""
    p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0})
    plant = Plant(p)
    plant.command("ref_mode_cmd", R.REF_MODE_RUN)
    plant.command("ref_pump_sp", flow_for(p, amps))
    plant.command("fc_enable", 1)
    plant.command("fc_current_sp", amps)
    plant.command("ref_burner_sp", burner_pct)
    beds = []
    for k in range(seconds):
        if step_to is not None and k == seconds // 2:
            plant.command("ref_pump_sp", flow_for(p, step_to))
        if step_to is not None and k == seconds // 2 + int(p["evap_delay_s"]) + 5:
            plant.command("fc_current_sp", step_to)
        plant.advance(plant.t + 1.0, max_dt=0.5)
        beds.append(plant.reformer.bed)
    return beds


def test_the_bed_drifts_without_a_loop():
    # The burner at its no-load need, the stack at rated: the premix takes
    # more heat than its off-gas gives back and the bed falls out of the
    # band within the hour; with no burner at all, within minutes.
    beds = _fed(RATED_A, 8.0, 3600)
    assert beds[-1] < 240.0, beds[-1]
    beds = _fed(RATED_A, 0.0, 900)
    assert beds[-1] < 240.0, beds[-1]


def test_a_feed_step_cools_the_bed_for_a_transport_delay():
    # Minimum load to rated: the pump leads, the new premix evaporates at
    # once, its reaction and off-gas arrive one transport delay later. At
    # the burner that held minimum load the bed dips for ~40 s, then the
    # stack's new off-gas (more hydrogen than it uses until its current is
    # raised) warms it.
    beds = _fed(MIN_A, 8.3, 400, step_to=RATED_A)
    before = beds[199]
    assert max(beds[150:200]) - min(beds[150:200]) < 0.5  # settled before the step
    dip = min(beds[200:245])
    assert before - dip >= 2.0, (before, dip)
    assert beds[200:245].index(dip) >= 30  # the lowest point comes a transport delay on
    assert max(beds[250:290]) > dip + 1.0  # then the off-gas comes back as heat


def test_evaporator_transport_delay():
    p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0})
    plant = Plant(p)
    plant.command("ref_mode_cmd", R.REF_MODE_RUN)
    plant.command("ref_pump_sp", 60.0)
    plant.advance(p["evap_delay_s"] - 2, max_dt=0.5)
    assert plant.reformer.h2_mol_s() == 0.0
    assert plant.reformer.tank < p["tank_l"]  # drawn at once
    plant.advance(p["evap_delay_s"] + 2, max_dt=0.5)
    assert plant.reformer.h2_mol_s() == pytest.approx(60.0 / 60000 * p["premix_h2_mol_per_l"], rel=1e-6)


def test_lfp_curve_monotonic_and_limits():
    p = P.defaults()
    b = Battery(p)
    vs = []
    for s in range(0, 101):
        b.soc = s
        vs.append(b.ocv() / p["bat_cells"])
    assert all(a < c for a, c in zip(vs, vs[1:]))
    assert vs[0] == pytest.approx(2.9) and vs[100] == pytest.approx(3.45)
    assert vs[80] - vs[20] < 0.1  # the flat middle of LFP
    b.soc = 50
    assert b.chg_limit() > 0 and b.dis_limit() > 0
    b.soc = 100
    assert b.chg_limit() == 0
    b.soc = 0
    assert b.dis_limit() == 0


def test_ev_acceptance_steps_at_50_and_75():
    p = P.defaults()
    ev = EV(p)
    ev.plug(soc=20, kwh=60, target=100)
    ah = ev.ah()
    got = {}
    for soc in (49.0, 51.0, 74.0, 76.0):
        ev.soc = soc
        got[soc] = ev.request_a()
    assert got[49.0] == pytest.approx(1.75 * ah)
    assert got[51.0] == pytest.approx(1.25 * ah)
    assert got[74.0] == pytest.approx(1.25 * ah)
    assert got[76.0] == pytest.approx(0.5 * ah)
    # CV near full: the request falls so OCV + I*R stays under v_full.
    ev.soc = 99.5
    assert ev.request_a() < 0.5 * ah
    assert ev.ocv() + ev.request_a() * p["ev_r_ohm"] <= p["ev_v_full"] + 1e-9
    # IEC 61851 pilot: A unplugged, C asking, B when it stops.
    assert ev.pilot() == R.PILOT_C
    ev.asking = False
    assert ev.pilot() == R.PILOT_B
    ev.unplug()
    assert ev.pilot() == R.PILOT_A


def warm_charging_plant(**over):
    p = P.merged({"bed_c0": 265.0, "stack_c0": 165.0, **over})
    plant = Plant(p)
    plant.ev.plug(soc=30, kwh=60, target=90)
    plant.command("chg_lock", 1)
    plant.advance(p["lock_s"] + p["imd_s"] + 0.5, max_dt=0.05)
    assert plant.charger.imd_done
    plant.command("chg_contactor", 1)
    plant.advance(plant.t + 0.1, max_dt=0.01)
    assert plant.charger.closed
    return p, plant


def test_charger_latency_and_ramp_and_meter():
    p, plant = warm_charging_plant()
    plant.command("chg_enable", 1)
    plant.command("chg_limit_a", 100.0)
    plant.advance(plant.t + 0.04, max_dt=0.005)
    assert plant.ev_a == 0.0  # 50 ms setpoint latency
    plant.advance(plant.t + 1.01, max_dt=0.005)
    assert plant.ev_a == pytest.approx(50.0, abs=1.5)  # 50 A/s
    m0 = plant.meter_kwh
    wh = 0.0
    for _ in range(2000):
        plant.advance(plant.t + 0.01, max_dt=0.01)
        wh += plant.ev_v * plant.ev_a * 0.01 / 3600
    assert plant.ev_a == pytest.approx(100.0)
    assert (plant.meter_kwh - m0) * 1000 == pytest.approx(wh, rel=0.01)
    # The EV gets the metered energy minus the cable loss.
    assert plant.ev.received_wh < (plant.meter_kwh - p["meter_kwh"]) * 1000
    # Contactor aux and the cycle count.
    assert plant.charger.status() & R.CHG_AUX_CLOSED
    plant.command("chg_contactor", 0)
    plant.advance(plant.t + 0.1, max_dt=0.01)
    assert not plant.charger.status() & R.CHG_AUX_CLOSED
    assert plant.charger.opened_under_load == 1  # opened at 100 A


def test_charger_limited_by_the_bus():
    # Empty battery, stack off: the modules cannot draw what is not there.
    p, plant = warm_charging_plant(bat_soc=0.0)
    plant.command("chg_enable", 1)
    plant.command("chg_limit_a", 100.0)
    plant.advance(plant.t + 5, max_dt=0.01)
    assert plant.ev_a == pytest.approx(0.0, abs=0.01)


def test_insulation_and_welded_contactor():
    p, plant = warm_charging_plant()
    plant.charger.iso_kohm = 20.0
    assert plant.readings()["chg_iso_kohm"] == 20
    plant.advance(plant.t + 0.1)
    assert plant.hazards["contactor_with_iso_fault"]
    plant.charger.welded = True
    plant.command("chg_contactor", 0)
    plant.advance(plant.t + 1.0)
    assert plant.charger.closed  # welded: aux still reads closed
    assert plant.charger.status() & R.CHG_AUX_CLOSED


def test_h2_leak_ramps_and_ventilation_clears():
    p = P.defaults()
    plant = Plant(p)
    plant.h2_target, plant.h2_rate = 30.0, 5.0
    plant.advance(3.0, max_dt=0.1)
    assert plant.h2_lel == pytest.approx(15.0, abs=0.6)
    plant.advance(10.0, max_dt=0.1)
    assert plant.h2_lel == pytest.approx(30.0)
    plant.h2_target = 0.0
    plant.command("sio_fan", 100)
    plant.advance(20.0, max_dt=0.1)
    assert plant.h2_lel < 1.0
    assert plant.readings()["sio_airflow"] == pytest.approx(100 * p["airflow_per_pct"])
    plant.vent_blocked = True
    assert plant.readings()["sio_airflow"] == 0.0
