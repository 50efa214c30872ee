"""`h2pile monitor`: live table of every pile on h2pile/v1/+/#.

A pile is listed once it has published `status` (retained: the broker hands
it over on subscribing; the last will sets it offline). Messages to a pile
(cmd, bill/ack) are not the pile's: a command sent to an id that no pile
has does not make it appear.

Redraws in place with ANSI escapes; --plain prints a plain table every
--interval seconds; --once --wait S prints one table after S seconds and exits
(for scripts and tests). --json prints the piles as JSON instead (with --once:
once), each with `deliver_kwh`, the energy it can still deliver: a dispatcher
picks the online pile with the most (docs/energy.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from h2p import topics
from host_tools.cmd import parse_broker
from host_tools.exitcodes import OK, UNREACHABLE, USAGE, CliError
from host_tools.secret_args import MQTT_PASSWORD, add_secret, secret_from

COLUMNS = (
    # header, width
    ("PILE", 12), ("ONLINE", 6), ("STATE", 12), ("P_KW", 6), ("PREMIX_L", 8),
    ("BAT%", 5), ("EV%", 5), ("DLV_KWH", 7), ("FAULTS", 16), ("LIMIT", 14), ("SEEN_S", 6),
)
# What --json lists per pile (the row's keys, as the pile sent them).
JSON_KEYS = ("online", "state", "deliver_kwh", "premix_l", "bat_soc", "ev_soc", "p_kw", "faults",
             "limit_by", "limit_a", "stack_limit_by")


class Fleet:
    """Folds pile messages into one row per pile. Thread-safe."""

    def __init__(self) -> None:
        self.piles: dict[str, dict[str, Any]] = {}  # pile -> its row: what it last said, and when
        self.bad = 0
        self.lock = threading.Lock()

    def feed(self, topic: str, payload: bytes | bytearray, now: float | None = None) -> bool:
        p = topics.parse(topic)
        if p is None:
            return False
        pile, name = p
        if topics.spec(name)[topics.T_DIR] != "pub":
            return False  # sent to the pile (cmd, bill/ack), not by it
        try:
            d = json.loads(payload) if payload else {}
        except ValueError:
            d = None
        if not isinstance(d, dict):
            with self.lock:
                self.bad += 1
            return False
        with self.lock:
            row = self.piles.setdefault(pile, {})
            row["seen"] = time.monotonic() if now is None else now
            if name == "status":
                row["online"] = d.get("online") if isinstance(d.get("online"), bool) else None
            elif name == "state":
                for k in ("state", "faults", "limit_by", "limit_a", "stack_limit_by", "deliver_kwh"):
                    if k in d:
                        row[k] = d[k]
            elif name == "tele":
                for k in ("p_kw", "premix_l", "bat_soc", "ev_soc", "deliver_kwh"):
                    if k in d:
                        row[k] = d[k]
        return True

    def rows(self, now: float | None = None) -> list[tuple[str, ...]]:
        now = time.monotonic() if now is None else now
        out: list[tuple[str, ...]] = []
        with self.lock:
            for pile in sorted(self.piles):
                r = self.piles[pile]
                if "online" not in r:
                    continue  # never published status: not (yet) a pile we know
                faults = r.get("faults")
                if isinstance(faults, list):
                    faults = ",".join(str(f) for f in faults) or "-"
                lim = r.get("limit_by")
                if lim is not None and r.get("limit_a") is not None:
                    lim = "%s %sA" % (lim, _num(r.get("limit_a")))
                online = r.get("online")
                out.append((pile, "yes" if online is True else ("NO" if online is False else "?"),
                            _txt(r.get("state")), _num(r.get("p_kw")), _num(r.get("premix_l")),
                            _num(r.get("bat_soc")), _num(r.get("ev_soc")), _num(r.get("deliver_kwh")), _txt(faults),
                            _txt(lim), "%.0f" % (now - r["seen"])))
        return out

    def listing(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every pile that published its status, most deliverable energy
        first (online before offline; unknown estimates last)."""
        now = time.monotonic() if now is None else now
        out: list[dict[str, Any]] = []
        with self.lock:
            for pile, r in self.piles.items():
                if "online" not in r:
                    continue
                d: dict[str, Any] = {"pile": pile}
                for k in JSON_KEYS:
                    d[k] = r.get(k)
                d["seen_s"] = round(now - r["seen"], 1)
                out.append(d)

        def key(d: dict[str, Any]) -> tuple[bool, float, str]:
            e = d["deliver_kwh"]
            known = isinstance(e, (int, float)) and not isinstance(e, bool)
            return (d["online"] is not True, -e if known else float("inf"), d["pile"])

        out.sort(key=key)
        return out

    def table(self, now: float | None = None) -> str:
        lines = ["  ".join(h.ljust(w) for h, w in COLUMNS)]
        rows = self.rows(now)
        for r in rows:
            lines.append("  ".join(str(v)[:w].ljust(w) for v, (h, w) in zip(r, COLUMNS)))
        if not rows:
            lines.append("(no pile has published its status yet)")
        return "\n".join(lines)


def _num(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    return ("%.1f" % v) if isinstance(v, float) else str(v)


def _txt(v: object) -> str:
    return "-" if v is None else str(v)


def handler(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    try:
        host, port = parse_broker(args.broker)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    password = secret_from(args, MQTT_PASSWORD, required=False)
    fleet = Fleet()
    err: dict[str, str] = {}

    def on_connect(c: mqtt.Client, ud: Any, flags: mqtt.ConnectFlags, rc: mqtt.ReasonCode,
                   props: mqtt.Properties | None = None) -> None:
        if getattr(rc, "is_failure", rc != 0):
            err["e"] = "broker refused connection: %s" % rc
            return
        c.subscribe(topics.PREFIX + "+/#", 1)

    def on_message(c: mqtt.Client, ud: Any, msg: mqtt.MQTTMessage) -> None:
        fleet.feed(msg.topic, msg.payload)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="h2pile-mon-%d" % os.getpid())
    if args.user is not None:
        c.username_pw_set(args.user, password)
    if args.tls_ca:
        c.tls_set(ca_certs=args.tls_ca)
    c.on_connect = on_connect
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ValueError) as e:
        raise CliError("cannot connect to %s:%d: %s" % (host, port, e), UNREACHABLE)
    c.loop_start()
    try:
        if args.once:
            time.sleep(args.wait)
            if "e" in err:
                raise CliError(err["e"], UNREACHABLE)
            print(json.dumps(fleet.listing(), indent=1) if args.json else fleet.table())
            return OK
        ansi = not args.plain and sys.stdout.isatty()
        while True:
            if "e" in err:
                raise CliError(err["e"], UNREACHABLE)
            t = json.dumps(fleet.listing()) if args.json else fleet.table()
            if ansi and not args.json:
                sys.stdout.write("\x1b[H\x1b[2J" + t + "\n")
            else:
                sys.stdout.write(t + "\n\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return OK  # Ctrl-C is how a live table ends
    finally:
        c.disconnect()
        c.loop_stop()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("monitor", help="live table of all piles", description=__doc__)
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--user", help="MQTT user (an operator account)")
    add_secret(p, MQTT_PASSWORD, "MQTT password of --user")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate file: connect with TLS")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--wait", type=float, default=2.0,
                   help="with --once: seconds to collect first (default 2)")
    p.add_argument("--plain", action="store_true", help="no ANSI: print a table every --interval")
    p.add_argument("--json", action="store_true",
                   help="print the piles as JSON (a list, most deliverable energy first; one line per "
                        "--interval, or once with --once) instead of a table")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between tables (default 1)")
    p.set_defaults(func=handler)
    return p
