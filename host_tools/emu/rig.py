"""The emulated Pico W wired up as on the pile: RS-485 to the simulator, WiFi to loopback services.

    rig = PicoRig(uf2, fs_image=img, broker_port=1883).start()
    rig.board.console.wait(r"^BOOT ", 120)
    ...
    rig.stop(save_fs=img)   # the board's littlefs back into the image (journal kept)

Board time drives the simulator (SimHost); the UART bridge is the wire
(Rs485Bridge); the network reaches only what is registered here (the broker's
port, an SNTP responder on 127.0.0.1).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from host_tools.emu.board import EmuPicoW
from host_tools.emu.net import NetRules, SntpResponder
from host_tools.emu.rs485 import Rs485Bridge
from host_tools.emu.simhost import SimHost


class PicoRig:
    def __init__(self, uf2: Path, *, fs_image: str | os.PathLike[str] | None = None, sim: bool = True,
                 sim_overrides: dict[str, float] | None = None, broker_port: int | None = None,
                 tcp_ports: tuple[int, ...] = (), sntp: bool = True,
                 echo: Callable[[str], None] | None = None) -> None:
        self.rules = NetRules()
        self.board = EmuPicoW(uf2, rules=self.rules, fs_image=Path(fs_image) if fs_image else None, echo=echo)
        self.rules.clock = self.board.emu_s
        self.sntp = SntpResponder() if sntp else None
        if self.sntp is not None:
            self.rules.sntp_port = self.sntp.port
        for p in (broker_port, *tcp_ports):
            if p:
                self.rules.allow_tcp(p)
        self.sim: SimHost | None = None
        self.bridge: Rs485Bridge | None = None
        if sim:
            self.sim = SimHost(self.board.emu_s, sim_overrides)
            # Wired before the chip runs: the firmware's first request already finds the line.
            self.bridge = Rs485Bridge(self.board.mcu, self.sim.port, turnaround_s=self.sim.sim.turnaround_s)

    def start(self, timeout: float = 120.0) -> PicoRig:
        if self.sim is not None:
            self.sim.start()
        self.board.start(timeout)
        return self

    def drop_wifi(self) -> None:
        """The access point goes away (deauth; joins find no network until restore_wifi)."""
        bus = self.board.wifi.bus
        self.board.call(bus.drop)

    def restore_wifi(self) -> None:
        bus = self.board.wifi.bus
        self.board.call(bus.restore)

    def stop(self, save_fs: str | os.PathLike[str] | None = None) -> None:
        self.board.stop(save_fs=save_fs)
        if self.bridge is not None:
            self.bridge.close()
        if self.sim is not None:
            self.sim.stop()
        if self.sntp is not None:
            self.sntp.close()

    def __enter__(self) -> PicoRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
