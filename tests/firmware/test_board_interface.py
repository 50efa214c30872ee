"""The firmware type-checks against each board's MicroPython stubs (mypy)
and compiles with mpy-cross for each board's architecture.

The esp32 and rp2 stub packages both install machine.pyi and friends, so
in one site-packages the last one wins: each board gets its own directory
(build/stubs/<platform>, `pip install --target`, the same pinned versions
as pyproject's [test] extra), used as mypy's typeshed and MYPYPATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from host_tools import ROOT

FW = os.path.join(ROOT, "firmware")
INI = os.path.join(ROOT, "tests", "helpers", "mypy_board.ini")
BOARDS = {"esp32": ("micropython-esp32-stubs==1.29.0.post1", "xtensawin"),
          "rp2": ("micropython-rp2-stubs==1.29.0.post1", "armv6m")}
STDLIB = "micropython-stdlib-stubs==1.29.0.post2"


def stubs(platform: str) -> str:
    d = os.path.join(ROOT, "build", "stubs", platform)
    if os.path.exists(os.path.join(d, "machine.pyi")) and os.path.isdir(os.path.join(d, "stdlib")):
        return d
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tmp,
                        BOARDS[platform][0], STDLIB], capture_output=True, text=True, timeout=180)
    if r.returncode:
        pytest.skip(f"cannot install the {platform} stubs with pip: {r.stderr.strip()[-300:]}")
    shutil.rmtree(d, ignore_errors=True)
    os.rename(tmp, d)
    return d


def mypy(platform: str, *files: str) -> subprocess.CompletedProcess:
    d = stubs(platform)
    env = dict(os.environ, MYPYPATH=d + os.pathsep + FW)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", INI, "--custom-typeshed-dir", d,
         "--cache-dir", os.path.join(ROOT, "build", "mypy-cache", platform), *files],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("platform", sorted(BOARDS))
def test_board_firmware_typechecks(platform):
    # main.py imports the board module and, through app, the rest of h2p.
    r = mypy(platform, os.path.join(FW, "h2p", "board_%s.py" % platform), os.path.join(FW, "main.py"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout


def test_typecheck_catches_a_wrong_call(tmp_path):
    # The check is real: a misspelt UART method on the rp2 is an error.
    src = open(os.path.join(FW, "h2p", "board_rp2.py")).read()
    assert "uart.txdone()" in src
    bad = tmp_path / "h2p"
    shutil.copytree(os.path.join(FW, "h2p"), bad)
    (bad / "board_rp2.py").write_text(src.replace("uart.txdone()", "uart.tx_done()"))
    d = stubs("rp2")
    env = dict(os.environ, MYPYPATH=d + os.pathsep + str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", INI, "--custom-typeshed-dir", d,
                        "--no-incremental", str(bad / "board_rp2.py")],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 1 and "tx_done" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("platform", sorted(BOARDS))
def test_firmware_compiles_for_board(platform, tmp_path):
    march = BOARDS[platform][1]
    from host_tools.build import mpy_cross

    mpy = mpy_cross()
    names = [n for n in sorted(os.listdir(os.path.join(FW, "h2p"))) if n.endswith(".py")]
    assert "board_%s.py" % platform in names and "board_mcu.py" in names
    for n in names + ["../main.py"]:
        r = subprocess.run([mpy, "-march=" + march, "-o", str(tmp_path / "x.mpy"),
                            os.path.join(FW, "h2p", n)], capture_output=True, text=True)
        assert r.returncode == 0, (n, r.stderr)


def test_board_build_has_only_its_board_module():
    from tests.helpers.fwbuild import build_shared  # the run's builds (read, never written)

    for board, plat in (("esp32_generic", "esp32"), ("rp2_pico_w", "rp2"), ("unix_sim", "unix")):
        out = build_shared(board)
        mods = {n for n in os.listdir(os.path.join(out, "lib", "h2p")) if n.startswith("board_")}
        want = {"board_%s.mpy" % plat} | ({"board_mcu.mpy"} if plat != "unix" else set())
        assert mods == want, (board, mods)


def _mypy_on_copy(tmp_path, platform, edits):
    # mypy on a copy of the firmware with `edits` {file: (old, new)} applied.
    bad = tmp_path / "h2p"
    shutil.copytree(os.path.join(FW, "h2p"), bad)
    for name, (old, new) in edits.items():
        src = (bad / name).read_text()
        assert old in src, (name, old)
        (bad / name).write_text(src.replace(old, new))
    shutil.copy(os.path.join(FW, "main.py"), tmp_path / "main.py")
    d = stubs(platform)
    env = dict(os.environ, MYPYPATH=d + os.pathsep + str(tmp_path))
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", INI, "--custom-typeshed-dir", d,
                           "--no-incremental", str(bad / ("board_%s.py" % platform)), str(tmp_path / "main.py")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)


def test_a_board_missing_part_of_the_interface_is_an_error(tmp_path):
    # h2p.board.Board is the written-down interface: McuBoard without
    # set_time no longer implements it, and mypy says so.
    r = _mypy_on_copy(tmp_path, "rp2", {"board_mcu.py": ("    def set_time(self, unix_s):", "    def set_tim(self, unix_s):")})
    assert r.returncode == 1 and "set_time" in r.stdout, r.stdout + r.stderr


def test_the_app_may_use_only_the_interface(tmp_path):
    # app.py reaching past the interface (here: a board attribute no board
    # promises) is an error on every port.
    r = _mypy_on_copy(tmp_path, "esp32", {"app.py": ("sup.estop_in = self.board.estop_pressed()",
                                                     "sup.estop_in = self.board.estop_now()")})
    assert r.returncode == 1 and "estop_now" in r.stdout, r.stdout + r.stderr
