"""Fixtures for the board tier (marker `board`): the ESP32 double, and the emulated Pico W.

The Pico W part:
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.emu import uf2

ROOT = Path(__file__).resolve().parents[2]

# ---- the ESP32 board double (tests/board/esp32_*) ----
HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    # Registered here, not in pyproject (shared file): `pytest -m board`
    # runs the tests that boot the firmware on a board or a board double.
    config.addinivalue_line("markers", "board: boots the firmware on a (double of a) board")


@pytest.fixture(scope="session")
def esp32_build(tmp_path_factory):
    """build/esp32_generic + the ESP32 double as one ROM image, once per session."""
    from tests.helpers.esp32_run import build_esp32

    return build_esp32(str(tmp_path_factory.mktemp("fw-esp32")))


# ---- the emulated Pico W ----
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


# Per module, not per session: an emulated board is a CPU-bound thread in the
# pytest process; left running it would starve every later test of the GIL
# (the rest of the suite ran many times slower, and a vboard flash test spun).
@pytest.fixture(scope="module")
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


class MqttTap:
    """Every message under h2pile/v1/<pile>/#, JSON-decoded, with waiting."""

    def __init__(self, port: int, pile: str) -> None:
        import json
        import threading

        from h2p import topics
        from tests.helpers.mqtt_broker import paho_client

        self.prefix = topics.PREFIX + pile + "/"
        self.msgs: list[tuple[float, str, object]] = []
        self._cond = threading.Condition()
        self.c = paho_client(port, client_id="board-test-tap")

        def on_message(_c, _u, m) -> None:  # type: ignore[no-untyped-def]
            try:
                body: object = json.loads(m.payload)
            except ValueError:
                body = m.payload
            with self._cond:
                self.msgs.append((time.monotonic(), m.topic[len(self.prefix):], body))
                self._cond.notify_all()

        self.c.on_message = on_message
        self.c.on_connect = lambda c, *a: c.subscribe(self.prefix + "#", 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def mark(self) -> int:
        with self._cond:
            return len(self.msgs)

    def wait(self, name: str, pred=lambda body: True, timeout: float = 120.0, start: int = 0,  # type: ignore[no-untyped-def]
             board: Any = None, board_s: float | None = None):
        """The first message on `name` from index `start` that `pred` accepts. The
        deadline is `board_s` seconds of `board`'s clock when given (the emulated
        board slows down with the machine's load), else `timeout` wall seconds."""
        from host_tools.emu.board import Deadline

        dl = Deadline(board.emu_s if board is not None else None, timeout, board_s)
        i = start
        with self._cond:
            while True:
                while i < len(self.msgs):
                    _, t, body = self.msgs[i]
                    i += 1
                    if t == name and pred(body):
                        return body
                left = dl.left()
                if left <= 0:
                    seen = sorted({t for _, t, _ in self.msgs[start:]})
                    raise TimeoutError(f"no {name!r} message matching within {dl.says()} "
                                       f"(topics seen: {seen})")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def h2pile(*args: str, timeout: float = 600.0):  # type: ignore[no-untyped-def]
    """Run the `h2pile` command as a technician would; -> (rc, stdout, stderr, wall s)."""
    import subprocess

    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", *args], cwd=str(ROOT), capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr, time.monotonic() - t0


@pytest.fixture(scope="session")
def fw_rp2() -> str:
    """The firmware built for rp2_pico_w (`h2pile build rp2_pico_w`), once per run
    and shared by the workers (tests/helpers/fwbuild.py); read, never written."""
    from tests.helpers.fwbuild import build_shared

    return build_shared("rp2_pico_w")
