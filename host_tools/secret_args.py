"""Options that take a secret (fleet secret, command key, passwords): each can
be given three ways, and argv is the last resort.

    --fleet-secret-file PATH     a file holding it (surrounding whitespace ignored)
    $H2PILE_FLEET_SECRET         an environment variable
    --fleet-secret VALUE         on the command line, where `ps` shows it to
                                 every user of the machine

The option and its -file form exclude each other; the environment variable is
read only when neither is given. A missing or empty file is a usage error
(exit 2) naming the option and the file, never a silent fall-back.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from host_tools.exitcodes import USAGE, CliError


@dataclass(frozen=True)
class Secret:
    """One secret option: `--NAME VALUE`, `--NAME-file PATH`, `$ENV`."""

    name: str  # the option without dashes, e.g. "fleet-secret"
    env: str  # e.g. "H2PILE_FLEET_SECRET"
    what: str  # in messages: "the fleet secret"
    metavar: str = "SECRET"

    @property
    def flag(self) -> str:
        return "--" + self.name

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


FLEET_SECRET = Secret("fleet-secret", "H2PILE_FLEET_SECRET", "the fleet secret")
CMD_KEY = Secret("key", "H2PILE_CMD_KEY", "the pile's command key", "HEX")
MQTT_PASSWORD = Secret("password", "H2PILE_MQTT_PASSWORD", "the MQTT password", "PASSWORD")
LEDGER_PASSWORD = Secret("password", "H2PILE_LEDGER_PASSWORD", "the ledger's MQTT password", "PASSWORD")
WIFI = Secret("wifi", "H2PILE_WIFI", "the WiFi network and password", "SSID:PASS")
# Several NAME:PASSWORD entries: the option repeats; the file and the
# variable hold one entry per line.
OPERATORS = Secret("operator", "H2PILE_OPERATORS", "the operator accounts", "NAME:PASS")
LEDGERS = Secret("ledger", "H2PILE_LEDGERS", "the ledger accounts", "NAME:PASS")
GATEWAYS = Secret("gateway", "H2PILE_GATEWAYS", "the gateway accounts", "NAME:PASS")
HOMES = Secret("home", "H2PILE_HOMES", "the home accounts (Home Assistant, evcc)", "NAME:PASS")


def add_secret(p: argparse.ArgumentParser, s: Secret, help: str, repeat: bool = False) -> None:
    """Add `--NAME` and `--NAME-file` (mutually exclusive) to parser p;
    `help` says what the secret is for."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(s.flag + "-file", dest=s.dest + "_file", metavar="PATH",
                   help=f"file holding {s.what}{' (one entry per line)' if repeat else ''}; "
                        f"or set ${s.env}")
    g.add_argument(s.flag, dest=s.dest, metavar=s.metavar, action="append" if repeat else "store",
                   help=f"{help}{' (repeatable)' if repeat else ''}; visible to other users in `ps`: "
                        f"prefer {s.flag}-file or ${s.env}")


def _read_file(s: Secret, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CliError(f"{s.flag}-file {path}: cannot read {s.what} ({why})", USAGE) from None
    if not text:
        raise CliError(f"{s.flag}-file {path}: the file is empty (it should hold {s.what})", USAGE)
    return text


def secret_from(args: argparse.Namespace, s: Secret, required: bool = True, env: bool = True) -> str | None:
    """The secret from --NAME-file, --NAME or (with env) $ENV, in that order;
    None when none is given and it is not required (else a CliError, exit 2)."""
    path = getattr(args, s.dest + "_file", None)
    if path is not None:
        return _read_file(s, path)
    value = getattr(args, s.dest, None)
    if isinstance(value, list):
        value = "\n".join(value)
    if value is not None:
        if not value.strip():
            raise CliError(f"{s.flag}: empty value (it should be {s.what})", USAGE)
        return value
    value = os.environ.get(s.env, "") if env else ""
    if value.strip():
        return value.strip()
    if required:
        raise CliError(f"{s.what} is needed: give {s.flag}-file PATH or set ${s.env} "
                       f"(or {s.flag} {s.metavar}, which `ps` shows)", USAGE)
    return None


def required_secret(args: argparse.Namespace, s: Secret) -> str:
    """secret_from for a secret the command cannot do without."""
    value = secret_from(args, s)
    assert value is not None  # secret_from raises when a required one is missing
    return value


def entries(text: str | None) -> list[str]:
    """The entries of a repeatable secret: one per line; blank lines and
    lines starting with # are skipped."""
    if not text:
        return []
    return [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]
