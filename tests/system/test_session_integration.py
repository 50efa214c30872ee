"""The whole pile, end to end: the firmware compiled with mpy-cross on the
MicroPython unix port (heap-limited), talking Modbus RTU frames over TCP to
the simulator at high time acceleration, through cold start -> ready -> EV
plugged -> >= 20 kWh -> EV stops -> unplugged -> cooldown -> off."""

import asyncio
import json
import os
import re
import time

import pytest

from host_tools.pilerun import HEAP as BUDGET  # the unix board's heap budget (boards/unix_sim.json)
from host_tools.pilerun import PileRun

pytestmark = [pytest.mark.micropython]


SPEED = float(os.environ.get("H2P_IT_SPEED", "80"))
# The board's RAM budget on the 64-bit unix port (bench/ measures how much
# of it a session uses); the code runs from the board's flash (ROM image).
HEAP = os.environ.get("H2P_IT_HEAP", BUDGET)

EXPECTED = ["selftest", "preheat", "reforming", "stack_start", "ready", "charging",
            "stopping", "ready", "cooldown", "off"]


async def _session(tmp_path, fw_build):
    # A 500 kWh buffer at 94 %: the session leaves it above its 90 % target,
    # so the energy manager lets the idle pile cool down after its 60 s
    # (with no hold), instead of refilling it for hours first (docs/energy.md;
    # tests/core/test_energy.py checks that wait).
    run = PileRun(speed=SPEED, heap=HEAP, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"), log_path=str(tmp_path / "sim.jsonl"),
                  sim_args=["--param", "bat_kwh=500", "--param", "bat_soc=94"],
                  config={"pile_id": "it-1", "idle_shutdown_s": 60, "energy": {"hold_s": 0},
                          "limits": {"bat_kwh": 500.0},
                          # At 80x a 200 ms host hiccup is 16 s simulated:
                          # the data-age limit is scaled for the test rig,
                          # to 400 ms of wall time as in the e2e campaign (at
                          # 250 ms every device went stale at once on a
                          # machine loaded with four emulated boards).
                          "bus": {"data_age_ms": 32000}})
    await run.start()
    try:
        run.on_line = None
        assert await run.wait_state("ready", 240), "\n".join(l for l in run.lines[-40:] if not l.startswith("STATUS"))
        await run.inject("ev_plug", soc=20, kwh=60, target=58)
        assert await run.wait_state("charging", 60), "\n".join(l for l in run.lines[-40:] if not l.startswith("STATUS"))
        end = time.monotonic() + 300
        while time.monotonic() < end and not any(e["kind"] == "session_stop" for e in run.events):
            await asyncio.sleep(0.2)
        stops = [e for e in run.events if e["kind"] == "session_stop"]
        assert stops and stops[0]["b"] == "ev_stopped", (stops, "\n".join(l for l in run.lines[-40:] if not l.startswith("STATUS")))
        # The record closes once the meter was read after the stop.
        end = time.monotonic() + 30
        closed = []
        while time.monotonic() < end and not closed:
            closed = [ln for ln in run.lines if ln.startswith("LOG session closed")]
            await asyncio.sleep(0.1)
        plant = await run.plant()
        await run.inject("ev_unplug")
        assert await run.wait_state("off", 240), "\n".join(l for l in run.lines[-40:] if not l.startswith("STATUS"))
        return run, closed, plant
    finally:
        await run.stop()
        (tmp_path / "console.log").write_text("\n".join(run.lines) + "\n")


def test_cold_start_to_charged_car_and_back_to_off(tmp_path, fw_build):
    run, closed, plant = asyncio.run(_session(tmp_path, fw_build))
    boot = json.loads(next(ln for ln in run.lines if ln.startswith("BOOT "))[5:])
    assert boot["code"] == "rom", boot  # bytecode in flash, objects in the 96 KB heap
    assert not [ln for ln in run.lines if "MemoryError" in ln or "STATUS-ERROR" in ln]
    states = [s for _t, s in run.states]
    assert states == EXPECTED, states
    assert not [e for e in run.events if e["kind"] == "state" and e["b"] in ("fault", "estop")]
    # >= 20 kWh went into the EV, and the pile's bill (meter, read over
    # Modbus) matches what the EV received within 1 %.
    received = plant["ev_received_wh"]
    assert received >= 20000, plant
    assert closed, run.lines[-40:]
    m = re.match(r"LOG session closed (\S+) ([\d.]+) Wh (\S+)", closed[0])
    billed = float(m.group(2))
    assert abs(billed - received) <= 0.01 * received, (billed, received)
    # Bus health over the whole run: the wire carried clean frames.
    bus = run.status["bus"]
    assert bus[0] > 1000 and sum(bus[1:]) <= 0.01 * bus[0], bus
    print(f"\nsession: {billed:.0f} Wh billed, {received:.0f} Wh received; bus {bus}; "
          f"heap {run.status.get('heap')}; states {states}")
