"""A config whose named files are missing or wrong stops the boot with one
line naming the key and the file (h2p.boardcfg.load_both), before anything
is driven: no BOOT, no uplink, no traceback later. Before, TLS on with no CA
file printed BOOT and then died with a bare `OSError: ENOENT`."""

import json
import os
import shutil
import subprocess

import pytest

from h2p import boardcfg

DER = b"\x30\x82\x01\x00" + bytes(256)
TLS = {"pile_id": "p-1", "mqtt": {"host": "127.0.0.1", "port": 8883, "tls": True, "ca_file": "fleet.der"}}
BOARD = {"name": "unix_sim", "platform": "unix", "uart": {"transport": "tcp"}}


def _dir(tmp_path, cfg, files=None):
    (tmp_path / "board.json").write_text(json.dumps(BOARD))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for name, data in (files or {}).items():
        (tmp_path / name).write_bytes(data)


@pytest.mark.parametrize("files, why", [
    ({}, "no such file"),
    ({"fleet.der": b""}, "the file is empty"),
    ({"fleet.der": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}, "PEM"),
    ({"fleet.der": DER[:100]}, "not a DER certificate (100 bytes)"),
])
def test_bad_ca_file_stops_the_boot_naming_key_and_file(tmp_path, monkeypatch, capsys, files, why):
    _dir(tmp_path, TLS, files)
    monkeypatch.chdir(tmp_path)
    assert boardcfg.load_both("unix") == (None, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("CONFIG ERROR config.json: key 'mqtt.ca_file' names 'fleet.der': "), out
    assert why in out[0] and out[1].startswith("STATE off"), out


def test_unreadable_ca_file_is_named(tmp_path, monkeypatch, capsys):
    _dir(tmp_path, TLS)
    (tmp_path / "fleet.der").mkdir()  # there, but no file to read
    monkeypatch.chdir(tmp_path)
    assert boardcfg.load_both("unix") == (None, None)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("CONFIG ERROR config.json: key 'mqtt.ca_file' names 'fleet.der': cannot read ("), line


def test_good_ca_file_and_mqtt_off_boot(tmp_path, monkeypatch, capsys):
    _dir(tmp_path, TLS, {"fleet.der": DER})
    monkeypatch.chdir(tmp_path)
    desc, cfg = boardcfg.load_both("unix")
    assert cfg["mqtt"]["ca_file"] == "fleet.der" and desc["name"] == "unix_sim"
    # TLS set but no broker: the CA is never opened, so it is not required.
    _dir(tmp_path, dict(TLS, mqtt={"tls": True}))
    os.remove(tmp_path / "fleet.der")
    assert boardcfg.load_both("unix")[1]["mqtt"]["tls"] is True
    assert "CONFIG ERROR" not in capsys.readouterr().out


@pytest.mark.micropython
def test_unix_port_refuses_tls_without_ca_at_boot(tmp_path, fw_build):
    # The real firmware on the MicroPython unix port, 96K heap: it exits with
    # the one line and code 2 (a board stays at the REPL, no reset loop)
    # before the pile, the bus or the uplink is started.
    from tests.helpers.fwbuild import MICROPYTHON

    shutil.copy(os.path.join(fw_build, "main.py"), tmp_path)
    shutil.copy(os.path.join(fw_build, "board.json"), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TLS))
    env = dict(os.environ, MICROPYPATH=".frozen:" + os.path.join(fw_build, "lib"), H2P_BUS_PORT="1")
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=96K", "main.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=30)
    lines = (r.stdout + r.stderr).splitlines()
    assert lines[:2] == ["CONFIG ERROR config.json: key 'mqtt.ca_file' names 'fleet.der': no such file",
                         "STATE off (not started: fix the file and reset)"], lines
    assert r.returncode == 2 and len(lines) == 2, lines
