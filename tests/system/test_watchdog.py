"""The watchdog on the unix board, with the real firmware on the MicroPython
unix port (host_tools.pilerun.PileRun, its heap budget) against the simulator.

board_unix.Watchdog exits the process with code 3 and writes
data/reset_cause "watchdog" when it is not fed for watchdog_ms (5000 ms wall
on unix_sim); app.Pile.watchdog_task feeds it only while both the bus task
(poll cycles) and the control step (steps) move on. The next boot reports
the cause in its BOOT line ("reset": "watchdog").

What hangs and what does not:
- a silent bus (simulator SIGSTOPped: the TCP connection stays up, nothing
  answers) costs only timeouts: the loop goes on, the interlocks see stale
  data, and the watchdog must NOT reset (test_silent_bus_is_not_a_hang);
- the far end gone (simulator killed, port closed) hangs the bus task in
  TcpLine.open()'s reconnect loop: no poll cycle completes, the watchdog
  resets the board, and the next boot says so (test_dead_line_...);
- a task that awaits forever (injected: the bus read never returns) is a
  cooperative hang: the watchdog task still runs and resets;
- code that blocks the event loop (injected: a busy loop in the control
  step) is the hang a hardware WDT exists for, and the unix Watchdog, being
  a thread outside the loop since, resets that too.

Hangs are injected without touching the firmware: the board directory's
main.py (a copy PileRun makes) is replaced by a wrapper that patches
h2p.app.Pile before running the real main; it hangs once data/hang exists.
"""

import asyncio
import os
import signal
import time

import pytest

# The unix board's watchdog thread ends the process like a hardware reset:
# SIGKILL (rc -9 as asyncio reports it); older builds exited with 3.
from host_tools.pilerun import HEAP, PileRun
from tests.helpers.pilewait import boots, reboot, until, wrap_main

RESET_RC = (3, -9)

pytestmark = [pytest.mark.micropython]

WDT_MS = 5000  # boards/unix_sim.json
CONFIG = {"pile_id": "wd-1", "auto_start": False, "auto_charge": False}

WRAPPER = '''
# Test-only wrapper (tests/system/test_watchdog.py): hang once data/hang exists.
import os
import sys

import main_real

main_real._mount_flash()  # the firmware's code is in the board's flash (/rom)
from h2p.compat import asyncio
from h2p import app


def _hang():
    try:
        os.stat("data/hang")
        return True
    except OSError:
        return False


_read = app.Pile._read
_step = app.Pile._step


async def _hung_read(self, dev, blk):
    if _hang():
        print("INJECT read hangs")
        while True:
            await asyncio.sleep_ms(1000)  # a task that never returns
    return await _read(self, dev, blk)


def _blocking_step(self):
    if _hang():
        print("INJECT step blocks the loop")
        while True:
            pass  # a busy loop: no task runs any more
    _step(self)


MODE = "%s"
if MODE == "read":
    app.Pile._read = _hung_read
elif MODE == "step":
    app.Pile._step = _blocking_step

main_real._mount_flash = lambda: None  # mounted above
sys.exit(main_real.main())
'''


async def _cycles_move(run, timeout=20):
    # Two status lines with increasing poll cycles: the bus task runs.
    first = {}

    def moved():
        c = run.status.get("cycles")
        if c is None:
            return False
        first.setdefault("c", c)
        return c > first["c"] + 2

    return await until(moved, timeout)


async def _start(tmp_path, fw_build, inject=None):
    run = PileRun(speed=5, heap=HEAP, config=CONFIG, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    if inject:
        wrap_main(run, WRAPPER % inject)
    await run.start()
    return run


async def _expect_watchdog_reset(run, t_hang):
    rc = await asyncio.wait_for(run.fw.wait(), WDT_MS / 1000 + 10)
    took = time.monotonic() - t_hang
    assert rc in RESET_RC, (rc, "\n".join(x for x in run.lines if not x.startswith("STATUS"))[-1500:])
    with open(os.path.join(run.board_dir, "data", "reset_cause")) as f:
        cause = f.read().strip()
    assert rc in RESET_RC, (rc, run.lines[-10:])
    assert cause == "watchdog"
    assert any("watchdog: no progress" in x for x in run.lines)
    return took


async def _reboot_and_read_cause(run):
    return await reboot(run, 20)


def test_dead_line_hangs_the_bus_and_the_watchdog_resets(tmp_path, fw_build):
    async def main():
        run = await _start(tmp_path, fw_build)
        try:
            assert await _cycles_move(run), run.lines[-10:]
            assert boots(run)[0]["reset"] == "power_on"
            # The far end of the line dies: the port refuses connections.
            os.killpg(run.sim.pid, signal.SIGKILL)
            await run.sim.wait()
            t = time.monotonic()
            took = await _expect_watchdog_reset(run, t)
            # The bus task is stuck in TcpLine.open()'s retry loop.
            assert any("cannot reach" in x for x in run.lines)
            # Next boot (line back up): the cause is reported, once.
            n = len(boots(run))
            await run.start()
            assert await until(lambda: len(boots(run)) > n, 20), run.lines[-10:]
            boot = boots(run)[-1]
            assert boot["reset"] == "watchdog", boot
            assert await _cycles_move(run)
            assert not os.path.exists(os.path.join(run.board_dir, "data", "reset_cause"))
            return took
        finally:
            await run.stop()

    took = asyncio.run(main())
    assert WDT_MS / 1000 - 0.5 <= took <= WDT_MS / 1000 + 3, took


def test_silent_bus_is_not_a_hang(tmp_path, fw_build):
    # SIGSTOP: the connection stays open, no reply comes. Every read times
    # out, the loop goes on, the pile goes safe on stale data, no reset.
    async def main():
        run = await _start(tmp_path, fw_build)
        try:
            assert await _cycles_move(run)
            os.killpg(run.sim.pid, signal.SIGSTOP)
            try:
                c0 = run.status["cycles"]
                await asyncio.sleep(WDT_MS / 1000 + 2)
                alive = run.fw.returncode is None
                c1 = run.status["cycles"]
                faults = run.status.get("faults", [])
                timeouts = run.status.get("bus", {})
            finally:
                os.killpg(run.sim.pid, signal.SIGCONT)
            assert alive, run.lines[-10:]
            assert c1 > c0, (c0, c1)
            assert "comm_charger" in faults and "comm_safety" in faults, faults
            assert not os.path.exists(os.path.join(run.board_dir, "data", "reset_cause"))
            return timeouts
        finally:
            await run.stop()

    asyncio.run(main())


def test_injected_task_hang_resets_and_is_reported(tmp_path, fw_build):
    async def main():
        run = await _start(tmp_path, fw_build, inject="read")
        try:
            assert await _cycles_move(run)
            open(os.path.join(run.board_dir, "data", "hang"), "w").close()
            t = time.monotonic()
            assert await until(lambda: any("INJECT read hangs" in x for x in run.lines), 5)
            took = await _expect_watchdog_reset(run, t)
            os.remove(os.path.join(run.board_dir, "data", "hang"))
            boot = await _reboot_and_read_cause(run)
            assert boot["reset"] == "watchdog", boot
            assert await _cycles_move(run)
            return took
        finally:
            await run.stop()

    took = asyncio.run(main())
    assert took <= WDT_MS / 1000 + 3, took


def test_injected_blocking_hang_resets(tmp_path, fw_build):
    async def main():
        run = await _start(tmp_path, fw_build, inject="step")
        try:
            assert await _cycles_move(run)
            open(os.path.join(run.board_dir, "data", "hang"), "w").close()
            assert await until(lambda: any("INJECT step blocks" in x for x in run.lines), 5)
            rc = None
            try:
                rc = await asyncio.wait_for(run.fw.wait(), WDT_MS / 1000 + 4)
            except asyncio.TimeoutError:
                pass
            assert rc in RESET_RC, "no reset %.0f s after the loop blocked" % (WDT_MS / 1000 + 4)
        finally:
            await run.stop()

    asyncio.run(main())
