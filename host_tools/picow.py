"""Run h2pile's firmware on an emulated Raspberry Pi Pico W (rp2040py), wired to the simulator.

    python -m host_tools.picow --check                      # which image, and is it a Pico W one
    python -m host_tools.picow --fs board.lfs --install --broker-port 1883
    python -m host_tools.picow --fs board.lfs               # boot what is on it (saved back on exit)

The board's USB console is printed here and served on a pty (printed at
start): `h2pile flash --port PTY --board rp2_pico_w`, `h2pile provision
--port PTY ...` and `mpremote connect PTY` work against it. UART0 (RS-485)
goes to a simulator running on the board's clock; WiFi joins an emulated
access point (any SSID/password) whose gateway, 10.0.0.1, reaches only the
ports given with --broker-port/--allow-tcp on 127.0.0.1 and an SNTP
responder (UDP 123). Nothing the board sends leaves this machine.

The image: --uf2 PATH, else $H2P_UF2, else the newest RPI_PICO_W-*.uf2 in
../shared/mcu/. Ctrl-C stops (and saves --fs).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from host_tools.emu import uf2 as uf2mod


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m host_tools.picow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uf2", help="MicroPython Pico W image (default: $H2P_UF2 or ../shared/mcu/)")
    ap.add_argument("--check", action="store_true", help="check the image, print one line, exit")
    ap.add_argument("--fs", help="littlefs image of the board's flash: loaded at start, saved at exit")
    ap.add_argument("--install", action="store_true",
                    help="write a fresh --fs from build/rp2_pico_w (built if missing) and a config")
    ap.add_argument("--config", help="config.json to install (default: pile 'emu-1', the broker on 10.0.0.1)")
    ap.add_argument("--broker-port", type=int, default=0, help="MQTT broker on 127.0.0.1 the board may reach")
    ap.add_argument("--allow-tcp", type=int, action="append", default=[], metavar="PORT",
                    help="another 127.0.0.1 port the board may reach as 10.0.0.1:PORT")
    ap.add_argument("--no-sim", action="store_true", help="leave UART0 unconnected")
    ap.add_argument("--quiet", action="store_true", help="do not print the console")
    return ap


def default_config(broker_port: int) -> dict:
    # The clock from the harness's SNTP responder (an IP: the board has no DNS);
    # keepalive at its maximum because the broker counts wall seconds and the
    # board's are ~20x longer.
    cfg: dict = {"pile_id": "emu-1", "wifi": {"ssid": "h2pile-emu", "password": "emulated"},
                 "ntp": {"server": "10.0.0.1"}}
    if broker_port:
        cfg["mqtt"] = {"host": "10.0.0.1", "port": broker_port, "keepalive_s": 600}
    return cfg


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        image = uf2mod.resolve(a.uf2)
    except uf2mod.NoImage as e:
        print(f"picow: {e}", file=sys.stderr)
        return 2
    if a.check:
        print(f"picow: {image}: MicroPython for the Raspberry Pi Pico W (RP2040 UF2)")
        return 0
    if a.install:
        if not a.fs:
            print("picow: --install needs --fs IMAGE", file=sys.stderr)
            return 2
        from host_tools.build import build
        from host_tools.emu import fsimage

        bdir = build("rp2_pico_w")  # ~1 s: always the firmware of this checkout
        if a.config:
            with open(a.config) as f:
                cfg = json.load(f)
        else:
            cfg = default_config(a.broker_port)
        fsimage.install(a.fs, bdir, cfg)
        print(f"picow: {a.fs}: firmware from {bdir} and config for pile {cfg.get('pile_id')}")

    from host_tools.emu.rig import PicoRig

    t0 = time.monotonic()

    def echo(line: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {line}", flush=True)

    rig = PicoRig(image, fs_image=a.fs, sim=not a.no_sim, broker_port=a.broker_port or None,
                  tcp_ports=tuple(a.allow_tcp), echo=None if a.quiet else echo)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    rig.start()
    print(f"picow: {image.name} running; console on {rig.board.pty}"
          f"{'; simulator control port %d' % rig.sim.control_port if rig.sim else ''}", flush=True)
    try:
        while not done.wait(5) and rig.board.alive():
            pass
    finally:
        rig.stop(save_fs=a.fs)
        if a.fs:
            print(f"picow: flash saved to {a.fs}")
    if rig.board.error is not None:
        print(f"picow: emulator stopped: {rig.board.error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
