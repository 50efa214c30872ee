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


def _meter_plant(b, dt_ms):
    # follow_plant, and a meter at the output that counts what flows.
    follow_plant(b)
    v = b.values
    v["met_a"] = v["chg_out_a"]
    v["met_v"] = v["chg_out_v"]
    v["met_w"] = v["chg_out_a"] * v["chg_out_v"]
    v["met_wh"] += v["met_w"] * dt_ms / 3600000.0


class _Journal:
    # What SessionRecorder needs of h2p.journal.Journal, in RAM.
    def get_meta(self, k, d=None):
        return d

    def set_meta(self, k, v):
        pass

    def open_session(self, rec, now):
        pass

    def due(self, sid, now):
        return False

    def close_session(self, rec):
        self.closed = rec


def test_meter_silent_for_polls_mid_session_does_not_stop_it_and_energy_is_bridged():
    # Speed 1: real milliseconds, one poll every 100 ms. The billing meter
    # misses 60 polls (6 s, past the 1 s data age of the control loop) in
    # the middle of a session: the session goes on, and the meter's energy
    # register, read again after the gap, bills what flowed during it.
    from h2p.session import SessionRecorder

    b = Bench()
    _charging(b)
    rec = SessionRecorder(_Journal(), "bench")
    rec.boot()
    rec.start(0, "tag", b.values["met_wh"])
    wh0 = b.values["met_wh"]
    gap = []
    t = 0.0
    for n in range(200):
        if n == 50 or n == 110:
            gap.append(b.values["met_wh"])
        if 50 <= n < 110:
            b.silent.add("meter")
        else:
            b.silent.discard("meter")
        _meter_plant(b, 100)
        b.step(100)
        t += 0.1
        assert b.state() == "charging", (n, b.state(), b.sup.il.names_in_force())
        assert not any(e[0] == "session_stop" for e in b.sup.events), b.sup.events
        if "meter" not in b.silent:  # the shell counts energy when the meter answers
            rec.step(t, b.values["met_wh"])
    assert b.values["chg_out_a"] > 5 and b.cmd("chg_contactor") == 1
    r = rec.stop(t, "ev_stop", b.values["met_wh"])
    assert gap[1] - gap[0] > 50  # energy flowed while the meter was silent (~80 Wh)
    assert abs(r["energy_wh"] - (b.values["met_wh"] - wh0)) < 0.1, (r["energy_wh"], b.values["met_wh"] - wh0)


def test_meter_silent_past_the_configured_gap_ends_the_session():
    b = Bench(bus={"meter_gap_ms": 3000})
    _charging(b)
    b.silent.add("meter")
    n = 0
    while b.state() == "charging" and n < 100:
        _meter_plant(b, 100)
        b.step(100)
        n += 1
    assert b.state() == "stopping" and b.sup.stop_req == "comm_meter", (b.state(), b.sup.stop_req)
    assert 29 <= n <= 32, n  # 3 s after its last reading (+ a step), not the 1 s data age


def test_start_meter_value_is_waited_for_up_to_the_meter_gap():
    # The session waits for the meter's start value before it closes; a
    # meter that misses a few polls then does not end it (meter_timeout
    # only after bus.meter_gap_ms).
    b = Bench(bus={"meter_gap_ms": 20000})
    _to_ready(b)
    b.silent.add("meter")
    b.sup.hold_close = True  # the shell's wait for the start meter value
    b.set(chg_pilot=K.PILOT_C, chg_ev_req_a=200, chg_ev_req_v=380)
    for _ in range(150):  # 15 s: past the 10 s insulation timeout
        follow_plant(b)
        b.step(100)
        b.sup.hold_close = True
    assert b.state() == "charging" and not b.sup.stop_req and b.cmd("chg_contactor") == 0
    assert not any(e[0] == "session_stop" for e in b.sup.events), b.sup.events
    for _ in range(80):
        follow_plant(b)
        b.step(100)
    # Silent past the gap: the session ends, saying why (the meter's
    # heartbeat row or the wait for its start value, whichever is first).
    stops = [e for e in b.sup.events if e[0] == "session_stop"]
    assert len(stops) == 1 and stops[0][2] in ("comm_meter", "meter_timeout"), b.sup.events


def test_weld_confirm_time_comes_from_the_config():
    b = Bench(limits={"aux_confirm_ms": 3000})
    _charging(b)
    b.set(chg_pilot=K.PILOT_B)
    b.values["_welded"] = True
    for _ in range(30):  # 3 s after the open command: not yet 3 s of disagreeing readings
        follow_plant(b)
        b.step(100)
    assert "contactor_welded" not in b.sup.il.names_in_force()
    for _ in range(5):
        follow_plant(b)
        b.step(100)
    assert "contactor_welded" in b.sup.il.names_in_force()


def test_fuel_window_minimum_is_the_lowest_feed_of_the_lead_window():
    # The fuel claim's minimum is kept incrementally (a scan only when the
    # slot that held it leaves the window): against a scan of the whole
    # window, for random pump readings at random step intervals.
    b = Bench(limits={"feed_lead_s": 7})
    sup = b.sup
    seed = 12345
    for n in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        dt = 50 + seed % 1400  # 50 ms .. 1.45 s between steps
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        b.values["ref_pump_mlmin"] = (seed >> 8) % 400 / 10 if n % 97 > 3 else 0.0
        b.step(dt)
        k = sup.flow_k
        want = sup.flow[k]
        for j in range(1, sup.lead_s + 1):
            v = sup.flow[(k - j) % 64]
            if v < want:
                want = v
        got = sup.flow_min if sup.flow_min < sup.flow[k] else sup.flow[k]
        assert got == want, (n, got, want)
