"""A task of the firmware that raises (h2p.crash, h2p.app.Pile.guard), with the
real firmware on the MicroPython unix port (PileRun, its heap budget) against the
simulator and a real mosquitto:

- mid-charge, the bus task or another task raises: the traceback and the
  task's name go to the console, the EV current ramps down and the contactor
  opens without opening under load, the board resets on purpose, and the
  next boot reports it (BOOT line `reset: crash`, `crash: {...}`, and
  `meta.last_crash` over MQTT);
- a boot that crashes `maintenance_after` times in a row stays up in
  `maintenance` (no reset loop, MQTT alive) until a signed `reset` command
  clears it.

Crashes are injected without touching the firmware: the board directory's
main.py is replaced by a wrapper (as in tests/system/test_watchdog.py) that makes a
method raise while data/crash_now exists.
"""

import asyncio
import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from h2p import keys, signer
from host_tools import cmd as cmdtool
from host_tools.pilerun import HEAP, PileRun
from tests.helpers.pilewait import reboot, until, wrap_main

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

PILE = "cr-1"
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {"pile_id": PILE, "idle_shutdown_s": 0, "maintenance_after": 3, "mqtt": {"keepalive_s": 5},
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}, "bus": {"data_age_ms": 3000}}

WRAPPER = '''
# Test-only wrapper (tests/system/test_crash.py): a method raises while data/crash_now exists.
import os
import sys

import main_real

main_real._mount_flash()
from h2p import app


def _armed():
    try:
        os.stat("data/crash_now")
        return True
    except OSError:
        return False


class InjectedFault(Exception):
    pass


MODE = "%s"
if MODE == "bus":
    _flush = app.Pile._flush

    async def _bad_flush(self):
        if _armed():
            raise InjectedFault("INJECT bus task fails")
        await _flush(self)

    app.Pile._flush = _bad_flush
elif MODE == "watchdog":
    _wd = app.Pile.watchdog_task

    async def watchdog_task(self, stable_s):  # named as the task it replaces
        from h2p.compat import asyncio
        while not _armed():
            self.board.wdt.feed()
            await asyncio.sleep_ms(100)
        raise InjectedFault("INJECT watchdog task fails")

    app.Pile.watchdog_task = watchdog_task

main_real._mount_flash = lambda: None
sys.exit(main_real.main())
'''


def _retained(topic, port, timeout=15.0):
    # The retained message on topic, as a dict; fails (never hangs) when none comes.
    got = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-test-%d" % os.getpid())
    c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, 1)
    c.on_message = lambda c, u, m: (got.append(json.loads(m.payload)), done.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert done.wait(timeout), "no retained message on %s within %g s" % (topic, timeout)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


def _pile(tmp_path, fw_build, mode, mqtt=False):
    run = PileRun(speed=5, heap=HEAP, mqtt=mqtt, config=CONFIG, sim_args=WARM, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    return wrap_main(run, WRAPPER % mode)


def _arm(run, on=True):
    p = os.path.join(run.board_dir, "data", "crash_now")
    if on:
        open(p, "w").close()
    elif os.path.exists(p):
        os.remove(p)




@pytest.mark.parametrize("task", ["bus", "watchdog"])
def test_a_task_that_raises_mid_charge_leaves_the_pile_safe_and_says_why(tmp_path, fw_build, task):
    async def main():
        run = _pile(tmp_path, fw_build, task)
        await run.start()
        try:
            assert await run.wait_state("ready", 60), run.lines[-20:]
            await run.inject("ev_plug", soc=30, kwh=60, target=90)
            assert await run.wait_state("charging", 30)
            for _ in range(200):  # the charger ramps its current up (~50 A/s)
                if (await run.plant())["ev_a"] > 20:
                    break
                await asyncio.sleep(0.1)
            assert (await run.plant())["ev_a"] > 20
            _arm(run)
            rc = await asyncio.wait_for(run.fw.wait(), 30)
            text = "\n".join(x for x in run.lines if not x.startswith("STATUS"))
            plant = await run.plant()
            # The console says which task and why, with the traceback.
            assert "CRASH task %s" % task in text, text[-2000:]
            assert "INJECT %s task fails" % task in text
            assert "Traceback" in text
            # Safe before the reset: current down, then open, never under load.
            assert not plant["contactor"], plant
            assert plant["ev_a"] < 1.0, plant
            assert plant["opened_under_load"] == 0, plant
            assert rc != 0
            with open(os.path.join(run.board_dir, "data", "reset_cause")) as f:
                assert f.read().strip() == "crash"
            # The next boot says so.
            _arm(run, False)
            boot = await reboot(run, 30)
            assert boot["reset"] == "crash", boot
            assert boot["crash"]["task"] == task and boot["crash"]["n"] == 1, boot
            assert "InjectedFault" in boot["crash"]["error"], boot
            assert not boot["maintenance"]
            assert await until(lambda: run.status.get("cycles", 0) > 3, 20)
        finally:
            await run.stop()

    asyncio.run(main())


def test_a_boot_that_keeps_crashing_stays_in_maintenance_until_reset(tmp_path, fw_build):
    async def main():
        run = _pile(tmp_path, fw_build, "bus", mqtt=True)
        await run.start()
        try:
            assert await until(lambda: run.status.get("cycles", 0) > 2, 30), run.lines[-10:]
            _arm(run)  # from now on every boot's bus task fails at once
            for n in (1, 2, 3):
                rc = await asyncio.wait_for(run.fw.wait(), 30)
                assert rc != 0
                boot = await reboot(run, 30)
                assert boot["reset"] == "crash" and boot["crash"]["n"] == n, boot
            # The third crash in a row: this boot stays up, in maintenance.
            assert boot["maintenance"], boot
            assert any(x.startswith("MAINTENANCE after 3 crashes") for x in run.lines)
            assert await until(lambda: run.status.get("state") == "maintenance", 10), run.status
            await asyncio.sleep(3)
            assert run.fw.returncode is None, "a pile in maintenance must not reset"
            # Reachable over MQTT: meta (retained) says why; commands other
            # than reset are refused.
            meta = _retained("h2pile/v1/%s/meta" % PILE, run.mqtt_port)
            assert meta["maintenance"] and meta["last_crash"]["n"] == 3, meta
            assert meta["last_crash"]["task"] == "bus" and meta["reset"] == "crash", meta
            key = keys.cmd_key(run.fleet_secret, PILE)
            code, ack = cmdtool.send("127.0.0.1", run.mqtt_port, PILE,
                                     signer.sign_command("wake", {}, key, time.time(), pile=PILE), timeout=10)
            if not isinstance(ack, dict):
                (tmp_path / "console.log").write_text("\n".join(run.lines))
            assert isinstance(ack, dict) and not ack["ok"] and ack["reason"] == "refused" \
                and "maintenance" in ack.get("detail", ""), (ack, str(tmp_path))
            _arm(run, False)
            code, ack = cmdtool.send("127.0.0.1", run.mqtt_port, PILE,
                                     signer.sign_command("reset", {}, key, time.time(), pile=PILE), timeout=10)
            assert ack and ack["ok"], ack
            rc = await asyncio.wait_for(run.fw.wait(), 15)
            boot = await reboot(run, 30)
            assert boot["reset"] == "maintenance_reset" and not boot["maintenance"] and boot["crash"] is None, boot
            assert await until(lambda: run.status.get("cycles", 0) > 3, 20)
        finally:
            await run.stop()

    asyncio.run(main())
