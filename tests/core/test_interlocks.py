from h2p import interlocks as IL
from h2p import states as S
from h2p.readings import INDEX, SCALES, UNKNOWN, Readings
from tests.helpers.pilebench import HEALTHY


def _rd(now=0, **over):
    rd = Readings(1000)
    v = dict(HEALTHY)
    v.update(over)
    for k, x in v.items():
        rd.put(INDEX[k], int(round(x / SCALES[INDEX[k]])), now)
    return rd


def _step(il, rd, now, state=S.READY, ev=False):
    il.step(now, rd, state, ev)


def test_healthy_pile_has_nothing_in_force():
    il = IL.Interlocks()
    _step(il, _rd(), 0)
    assert il.severity == 0 and il.contactor_allowed() and il.fuel_allowed()


def test_h2_trip_is_emergency_after_debounce_and_latches():
    il = IL.Interlocks()
    rd = _rd(sio_h2_lel=30)
    _step(il, rd, 10)
    assert il.severity < IL.EMERGENCY  # debounce 100 ms
    _step(il, rd, 200)
    assert il.severity == IL.EMERGENCY and not il.fuel_allowed() and not il.contactor_allowed()
    rd = _rd(now=300, sio_h2_lel=0)
    _step(il, rd, 300)
    assert il.severity == IL.EMERGENCY  # latched until reset
    assert il.reset() == 1
    _step(il, rd, 400)
    assert il.fuel_allowed()


def test_reset_does_not_clear_a_hazard_still_present():
    il = IL.Interlocks()
    rd = _rd(sio_h2_lel=30)
    _step(il, rd, 0)
    _step(il, rd, 200)
    assert il.reset() == 0 and not il.fuel_allowed()


def test_unknown_reading_is_unsafe_but_does_not_latch():
    il = IL.Interlocks()
    rd = _rd()
    rd.put(INDEX["sio_h2_lel"], UNKNOWN, 0)
    _step(il, rd, 0)
    _step(il, rd, 500)
    assert not il.fuel_allowed()
    assert il.in_force(IL.ROW["h2_trip"])
    rd = _rd(now=600)
    _step(il, rd, 600)
    assert il.fuel_allowed()  # came back: no latch, a silent sensor is not a leak


def test_stale_device_trips_its_comm_row():
    il = IL.Interlocks()
    rd = _rd(now=0)
    _step(il, rd, 5000, state=S.READY)
    assert il.in_force(IL.ROW["comm_charger"]) and il.in_force(IL.ROW["comm_safety"])
    assert not il.contactor_allowed()


def test_insulation_ohm_per_volt():
    il = IL.Interlocks()
    # 400 V: 100 ohm/V = 40 kohm. 30 kohm is a fault, 150 kohm a warning.
    rd = _rd(chg_iso_kohm=30, chg_out_v=400, chg_pilot=2)
    _step(il, rd, 0, ev=True)
    _step(il, rd, 300, ev=True)
    assert il.in_force(IL.ROW["iso_fault"]) and not il.contactor_allowed()
    il2 = IL.Interlocks()
    rd = _rd(chg_iso_kohm=150, chg_out_v=400, chg_pilot=2)
    _step(il2, rd, 0, ev=True)
    rd = _rd(now=2000, chg_iso_kohm=150, chg_out_v=400, chg_pilot=2)
    _step(il2, rd, 2000, ev=True)
    assert il2.in_force(IL.ROW["iso_warn"]) and not il2.in_force(IL.ROW["iso_fault"])
    assert il2.contactor_allowed()


def test_insulation_below_50_v_is_judged_at_50_v():
    # 20 kohm at 10 V would be 2,000 ohm/V (fine); at low voltage the
    # ratio means nothing, so it is judged at 50 V: 400 ohm/V, under the
    # 500 ohm/V warning.
    il = IL.Interlocks()
    rd = _rd(chg_iso_kohm=20, chg_out_v=10, chg_ev_req_v=0, chg_pilot=2)
    _step(il, rd, 0, ev=True)
    rd = _rd(now=1500, chg_iso_kohm=20, chg_out_v=10, chg_ev_req_v=0, chg_pilot=2)
    _step(il, rd, 1500, ev=True)
    assert il.in_force(IL.ROW["iso_warn"]) and not il.in_force(IL.ROW["iso_fault"])
    # The EV's requested voltage counts when it is the higher: 20 kohm at
    # 450 V is 44 ohm/V, an insulation fault.
    il = IL.Interlocks()
    rd = _rd(chg_iso_kohm=20, chg_out_v=10, chg_ev_req_v=450, chg_pilot=2)
    _step(il, rd, 0, ev=True)
    _step(il, rd, 300, ev=True)
    assert il.in_force(IL.ROW["iso_fault"])


def test_derate_rows_lower_the_claim():
    il = IL.Interlocks()
    _step(il, _rd(), 0, state=S.REFORMING)  # the stack phase begins after this step
    _step(il, _rd(now=10, fc_stack_c=188), 10, state=S.CHARGING)
    _step(il, _rd(now=3000, fc_stack_c=188), 3000, state=S.CHARGING)
    assert il.severity == IL.DERATE and il.derate_pct == 50 and il.contactor_allowed()


def test_phase_gating():
    il = IL.Interlocks()
    _step(il, _rd(sio_airflow=0), 0, state=S.OFF)
    _step(il, _rd(now=5000, sio_airflow=0), 5000, state=S.OFF)
    assert not il.in_force(IL.ROW["vent_fail"])  # no fuel, no rule
    _step(il, _rd(now=5100, sio_airflow=0), 5100, state=S.PREHEAT)
    _step(il, _rd(now=9000, sio_airflow=0), 9000, state=S.PREHEAT)
    assert il.in_force(IL.ROW["vent_fail"])


def test_cell_voltage_read_before_the_stack_started_is_not_judged():
    # Bench at 20x: the stack's minimum cell read 0 V at open circuit before
    # the hydrogen arrived; the pile started the stack and judged that old
    # reading (still within the data age) against cell_trip, whose 200 ms
    # debounce ran out before the fuel cell was read again: a latched
    # emergency on a healthy stack.
    il = IL.Interlocks()
    rd = _rd(now=900, fc_min_cell_v=0.0)
    _step(il, rd, 1000, state=S.REFORMING)
    for now in range(1010, 1400, 20):  # the stack started at 1000
        _step(il, rd, now, state=S.STACK_START)
        assert not il.in_force(IL.ROW["cell_trip"]) and il.fuel_allowed(), now
    # A reading taken since the stack started is judged as ever.
    rd = _rd(now=1400, fc_min_cell_v=0.1)
    _step(il, rd, 1400, state=S.STACK_START)
    assert not il.in_force(IL.ROW["cell_trip"])  # 200 ms debounce
    rd = _rd(now=1620, fc_min_cell_v=0.1)
    _step(il, rd, 1620, state=S.STACK_START)
    assert il.in_force(IL.ROW["cell_trip"]) and il.latched[IL.ROW["cell_trip"]] and not il.fuel_allowed()


def test_meter_heartbeat_tolerates_the_configured_gap():
    # The billing meter is no safety reading: silent past the data age but
    # within meter_gap_ms it stops nothing; beyond, comm_meter is a stop.
    il = IL.Interlocks(5000)
    rd = _rd(now=0, chg_pilot=2)

    def others(now):  # every device answers but the meter
        for k, x in HEALTHY.items():
            if not k.startswith("met_"):
                rd.put(INDEX[k], 2 if k == "chg_pilot" else int(round(x / SCALES[INDEX[k]])), now)

    for now in range(100, 5000, 100):
        others(now)
        _step(il, rd, now, state=S.CHARGING, ev=True)
        assert not il.in_force(IL.ROW["comm_meter"]) and il.contactor_allowed(), now
    others(5100)
    _step(il, rd, 5100, state=S.CHARGING, ev=True)
    assert il.in_force(IL.ROW["comm_meter"]) and il.severity == IL.STOP


def test_unreadable_meter_values_are_tolerated_for_the_gap_too():
    # The meter answers with a value out of range (stored as UNKNOWN, a fresh
    # read time): no stop within the gap, comm_meter after it.
    il = IL.Interlocks(5000)
    rd = _rd(now=0, chg_pilot=2)
    for now in range(0, 4000, 100):
        for k, x in HEALTHY.items():
            rd.put(INDEX[k], 2 if k == "chg_pilot" else int(round(x / SCALES[INDEX[k]])), now)
        rd.put(INDEX["met_a"], UNKNOWN, now)
        _step(il, rd, now, state=S.CHARGING, ev=True)
        assert not il.in_force(IL.ROW["comm_meter"]), now
    for now in range(4000, 4200, 100):
        _step(il, rd, now, state=S.CHARGING, ev=True)
    assert il.in_force(IL.ROW["comm_meter"]) and il.severity == IL.STOP


# ---- the incremental evaluation on its own (the property test holding it
# equal to the whole table is CPython only: test_interlocks_incremental.py)
def _all_read_healthy(rd):
    for name in sorted({r[1] for r in IL.TABLE if r[1]} | {"chg_out_v", "chg_ev_req_v"}):
        rd.put(INDEX[name], 0, 0)
    rd.put(INDEX["sio_airflow"], 60, 0)
    rd.put(INDEX["ref_tank_l"], 1500, 0)
    rd.put(INDEX["fc_min_cell_v"], 700, 0)
    rd.put(INDEX["chg_iso_kohm"], 5000, 0)


def test_a_reading_left_alone_still_goes_stale_on_time():
    # no reading is read again, and no whole judgement is asked for: the
    # hydrogen reading's age alone must raise the blind-sensor condition
    il = IL.Interlocks()
    rd = Readings(1000)
    h2 = INDEX["sio_h2_lel"]
    _all_read_healthy(rd)
    il.step(0, rd, S.OFF, False)
    assert il.severity < IL.EMERGENCY, il.names_in_force()
    row = IL.NAMES.index("h2_trip")
    il.step(1000, rd, S.OFF, False)  # 1000 ms old: still fresh
    assert not il.pending[row]
    il.step(1001, rd, S.OFF, False)  # stale: unknown is unsafe, the debounce starts
    assert il.pending[row] and rd.get(h2, 1001) == UNKNOWN
    il.step(1101, rd, S.OFF, False)
    assert il.in_force(row) and il.severity == IL.EMERGENCY


def test_a_debounce_runs_out_on_time_with_no_new_reading():
    il = IL.Interlocks()
    rd = Readings(1000)
    _all_read_healthy(rd)
    il.step(0, rd, S.OFF, False)
    row = IL.NAMES.index("h2_trip")  # 25 % LEL for 100 ms
    rd.put(INDEX["sio_h2_lel"], 260, 10)
    il.step(10, rd, S.OFF, False)
    assert il.pending[row] and not il.in_force(row)
    il.step(109, rd, S.OFF, False)
    assert not il.in_force(row)
    il.step(110, rd, S.OFF, False)  # 100 ms after it was first seen, no reading since
    assert il.in_force(row) and il.changed and il.severity == IL.EMERGENCY


def test_only_the_rows_of_readings_put_are_judged_and_the_insulation_ones_every_step():
    # The incremental step judges the rows of the readings put since the
    # last (Readings.dirty), and the insulation rows every step: they also
    # divide by the output voltage, a reading of their own.
    il = IL.Interlocks()
    rd = Readings(5000)  # a long data age: no whole judgement for 5 s
    for k, x in HEALTHY.items():
        rd.put(INDEX[k], int(round(x / SCALES[INDEX[k]])), 0)
    rd.put(INDEX["chg_iso_kohm"], 300, 0)  # 300 kohm at 400 V: 750 ohm/V, fine
    rd.put(INDEX["chg_out_v"], 4000, 0)
    il.step(0, rd, S.CHARGING, True)
    warn = IL.NAMES.index("iso_warn")
    assert not il.pending[warn] and rd.nd == 0  # the step took the readings it was given
    rd.put(INDEX["chg_out_v"], 7000, 10)  # 700 V: 429 ohm/V, below 500
    il.step(10, rd, S.CHARGING, True)
    assert il.pending[warn], il.names_in_force()
    il.step(1010, rd, S.CHARGING, True)
    assert il.in_force(warn)
    # a hydrogen reading put: its rows judged at once
    rd.put(INDEX["sio_h2_lel"], 260, 1020)
    il.step(1020, rd, S.CHARGING, True)
    assert il.pending[IL.NAMES.index("h2_trip")]
    # more readings put than the step can note: the whole table is judged
    for j in range(20):
        rd.put(INDEX["bat_c"], 250, 1030)
    rd.put(INDEX["fc_stack_c"], 1960, 1030)  # 196 degC
    il.step(1030, rd, S.CHARGING, True)
    assert il.pending[IL.NAMES.index("stack_overtemp")] and rd.nd == 0
