"""h2pile flash / verify / rollback on a board with a ROMFS partition: the
code goes into the partition as the build's rom.img and runs in place; only
main.py, board.json, VERSION and SHA256SUMS go onto the filesystem. The
virtual board gets a vfs.rom_ioctl double (host_tools/virtual_board.py,
ROMFS_DOUBLE) backed by BOARD_DIR/romfs.part, in both shapes MicroPython's
ports have: a memoryview with rom_ioctl(3/4/5) writes, and a block device
(ESP32, RP2040). Also: a board without ROMFS keeps the .mpy path; an image
bigger than the partition is refused and the old firmware kept; a ROM
write cut off leaves the board running the previous .mpy files."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import shutil
import tokenize

import pytest

from host_tools import FIRMWARE
from host_tools.build import write_rom_image, write_sums
from host_tools.flash import romfs, session
from host_tools.flash.session import Board
from host_tools.flash.update import flash
from host_tools.virtual_board import VirtualBoard
from tests.tools.test_flash import board_files, builds, live_version, run, sim_port  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.micropython, pytest.mark.slow]  # real-time flows of tens of seconds: make test, not test-fast



def provision(link, tmp_path, pile):
    base = tmp_path / "site.json"
    base.write_text('{"auto_start": true, "bus": {"timeout_ms": 200}}')
    assert run("provision", "--port", link, "--pile-id", pile, "--fleet-secret", "s" * 20,
               "--config", base) == 0


def rom_sha(link):
    b = Board(link)
    try:
        return romfs.sha(b)
    finally:
        b.close()


def flash_as_mpy(monkeypatch, link, build_dir):
    """Flash the way a board without ROMFS is flashed (the .mpy files in
    lib/), to give a ROMFS board an old-style firmware to replace."""
    with monkeypatch.context() as m:
        m.setattr(romfs, "info", lambda board: None)
        assert run("flash", "--port", link, "--board", "unix_sim", "--build", build_dir) == 0


def image(build_dir):
    with open(os.path.join(build_dir, "rom.img"), "rb") as f:
        return f.read()


@pytest.mark.parametrize("style", ["memory", "block"])
def test_rom_flash_verify_rollback(tmp_path, builds, sim_port, capsys, monkeypatch, style):  # noqa: F811
    d = tmp_path / "board"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=1024, bus_port=sim_port, romfs_kb=128,
                      romfs_style=style) as vb:
        port = vb.link
        # The board runs a firmware from before ROM images: .mpy files in lib/.
        flash_as_mpy(monkeypatch, port, builds["v1"])
        v1 = live_version(port)
        capsys.readouterr()

        # Flashing v2 finds the partition and writes the image there.
        assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v2"]) == 0
        out = capsys.readouterr().out
        assert "ROMFS partition of 128 KB (%s)" % ("block device" if style == "block" else "memory") in out
        assert "rom [" in out and "code in the ROMFS partition" in out, out
        img = image(builds["v2"])
        assert rom_sha(port) == hashlib.sha256(img).hexdigest()
        with open(d / "romfs.part", "rb") as f:
            assert f.read(len(img)) == img
        files = board_files(port, ["SHA256SUMS"])
        # No .mpy on the filesystem (it would shadow /rom); the old ones wait in prev/.
        assert not any(n.startswith("lib/") for n in files), sorted(files)
        assert "prev/lib/h2p/app.mpy" in files and "prev/VERSION" in files
        sums = files["SHA256SUMS"].decode()
        assert "rom.img" in sums and "lib/h2p" not in sums
        assert live_version(port) == "9.9.9-test"

        # Same build again: nothing to write.
        assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v2"]) == 0
        assert "nothing to copy" in capsys.readouterr().out

        # verify: the board boots from the image and says so.
        provision(port, tmp_path, "p-rom")
        capsys.readouterr()
        rc = run("verify", "--port", port, "--timeout", 30)
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "code: the ROM image" in out and "all sha256 ok" in out, out
        assert "code:     ROM image in flash (runs in place), MicroPython 1." in out, out
        assert "selftest: pass" in out, out

        # Rollback to the .mpy firmware, and forward again to the ROM one
        # (the partition still holds its image).
        assert run("flash", "--port", port, "--rollback") == 0
        assert live_version(port) == v1
        assert "lib/h2p/app.mpy" in board_files(port, [])
        assert run("flash", "--port", port, "--rollback") == 0
        assert live_version(port) == "9.9.9-test"
        assert not any(n.startswith("lib/") for n in board_files(port, []))
        capsys.readouterr()
        assert run("verify", "--port", port, "--timeout", 30) == 0
        assert "code:     ROM image" in capsys.readouterr().out


def test_cut_rom_write_falls_back_to_previous_mpy(tmp_path, builds, sim_port, capsys, monkeypatch):  # noqa: F811
    d = tmp_path / "board"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=1024, bus_port=sim_port, romfs_kb=128) as vb:
        port = vb.link
        flash_as_mpy(monkeypatch, port, builds["v1"])
        assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v2"]) == 0
        provision(port, tmp_path, "p-cut")
        # Another image to write, cut off after a few chunks (the cable is pulled).
        v3 = tmp_path / "v3"
        shutil.copytree(builds["v2"], v3)
        with open(v3 / "lib" / "h2p" / "zz_extra.mpy", "wb") as f:
            f.write(bytes(2000))
        write_rom_image(str(v3 / "lib"), str(v3 / "rom.img"))
        write_sums(str(v3))
        real = Board.exec
        n = []

        def cut(self, code, timeout=30):
            if code.startswith("agent_rom_write("):
                n.append(1)
                if len(n) == 5:
                    raise KeyboardInterrupt
            return real(self, code, timeout)

        monkeypatch.setattr(Board, "exec", cut)
        with pytest.raises(KeyboardInterrupt):
            flash(port, "unix_sim", str(v3))
        monkeypatch.setattr(Board, "exec", real)
        # The header goes last: the partition holds no image, not half of one.
        assert rom_sha(port) is None
        capsys.readouterr()
        # The board boots the previous .mpy files from prev/lib, and says why.
        assert run("verify", "--port", port, "--timeout", 30) == 1
        cap = capsys.readouterr()
        assert "boot:     NO ROM IMAGE" in cap.out and "prev/lib" in cap.out, cap.out
        assert "code:     .mpy files loaded into the heap" in cap.out
        assert "DAMAGED: rom.img" in cap.out
        assert "NOT OK" in cap.err
        # Flashing again repairs it.
        assert run("flash", "--port", port, "--board", "unix_sim", "--build", str(v3)) == 0
        assert rom_sha(port) == hashlib.sha256(image(str(v3))).hexdigest()
        capsys.readouterr()
        assert run("verify", "--port", port, "--timeout", 30) == 0
        out = capsys.readouterr().out
        assert "code:     ROM image in flash" in out and "NO ROM IMAGE" not in out, out


def test_board_without_romfs_gets_mpy_files(tmp_path, builds, sim_port, capsys):  # noqa: F811
    d = tmp_path / "board"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=1024, bus_port=sim_port) as vb:
        assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
        out = capsys.readouterr().out
        assert "ROMFS" not in out and "code as .mpy files in lib/" in out, out
        files = board_files(vb.link, [])
        assert "lib/h2p/app.mpy" in files and "SHA256SUMS" in files
        provision(vb.link, tmp_path, "p-mpy")
        assert run("verify", "--port", vb.link, "--timeout", 30) == 0
        out = capsys.readouterr().out
        assert "code:     .mpy files loaded into the heap, MicroPython 1." in out, out


def test_rom_image_bigger_than_partition_is_refused(tmp_path, builds, capsys, monkeypatch):  # noqa: F811
    d = tmp_path / "board"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=1024, romfs_kb=16) as vb:
        flash_as_mpy(monkeypatch, vb.link, builds["v1"])
        before = board_files(vb.link, ["VERSION", "main.py"])
        capsys.readouterr()
        assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v2"]) == 5
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not fit the board's ROMFS partition (16384 bytes)" in err[0], err
        assert "previous firmware stays" in err[0]
        assert board_files(vb.link, ["VERSION", "main.py"]) == before
        assert rom_sha(vb.link) is None
        with open(d / "romfs.part", "rb") as f:
            assert f.read() == b"\xff" * 16384  # never erased or written


def _helper_names() -> set[str]:
    """Global names the board agent defines, in the code as it is sent."""
    names = set()
    for part in ("core", "rom"):
        tree = ast.parse("\n".join(session.agent_code(part)))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Global):
                names.update(node.names)
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_helper_names_are_not_firmware_names():
    """The board agent's names must not be names in the firmware: a .mpy
    run from /rom interns its names pointing into the partition, and once
    the partition is rewritten such a name no longer matches itself, so a
    helper sharing it could not be called any more in that session."""
    helpers = _helper_names()
    assert {"agent_feed", "agent_rom_write", "agent_rom_prepare", "agent_finish_switch", "agent_wdt",
            "agent_rom_dev"} <= helpers
    used = set()
    for dirpath, _dirs, names in os.walk(FIRMWARE):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    for tok in tokenize.tokenize(io.BytesIO(f.read()).readline):
                        if tok.type == tokenize.NAME:
                            used.add(tok.string)
                        elif tok.type == tokenize.STRING:
                            used.add(tok.string.strip("'\"brf"))
    assert not helpers & used, helpers & used
