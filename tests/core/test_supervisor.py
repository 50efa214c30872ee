from h2p import codes as K
from tests.helpers.pilebench import Bench, follow_plant


def _to_ready(b):
    assert b.until("ready", each=follow_plant), b.state()


def test_cold_start_sequence_reaches_ready():
    b = Bench()
    seen = []

    def watch(x):
        follow_plant(x)
        if not seen or seen[-1] != x.state():
            seen.append(x.state())

    assert b.until("ready", each=watch)
    assert seen == ["off", "selftest", "preheat", "reforming", "stack_start"], seen
    assert b.cmd("fc_enable") == 1 and b.cmd("fc_current_sp") >= 18.7 * 0.99


def test_no_ignition_without_airflow():
    b = Bench()
    b.set(sio_airflow=0)
    b.until("preheat", each=follow_plant)
    b.step(100, 20)
    assert b.cmd("ref_mode_cmd") == K.REF_MODE_OFF


def _charging(b):
    _to_ready(b)
    b.set(chg_pilot=K.PILOT_C, chg_ev_req_a=200, chg_ev_req_v=380)
    for _ in range(200):
        follow_plant(b)
        b.step(100)
        if b.cmd("chg_enable"):
            break
    follow_plant(b)
    b.step(100)
    assert b.state() == "charging" and b.cmd("chg_contactor") == 1


def test_ev_stops_asking_opens_contactor_in_the_same_step():
    b = Bench()
    _charging(b)
    assert b.cmd("chg_limit_a") > 0
    b.set(chg_pilot=K.PILOT_B)
    b.step(10)
    assert b.cmd("chg_contactor") == 0 and b.cmd("chg_limit_a") == 0


def test_h2_trip_stops_fuel_and_opens_contactor_at_once():
    b = Bench()
    _charging(b)
    b.set(sio_h2_lel=30)
    b.step(60, 3)  # seen at +60, 100 ms debounce: answered at +180
    assert b.cmd("chg_contactor") == 0
    assert b.cmd("ref_mode_cmd") == K.REF_MODE_OFF and b.cmd("ref_pump_sp") == 0
    assert b.cmd("fc_enable") == 0 and b.cmd("sio_fan") == 100
    assert b.state() == "fault"


def test_stop_fault_ramps_before_opening():
    b = Bench()
    _charging(b)
    follow_plant(b)
    b.step(100)
    assert b.values["chg_out_a"] > 5
    b.set(sio_status=K.SIO_DOOR_OPEN)
    b.step(300, 3)  # seen at +300, 500 ms debounce
    # Under load: current ramped to zero first, contactor still closed.
    assert b.state() == "stopping" and b.cmd("chg_limit_a") == 0 and b.cmd("chg_contactor") == 1
    b.values["chg_out_a"] = 2
    b.step(100)
    assert b.cmd("chg_contactor") == 0
    assert b.cmd("fc_enable") == 1  # a stop keeps a healthy stack running


def test_welded_contactor_is_never_closed_again_until_reset():
    b = Bench()
    _charging(b)
    b.set(chg_pilot=K.PILOT_B)
    b.values["_welded"] = True
    for _ in range(40):
        follow_plant(b)
        b.step(100)
    assert "contactor_welded" in b.sup.il.names_in_force()
    b.set(chg_pilot=K.PILOT_C)
    for _ in range(100):
        follow_plant(b)
        b.step(100)
        assert b.cmd("chg_contactor") == 0
    b.sup.reset()  # reset with the weld still there: it stays latched
    for _ in range(30):
        follow_plant(b)
        b.step(100)
        assert b.cmd("chg_contactor") == 0


def test_operator_limit_is_in_charge():
    b = Bench()
    _charging(b)
    b.sup.set_limit(32)
    follow_plant(b)
    b.step(100)
    assert b.cmd("chg_limit_a") == 32 and b.sup.ev_arb.in_charge() == "operator"


def test_silent_charger_mid_charge_ends_safe_within_data_age():
    b = Bench()
    _charging(b)
    t0 = b.now
    for _ in range(15):
        b.step(100, fresh=False)  # nothing answers any more
    assert b.now - t0 <= 1500
    assert b.cmd("chg_contactor") == 0 and b.cmd("chg_limit_a") == 0
