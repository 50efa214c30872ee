# The energy manager (h2p.energy) in the pile's core: what the stack runs
# at, when an idle pile may cool down, the BMS limits on the stack, and the
# dispatch estimate. Stepped with real milliseconds at two step intervals
# where time matters. Runs on CPython and MicroPython (tests/core/runner.py).
from h2p import codes as K
from h2p import config as C
from h2p import energy as E
from h2p import states as S
from h2p.readings import INDEX, SCALES, Readings
from h2p.schema import ConfigError
from tests.helpers.pilebench import Bench, follow_plant

RATED = 75.0
# The manager's modes by number (docs_text.ENERGY_MODES, which the board
# build does not ship: checked against it on CPython below).
MODES = ("off", "warm_up", "charge", "boost", "hold", "full", "low")


def _warm(**cfg):
    c = {"idle_shutdown_s": 0, "limits": {"feed_lead_s": 3, "stack_ramp_up": 0.05}}
    c.update(cfg)
    b = Bench(**c)
    b.set(ref_bed_c=265, fc_stack_c=165)
    return b


def _battery_plant(b):
    # follow_plant, and the battery takes what the stack gives beyond the
    # EV (stack at 400 V, bus at 420 V; + discharge).
    follow_plant(b)
    v = b.values
    v["fc_stack_v"] = 400 if v["fc_stack_a"] > 0 else 0
    v["bat_a"] = (v["chg_out_a"] * v["chg_out_v"] - v["fc_stack_a"] * 400) / 420


def _run(b, dt, ms, plant=_battery_plant):
    end = b.now + ms
    while b.now < end:
        plant(b)
        b.step(dt)


def _until(b, dt, cond, ms, plant=_battery_plant):
    end = b.now + ms
    while not cond(b):
        if b.now >= end:
            return None
        plant(b)
        b.step(dt)
    return b.now


def _sp(b):
    return b.sup.fc_sp / 10


def _ready(b):
    assert _until(b, 100, lambda x: x.state() == "ready", 60000) is not None, b.state()


def _plug(b, amps=100):
    b.set(chg_pilot=K.PILOT_C, chg_ev_req_a=amps, chg_ev_req_v=380)
    assert _until(b, 100, lambda x: x.state() == "charging" and x.cmd("chg_enable") == 1, 30000) is not None


# ---- what the stack runs at --------------------------------------------------

def test_battery_below_target_stack_runs_at_the_low_end_of_its_band():
    b = _warm()
    b.set(bat_soc=60)
    _ready(b)
    _run(b, 100, 30000)
    assert abs(_sp(b) - 0.6 * RATED) <= 0.1, _sp(b)
    assert b.sup.st_arb.in_charge() == "energy" and MODES[b.sup.em[3]] == "charge"
    assert b.sup.status(b.now)["stack_limit_by"] == "energy"


def test_with_an_ev_the_top_of_the_band_and_rated_below_boost_soc():
    b = _warm(energy={"boost_soc": 20.0})
    b.set(bat_soc=60)
    _ready(b)
    _plug(b)
    _run(b, 100, 30000)
    assert abs(_sp(b) - 0.67 * RATED) <= 0.1 and MODES[b.sup.em[3]] == "charge", (_sp(b), MODES[b.sup.em[3]])
    b.set(bat_soc=15)  # below boost_soc: the EV waits on the stack alone
    _run(b, 100, 60000)
    assert _sp(b) == RATED and MODES[b.sup.em[3]] == "boost", (_sp(b), MODES[b.sup.em[3]])


def test_battery_at_target_holds_the_stack_warm_in_its_band_and_full_at_minimum_load():
    b = _warm()
    b.set(bat_soc=91)
    _ready(b)
    _run(b, 100, 30000)
    assert abs(_sp(b) - 0.6 * RATED) <= 0.1 and MODES[b.sup.em[3]] == "hold", (_sp(b), MODES[b.sup.em[3]])
    b.set(bat_soc=95.5)  # above bat_soc_max: nowhere for the energy to go
    _run(b, 100, 20000)
    assert b.sup.fc_sp == b.sup.min_load and MODES[b.sup.em[3]] == "full", (_sp(b), MODES[b.sup.em[3]])


# ---- idle shutdown waits for the battery ----------------------------------------

def _idle_cooldown(dt, soc, tank=150, hold_s=5):
    # -> ms from the stack's start (the energy manager's hold begins with
    # it) to cooldown, None if it did not cool within 30 s
    b = _warm(idle_shutdown_s=2, energy={"hold_s": hold_s})
    b.set(bat_soc=soc, ref_tank_l=tank)
    assert _until(b, 100, lambda x: x.state() == "stack_start", 60000) is not None, b.state()
    t0 = b.now
    t = _until(b, dt, lambda x: x.state() == "cooldown", 30000)
    return None if t is None else t - t0


def test_idle_shutdown_waits_for_the_battery_at_target_then_hold_s_at_any_step_interval():
    for dt in (5, 200):
        # below target: the stack keeps charging, no cooldown
        assert _idle_cooldown(dt, 60) is None
        # at target: hold_s (5 s) after it got there with the stack
        # running, counted in ms (the idle time, 2 s, is shorter)
        t = _idle_cooldown(dt, 91)
        assert t is not None and abs(t - 5000) <= max(dt, 100), (dt, t)


def test_low_premix_or_a_full_battery_lets_an_idle_pile_cool_at_once():
    t = _idle_cooldown(100, 60, tank=8)  # at or below premix_low_l (10 L)
    assert t is not None and t <= 6000, t  # stack_start to ready, then the 2 s idle time
    t = _idle_cooldown(100, 96, hold_s=600)  # above bat_soc_max (95 %)
    assert t is not None and t <= 6000, t


def test_battery_brought_back_to_target_then_the_pile_cools():
    b = _warm(idle_shutdown_s=2, energy={"hold_s": 3})
    b.set(bat_soc=85)
    _ready(b)
    _run(b, 100, 10000)
    assert b.state() == "ready" and MODES[b.sup.em[3]] == "charge"
    b.set(bat_soc=90.5)  # the stack has refilled it
    t0 = b.now
    t = _until(b, 100, lambda x: x.state() == "cooldown", 20000)
    assert t is not None and 2900 <= t - t0 <= 3300, t


# ---- the BMS -----------------------------------------------------------------------

def test_bms_charge_limit_bounds_the_stack_as_a_named_claim():
    b = _warm()
    b.set(bat_soc=60)
    _ready(b)
    b.set(bat_chg_lim_a=10)
    _run(b, 100, 30000)
    # 10 A into the battery at 420 V: 10.5 A of stack current at 400 V
    assert abs(_sp(b) - 10.5) <= 0.3 and b.sup.st_arb.in_charge() == "bms", (_sp(b), b.sup.st_arb.in_charge())
    b.set(bat_chg_lim_a=70)
    _run(b, 100, 40000)
    assert b.sup.st_arb.in_charge() == "energy", b.sup.st_arb.in_charge()


def test_bms_discharge_limit_bounds_the_ev_current():
    b = _warm()
    b.set(bat_soc=60, bat_dis_lim_a=20)
    _ready(b)
    _plug(b, amps=200)
    _run(b, 100, 5000)
    assert b.sup.ev_arb.in_charge() == "battery", b.sup.ev_arb.in_charge()
    # 20 A at 420 V and the stack's DC/DC output, through the charger at 380 V
    assert b.sup.ev_limit < 400, b.sup.ev_limit


def test_stop_severity_bms_alarm_stops_battery_charge_and_discharge():
    b = _warm()
    b.set(bat_soc=60)
    _ready(b)
    _plug(b)
    _run(b, 100, 20000)
    assert _sp(b) > 30
    b.set(bat_alarms=1)
    t0 = b.now
    _run(b, 100, 3000)
    # the EV current is gone (no discharge), the stack carries only what
    # the battery would otherwise take: its current is zero
    assert b.cmd("chg_limit_a") == 0 and b.sup.ev_limit == 0, b.sup.ev_limit
    assert "bms_alarm" in b.sup.il.names_in_force() and b.state() in ("stopping", "fault"), b.state()
    assert abs(b.values["bat_a"]) <= 1.0, b.values["bat_a"]
    assert b.sup.st_arb.in_charge() in ("bms", "energy") and b.now - t0 <= 3000


# ---- the dispatch estimate -----------------------------------------------------------

def _rd(now, **vals):
    rd = Readings(1000)
    for k, v in vals.items():
        i = INDEX[k]
        rd.put(i, int(round(v / SCALES[i])), now)
    return rd


def _figures(em):
    return [em[0], em[1]]  # what the shell stores (h2p.app)


def test_others_read_the_energy_managers_slots_where_it_keeps_them():
    # The supervisor, the uplink and the shell keep copies of the slot
    # numbers (const: no RAM); CPython can see both sides.
    import sys

    if sys.implementation.name == "micropython":
        return  # const names with _ are gone there
    from h2p import app, energy, supervisor, uplink

    assert supervisor._EM_WANT == energy._WANT
    assert uplink._EM_DELIVER == energy._DELIVER
    from h2p.docs_text import ENERGY_MODES

    assert ENERGY_MODES == MODES
    assert (app._EM_LPK, app._EM_WARM_L, app._EM_SAVES) == (energy._LPK, energy._WARM_L, energy._SAVES)
    assert supervisor._EM_COOL == energy._COOL


def test_a_session_flag_given_as_a_bool_or_an_int_steps_alike():
    # The supervisor passes its session flag (a bool); viper takes ints.
    a, b = _energy(boost_soc=50.0), _energy(boost_soc=50.0)
    wants = []
    for t, soc, ev in ((0, 30, True), (1000, 30, False), (2000, 70, True)):
        rd = _rd(t, bat_soc=soc, ref_tank_l=90.0, met_wh=0)
        E.step(a, t, rd, S.CHARGING, ev)
        E.step(b, t, rd, S.CHARGING, 1 if ev else 0)
        assert list(a) == list(b), (t, list(a), list(b))
        wants.append(a[2])
    # below boost_soc with an EV: rated; without: the band's low end; above it: its top
    assert wants == [a[9], a[7], a[8]], (wants, list(a))


def _energy(**e):
    cfg = C.from_dict({"pile_id": "e", "energy": e})
    return E.new(cfg["energy"], cfg["limits"])


def test_estimate_premix_at_its_figure_less_warm_up_when_cold_plus_battery():
    em = _energy(warmup_l=3.0)
    rd = _rd(0, bat_soc=50, ref_tank_l=97.0, met_wh=1000.0)
    E.step(em, 0, rd, S.READY, False)
    # (97 - 2 reserve) L / 0.95 L/kWh + (50 - 10) % of 60 kWh * 0.955
    want = 95 / 0.95 * 1000 + 0.4 * 60000 * 0.955
    assert abs(em[4] - want) <= 2, (em[4], want)
    E.step(em, 100, rd, S.OFF, False)
    assert abs(em[4] - (want - 3 / 0.95 * 1000)) <= 2, em[4]
    E.step(em, 200, _rd(200, bat_soc=5, ref_tank_l=1.0, met_wh=0), S.READY, False)
    assert em[4] == 0
    E.step(em, 300, Readings(1000), S.READY, False)
    assert em[4] == -1  # unknown, not a guess


def test_premix_per_kwh_and_warm_up_are_measured():
    em = _energy(window_kwh=5.0)
    E.step(em, 0, _rd(0, bat_soc=50, ref_tank_l=100.0, met_wh=0), S.PREHEAT, False)
    E.step(em, 1000, _rd(1000, bat_soc=50, ref_tank_l=99.2, met_wh=0), S.READY, False)  # warm-up took 0.8 L
    assert _figures(em)[1] == 8 and em[5] == 1, _figures(em)
    E.step(em, 2000, _rd(2000, bat_soc=50, ref_tank_l=99.2, met_wh=0), S.READY, False)  # a window opens
    # 4 kWh metered and 2 % of 60 kWh into the battery (1.146 kWh through
    # the charger): 5.146 kWh for 4.4 L -> 0.855 L/kWh, blended 1/4 into 0.95
    E.step(em, 3000, _rd(3000, bat_soc=52, ref_tank_l=94.8, met_wh=4000), S.CHARGING, True)
    lpk = _figures(em)[0]
    assert abs(lpk - (3 * 950 + 4.4 / 5.146 * 1000) / 4) <= 2 and em[5] == 2, lpk
    # (kept across reboots by the shell: tests/firmware/test_app_sessions.py)


def test_energy_settings_out_of_range_or_disagreeing_fail_naming_the_key():
    for e, key in (({"band_lo": 1.5}, "energy.band_lo"), ({"hold_s": -1}, "energy.hold_s"),
                   ({"band_lo": 0.7, "band_hi": 0.5}, "energy.band_lo"),
                   ({"window_kwh": float("nan")}, "energy.window_kwh")):
        try:
            C.from_dict({"pile_id": "e", "energy": e})
        except ConfigError as x:
            assert key in str(x), (key, str(x))
        else:
            raise AssertionError("accepted %r" % (e,))
