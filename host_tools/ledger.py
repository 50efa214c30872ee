"""`h2pile ledger`: the back-office end of billing.

  h2pile ledger ingest --broker HOST:PORT [--user U --password P]
                       [--db sqlite:///ledger.db | postgresql://...] [--share GROUP]
  h2pile ledger report --db ... --from DATE --to DATE [--csv FILE]
                       [--tariff FILE [--sessions-csv FILE]]

ingest subscribes to h2pile/v1/+/bill (QoS 1; $share/GROUP/... with --share),
validates every session record, stores it idempotently keyed by its session
id, commits, and only then publishes {"id": ...} on h2pile/v1/<pile>/bill/ack.
A malformed record is logged with its reason, kept in the `rejects` table
and NOT acknowledged. A duplicate with identical content is acknowledged
again; a duplicate with different content goes to the `conflicts` table
(logged, acknowledged so the pile can free its flash; it is not counted in
reports).

Authorisation tokens: "sponsor:<name>:<ref>" bills sponsor <name>; any
other token (or none) is reported under sponsor "-".

With --tariff, report prices every session from a TOML tariff file (per
sponsor: per kWh, per session, currency, a budget per period; a default;
host_tools/tariff.py describes it), adds each group's cost to the table and
shows each sponsor's spend against its budget. A tariff file with any
mistake is refused, each mistake named with its line and key.

DB URLs: sqlite:///relative.db, sqlite:////absolute/path.db or a plain file
path; postgresql://user@host:5432/db (the `psycopg` package) with the
password in ~/.pgpass or $PGPASSWORD rather than in the URL, which `ps`
shows. Messages name the database without its password.

Scale-out: several ingest processes with the same --share GROUP split the
stream and may share one database; each bill is stored once. If the
database goes away, ingest reconnects and stores the bill again, and
acknowledges nothing until it is committed. Exit 2: bad argument or
database URL; exit 3: the database cannot be reached at start.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import re
import sys

# the ledger's parts, re-exported: callers and tests know them as ledger.X
from host_tools.ledger_db import DB, LedgerError
from host_tools.ledger_ingest import DEFAULT_CLIENT_ID, Ingest, ingest, subscription
from host_tools.ledger_records import NO_SPONSOR, canonical, sponsor_of, validate
from host_tools.secret_args import LEDGER_PASSWORD, add_secret

__all__ = ["DB", "LedgerError", "Ingest", "ingest", "subscription", "NO_SPONSOR", "canonical", "sponsor_of",
           "validate", "settlement", "parse_date", "report", "main"]

DEFAULT_DB = "sqlite:///ledger.db"


# ---------------------------------------------------------------------- report
def parse_date(s: str, end: bool = False) -> int:
    """YYYY-MM-DD (UTC; with end=True the end of that day) or an ISO 8601
    date-time (UTC unless it has an offset) -> epoch seconds."""
    try:
        if re.match(r"^\d{4}-\d{2}-\d{2}$", s):
            d = datetime.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
            if end:
                d += datetime.timedelta(days=1)
            return int(d.timestamp())
        d = datetime.datetime.fromisoformat(s)
    except ValueError:
        raise LedgerError("date %r: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]" % s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp())


def settlement(db: DB, t_from: int, t_to: int) -> list[tuple]:
    """Rows (sponsor, pile, sessions, kwh, premix_l, l_per_kwh) for sessions
    that stopped in [t_from, t_to) - by the stop time, or for sessions
    closed while the pile's clock was not set, by the ledger receipt time -
    followed by one subtotal row per sponsor (pile '*') and a total row
    ('*', '*')."""
    rows = db.q(
        "SELECT sponsor, pile, COUNT(*), SUM(energy_wh), SUM(premix_l) FROM sessions"
        " WHERE COALESCE(stop_epoch, received_at) >= ? AND COALESCE(stop_epoch, received_at) < ?"
        " GROUP BY sponsor, pile ORDER BY sponsor, pile", (t_from, t_to)).fetchall()
    out = []
    by_sponsor: dict[str, list] = {}
    total = [0, 0.0, 0.0]
    for sponsor, pile, n, wh, litres in rows:
        out.append(_row(sponsor, pile, n, wh, litres))
        s = by_sponsor.setdefault(sponsor, [0, 0.0, 0.0])
        for acc in (s, total):
            acc[0] += n
            acc[1] += wh
            acc[2] += litres
    result = []
    for sponsor in sorted(by_sponsor):
        result += [r for r in out if r[0] == sponsor]
        s = by_sponsor[sponsor]
        result.append(_row(sponsor, "*", s[0], s[1], s[2]))
    result.append(_row("*", "*", total[0], total[1], total[2]))
    return result


def _row(sponsor: str, pile: str, n: float, wh: float, litres: float) -> tuple:
    kwh = wh / 1000.0
    return (sponsor, pile, int(n), round(kwh, 3), round(litres, 3),
            round(litres / kwh, 3) if kwh > 0 else None)


HEADER = ("sponsor", "pile", "sessions", "kwh", "premix_l", "l_per_kwh")


def priced_rows(db: DB, t_from: int, t_to: int) -> list[tuple]:
    """(id, sponsor, pile, epoch, energy_wh, reason) of the sessions settlement() counts."""
    return db.q(
        "SELECT id, sponsor, pile, COALESCE(stop_epoch, received_at), energy_wh, reason FROM sessions"
        " WHERE COALESCE(stop_epoch, received_at) >= ? AND COALESCE(stop_epoch, received_at) < ?"
        " ORDER BY 4, 1", (t_from, t_to)).fetchall()


def report(args: argparse.Namespace) -> int:
    from host_tools import tariff

    t_from = parse_date(args.date_from)
    t_to = parse_date(args.date_to, end=True)
    if t_to <= t_from:
        raise LedgerError("--to %s is before --from %s" % (args.date_to, args.date_from))
    if args.sessions_csv and not args.tariff:
        raise LedgerError("--sessions-csv needs --tariff (it lists each session's price)")
    tariffs = tariff.load(args.tariff) if args.tariff else None  # refused before the database is opened
    db = DB(args.db)
    rows = settlement(db, t_from, t_to)
    priced = tariff.price_sessions(tariffs, priced_rows(db, t_from, t_to)) if tariffs else []
    n_conf = db.q("SELECT COUNT(*) FROM conflicts").fetchone()[0]
    db.close()
    header: tuple[str, ...] = HEADER
    if tariffs:  # each row's cost, from the priced sessions it adds up
        costs = tariff.cost_by(priced)
        rows = [r + costs.get((r[0], r[1]), (0, "")) for r in rows]
        header = HEADER + ("cost", "currency")
    if args.csv:
        try:
            with open(args.csv, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                for r in rows:
                    w.writerow(["" if v is None else v for v in r])
        except OSError as e:
            raise LedgerError("--csv %s: %s" % (args.csv, e))
    if args.sessions_csv:
        try:
            tariff.write_sessions_csv(args.sessions_csv, priced)
        except OSError as e:
            raise LedgerError("--sessions-csv %s: %s" % (args.sessions_csv, e))
    fmt = "%-16s %-14s %8s %10s %10s %9s" + (" %12s %-8s" if tariffs else "")
    print(fmt % tuple(h.upper() for h in header))
    for r in rows:
        print((fmt % ((r[0], r[1], r[2], "%.3f" % r[3], "%.3f" % r[4], "-" if r[5] is None else "%.3f" % r[5])
                      + ((r[6] if r[7] != "mixed" else "-", r[7]) if tariffs else ()))).rstrip())
    if tariffs:
        spends = tariff.spend(priced, t_from, t_to)
        tariff.print_spend(spends, sys.stdout)
        for s in spends:
            if s.over:
                print("warning: sponsor %s spent %s %s of its %s budget for %s" % (
                    s.sponsor, s.spent, s.currency, s.budget, s.period), file=sys.stderr)
    if n_conf:
        print("warning: %d conflicting duplicate record(s) in table conflicts are not counted" % n_conf,
              file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- CLI
def handler(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="ledger: %(message)s", stream=sys.stderr)
    try:
        if args.ledger_cmd == "ingest":
            return ingest(args)
        return report(args)
    except LedgerError as e:
        for line in str(e).splitlines() or [""]:  # a tariff file: one line per mistake
            print("h2pile ledger: error: %s" % line, file=sys.stderr)
        return e.code
    except ValueError as e:  # a bad --broker, a tariff file (one line per mistake)
        for line in str(e).splitlines() or [""]:
            print("h2pile ledger: error: %s" % line, file=sys.stderr)
        return 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ledger", help="store billing records and settle them",
                              description=__doc__, formatter_class=_raw())
    sp = p.add_subparsers(dest="ledger_cmd", metavar="{ingest,report}")
    sp.required = True
    pi = sp.add_parser("ingest", help="store bills from the broker, ack after commit")
    pi.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT (default %(default)s)")
    pi.add_argument("--user", help="MQTT user of the ledger's account (broker-config --ledger: the only "
                    "role that may publish bill/ack)")
    add_secret(pi, LEDGER_PASSWORD, "MQTT password of --user")
    pi.add_argument("--tls-ca", help="CA certificate file: connect with TLS")
    pi.add_argument("--db", default=DEFAULT_DB,
                    help="sqlite:///file.db or postgresql://USER@HOST:PORT/DB (password in ~/.pgpass or "
                    "$PGPASSWORD; default %(default)s)")
    pi.add_argument("--share", metavar="GROUP", help="shared subscription group ($share/GROUP/...): several "
                    "ingest processes split the stream, each bill goes to one of them")
    pi.add_argument("--client-id", help="MQTT client id; a fixed id gets a persistent session "
                    "(default %s without --share; with --share leave it out: each member gets its own id "
                    "and a clean session, docs/operators.md)" % DEFAULT_CLIENT_ID)
    pi.add_argument("-v", "--verbose", action="store_true", help="log every record")
    pr = sp.add_parser("report", help="settlement per sponsor and pile")
    pr.add_argument("--db", default=DEFAULT_DB,
                    help="sqlite:///file.db or postgresql://USER@HOST:PORT/DB (password in ~/.pgpass or "
                    "$PGPASSWORD; default %(default)s)")
    pr.add_argument("--from", dest="date_from", required=True, help="YYYY-MM-DD (UTC, inclusive)")
    pr.add_argument("--to", dest="date_to", required=True, help="YYYY-MM-DD (UTC, inclusive)")
    pr.add_argument("--csv", help="also write the table to this CSV file")
    pr.add_argument("--tariff", metavar="FILE", help="price each session from this TOML tariff file (per sponsor: "
                    "per kWh, per session, currency, budget per period; see host_tools/tariff.py) and show each "
                    "sponsor's spend against its budget")
    pr.add_argument("--sessions-csv", metavar="FILE", help="with --tariff: write every session with its price "
                    "to this CSV file")
    p.set_defaults(func=handler)
    return p


def _raw() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="h2pile")
    add_parser(ap.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "ledger":  # python -m host_tools.ledger ingest ...
        argv.insert(0, "ledger")
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
