"""`h2pile provision` builds config.json on the host and validates it with the
firmware's own validator before anything is written to a board: the SNTP
server the board sets its clock from (`--ntp`), and bad values named; the
files the config names (the fleet CA) get the firmware's boot check, on the
bytes that will be on the board, before anything is written."""

import shutil
import subprocess

import pytest

from host_tools.flash.provision import check_files, make_config, provision
from host_tools.flash.session import FlashError

SECRET = "00" * 32


def _cfg(**kw):
    args = dict(base={}, pile_id="p-1", secret=SECRET, wifi="depot:password", broker="10.0.0.1:1883", tls=False,
                ca_name=None, has_wifi=True)
    args.update(kw)
    return make_config(**args)


def test_ntp_server_and_port_go_to_the_config():
    cfg, full = _cfg(ntp="10.0.0.1:1123")
    assert full["ntp"]["server"] == "10.0.0.1" and full["ntp"]["port"] == 1123
    cfg, full = _cfg(ntp="pool.ntp.org")
    assert full["ntp"]["server"] == "pool.ntp.org" and full["ntp"]["port"] == 123


def test_wifi_settings_of_the_base_config_are_kept():
    cfg, full = _cfg(base={"wifi": {"join_s": 30}})
    assert full["wifi"] == dict(full["wifi"], ssid="depot", password="password", join_s=30)


@pytest.mark.parametrize("ntp, word", [(":123", "--ntp"), ("host:port", "--ntp"), ("10.0.0.1:99999", "ntp.port")])
def test_bad_ntp_is_refused_naming_it(ntp, word):
    with pytest.raises(FlashError) as e:
        _cfg(ntp=ntp)
    assert word in str(e.value) and e.value.code == 2


def test_wifi_password_wpa2_cannot_use_is_refused_naming_it_not_showing_it():
    with pytest.raises(FlashError) as e:
        _cfg(wifi="depot:short")
    assert "wifi.password" in str(e.value) and "8 to 63" in str(e.value) and e.value.code == 2
    assert "short" not in str(e.value)


DER = b"\x30\x82\x01\x00" + bytes(256)
TLS = {"pile_id": "p-1", "mqtt": {"host": "broker", "port": 8883, "tls": True}}


class FakeBoard:
    def __init__(self, files):
        self.files = files
        self.asked = []

    def read_bytes(self, name):
        self.asked.append(name)
        return self.files.get(name)


def test_ca_on_the_board_is_checked_when_provision_does_not_install_one():
    from h2p.config import from_dict

    full = from_dict(TLS)
    check_files(full, {})  # not connected yet: the board's file is checked later
    with pytest.raises(FlashError) as e:
        check_files(full, {}, FakeBoard({}))
    msg = str(e.value)
    assert "key 'mqtt.ca_file' names 'ca.der': no such file" in msg and "--ca" in msg and e.value.code == 2
    with pytest.raises(FlashError) as e:
        check_files(full, {}, FakeBoard({"ca.der": b"-----BEGIN CERTIFICATE-----\n"}))
    assert "'ca.der'" in str(e.value) and "PEM" in str(e.value)
    check_files(full, {}, FakeBoard({"ca.der": DER}))
    # The file provision installs is what counts, not the one it replaces.
    b = FakeBoard({"ca.der": b"old junk"})
    check_files(full, {"ca.der": DER}, b)
    assert b.asked == []
    with pytest.raises(FlashError) as e:
        check_files(full, {"ca.der": DER[:-1]}, FakeBoard({"ca.der": DER}))
    assert "not a DER certificate" in str(e.value)
    # TLS off (or no broker): the CA is never opened, the board is not asked.
    b = FakeBoard({})
    check_files(from_dict({"pile_id": "p-1", "mqtt": {"tls": True}}), {}, b)
    assert b.asked == []


def test_bad_ca_is_refused_before_connecting(tmp_path):
    # A DER file cut short: refused (usage, 2) naming key and file before the
    # board is opened; an attempt to connect would fail with "no such serial
    # port" (3) instead.
    ca = tmp_path / "fleet.der"
    ca.write_bytes(DER[:200])
    with pytest.raises(FlashError) as e:
        provision(str(tmp_path / "no-such-port"), "p-1", SECRET, broker="broker:8883", tls=True, ca=str(ca))
    assert e.value.code == 2 and "key 'mqtt.ca_file' names 'ca.der'" in str(e.value), str(e.value)
    assert "not a DER certificate (200 bytes)" in str(e.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_real_pem_ca_passes_the_firmware_check(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "k.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=fleet-ca"],
                   cwd=tmp_path, check=True, capture_output=True)
    with pytest.raises(FlashError) as e:  # got as far as opening the port: every check passed
        provision(str(tmp_path / "no-such-port"), "p-1", SECRET, broker="broker:8883", tls=True,
                  ca=str(tmp_path / "ca.pem"))
    assert e.value.code == 3 and "no-such-port" in str(e.value), str(e.value)
