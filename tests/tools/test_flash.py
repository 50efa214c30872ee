"""h2pile flash / provision / verify end to end against a virtual board (the
MicroPython unix port behind a pty with a littlefs flash image), and every
bad input that can be produced without hardware: wrong port, silent port,
wrong kind of board, bad pile id, failed hash, interrupted flash and
switch-over, full filesystem. Each leaves the previous firmware working."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from host_tools import ROOT, cli
from host_tools.build import build, write_sums
from host_tools.flash import session
from host_tools.flash.session import Board
from host_tools.flash.update import flash
from host_tools.virtual_board import VirtualBoard

pytestmark = [pytest.mark.micropython, pytest.mark.slow]  # real-time flows of tens of seconds: make test, not test-fast


SECRET = "fleet-secret-Zq8x-do-not-leak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """v1 (a build of the firmware) and v2 (same, main.py and VERSION changed)."""
    root = tmp_path_factory.mktemp("builds")
    v1 = build("unix_sim", str(root / "v1"))
    v2 = str(root / "v2" / "unix_sim")
    shutil.copytree(v1, v2)
    with open(os.path.join(v2, "main.py"), "a") as f:
        f.write("# v2\n")
    with open(os.path.join(v2, "VERSION"), "w") as f:
        f.write("9.9.9-test\n")
    write_sums(v2)
    other = build("esp32_generic", str(root / "esp"))
    return {"v1": v1, "v2": v2, "esp": other}


@pytest.fixture(scope="module")
def sim_port():
    """The simulator on RTU-over-TCP for the unix board's bus (so the
    firmware's boot self-test can pass)."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "sim", "--port", str(port), "--control-port",
                          str(free_port())], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    assert "serving" in line, line
    yield port
    p.terminate()
    p.wait(5)


@pytest.fixture(scope="module")
def vb(tmp_path_factory, sim_port):
    d = tmp_path_factory.mktemp("vboard")
    b = VirtualBoard(str(d), str(d / "tty"), flash_kb=1024, bus_port=sim_port).start()
    yield b
    b.stop()


def run(*argv):
    return cli.main([str(a) for a in argv])


def board_files(port, only=None) -> dict[str, bytes]:
    """Every file on the board (or the ones in `only`) with its content."""
    b = Board(port)
    try:
        names = b.eval("agent_walk('', [])")
        out = {}
        for n in names:
            if only is not None and n not in only:
                out[n] = b""
                continue
            # In chunks: the stopped firmware still holds much of the heap.
            b.exec("_rf=open(%r,'rb')" % n)
            data = b""
            while True:
                c = b.eval("_rf.read(2048)")
                if not c:
                    break
                data += c
            b.exec("_rf.close()")
            out[n] = data
        return out
    finally:
        b.close()


def live_version(port) -> str:
    b = Board(port)
    try:
        return (b.read_text("VERSION") or "").strip()
    finally:
        b.close()


def test_flash_provision_verify(vb, builds, capsys, tmp_path):
    port = vb.link
    # A fresh board: everything is sent and checked.
    assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v1"]) == 0
    out = capsys.readouterr().out
    assert "flash [" in out and "100%" in out
    nfiles = len(open(os.path.join(builds["v1"], "SHA256SUMS")).read().split("\n")) - 1 + 1
    assert "%d files sent, 0 unchanged" % nfiles in out, out
    # Same build again: nothing to copy.
    assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v1"]) == 0
    assert "nothing to copy" in capsys.readouterr().out
    # v2: only the changed files travel; the rest is copied on the board.
    assert run("flash", "--port", port, "--board", "unix_sim", "--build", builds["v2"]) == 0
    out = capsys.readouterr().out
    # main.py, VERSION and SHA256SUMS changed
    assert "3 files sent, %d unchanged" % (nfiles - 3) in out, out
    assert live_version(port) == "9.9.9-test"
    files = board_files(port, ["lib/h2p/app.mpy"])
    assert "prev/VERSION" in files and "next/VERSION" not in files
    with open(os.path.join(builds["v2"], "lib/h2p/app.mpy"), "rb") as f:
        assert files["lib/h2p/app.mpy"] == f.read()

    base = tmp_path / "site.json"
    base.write_text('{"auto_start": true, "bus": {"timeout_ms": 200}}')
    assert run("provision", "--port", port, "--pile-id", "p-0042", "--fleet-secret", SECRET,
               "--broker", "mqtt.example.net:8883", "--config", base) == 0
    assert "provisioned pile p-0042" in capsys.readouterr().out
    files = board_files(port)
    import json

    from h2p import keys

    cfg = json.loads(files["config.json"])
    assert cfg["pile_id"] == "p-0042" and cfg["auto_start"] is True
    assert cfg["mqtt"]["password"] == keys.mqtt_password(SECRET, "p-0042")
    assert cfg["mqtt"]["cmd_key"] == keys.cmd_key(SECRET, "p-0042")
    assert cfg["mqtt"]["host"] == "mqtt.example.net" and cfg["mqtt"]["port"] == 8883
    # The fleet secret never reaches the board, in any file, in any form.
    for name, data in files.items():
        assert SECRET.encode() not in data, name
        assert SECRET.encode().hex().encode() not in data, name

    # verify: resets the board, reads the firmware's boot report and self-test.
    assert run("verify", "--port", port, "--timeout", 30) == 0
    out = capsys.readouterr().out
    assert "firmware: 9.9.9-test" in out and "all sha256 ok" in out
    assert "config:   pile p-0042" in out
    assert "boot:     h2pile" in out and "pile p-0042" in out and "heap free" in out
    assert "selftest: pass" in out, out
    assert "checks:   firmware files ok, config ok, boot ok, self-test pass" in out, out


def test_verify_fails_when_the_selftest_never_ran(tmp_path, builds, capsys):
    """No bus on the board: the firmware boots and its self-test waits for
    the devices. verify used to say OK; now it fails and says why."""
    d = tmp_path / "nobus"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=1024) as b:
        assert run("flash", "--port", b.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
        base = tmp_path / "site.json"
        base.write_text('{"bus": {"timeout_ms": 200}}')
        assert run("provision", "--port", b.link, "--pile-id", "p-nobus", "--fleet-secret", SECRET,
                   "--config", base) == 0
        capsys.readouterr()
        assert run("verify", "--port", b.link, "--timeout", 4) == 1
        cap = capsys.readouterr()
        assert "boot:     h2pile" in cap.out, cap.out  # it booted: the board is not the problem
        assert "selftest: NOT RUN: not finished within 4 s" in cap.out, cap.out
        assert "checks:   firmware files ok, config ok, boot ok, self-test NOT RUN" in cap.out, cap.out
        assert ": OK" not in cap.out
        assert "NOT OK" in cap.err and "the self-test did not finish within 4 s" in cap.err, cap.err


def test_wrong_kind_of_board_is_refused(vb, builds, capsys):
    before = live_version(vb.link)
    assert run("flash", "--port", vb.link, "--board", "esp32_generic", "--build", builds["esp"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'unix' board" in err[0] and "esp32" in err[0]
    assert live_version(vb.link) == before


def test_bad_ports(tmp_path, capsys, monkeypatch):
    assert run("flash", "--port", tmp_path / "nope", "--board", "unix_sim") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such serial port" in err[0]
    assert run("verify", "--port", tmp_path / "nope") == 3
    capsys.readouterr()
    # A port with nothing answering behind it (a pty nobody serves).
    m, s = os.openpty()
    try:
        monkeypatch.setattr(session, "CONNECT_TIMEOUT", 1.0)
        t0 = time.monotonic()
        assert run("verify", "--port", os.ttyname(s)) == 3
        assert time.monotonic() - t0 < 10
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not answer" in err[0]
    finally:
        os.close(m)
        os.close(s)


def test_bad_pile_id_and_bad_provision_input(vb, capsys, tmp_path):
    before = board_files(vb.link, ["config.json"]).get("config.json")
    for argv, what in (
        (["--pile-id", "Bad ID!"], "bad pile id"),
        (["--pile-id", "p-1", "--broker", "nohostport"], "HOST:PORT"),
        (["--pile-id", "p-1", "--tls"], "--tls needs --ca"),
        (["--pile-id", "p-1", "--wifi", "nopass"], "SSID:PASSWORD"),
    ):
        assert run("provision", "--port", vb.link, "--fleet-secret", SECRET, *argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0], err
    # The unix board has no WiFi: refused, and the check comes from board.json.
    assert run("provision", "--port", vb.link, "--fleet-secret", SECRET, "--pile-id", "p-1",
               "--wifi", "site:password") == 2
    assert "no WiFi" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"bus": {"baud": 1234}}')
    assert run("provision", "--port", vb.link, "--fleet-secret", SECRET, "--pile-id", "p-1",
               "--config", bad) == 2
    err = capsys.readouterr().err
    assert "bus.baud" in err and "1234" in err
    # TLS from the site config with no --ca: the board has no ca.der, so the
    # pile would refuse to boot; refused here, naming key and file, before writing.
    tls = tmp_path / "tls.json"
    tls.write_text('{"mqtt": {"tls": true}}')
    assert run("provision", "--port", vb.link, "--fleet-secret", SECRET, "--pile-id", "p-1",
               "--broker", "mqtt.example.net:8883", "--config", tls) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key 'mqtt.ca_file' names 'ca.der': no such file" in err[0] and "--ca" in err[0], err
    assert board_files(vb.link, ["config.json"]).get("config.json") == before


def test_failed_hash_keeps_previous_firmware(vb, builds, capsys, monkeypatch):
    assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
    capsys.readouterr()
    real = Board.write_files

    def corrupt(self, items, progress=None):
        # One byte of main.py changed on the way.
        items = [(p, d[:-2] + b"#\n" if p.endswith("main.py") else d) for p, d in items]
        return real(self, items, progress)

    monkeypatch.setattr(Board, "write_files", corrupt)
    assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v2"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0] and "main.py" in err[0]
    files = board_files(vb.link, ["VERSION"])
    assert not any(n.startswith("next/") for n in files)
    assert files["VERSION"].decode().strip() == open(os.path.join(builds["v1"], "VERSION")).read().strip()


def test_interrupted_flash_and_switch_recover(vb, builds, capsys, monkeypatch):
    assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
    v1 = live_version(vb.link)
    real = Board.write_files

    def cut(self, items, progress=None):
        real(self, items[:1], progress)
        raise KeyboardInterrupt  # the cable is pulled mid-copy, after the first file

    monkeypatch.setattr(Board, "write_files", cut)
    with pytest.raises(KeyboardInterrupt):
        flash(vb.link, "unix_sim", builds["v2"])
    monkeypatch.setattr(Board, "write_files", real)
    assert live_version(vb.link) == v1  # still the old firmware, staging half full
    # A switch-over cut after its first rename: the next connection finishes it.
    b = Board(vb.link)
    try:
        b.run("agent_remove('next')\nagent_makedirs('next/lib')\nagent_copy('VERSION','next/VERSION')\n"
              "f=open('next/VERSION','w')\nf.write('half\\n')\nf.close()\n"
              "agent_remove('prev')\nagent_makedirs('prev')\nf=open('.switch','w')\nf.write('next prev')\n"
              "f.close()\n"
              "os.rename('VERSION','prev/VERSION')", "test set-up")
    finally:
        b.close()
    capsys.readouterr()
    assert run("verify", "--port", vb.link, "--timeout", 5) in (0, 1)
    out = capsys.readouterr().out
    assert "finished a switch-over" in out
    assert live_version(vb.link) == "half"
    # And a normal flash brings the board back to a checked build.
    assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v2"]) == 0
    assert live_version(vb.link) == "9.9.9-test"
    # /prev/ now holds the hand-made "half" firmware, whose VERSION does not
    # match its SHA256SUMS: a rollback to it is refused.
    capsys.readouterr()
    assert run("flash", "--port", vb.link, "--rollback") == 6
    assert "damaged" in capsys.readouterr().err
    assert live_version(vb.link) == "9.9.9-test"
    # A good /prev/: rollback switches back, and back again.
    assert run("flash", "--port", vb.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
    assert live_version(vb.link) == v1
    assert run("flash", "--port", vb.link, "--rollback") == 0
    assert live_version(vb.link) == "9.9.9-test"
    assert run("flash", "--port", vb.link, "--rollback") == 0
    assert live_version(vb.link) == v1


def test_full_filesystem(tmp_path, builds, capsys):
    # A board with room for one firmware but not two: the safe update refuses
    # up front; forced past the estimate, it runs into ENOSPC and cleans up.
    d = tmp_path / "small"
    with VirtualBoard(str(d), str(d / "tty"), flash_kb=300) as b:
        assert run("flash", "--port", b.link, "--board", "unix_sim", "--build", builds["v1"]) == 0
        v1 = live_version(b.link)
        capsys.readouterr()
        assert run("flash", "--port", b.link, "--board", "unix_sim", "--build", builds["v2"]) == 5
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "too full" in err[0]
        # Fill the disk so even the few changed files do not fit.
        fb = Board(b.link)
        try:
            fb.run("f=open('data.bin','wb')\ntry:\n while True:\n  f.write(bytes(4096))\n"
                   "except OSError:\n pass\nf.close()", "filling")
        finally:
            fb.close()
        assert run("flash", "--port", b.link, "--board", "unix_sim", "--build", builds["v2"],
                   "--skip-space-check") == 5
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "full" in err[0]
        files = board_files(b.link, ["main.py"])
        assert not any(n.startswith("next/") for n in files)
        assert live_version(b.link) == v1
        with open(os.path.join(builds["v1"], "main.py"), "rb") as f:
            assert files["main.py"] == f.read()
