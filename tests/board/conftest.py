"""Fixtures for the emulated Pico W tier (marker `board`).

Every test here needs a MicroPython Pico W image: --uf2 is not a pytest option,
so the image comes from $H2P_UF2 or ../shared/mcu/ (host_tools.emu.uf2); without
one each test skips with the one line saying why. Boards are expensive (~10 s
wall to boot to the REPL, far more to run the firmware), so a booted board is
shared per module where the tests allow.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from host_tools.emu import uf2  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = str(Path(__file__).parent)
    for it in items:
        if str(it.fspath).startswith(here):
            it.add_marker(pytest.mark.board)


@pytest.fixture(scope="session")
def uf2_image() -> Path:
    try:
        return uf2.resolve()
    except uf2.NoImage as e:
        pytest.skip(str(e))


def echo_to(path: Path):
    """A console echo into a file (kept with the test's tmp dir, shown on failure)."""
    f = open(path, "a", buffering=1)
    t0 = time.monotonic()

    def echo(line: str) -> None:
        f.write(f"[{time.monotonic() - t0:7.1f}] {line}\n")

    return echo


class RawRepl:
    """The board's raw REPL over its pty (mpremote's transport, as `h2pile flash` uses it)."""

    def __init__(self, pty: str, connect_timeout: float = 60.0) -> None:
        from mpremote.transport_serial import SerialTransport

        self.t = SerialTransport(pty, baudrate=115200, timeout=1)
        self.t.enter_raw_repl(soft_reset=False, timeout_overall=connect_timeout)

    def exec(self, code: str, timeout: float = 120.0) -> str:
        self.t.exec_raw_no_follow(code)
        out, err = self.t.follow(timeout)
        if err:
            raise AssertionError("board raised: " + err.decode(errors="replace"))
        return out.decode(errors="replace")

    def close(self) -> None:
        try:
            self.t.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def repl_rig(uf2_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A Pico W with no firmware on it (MicroPython's REPL), WiFi guarded, no RS-485 line."""
    from host_tools.emu.rig import PicoRig

    d = tmp_path_factory.mktemp("repl-board")
    rig = PicoRig(uf2_image, sim=False, echo=echo_to(d / "console.log"))
    rig.start()
    repl = RawRepl(rig.board.pty)
    try:
        yield rig, repl
    finally:
        repl.close()
        rig.stop()
