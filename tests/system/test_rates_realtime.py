"""Rates hold in real time (issue 13 item 7, issue 17 item 1): the firmware on
the MicroPython unix port against the simulator, once at speed 1 (real time)
and once at 60x, from a warm pile. The stack current's ramp up (stack_start
and ready) and ramp down (cooldown) are measured in A/s from the simulator's
log — the setpoints the firmware wrote and the plant's stack current — and
compared with the configured rates. Before rates were in elapsed time, the
ramps added a fixed increment per control step: ~11 A/s up at speed 1
against 0.75 A/s configured, ~1.1 A/s at 60x; down at 2.25 A/s configured,
~0.15 A/s at speed 1 (with the default 5.25 A/s: ~0.4 A/s).

Run alone and print the figures:  .venv/bin/python -m tests.test_rates_realtime [SPEED ...]
"""

import asyncio
import json
import os
import sys

import pytest

pytestmark = [pytest.mark.micropython, pytest.mark.slow]


RATED_A = 75.0
UP = 0.01  # stack_ramp_up: fraction of rated per second (the default)
DOWN = 0.03  # stack_ramp_down (default 0.07): 2.25 A/s, so the ramp down lasts ~6 s
# A short warm start: a 10 % minimum load (the stack reaches `ready` 5 s after
# its start), a 3 s feed lead over a 2 s evaporator delay, and an idle shutdown
# after 14 s in `ready`, so the ramp up runs ~19 s and the ramp down ~6 s.
# The battery above its target (92 %, PLANT): the energy manager holds the stack
# warm in its band (so the ramp limits on the way up) and lets the idle pile
# cool once it has held it energy.hold_s (14 s from the stack's start).
CONFIG = {"pile_id": "rate-1", "auto_charge": False, "idle_shutdown_s": 14, "energy": {"hold_s": 14},
          "limits": {"stack_min_load": 0.1, "feed_lead_s": 3, "stack_ramp_up": UP, "stack_ramp_down": DOWN}}


def _data_age_ms(speed):
    # The default 2.5 s at real time; at 60x a 40 ms host hiccup is 2.4 s
    # simulated, so the data-age limit is scaled for the test rig (~330 ms wall).
    return max(2500, int(330 * speed))


PLANT = {"bed_c0": 265.0, "stack_c0": 165.0, "evap_delay_s": 2.0, "bat_soc": 92.0}
# Where cooldown's ramp ends: half the minimum load (3.75 A), then a hold.
FLOOR_A = RATED_A * CONFIG["limits"]["stack_min_load"] / 2 + 0.05


def slope(points):
    # The ramp's slope of (t, y): the median of the slopes between every two
    # points (Theil-Sen), not least squares. While the ramp runs another
    # claim may hold the stack for a moment: on a loaded machine at 60x a
    # starved simulator (27 ms of wall time is 1.6 s simulated) left the
    # fuel claim in charge (the feed one lead ago), the setpoint paused, and
    # a least-squares line over the whole ramp read 0.67 A/s where the ramp
    # ran at 0.75 (Theil-Sen: 0.72). A rate that depends on the step rate
    # (~11 A/s at speed 1 before issue 13) is still far outside the margin.
    pts = sorted(points)
    n = len(pts)
    if n < 3:
        return None
    rates = sorted((b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(pts) for b in pts[i + 1:] if b[0] > a[0])
    if not rates:
        return None
    m = len(rates)
    return rates[m // 2] if m % 2 else (rates[m // 2 - 1] + rates[m // 2]) / 2


class _RampTail:
    """Reads the simulator's log as it grows: done once, after cooldown
    began, the firmware wrote a stack setpoint at the floor and the plant's
    current followed it there (the two ramps `measure` fits end there)."""

    def __init__(self, path, t_cool):
        self.path, self.t_cool = path, t_cool
        self.pos, self.buf = 0, ""
        self.sp_at_floor = self.plant_at_floor = False
        self.last_sp = self.last_a = None

    def done(self):
        if os.path.exists(self.path):
            with open(self.path) as f:
                f.seek(self.pos)
                self.buf += f.read()
                self.pos = f.tell()
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            r = json.loads(line)
            if r.get("t", -1) < self.t_cool:
                continue
            if r.get("kind") == "write" and r.get("cmd") == "fc_current_sp":
                self.last_sp = r["value"]
                self.sp_at_floor |= r["value"] <= FLOOR_A
            elif r.get("kind") == "sample":
                self.last_a = r["stack_a"]
                self.plant_at_floor |= r["stack_a"] <= FLOOR_A + 1.0
        return self.sp_at_floor and self.plant_at_floor

    def says(self):
        return "last setpoint %s A, last plant current %s A" % (self.last_sp, self.last_a)


async def _run(speed, tmp, fw_build=None):
    from host_tools.pilerun import PileRun
    from tests.helpers.pilewait import until

    log = os.path.join(tmp, "sim-%g.jsonl" % speed)
    args = ["--sample-s", "0.25"]
    for k, v in PLANT.items():
        args += ["--param", "%s=%r" % (k, v)]
    cfg = dict(CONFIG, bus={"data_age_ms": _data_age_ms(speed)})
    pr = PileRun(speed=speed, config=cfg, sim_args=args, log_path=log, firmware_build=fw_build,
                 board_dir=os.path.join(tmp, "board-%g" % speed))
    await pr.start()
    try:
        ok = await pr.wait_state("cooldown", 90)
        assert ok, "no cooldown: state %s\n%s" % (pr.state, "\n".join(
            ln for ln in pr.lines[-30:] if not ln.startswith("STATUS")))
        # The ramp down to half the minimum load takes ~6 s simulated: waited
        # for in the simulator's log (the setpoint and the plant's current at
        # the floor), with a deadline far past it.
        t_cool = next(t for t, st in pr.states if st == "cooldown")
        tail = _RampTail(log, t_cool)
        assert await until(tail.done, 30.0 + 20.0 / speed), (
            "the ramp down never reached %.2f A: %s" % (FLOOR_A, tail.says()))
    finally:
        await pr.stop()
    states = {}
    for t, s in pr.states:
        states.setdefault(s, t)
    writes, samples = [], []
    with open(log) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "write" and r.get("cmd") == "fc_current_sp":
                writes.append((r["t"], r["value"]))
            elif r.get("kind") == "sample":
                samples.append((r["t"], r["stack_a"]))
    return states, writes, samples


def measure(speed, tmp, fw_build=None):
    """(up A/s from setpoints, up A/s from the plant, down A/s from setpoints,
    down A/s from the plant, the states' first times)."""
    states, writes, samples = asyncio.run(_run(speed, tmp, fw_build))
    t_start, t_cool = states["stack_start"], states["cooldown"]
    # Up: from 1 s after the stack started (the plant's current follows its
    # setpoint within ~0.5 s) to the idle shutdown.
    up = [p for p in writes if t_start + 1.0 <= p[0] <= t_cool]
    up_plant = [p for p in samples if t_start + 1.5 <= p[0] <= t_cool]
    # Down: cooldown's ramp to half the minimum load (3.75 A), then a hold.
    floor = FLOOR_A
    down = [p for p in writes if p[0] >= t_cool and p[1] > floor]
    down = [p for p in writes if p[0] >= t_cool and p[0] <= (down[-1][0] if down else t_cool)]
    down_plant = [p for p in samples if t_cool + 0.5 <= p[0] and p[1] > floor + 1.0]
    return slope(up), slope(up_plant), slope(down), slope(down_plant), states


def _f(x):
    return "-" if x is None else "%.3f" % x


def _check(speed, tmp, fw_build):
    up, up_plant, down, down_plant, states = measure(speed, tmp, fw_build)
    want_up, want_down = RATED_A * UP, -RATED_A * DOWN
    print("\nspeed %g: stack ramp up %s A/s (plant %s), configured %.3f; down %s A/s (plant %s), "
          "configured %.3f; states %s" % (speed, _f(up), _f(up_plant), want_up, _f(down), _f(down_plant),
                                          want_down, states))
    # The way up at 60x: a hiccup of the host of ~25 ms is 1.5 s simulated,
    # the fuel claim (the feed one lead ago) holds the stack meanwhile, and
    # the ramp pauses (seen: 0.64-0.75 A/s over 15 runs, 0.75 at speed 1
    # every time). 20 % there: a rate per control step (before issue 13)
    # read ~1.1 A/s at 60x, +47 %, and ~11 A/s at speed 1.
    tol_up = 0.10 if speed == 1 else 0.20
    assert up is not None and abs(up / want_up - 1) <= tol_up, (speed, up, want_up)
    assert up_plant is not None and abs(up_plant / want_up - 1) <= tol_up, (speed, up_plant, want_up)
    # None: the setpoint never went below its value at the idle shutdown
    assert down is not None and abs(down / want_down - 1) <= 0.10, (speed, down, want_down)
    if down_plant is not None:  # at 60x the plant is sampled every ~1.2 s simulated: a few points
        # the plant's current lags its setpoint (0.5 s): a short ramp reads a little low
        assert abs(down_plant / want_down - 1) <= 0.15, (speed, down_plant, want_down)
    return up, down


@pytest.mark.slow
def test_stack_ramp_in_amps_per_second_at_speed_1_and_60(tmp_path, fw_build):
    up1, down1 = _check(1.0, str(tmp_path), fw_build)
    up60, down60 = _check(60.0, str(tmp_path), fw_build)
    # and the same at both speeds: within 10 % down, 20 % up (see _check)
    assert abs(up60 / up1 - 1) <= 0.20 and abs(down60 / down1 - 1) <= 0.10, (up1, up60, down1, down60)


if __name__ == "__main__":
    import tempfile

    for sp in [float(a) for a in sys.argv[1:]] or [1.0, 60.0]:
        u, up_, d, dp, st = measure(sp, tempfile.mkdtemp(prefix="h2pile-rate-"))
        print("speed %g: up %s A/s (plant %s), down %s A/s (plant %s); configured up %.3f, down %.3f" % (
            sp, _f(u), _f(up_), _f(d), _f(dp), RATED_A * UP, -RATED_A * DOWN))
