"""Contactor operations are counted and survive a reboot (a lifetime wear
count), stored once per session in the flash journal, not per operation."""

import asyncio

import pytest

from host_tools.pilerun import HEAP, PileRun

pytestmark = [pytest.mark.micropython]


WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {"pile_id": "cc-1", "idle_shutdown_s": 0,
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}, "bus": {"data_age_ms": 3000}}


async def _run(tmp_path, fw_build):
    run = PileRun(speed=5, heap=HEAP, config=CONFIG, sim_args=WARM, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    await run.start()
    try:
        assert await run.wait_state("ready", 60)
        for _ in range(2):
            await run.inject("ev_plug", soc=50, kwh=60, target=90)
            assert await run.wait_state("charging", 30)
            await asyncio.sleep(1.0)
            await run.inject("ev_unplug")
            assert await run.wait_state("ready", 30)
            await asyncio.sleep(1.0)
        before = run.status["contactor_ops"]
        plant_cycles = (await run.plant())["contactor_cycles"]
        await run.kill_firmware()
        run.status = {}
        await run.start_firmware()
        for _ in range(200):
            await asyncio.sleep(0.1)
            if run.status.get("contactor_ops") is not None and run.status.get("cycles", 0) > 5:
                break
        return before, plant_cycles, run.status.get("contactor_ops")
    finally:
        await run.stop()


def test_contactor_operations_survive_reboot(tmp_path, fw_build):
    before, plant_cycles, after = asyncio.run(_run(tmp_path, fw_build))
    assert before == 2 == plant_cycles  # the count matches the closes the contactor saw
    assert after == 2
