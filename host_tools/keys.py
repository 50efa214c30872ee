"""`h2pile keys`: per-pile MQTT password and command key from the fleet secret."""
import json
import os
import sys

from h2p import keys as _keys


def fleet_secret_from(args):
    """--fleet-secret S, or --fleet-secret-file F, or $H2PILE_FLEET_SECRET."""
    s = getattr(args, "fleet_secret", None)
    f = getattr(args, "fleet_secret_file", None)
    if f:
        try:
            with open(f, encoding="utf-8") as fh:
                s = fh.read().strip()
        except OSError as e:
            raise ValueError("cannot read fleet secret file %s: %s" % (f, e.strerror))
    if not s:
        s = os.environ.get("H2PILE_FLEET_SECRET", "")
    if not s:
        raise ValueError("no fleet secret: give --fleet-secret, --fleet-secret-file or set H2PILE_FLEET_SECRET")
    return s


def add_secret_args(p, required=False):
    p.add_argument("--fleet-secret", help="fleet secret (or --fleet-secret-file, or $H2PILE_FLEET_SECRET)")
    p.add_argument("--fleet-secret-file", help="file holding the fleet secret")


def derive(fleet_secret, piles):
    out = []
    for p in piles:
        out.append({"pile": p, "mqtt_user": p,
                    "mqtt_password": _keys.mqtt_password(fleet_secret, p),
                    "cmd_key": _keys.cmd_key(fleet_secret, p)})
    return out


def handler(args):
    try:
        secret = fleet_secret_from(args)
        rows = derive(secret, args.piles)
    except ValueError as e:
        print("h2pile keys: error: %s" % e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print("%s  mqtt_password=%s  cmd_key=%s" % (r["pile"], r["mqtt_password"], r["cmd_key"]))
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser("keys", help="print per-pile MQTT password and command key",
                              description=__doc__)
    add_secret_args(p)
    p.add_argument("piles", nargs="+", metavar="PILE", help="pile id(s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=handler)
    return p


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="h2pile")
    add_parser(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
