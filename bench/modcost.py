"""Heap cost of each firmware module, imported the way the pile runs it:
from the ROM image (bytecode in place), with the qstr pool grown beforehand
so a pool growth step is not blamed on whichever module triggers it.

    python -m bench.modcost                     # every resident module, in boot order
    python -m bench.modcost h2p.mqtt h2p.uplink # chosen ones (their imports count first)

Prints bytes per module, the running total and the qstr pool. The firmware is
built into a private temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from host_tools import ROOT
from host_tools.build import build

# (h2p.keys was in this list until the layer table made it host-only: the
# pile never imported it, and it is no longer on the board.)
RESIDENT = ("asyncio json h2p h2p.compat h2p.log h2p.codes h2p.states h2p.readings h2p.modbus h2p.devices "
            "h2p.interlocks h2p.arbiter h2p.contactor h2p.supervisor h2p.app h2p.board_unix h2p.journal "
            "h2p.session h2p.topics h2p.sign h2p.billing h2p.mqtt h2p.cmdgate h2p.cmdhandler "
            "h2p.uplink").split()

_PROBE = """
import gc, sys, micropython
import main  # the build's main.py: mounts the image as the pile does

main._mount_flash()
o = object()
for i in range(1300):
    hasattr(o, "q%04d" % i)
gc.collect(); base = gc.mem_alloc(); prev = base
for m in sys.argv[1:]:
    __import__(m)
    gc.collect(); a = gc.mem_alloc()
    print("%-18s %6d  total %6d" % (m, a - prev, a - base)); prev = a
micropython.qstr_info()
"""


def measure(mods=RESIDENT) -> str:
    out = build("unix_sim", tempfile.mkdtemp(prefix="h2pile-modcost-"))
    probe = os.path.join(out, "modcost_probe.py")
    with open(probe, "w") as f:
        f.write(_PROBE)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "host_tools", "unix_flash.py"),
                        os.path.join(out, "rom.img"), "-X", "heapsize=2M", probe, *mods],
                       env=dict(os.environ, MICROPYPATH=".frozen"), cwd=out, capture_output=True, text=True,
                       timeout=120)
    return r.stdout + r.stderr


if __name__ == "__main__":
    print(measure(sys.argv[1:] or RESIDENT), end="")
