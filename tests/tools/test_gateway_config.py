"""host_tools.gateway.config: the TOML file is checked whole at start; each
error names the key and why; a pile id that cannot be a charge point id is
refused with the reason; `h2pile gateway --check` exits 2 with one line."""

import pytest

from host_tools.cli import main
from host_tools.gateway.config import GatewayConfigError, charge_point_id_error, load

PW = "a-password-of-20-chars"


def write(tmp_path, piles='["P1", "P2"]', csms='url = "ws://127.0.0.1:9/ocpp"', pw="* " + PW, extra=""):
    (tmp_path / "fleet.secret").write_text("s3cret\n")
    (tmp_path / "csms.pw").write_text(pw + "\n")
    p = tmp_path / "gw.toml"
    p.write_text("piles = %s\n%s\n[csms]\n%s\npassword_file = \"csms.pw\"\n\n[keys]\n"
                 "fleet_secret_file = \"fleet.secret\"\n" % (piles, extra, csms))
    return str(p)


def test_a_good_config(tmp_path):
    c = load(write(tmp_path, pw="P1 %s\n* %s-other" % (PW, PW)))
    assert c.piles == ("P1", "P2") and c.ocpp == "2.0.1" and c.security_profile == 1
    assert c.csms_passwords == {"P1": PW, "P2": PW + "-other"}
    assert c.url_for("P2") == "ws://127.0.0.1:9/ocpp/P2" and c.fleet_secret == "s3cret"
    assert c.queue_path == str(tmp_path / "gateway.db")


@pytest.mark.parametrize("piles, why", [
    ('["P1", "bad/id"]', "piles[1] 'bad/id': not a valid charge point id"),
    ('["P1", "has:colon"]', "piles[1] 'has:colon': not a valid charge point id"),
    ('["a.b"]', "piles[0] 'a.b': not a valid pile id"),
    ('["%s"]' % ("x" * 33), "not a valid pile id"),
    ('["P1", "P1"]', "piles[1] 'P1' is listed twice"),
    ("[]", "piles must be a non-empty list"),
])
def test_bad_pile_ids_are_refused_with_the_reason(tmp_path, piles, why):
    with pytest.raises(GatewayConfigError, match=r"gw\.toml: .*" + why.replace("[", r"\[").replace("]", r"\]")):
        load(write(tmp_path, piles=piles))


@pytest.mark.parametrize("csms, pw, extra, why", [
    ('url = "wss://x/ocpp"\nsecurity_profile = 1', "* " + PW, "", "security profile 1 needs a ws:// URL"),
    ('url = "ws://x/ocpp"\nsecurity_profile = 2', "* " + PW, "", "security profile 2 needs a wss:// URL"),
    ('url = "ws://x/ocpp"\nsecurity_profile = 3', "* " + PW, "", "security_profile must be 1"),
    ('url = "ws://x/ocpp"\nocpp = "2.1"', "* " + PW, "", "csms.ocpp must be one of 2.0.1, 1.6"),
    ('url = "ws://x/ocpp"', "* short", "", "line 1: the password of \\* must be 16-40 characters"),
    ('url = "ws://x/ocpp"', "P1 " + PW, "", "no password for pile P2"),
    ('url = "ws://x/ocpp"\nheartbeat_s = -1', "* " + PW, "", r"csms.heartbeat_s=-1 out of range"),
    ('url = "ws://x/ocpp"\nurl2 = 1', "* " + PW, "", "unknown key csms.url2"),
    ('url = "ws://x/ocpp"', "* " + PW, '[mqtt]\nbroker = "host:99999"\n', "mqtt.broker: must be HOST:PORT"),
])
def test_bad_settings_name_the_key(tmp_path, csms, pw, extra, why):
    with pytest.raises(GatewayConfigError, match=why):
        load(write(tmp_path, csms=csms, pw=pw, extra=extra))


def test_missing_files_are_named(tmp_path):
    path = write(tmp_path)
    (tmp_path / "fleet.secret").unlink()
    with pytest.raises(GatewayConfigError, match=r"keys.fleet_secret_file: cannot read .*fleet.secret"):
        load(path)
    with pytest.raises(GatewayConfigError, match="nothing.toml: No such file"):
        load(str(tmp_path / "nothing.toml"))


def test_charge_point_id_rule():
    assert charge_point_id_error("P-1_x") is None
    assert "charge point id" in charge_point_id_error("P 1")
    assert "pile id" in charge_point_id_error("p@1")  # a valid OCPP id, not a pile id


def test_cli_refuses_at_start_with_one_line(tmp_path, capsys):
    assert main(["gateway", write(tmp_path, piles='["ok", "no way"]'), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h2pile gateway: error:" in err[0] and "piles[1] 'no way'" in err[0], err
    assert main(["gateway", write(tmp_path), "--check"]) == 0
