"""The command line of `h2pile flash | provision | verify`: options, help,
and the calls into update, provision and verify. Errors are FlashErrors;
host_tools.cli prints them and exits with their code."""

from __future__ import annotations

import argparse

from host_tools.exitcodes import OK
from host_tools.flash.hostbuild import board_names
from host_tools.flash.provision import provision
from host_tools.flash.update import flash, rollback
from host_tools.flash.verify import verify
from host_tools.secret_args import FLEET_SECRET, WIFI, add_secret, required_secret, secret_from

PORT_HELP = "the board's USB serial port, e.g. /dev/ttyUSB0 or /dev/ttyACM0"
BAUD_HELP = "REPL baud rate (default 115200; some USB-serial bridges need another)"


def _flash_cmd(a: argparse.Namespace) -> int:
    if a.rollback:
        rollback(a.port, a.baud)
    else:
        flash(a.port, a.board, a.build, a.baud, space_check=not a.skip_space_check)
    return OK


def _provision_cmd(a: argparse.Namespace) -> int:
    secret = required_secret(a, FLEET_SECRET)
    wifi = secret_from(a, WIFI, required=False)
    provision(a.port, a.pile_id, secret, wifi, a.broker, a.tls, a.ca, a.config, a.fresh, a.baud, ntp=a.ntp)
    return OK


def _verify_cmd(a: argparse.Namespace) -> int:
    return verify(a.port, a.timeout, a.baud)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="copy the firmware to a board (checked, safe to interrupt)",
                       description="Copy build/BOARD/ to the board through /next/, check every "
                                   "file's sha256 on the board, then switch over (the old firmware "
                                   "goes to /prev/). Where the board has a ROMFS partition the code "
                                   "goes there and runs in place (docs/field.md).")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--board", help="board name (boards/NAME.json): " + ", ".join(board_names()))
    p.add_argument("--build", metavar="DIR", help="build directory (default build/BOARD, built if missing)")
    p.add_argument("--baud", type=int, default=115200, help=BAUD_HELP)
    p.add_argument("--rollback", action="store_true", help="switch back to the firmware in /prev/")
    p.add_argument("--skip-space-check", action="store_true",
                   help="(testing) skip the free-space estimate before copying")
    p.set_defaults(func=_flash_cmd)

    p = sub.add_parser("provision", help="write a pile's config.json and derived keys to a board",
                       description="Write a validated config.json (pile id, broker, the pile's MQTT "
                                   "password and command key derived from the fleet secret, WiFi, "
                                   "SNTP) and the fleet CA. The fleet secret never goes to the board.")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--pile-id", required=True, help="pile id: a-z, 0-9, '-', '_'")
    add_secret(p, FLEET_SECRET, "the fleet secret the pile's keys are derived from")
    add_secret(p, WIFI, "WiFi network and password")
    p.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker")
    p.add_argument("--ntp", metavar="HOST[:PORT]",
                   help="SNTP server the board sets its clock from (default pool.ntp.org; an IP avoids DNS)")
    p.add_argument("--tls", action="store_true", help="MQTT over TLS (needs --ca)")
    p.add_argument("--ca", metavar="FILE", help="fleet CA certificate (PEM or DER), stored as ca.der")
    p.add_argument("--config", metavar="FILE", help="base config.json (site settings) to start from")
    p.add_argument("--fresh", action="store_true", help="start from defaults, not the board's config")
    p.add_argument("--baud", type=int, default=115200, help=BAUD_HELP)
    p.set_defaults(func=_provision_cmd)

    p = sub.add_parser("verify", help="reset a board and report what its firmware says",
                       description="Check the firmware's files against SHA256SUMS, show storage and "
                                   "config, reset the board and report its boot line and self-test; "
                                   "a last line lists every check and its result. Exit 0 only if "
                                   "every check ran and passed, the self-test included: 1 if one "
                                   "failed or did not run (no bus devices: the self-test waits).")
    p.add_argument("--port", required=True, help=PORT_HELP)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to watch the boot (default 20)")
    p.add_argument("--baud", type=int, default=115200, help=BAUD_HELP)
    p.set_defaults(func=_verify_cmd)
