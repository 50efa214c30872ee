"""Secrets (fleet secret, command key, MQTT and operator passwords, WiFi)
come from a file or the environment, not only from argv, where `ps` shows
them to every user of the machine: every such option has a --X-file form and
an environment variable named in its help; a missing or empty file is a
clear usage error (exit 2) naming the option and the file."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket

import pytest

from h2p import keys
from host_tools import cli
from host_tools.cmd import command_key
from host_tools.flash.provision import make_config
from host_tools.secret_args import MQTT_PASSWORD, WIFI, secret_from

SECRET = "fleet-Zq8x-secret"
ENVS = ("H2PILE_FLEET_SECRET", "H2PILE_CMD_KEY", "H2PILE_MQTT_PASSWORD", "H2PILE_WIFI", "H2PILE_OPERATORS",
        "H2PILE_LEDGERS", "H2PILE_GATEWAYS", "H2PILE_HOMES")
SECRET_WORDS = re.compile(r"secret|password|(^|-)key$|wifi|operator|^ledger$|^gateway$|^home$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for e in ENVS:
        monkeypatch.delenv(e, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def _secret_options():
    """(command path, option, parser) for every option that takes a secret."""
    out = []

    def walk(ap, path):
        for a in ap._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, path + (name,))
            elif a.option_strings and a.nargs != 0:
                opt = a.option_strings[-1]
                if SECRET_WORDS.search(opt[2:]) and not opt.endswith("-file"):
                    out.append((path, opt, ap))
    walk(cli.build_parser(), ())
    return out


SECRET_OPTIONS = _secret_options()


def test_the_secret_options_are_found():
    found = {(" ".join(p), o) for p, o, _ in SECRET_OPTIONS}
    assert {("provision", "--fleet-secret"), ("provision", "--wifi"), ("keys", "--fleet-secret"),
            ("broker-config", "--fleet-secret"), ("broker-config", "--operator"),
            ("broker-config", "--ledger"), ("broker-config", "--gateway"), ("broker-config", "--home"),
            ("hass", "--fleet-secret"), ("hass", "--password"), ("cmd", "--key"),
            ("cmd", "--password"), ("cmd", "--fleet-secret"), ("monitor", "--password"),
            ("ledger ingest", "--password")} <= found, found


@pytest.mark.parametrize("path, opt, ap", SECRET_OPTIONS,
                         ids=[f"{' '.join(p)} {o}" for p, o, _ in SECRET_OPTIONS])
def test_every_secret_option_has_a_file_form_and_an_env_variable(path, opt, ap):
    by_opt = {o: a for a in ap._actions for o in a.option_strings}
    problem = None
    if opt + "-file" not in by_opt:
        problem = f"{opt} has no {opt}-file"
    else:
        env = re.search(r"\$(H2PILE_[A-Z_]+)", by_opt[opt + "-file"].help or "")
        if not env:
            problem = f"{opt}-file's help names no $H2PILE_ variable"
        elif "`ps`" not in by_opt[opt].help or env.group(1) not in by_opt[opt].help:
            problem = f"{opt}'s help does not say `ps` shows it and name ${env.group(1)}"
    assert not problem, f"h2pile {' '.join(path)}: {problem}"


# ---- each secret from a file and from the environment ----------------------
def test_fleet_secret_from_file_env_and_argv(tmp_path, monkeypatch, capsys):
    want = keys.cmd_key(SECRET, "p1")
    f = tmp_path / "fleet.key"
    f.write_text(SECRET + "\n")
    assert cli.main(["keys", "--json", "--fleet-secret-file", str(f), "p1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cmd_key"] == want
    monkeypatch.setenv("H2PILE_FLEET_SECRET", SECRET)
    assert cli.main(["keys", "--json", "p1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cmd_key"] == want
    # The file wins over the environment.
    monkeypatch.setenv("H2PILE_FLEET_SECRET", "another-secret")
    assert cli.main(["keys", "--json", "--fleet-secret-file", str(f), "p1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cmd_key"] == want
    monkeypatch.delenv("H2PILE_FLEET_SECRET")
    assert cli.main(["keys", "--json", "--fleet-secret", SECRET, "p1"]) == 0  # still works
    assert json.loads(capsys.readouterr().out)[0]["cmd_key"] == want
    assert cli.main(["keys", "p1"]) == 2
    err = capsys.readouterr().err
    assert "the fleet secret is needed" in err
    assert "--fleet-secret-file" in err and "H2PILE_FLEET_SECRET" in err


def test_command_key_from_file_env_or_fleet_secret(tmp_path, monkeypatch):
    key_hex = keys.cmd_key(SECRET, "p1")
    want = bytes.fromhex(key_hex)
    f = tmp_path / "p1.key"
    f.write_text(key_hex + "\n")
    assert command_key(parse("cmd", "p1", "wake", "--key-file", str(f)), "p1") == want
    monkeypatch.setenv("H2PILE_CMD_KEY", key_hex)
    assert command_key(parse("cmd", "p1", "wake"), "p1") == want
    monkeypatch.delenv("H2PILE_CMD_KEY")
    monkeypatch.setenv("H2PILE_FLEET_SECRET", SECRET)
    assert command_key(parse("cmd", "p1", "wake"), "p1") == want
    # An explicit --key-file wins over a fleet secret in the environment.
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    assert command_key(parse("cmd", "p1", "wake", "--key-file", str(other)), "p1") == b"\xab" * 32


def test_wifi_from_file_and_env(tmp_path, monkeypatch):
    f = tmp_path / "wifi"
    f.write_text("depot:pa ss:word\n")
    wifi = secret_from(parse("provision", "--port", "x", "--pile-id", "p-1", "--wifi-file", str(f)), WIFI,
                       required=False)
    cfg, full = make_config({}, "p-1", SECRET, wifi, None, False, None, True)
    assert full["wifi"]["ssid"] == "depot" and full["wifi"]["password"] == "pa ss:word"
    monkeypatch.setenv("H2PILE_WIFI", "yard:pw2")
    args = parse("provision", "--port", "x", "--pile-id", "p-1")
    assert secret_from(args, WIFI, required=False) == "yard:pw2"
    monkeypatch.delenv("H2PILE_WIFI")
    assert secret_from(args, WIFI, required=False) is None


def test_operators_from_file_and_env(tmp_path, monkeypatch, capsys):
    f = tmp_path / "ops"
    f.write_text("# operators\nalice:pw-a\n\nbob:pw:b\n")
    out = tmp_path / "out"
    assert cli.main(["broker-config", "--fleet-secret", SECRET, "--piles", "P1", "--operator-file", str(f),
                     "--out", str(out)]) == 0
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["P1", "alice", "bob"]
    monkeypatch.setenv("H2PILE_OPERATORS", "carol:pw-c\ndave:pw-d")
    assert cli.main(["broker-config", "--fleet-secret", SECRET, "--piles", "P1", "--out", str(out)]) == 0
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["P1", "carol", "dave"]
    acl = (out / "acl").read_text()
    assert "user carol\ntopic read h2pile/v1/#" in acl


def test_mqtt_password_from_file_and_env_against_a_broker(tmp_path, monkeypatch, capsys):
    """monitor logs in to a broker that checks passwords: with the password
    from --password-file, from $H2PILE_MQTT_PASSWORD, and refused without."""
    from host_tools import broker
    from host_tools.broker_config import passwd_line

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pw = tmp_path / "passwd"
    pw.write_text(passwd_line("ops", "s3cret-pw") + "\n")
    # mosquitto started as root drops to user "mosquitto", which cannot read pytest's tmp dirs.
    extra = f"password_file {pw}\n" + ("user root\n" if os.geteuid() == 0 else "")
    proc = broker.start(port, extra=extra, anonymous=False)
    try:
        f = tmp_path / "mqtt.pw"
        f.write_text("s3cret-pw\n")
        base = ["monitor", "--broker", f"127.0.0.1:{port}", "--user", "ops", "--once", "--wait", "0.5"]
        assert cli.main(base + ["--password-file", str(f)]) == 0, capsys.readouterr().err
        assert "(no pile has published its status yet)" in capsys.readouterr().out
        monkeypatch.setenv("H2PILE_MQTT_PASSWORD", "s3cret-pw")
        assert cli.main(base) == 0, capsys.readouterr().err
        capsys.readouterr()
        monkeypatch.setenv("H2PILE_MQTT_PASSWORD", "wrong")
        assert cli.main(base) == 3
        err = capsys.readouterr().err
        assert "refused" in err and "wrong" not in err
    finally:
        proc.terminate()
        proc.wait(5)
    assert secret_from(parse(*base[:-2], "--password-file", str(f)), MQTT_PASSWORD) == "s3cret-pw"


# ---- a missing or empty secret file: exit 2, naming option and file ---------
FILE_OPTIONS = [
    (["provision", "--port", "/nonexistent/tty", "--pile-id", "p-1"], "--fleet-secret-file"),
    (["provision", "--port", "/nonexistent/tty", "--pile-id", "p-1", "--fleet-secret", SECRET],
     "--wifi-file"),
    (["keys", "p1"], "--fleet-secret-file"),
    (["broker-config", "--piles", "P1", "--out", "{tmp}/o"], "--fleet-secret-file"),
    (["broker-config", "--piles", "P1", "--out", "{tmp}/o", "--fleet-secret", SECRET], "--operator-file"),
    (["cmd", "p1", "wake", "--broker", "127.0.0.1:1"], "--fleet-secret-file"),
    (["cmd", "p1", "wake", "--broker", "127.0.0.1:1"], "--key-file"),
    (["cmd", "p1", "wake", "--broker", "127.0.0.1:1", "--fleet-secret", SECRET], "--password-file"),
    (["monitor", "--broker", "127.0.0.1:1", "--once"], "--password-file"),
]


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize("argv, opt", FILE_OPTIONS, ids=[f"{a[0]} {o}" for a, o in FILE_OPTIONS])
def test_missing_or_empty_secret_file_is_a_usage_error(tmp_path, capsys, argv, opt, how):
    path = tmp_path / "secret.txt"
    if how == "empty":
        path.write_text("\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(argv + [opt, str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert opt in lines[0] and str(path) in lines[0], lines[0]
    assert ("empty" if how == "empty" else "cannot read") in lines[0], lines[0]
