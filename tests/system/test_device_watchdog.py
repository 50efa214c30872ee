"""The devices' comm watchdog with the real firmware (MicroPython unix port,
its heap budget) against the simulator: the firmware dies (SIGKILL) mid-charge and
nothing restarts it; the charger, the fuel cell and the reformer hear no
more requests and go safe on their own within the timeout the firmware
wrote at boot (bus.comm_timeout_ms; 0, the default here, is twice
bus.data_age_ms): the EV current at 0, fuel off, and the contactor opened
by the charger only once the current was down (the plant counts every
opening and the current it broke)."""

import asyncio
import time

import pytest

from host_tools.pilerun import HEAP, PileRun
from sim import params as P

pytestmark = [pytest.mark.micropython]

SPEED = 10
DATA_AGE_MS = 4000
TIMEOUT_S = 2 * DATA_AGE_MS / 1000  # comm_timeout_ms 0: twice data_age_ms
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {"pile_id": "dw-1", "idle_shutdown_s": 0,
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}, "bus": {"data_age_ms": DATA_AGE_MS}}
DEVICES = ("reformer", "fuelcell", "charger")


async def _plant_until(run, pred, timeout_wall):
    """Poll the plant's truth until pred(status); -> every status seen
    (the last one satisfies pred, unless the deadline came first)."""
    seen = []
    end = time.monotonic() + timeout_wall
    while time.monotonic() < end:
        s = await run.plant()
        seen.append(s)
        if pred(s):
            break
        await asyncio.sleep(0.01)
    return seen


async def _run(tmp_path, fw_build):
    run = PileRun(speed=SPEED, heap=HEAP, config=CONFIG, sim_args=WARM, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    await run.start()
    try:
        assert await run.wait_state("ready", 90), run.lines[-20:]
        await run.inject("ev_plug", soc=30, kwh=60, target=90)
        assert await run.wait_state("charging", 60), run.lines[-20:]
        seen = await _plant_until(run, lambda s: s["ev_a"] >= 50, 60)
        before = seen[-1]
        assert before["ev_a"] >= 50, before
        await run.kill_firmware()  # SIGKILL to the process group: no crash path, no goodbye
        t_killed = (await run.plant())["t"]  # the last request came before this
        # The plant's truth until every device is safe, or for far longer
        # than the timeout should take (a device without a watchdog never is).
        wait_wall = (TIMEOUT_S + 5) / SPEED + 10
        after = await _plant_until(
            run, lambda s: s["ev_a"] == 0 and not s["fuel_on"] and not s["contactor"] and s["stack_a"] < 0.5,
            wait_wall)
        return before, t_killed, after
    finally:
        await run.stop()


def test_killed_firmware_leaves_every_device_safe_within_the_timeout(tmp_path, fw_build):
    before, t_killed, after = asyncio.run(_run(tmp_path, fw_build))
    last = after[-1]
    p = P.defaults()
    # Charger current 0, fuel off, stack unloaded, contactor open: the pile
    # is safe without its firmware ...
    assert last["ev_a"] == 0 and not last["fuel_on"] and not last["contactor"] and last["stack_a"] < 0.5, (
        "still unsafe %.1f s (sim) after the firmware died: %s" % (last["t"] - t_killed, last))
    # ... because each device's watchdog, set by the firmware at boot, ran out:
    # not before the firmware died, and within the timeout after its last request.
    assert before.get("comm_timeout_s") == dict.fromkeys(DEVICES, TIMEOUT_S), before.get("comm_timeout_s")
    assert before["comm_lost"] == dict.fromkeys(DEVICES), before["comm_lost"]
    for dev, t in last["comm_lost"].items():
        assert t is not None and before["t"] < t <= t_killed + TIMEOUT_S + 0.1, (dev, t, before["t"], t_killed)
    # Within the timeout plus the output-off ramp (the plant's state is
    # polled: one poll of slack) the current was 0 and fuel off.
    ramp_s = before["ev_a"] / p["chg_off_a_per_s"]
    first_safe = next(s["t"] for s in after if s["ev_a"] == 0 and not s["fuel_on"])
    gaps = [b["t"] - a["t"] for a, b in zip(after, after[1:])] or [0.0]
    assert first_safe <= t_killed + TIMEOUT_S + ramp_s + max(gaps) + 0.1, (first_safe, t_killed, max(gaps))
    # The contactor was never opened under load: the charger opened it once
    # the current was below chg_open_a.
    assert last["opened_under_load"] == 0 and last["max_open_a"] == 0, last
    assert last["last_open_a"] <= p["chg_open_a"], last
    for s in after:
        if not s["contactor"]:
            assert s["ev_a"] == 0, s
