"""What the whole-pile tests (tests/system) share around host_tools.pilerun.PileRun:
waiting on a condition with a deadline, the BOOT lines a run printed, and a
test-only main.py wrapped around the real one."""

import asyncio
import json
import os
import time


async def until(pred, timeout):
    """True once pred() is, False when `timeout` wall seconds pass first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return False


def boots(run):
    """Every BOOT line the run's firmware printed, decoded, oldest first."""
    return [json.loads(x[5:]) for x in run.lines if x.startswith("BOOT ")]


def wrap_main(run, source):
    """Boot the run's board through `source` (a test-only main.py that imports
    the real one as main_real) instead of the build's main.py."""
    orig = run._prepare_board

    def prepare():
        d = orig()
        os.replace(os.path.join(d, "main.py"), os.path.join(d, "main_real.py"))
        with open(os.path.join(d, "main.py"), "w") as f:
            f.write(source)
        return d

    run._prepare_board = prepare
    return run


async def reboot(run, timeout):
    """Start the run's firmware again; its new BOOT line, decoded."""
    n = len(boots(run))
    run.status = {}
    await run.start_firmware()
    assert await until(lambda: len(boots(run)) > n, timeout), run.lines[-10:]
    return boots(run)[-1]
