"""One emulated Raspberry Pi Pico W (rp2040py) running in a thread of this process.

The emulator's engine room is an asyncio loop on its own thread; everything
that touches the chip (UART bridge, NAT, console) runs there. The console
(USB CDC) is served on a pty - what `h2pile flash`, mpremote or a developer's
terminal opens - and every line the board prints is also kept in `console`
for tests to wait on. Time on the board is `emu_s()`: the chip's own clock,
which runs ~25x slower than wall time while the CPU is busy and jumps ahead
while it sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rp2040py.boards import BoardSpec, FlashLayout
from rp2040py.cli.process_repl import ProcessInteractiveRepl
from rp2040py.cli.pty_repl import PtyInteractiveRepl
from rp2040py.device.mp_device import MicroPythonDevice
from rp2040py.external.bootsel_button import BootselButton
from rp2040py.external.led_mock import LEDMock

from host_tools.emu import pace, uart_fix, usb_fix
from host_tools.emu.net import GuardedCyw43, NetRules

# MicroPython's rp2 littlefs on the Pico W: 212 blocks of 4096 B at flash offset 1,228,800.
PICO_W_FS = FlashLayout(fs_start=1_228_800, fs_blockcount=212, fs_blocksize=4096)
ESTOP_PIN = 15
_T = TypeVar("_T")


class _NoSigterm(ProcessInteractiveRepl):
    # rp2040py's console bridges install a SIGTERM handler, which only the main
    # thread may do; this board runs on its own thread and is stopped by stop().
    async def _on_start(self) -> None:
        pass

    async def _on_stop(self) -> None:
        pass


class ThreadPtyRepl(PtyInteractiveRepl, _NoSigterm):
    """rp2040py's pty console, startable off the main thread."""


class Deadline:
    """When a wait on the board gives up. With `board_s`: once the board's own
    clock has run that long AND `wall_min` wall seconds have passed (host-side
    work, the broker and the NAT, is slow under load too), so the deadline
    stretches as the emulator slows down on a busy machine; `wall_max` only
    catches an emulator that stopped. Without: plain wall seconds."""

    def __init__(self, clock_s: Callable[[], float] | None, wall_max: float,
                 board_s: float | None = None, wall_min: float = 60.0) -> None:
        self.clock_s, self.board_s = clock_s, board_s
        self.t0 = time.monotonic()
        self.e0 = clock_s() if clock_s is not None and board_s is not None else 0.0
        self.wall_max, self.wall_min = wall_max, min(wall_min, wall_max)

    def left(self) -> float:
        """Wall seconds to wait at most before asking again; <= 0 when expired."""
        wall = time.monotonic() - self.t0
        if self.board_s is None or self.clock_s is None:
            return self.wall_max - wall
        if wall >= self.wall_max:
            return 0.0
        if self.clock_s() - self.e0 >= self.board_s and wall >= self.wall_min:
            return 0.0
        return 0.5

    def says(self) -> str:
        if self.board_s is None or self.clock_s is None:
            return f"{self.wall_max:g} s wall"
        return (f"{self.board_s:g} s of board time ({self.clock_s() - self.e0:.1f} s passed, "
                f"{time.monotonic() - self.t0:.0f} s wall)")


class Console:
    """Lines the board printed, with host and board timestamps, and waiting on them."""

    def __init__(self, clock_s: Callable[[], float], echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[tuple[float, float, str]] = []  # (wall monotonic, emulated s, text)
        self._buf = b""
        self._cond = threading.Condition()
        self._clock_s = clock_s
        self.echo = echo
        self.last: tuple[float, float, str] | None = None  # the line the last wait() matched

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += bytes(data)
        if b"\n" not in self._buf:
            return
        *done, self._buf = self._buf.split(b"\n")
        now, emu = time.monotonic(), self._clock_s()
        with self._cond:
            for raw in done:
                text = raw.decode(errors="replace").rstrip("\r")
                self.lines.append((now, emu, text))
                if self.echo:
                    self.echo(text)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait(self, pattern: str | re.Pattern[str], timeout: float, start: int = 0,
             alive: Callable[[], bool] | None = None, board_s: float | None = None) -> re.Match[str]:
        """First line at index >= start matching `pattern` (re.search); TimeoutError
        naming the last lines otherwise. The deadline (not a sleep) is `board_s` seconds
        of the board's clock when given (`timeout` then only bounds a stopped emulator),
        else `timeout` wall seconds. -> the match; `last` is the line's (wall, board s, text)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        dl = Deadline(self._clock_s, timeout, board_s)
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i][2])
                    i += 1
                    if m:
                        self.last = self.lines[i - 1]
                        return m
                left = dl.left()
                if left <= 0 or (alive is not None and not alive()):
                    tail = " | ".join(t for _, _, t in self.lines[-6:])
                    raise TimeoutError(f"no console line matching {rx.pattern!r} within {dl.says()}; "
                                       f"last lines: {tail or 'none'}")
                self._cond.wait(min(left, 0.5))

    def text(self, start: int = 0) -> list[str]:
        with self._cond:
            return [t for _, _, t in self.lines[start:]]


class EmuPicoW:
    """A booted Pico W: `start()`, then `console`, `pty`, `emu_s()`, `call()`, `stop()`."""

    def __init__(self, uf2: Path, *, rules: NetRules | None = None, fs_image: Path | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.rules = rules or NetRules()
        self.wifi = GuardedCyw43(self.rules)
        spec = BoardSpec(extras=(lambda: LEDMock(gpio=25), BootselButton, lambda: self.wifi),
                         image=str(uf2), layout=PICO_W_FS)
        fs = fs_image if fs_image is not None and Path(fs_image).exists() else None
        self.device = MicroPythonDevice(board=spec, filesystem=fs)
        self.mcu = self.device.mcu
        uart_fix.apply(self.mcu)
        usb_fix.apply(self.device.cdc)
        pace.apply(self.mcu)
        self.console = Console(self.emu_s, echo)
        self.pty: str = ""
        self._repl: ThreadPtyRepl | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = concurrent.futures.Future[None]()
        self.error: BaseException | None = None
        self.release_estop()

    # ---- time -------------------------------------------------------------------
    def emu_s(self) -> float:
        """Seconds on the board's clock since the emulator started (never reset)."""
        return float(self.mcu.clock.nanos) / 1e9

    def unix_time(self) -> float | None:
        """Unix time by the board's own clock: what its last `LOG clock set T` says it
        set, advanced by the board seconds since that line. (Commands for the board are
        signed with it, as an operator's clock and a pile's agree on a real site.) None
        before the board set its clock."""
        with self.console._cond:
            for _, emu, text in reversed(self.console.lines):
                m = re.match(r"^LOG clock set (\d+) ", text)
                if m:
                    return int(m.group(1)) + (self.emu_s() - emu)
        return None

    def wait_emu(self, seconds: float, timeout: float) -> None:
        """Let `seconds` of board time pass (deadline `timeout` wall seconds)."""
        target = self.emu_s() + seconds
        end = time.monotonic() + timeout
        while self.emu_s() < target:
            if time.monotonic() > end or not self.alive():
                raise TimeoutError(f"{seconds:g} s of board time did not pass within {timeout:g} s wall")
            time.sleep(0.05)

    # ---- pins -------------------------------------------------------------------
    def _set_pin(self, pin: int, high: bool) -> None:
        def do() -> None:
            self.mcu.gpio[pin].set_input_value(high)

        self.call(do) if self.alive() else do()

    def release_estop(self) -> None:
        # GPIO15 (E-stop, active low, pull-up): undriven it reads "pressed" in the emulator.
        self._set_pin(ESTOP_PIN, True)

    def press_estop(self) -> None:
        self._set_pin(ESTOP_PIN, False)

    # ---- lifecycle --------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> EmuPicoW:
        self._thread = threading.Thread(target=self._run, name="picow", daemon=True)
        self._thread.start()
        self._ready.result(timeout)
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to whoever waits
            self.error = e
            if not self._ready.done():
                self._ready.set_exception(e)
        finally:
            loop.close()

    async def _main(self) -> None:
        sim = self.device.simulator
        sim.bind_loop()
        self._repl = ThreadPtyRepl(self.device.cdc, sim, on_quit=lambda code: None,
                                        on_data=self.console.feed)
        await self._repl.start()
        self.pty = self._repl.slave_path or ""
        await self.device.astart(timeout=None)
        self._ready.set_result(None)
        while not self._stop.is_set():
            if sim.engine_room_error is not None:
                raise sim.engine_room_error
            await asyncio.sleep(0.1)
        self.device.stop()
        await self._repl.stop()

    def call(self, fn: Callable[[], _T], timeout: float = 30.0) -> _T:
        """Run `fn` on the emulator's thread (between instruction batches) and return its result."""
        assert self._loop is not None
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def send_console(self, data: bytes) -> None:
        """Type `data` on the USB console (as a terminal on the pty would)."""
        assert self._repl is not None
        repl = self._repl
        self.call(lambda: repl._send_and_pace(data))

    def reset(self) -> None:
        """Press RESET (the RUN pin): the chip restarts, flash kept; USB re-enumerates."""
        self.call(self.device.hard_reset)

    def save_fs(self, path: str | os.PathLike[str]) -> None:
        """The littlefs region of the board's flash, as an image `fs_image=` loads."""
        self.call(lambda: self.device.dump_flash_image(Path(path)))

    def stop(self, save_fs: str | os.PathLike[str] | None = None) -> None:
        if self._thread is None:
            return
        if save_fs is not None and self.alive():
            self.save_fs(save_fs)
        self._stop.set()
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> EmuPicoW:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
