"""`h2pile`: one command for technicians, operators and developers.

Each subcommand lives in its own module with `add_parser(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `h2pile --help` lists them.
MODULES = (
    "build",       # compile the firmware for a board
    "sim_cmd",     # sim run / sim inject / sim serve
    "live",        # the whole pile against the simulator, live
    "flash",       # flash, provision, verify a board
    "bus",         # bus scan / read / write on an RS-485 adapter
    "monitor",     # live table of a fleet on a broker
    "cmd",         # signed commands to a pile
    "keys",        # per-pile keys from a fleet secret
    "broker_config",  # mosquitto password file and ACL
    "ledger",      # billing ingest and settlement reports
    "docs",        # regenerate docs from the firmware's tables
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="h2pile", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES:
        try:
            mod = importlib.import_module("host_tools." + name)
        except ModuleNotFoundError as e:
            if e.name == "host_tools." + name:
                continue  # not built yet
            raise
        mod.add_parser(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
