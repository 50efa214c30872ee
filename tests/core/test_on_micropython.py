"""The core test modules (tests/core) run unchanged on the MicroPython unix
port, against the firmware compiled with mpy-cross."""

import os
import subprocess

import pytest

from tests.helpers.fwbuild import MICROPYTHON, ROOT

pytestmark = pytest.mark.micropython
CORE = os.path.join(ROOT, "tests", "core")


def test_core_suite_passes_on_micropython(fw_lib):
    # The compiled firmware first, its source for host-only modules a test may
    # use, tests/core for the test modules, the repo root for tests.helpers.
    env = dict(os.environ, MICROPYPATH=":".join((".frozen", fw_lib, os.path.join(ROOT, "firmware"), CORE, ROOT)))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=4M", "runner.py"], cwd=CORE,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("core: ") and " 0 failed" in last, last
    # every core module ran: a module that fails to import is a failure above,
    # one that silently dropped out of the list shows here
    files = [f for f in os.listdir(CORE) if f.startswith("test_") and f.endswith(".py")]
    from tests.core.runner import CPYTHON_ONLY

    assert last.endswith("(%d modules)" % (len(files) - len(CPYTHON_ONLY))), last
    assert int(last.split()[1]) >= 40
