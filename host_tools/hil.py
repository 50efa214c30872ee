"""Hardware in the loop: a real board on PORT (USB serial) drives the
simulator, which serves the pile's devices on BUS (a USB-RS-485 adapter
wired to the board's RS-485 transceiver). See docs/hil.md.

    make hil PORT=/dev/ttyACM0 BUS=/dev/ttyUSB0 [BOARD=rp2_pico_w]
    python -m host_tools.hil --port /dev/ttyACM0 --bus /dev/ttyUSB0 [--board ...]

Steps: check both devices exist (else say so and exit 2), flash the build
for the board's platform, provision a test config (auto_start on, the bus
baud), start the simulator on BUS, reset the board and watch its console:
BOOT line, self-test pass, states reached, no crash. Then, if the lead's
scenario suite (host_tools.scenarios with run_hil(port, bus)) exists, run it.
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

from host_tools import ROOT

BOARD_FOR = {"esp32": "esp32_generic", "rp2": "rp2_pico_w"}


def _need(dev: str, what: str) -> str | None:
    if not dev:
        return f"no {what} given"
    if not os.path.exists(dev):
        return f"{what} {dev} not found"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make hil", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", default=os.environ.get("PORT", ""), help="board USB serial (PORT=)")
    ap.add_argument("--bus", default=os.environ.get("BUS", ""), help="USB-RS-485 adapter (BUS=)")
    ap.add_argument("--board", default=os.environ.get("BOARD", ""), help="board name (default: by platform)")
    ap.add_argument("--baud", type=int, default=115200, help="RS-485 baud")
    ap.add_argument("--seconds", type=float, default=120, help="how long to watch the board")
    ap.add_argument("--no-flash", action="store_true", help="keep the firmware on the board")
    a = ap.parse_args(argv)
    missing = [m for m in (_need(a.port, "board port (PORT=)"), _need(a.bus, "RS-485 adapter (BUS=)")) if m]
    if missing:
        print("HIL: needs hardware, not run: " + "; ".join(missing) +
              ". Connect a board and a USB-RS-485 adapter (docs/hil.md), then "
              "`make hil PORT=/dev/ttyACM0 BUS=/dev/ttyUSB0`.", file=sys.stderr)
        return 2
    from host_tools.flash.provision import provision
    from host_tools.flash.session import Board, FlashError
    from host_tools.flash.update import flash

    try:
        b = Board(a.port)
        plat = b.board_platform()
        b.close()
        board = a.board or BOARD_FOR.get(plat)
        if not board:
            print(f"HIL: {a.port} is a {plat!r} board; give BOARD=", file=sys.stderr)
            return 2
        if not a.no_flash:
            flash(a.port, board)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"auto_start": True, "auto_charge": True, "bus": {"baud": a.baud}}, f)
            base = f.name
        provision(a.port, "hil-1", "hil-test-fleet-secret", base_config=base, baud=115200)
    except FlashError as e:
        print(f"HIL: {e}", file=sys.stderr)
        return e.code
    sim = subprocess.Popen([sys.executable, "-m", "sim", "--serial", a.bus, "--baud", str(a.baud),
                            "--control-port", "0"], cwd=ROOT)
    try:
        time.sleep(2)
        if sim.poll() is not None:
            print(f"HIL: the simulator could not serve {a.bus}", file=sys.stderr)
            return 3
        b = Board(a.port)
        seen: list[str] = []
        lines = b.soft_reset_and_read(a.seconds, lambda t: (seen.append(t) or False)
                                      if not re.match(r"^(Traceback|CONFIG ERROR)", t) else True)
        b.t.serial.write(b"\x03")  # stop the firmware; the watchdog resets it later
        b.close()
        boot = any(t.startswith("BOOT ") for t in lines)
        selftest = [t for t in lines if " selftest " in t and t.startswith("LOG event")]
        states = []
        for t in lines:
            if t.startswith("STATUS "):
                try:
                    s = json.loads(t[7:]).get("state")
                except ValueError:
                    continue
                if s and (not states or states[-1] != s):
                    states.append(s)
        crash = [t for t in lines if t.startswith(("Traceback", "CONFIG ERROR"))]
        result = selftest[-1].split()[4] if selftest else "not reported"
        print(f"HIL: boot {'ok' if boot else 'MISSING'}; self-test {result}; "
              f"states {' -> '.join(states) or '-'}")
        ok = bool(boot and not crash and selftest and selftest[-1].split()[4] == "pass")
        try:
            from host_tools import scenarios  # type: ignore[attr-defined]
        except ImportError:
            scenarios = None
        if ok and scenarios is not None and hasattr(scenarios, "run_hil"):
            sim.terminate()
            sim.wait(5)
            return int(scenarios.run_hil(a.port, a.bus))
        return 0 if ok else 1
    finally:
        if sim.poll() is None:
            sim.terminate()
            sim.wait(5)


if __name__ == "__main__":
    sys.exit(main())
