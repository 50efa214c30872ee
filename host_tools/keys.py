"""`h2pile keys`: per-pile MQTT password and command key from the fleet secret."""

from __future__ import annotations

import argparse
import json

from h2p import keys as _keys
from host_tools.exitcodes import OK, USAGE, CliError
from host_tools.secret_args import FLEET_SECRET, add_secret, required_secret


def derive(fleet_secret: str, piles: list[str]) -> list[dict]:
    """One row per pile; ValueError for a bad pile id."""
    out = []
    for p in piles:
        out.append({"pile": p, "mqtt_user": p,
                    "mqtt_password": _keys.mqtt_password(fleet_secret, p),
                    "cmd_key": _keys.cmd_key(fleet_secret, p)})
    return out


def handler(args: argparse.Namespace) -> int:
    secret = required_secret(args, FLEET_SECRET)
    try:
        rows = derive(secret, args.piles)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print("%s  mqtt_password=%s  cmd_key=%s" % (r["pile"], r["mqtt_password"], r["cmd_key"]))
    return OK


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("keys", help="print per-pile MQTT password and command key",
                              description=__doc__)
    add_secret(p, FLEET_SECRET, "the fleet secret")
    p.add_argument("piles", nargs="+", metavar="PILE", help="pile id(s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=handler)
    return p
