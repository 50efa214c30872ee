"""The firmware's reformer loop (h2p.reformer in the supervisor) closed
around the simulator's reformer (sim.plant: the bed's heat balance, the
30-60 s transport delay): the control core and the plant joined in one
process (bench.day.CoSim), stepped once a simulated second. The loop's own
arithmetic is tested in tests/core/test_reformer.py."""

from bench.day import CoSim

# A warm pile (bed and stack hot), its battery full: the stack at minimum load.
WARM = {"bed_c0": 265.0, "stack_c0": 165.0, "bat_soc": 96.0}
OPEN_LOOP = {"burner_pct_per_a": 0.0, "burner_lead_pct_per_a": 0.0, "bed_kp_pct_per_k": 0.0,
             "bed_ki_pct_per_k_min": 0.0}


def _warm(reformer=None) -> CoSim:
    cs = CoSim({"reformer": reformer or {}, "idle_shutdown_s": 0}, params=WARM)
    cs.sup.wake()
    assert cs.run_until(lambda: cs.state() == "ready", 1800), cs.state()
    assert cs.run_until(lambda: False, 600) is False  # settle at minimum load
    return cs


def _watch(cs: CoSim, seconds: int) -> list[float]:
    beds = []
    for _ in range(seconds):
        cs.step()
        beds.append(cs.plant.reformer.bed)
    return beds


def _load_step_then_heat_loss(cs: CoSim) -> tuple[list[float], list[float]]:
    # The battery drops below target: the stack goes from minimum load to
    # its band (18.75 -> 45 A); then the bed loses 1.5 kW more (wind).
    cs.plant.battery.soc = 60.0
    step = _watch(cs, 900)
    cs.plant.reformer.extra_loss_w = 1500.0
    loss = _watch(cs, 1800)
    return step, loss


def test_the_loop_holds_the_bed_through_a_load_step_and_a_heat_loss():
    cs = _warm()
    assert abs(cs.plant.reformer.bed - 265.0) < 2.0
    step, loss = _load_step_then_heat_loss(cs)
    assert cs.plant.stack.current > 40.0  # the step happened
    assert max(abs(b - 265.0) for b in step) < 8.0, (min(step), max(step))
    assert max(abs(b - 265.0) for b in loss) < 10.0, (min(loss), max(loss))
    assert abs(loss[-1] - 265.0) < 1.0  # the integral took the loss over
    assert cs.plant.reformer.burner_sp > 40.0
    assert cs.sup.il.names_in_force() == [] and cs.state() == "ready"


def test_a_loop_that_ignores_the_bed_lets_it_fall_out_of_its_band():
    # The same pile with the burner at its base only: the bed cannot hold.
    cs = _warm(OPEN_LOOP)
    step, loss = _load_step_then_heat_loss(cs)
    assert min(step + loss) < 240.0, min(step + loss)


def test_a_bed_too_cold_to_feed_stops_the_feed_ramps_the_stack_down_then_resumes():
    cs = _warm()
    cs.plant.battery.soc = 60.0
    assert cs.run_until(lambda: cs.plant.stack.current > 40.0, 600)
    # More loss than full fire can make up: the bed falls below the feed
    # minimum (240 degC).
    cs.plant.reformer.extra_loss_w = 6000.0
    events = []
    assert cs.run_until(lambda: cs.sup.rf[1] == 0, 1800)  # h2p.reformer slot 1: fed
    t0 = cs.now
    # the stack ramps down, the feed follows it to nothing: no starved cell
    while cs.plant.stack.current > 0.5 or cs.plant.reformer.pump_sp > 0.0:
        cs.step()
        events += cs.sup.il.names_in_force()
        assert cs.now - t0 < 30000, (cs.plant.stack.current, cs.plant.reformer.pump_sp)
    assert "cell_trip" not in events and "cell_low" not in events, events
    assert cs.sup.status(cs.now)["stack_limit_by"] == "reformer"
    assert cs.state() == "ready"
    # the wind drops: the bed recovers, is fed again, the stack comes back
    cs.plant.reformer.extra_loss_w = 0.0
    assert cs.run_until(lambda: cs.sup.rf[1] == 1, 1800)
    assert cs.plant.reformer.bed >= 250.0
    assert cs.run_until(lambda: cs.plant.stack.current > 40.0, 900), cs.plant.stack.current
    assert cs.sup.il.names_in_force() == []
