"""Field, fleet and development tools for the h2pile methanol fuel-cell EV
charging pile.

  field technicians   build, flash, provision, verify a board; bus: check its RS-485 line
  operators           monitor the fleet, cmd: send a pile a signed command, hass: the fleet
                      in Home Assistant and evcc, gateway: the fleet on a CSMS over OCPP,
                      keys and broker-config: credentials from the fleet secret, ledger: bills
  developers          live (make sim): the whole pile against the simulator; sim: scenarios
                      and fault injection; docs: regenerate the generated docs
"""

# Each subcommand lives in its own module with `add_parser(subparsers)`;
# main() turns the errors they raise into one line and an exit code
# (host_tools/exitcodes.py).

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from host_tools.exitcodes import INTERRUPTED, UNREACHABLE, USAGE, CliError

# Subcommand modules, in the order `h2pile --help` lists them.
MODULES = (
    "build",       # compile the firmware for a board
    "flash.cli",   # flash, provision, verify a board
    "bus",         # bus scan / read / write on an RS-485 adapter
    "monitor",     # live table of a fleet on a broker
    "cmd",         # signed commands to a pile
    "hass",        # the fleet in Home Assistant and evcc
    "keys",        # per-pile keys from a fleet secret
    "broker_config",  # mosquitto password file and ACL
    "ledger",      # billing ingest and settlement reports
    "gateway.cli",  # OCPP gateway of a fleet to a CSMS
    "live",        # the whole pile against the simulator, live
    "sim_cmd",     # sim run / sim inject / sim serve
    "docs",        # regenerate docs from the firmware's tables
)

EPILOG = """\
exit codes (the same for every command, host_tools/exitcodes.py):
  0 ok; 1 a check failed (verify, sim run, a rejected cmd); 2 bad argument or input file;
  3 board, broker, simulator or pile not answering; 4-7 flash: wrong board, no space,
  hash mismatch, board-side error; 130 interrupted

secrets (fleet secret, command key, passwords) are read from --X-file PATH or an
environment variable (H2PILE_FLEET_SECRET, ...); on the command line `ps` shows them.
`h2pile COMMAND --help` for each command."""


def version() -> str:
    try:
        return metadata.version("h2pile")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _name_commands(ap: argparse.ArgumentParser) -> None:
    """Give every (sub)command parser a default `_prog`, e.g. "h2pile sim run",
    so main() can say which command an error came from."""
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.set_defaults(_prog=sp.prog)
                _name_commands(sp)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="h2pile", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version="%(prog)s " + version(),
                    help="print the version of h2pile and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in MODULES:
        try:
            mod = importlib.import_module("host_tools." + name)
        except ModuleNotFoundError as e:
            if e.name == "host_tools." + name:
                continue  # not built yet
            raise
        mod.add_parser(sub)
    _name_commands(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one `h2pile` command; returns its exit code (host_tools.exitcodes)."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else USAGE
    prog = getattr(args, "_prog", "h2pile")
    if not getattr(args, "func", None):
        ap.print_help(sys.stderr)
        return USAGE
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except OSError as e:
        # An I/O error the command did not expect: one line naming the file
        # or device, not a traceback.
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
