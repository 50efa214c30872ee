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
path; postgresql://user:pw@host/db needs the `psycopg` package.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

from h2p import topics
from h2p.session import REASONS
from host_tools.secret_args import LEDGER_PASSWORD, add_secret, secret_from
from host_tools.topic_filter import topic_filter

log = logging.getLogger("ledger")

DEFAULT_DB = "sqlite:///ledger.db"
DEFAULT_CLIENT_ID = "h2pile-ledger"
NO_SPONSOR = "-"
ENVELOPE_KEYS = ("seq", "boot")  # per-message stamps, not part of the record

_CAP_RANGE = {a[1]: (a[4], a[5]) for a in topics.CMD_ARGS if a[0] == "start" and a[1] in ("cap_kwh", "cap_min")}
_STAMP_RE = re.compile(r"^boot:\d{1,10}\+\d{1,12}$")
_EPOCH_MIN = 1_600_000_000
_EPOCH_MAX = 4_102_444_800  # 2100-01-01

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        pile TEXT NOT NULL,
        sponsor TEXT NOT NULL,
        token TEXT,
        start_ts TEXT,
        stop_ts TEXT,
        stop_epoch BIGINT,
        energy_wh DOUBLE PRECISION NOT NULL,
        premix_l DOUBLE PRECISION NOT NULL,
        peak_w BIGINT,
        reason TEXT,
        soc0 DOUBLE PRECISION,
        soc1 DOUBLE PRECISION,
        flags TEXT,
        payload TEXT NOT NULL,
        received_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS conflicts (
        id TEXT NOT NULL,
        pile TEXT NOT NULL,
        digest TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        UNIQUE (id, digest))""",
    """CREATE TABLE IF NOT EXISTS rejects (
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at BIGINT NOT NULL)""",
)


class LedgerError(Exception):
    """A user-facing error (bad argument, missing package, bad database)."""


# --------------------------------------------------------------------- records
def sponsor_of(token: object) -> str:
    """'sponsor:<name>:<ref>' -> name; anything else -> '-'."""
    if isinstance(token, str) and token.startswith("sponsor:"):
        parts = token.split(":", 2)
        if len(parts) == 3 and parts[1]:
            return parts[1]
    return NO_SPONSOR


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _check_num(rec: dict, key: str, lo: float, hi: float, required: bool = True) -> str | None:
    v = rec.get(key)
    if v is None:
        if required:
            return "missing %s" % key
        return None
    if not _num(v):
        return "%s must be a number, got %r" % (key, v)
    if not lo <= v <= hi:
        return "%s=%r out of range %s..%s" % (key, v, lo, hi)
    return None


def _check_stamp(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    if isinstance(v, bool):
        return "%s must be epoch seconds or 'boot:N+S', got %r" % (key, v)
    if isinstance(v, int):
        if not _EPOCH_MIN <= v <= _EPOCH_MAX:
            return "%s=%r is not a plausible epoch time" % (key, v)
        return None
    if isinstance(v, str) and _STAMP_RE.match(v):
        return None
    return "%s must be epoch seconds or 'boot:N+S', got %r" % (key, v)


def validate(topic_pile: str, rec: object) -> str | None:
    """Return None if rec is a valid v1 session record from topic_pile,
    else the reason it is not."""
    if not isinstance(rec, dict):
        return "record is not a JSON object"
    if rec.get("v") != 1:
        return "unsupported schema version v=%r (expected 1)" % (rec.get("v"),)
    pile = rec.get("pile")
    if pile != topic_pile:
        return "pile %r does not match the topic's pile %r" % (pile, topic_pile)
    sid = rec.get("id")
    if not isinstance(sid, str) or not re.match(r"^%s-\d{5,10}-\d{3,6}$" % re.escape(pile), sid):
        return "id %r is not '<pile>-<boot>-<seq>'" % (sid,)
    if "idem" in rec and rec["idem"] != sid:
        return "idempotency id %r differs from id %r" % (rec["idem"], sid)
    for key in ("start", "stop"):
        err = _check_stamp(rec, key)
        if err:
            return err
    if isinstance(rec["start"], int) and isinstance(rec["stop"], int) and rec["stop"] < rec["start"]:
        return "stop %d is before start %d" % (rec["stop"], rec["start"])
    for key, lo, hi, req in (
        ("energy_wh", 0, 1_000_000, True),
        ("premix_l", 0, 1_000, True),
        ("peak_w", 0, 1_000_000, False),
        ("soc0", 0, 100, False),
        ("soc1", 0, 100, False),
        ("dur_s", 0, 10 * 86400, False),
        ("meter0", -1e12, 1e12, False),
        ("meter1", -1e12, 1e12, False),
    ):
        err = _check_num(rec, key, lo, hi, req)
        if err:
            return err
    for key in ("cap_kwh", "cap_min"):  # the start command's caps: its ranges (h2p.cmdspec)
        err = _check_num(rec, key, *_CAP_RANGE[key], required=False)
        if err:
            return err
    if rec.get("reason") not in REASONS:
        return "reason %r not one of %s" % (rec.get("reason"), ", ".join(REASONS))
    tok = rec.get("token")
    if tok is not None and (not isinstance(tok, str) or len(tok) > 256):
        return "token must be a string of at most 256 characters"
    fl = rec.get("flags", [])
    if not isinstance(fl, list) or not all(isinstance(f, str) for f in fl):
        return "flags must be a list of strings"
    return None


def canonical(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k not in ENVELOPE_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


# -------------------------------------------------------------------- database
def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    if url.startswith("sqlite://"):
        raise LedgerError("--db %r: use sqlite:///relative.db or sqlite:////absolute/path.db" % url)
    return url


class DB:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise LedgerError(
                    "--db %s: PostgreSQL needs the 'psycopg' package, which is not installed "
                    "(pip install 'psycopg[binary]'), or use --db sqlite:///ledger.db" % url.split("@")[-1])
            try:
                self.conn = psycopg.connect(url)
            except Exception as e:  # psycopg.OperationalError and friends
                raise LedgerError("--db: cannot connect to PostgreSQL: %s" % e)
            self.ph = "%s"
            self.kind = "postgresql"
        else:
            path = _sqlite_path(url)
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                raise LedgerError("--db %s: directory %s does not exist" % (url, d))
            try:
                self.conn = sqlite3.connect(path, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as e:
                raise LedgerError("--db %s: not a usable SQLite database: %s" % (url, e))
            self.ph = "?"
            self.kind = "sqlite"
        try:
            for stmt in _SCHEMA:
                self.q(stmt)
            self.conn.commit()
        except Exception as e:
            raise LedgerError("--db %s: cannot create tables: %s" % (url, e))

    def q(self, sql: str, args: tuple | list = ()) -> Any:
        if self.ph != "?":
            sql = sql.replace("?", self.ph)
        return self.conn.execute(sql, args)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------- store
    def store(self, rec: dict, now: float | None = None) -> str:
        """Insert one validated record. Returns 'new', 'dup' or 'conflict'.
        Committed when it returns."""
        now = int(time.time() if now is None else now)
        text = canonical(rec)
        stop = rec.get("stop")
        cur = self.q(
            "INSERT INTO sessions (id, pile, sponsor, token, start_ts, stop_ts, stop_epoch, energy_wh,"
            " premix_l, peak_w, reason, soc0, soc1, flags, payload, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (rec["id"], rec["pile"], sponsor_of(rec.get("token")), rec.get("token"),
             str(rec["start"]), str(stop), stop if isinstance(stop, int) else None,
             float(rec["energy_wh"]), float(rec["premix_l"]), rec.get("peak_w"), rec["reason"],
             rec.get("soc0"), rec.get("soc1"), json.dumps(rec.get("flags", [])), text, now))
        if cur.rowcount == 1:
            self.commit()
            return "new"
        row = self.q("SELECT payload FROM sessions WHERE id = ?", (rec["id"],)).fetchone()
        if row is not None and row[0] == text:
            self.commit()
            return "dup"
        self.q("INSERT INTO conflicts (id, pile, digest, payload, received_at) VALUES (?, ?, ?, ?, ?)"
               " ON CONFLICT (id, digest) DO NOTHING",
               (rec["id"], rec["pile"], hashlib.sha256(text.encode()).hexdigest(), text, now))
        self.commit()
        return "conflict"

    def reject(self, topic: str, reason: str, payload: bytes, now: float | None = None) -> None:
        now = int(time.time() if now is None else now)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = "hex:" + payload.hex()
        self.q("INSERT INTO rejects (topic, reason, payload, received_at) VALUES (?, ?, ?, ?)",
               (topic, reason, text[:4096], now))
        self.commit()


# ---------------------------------------------------------------------- ingest
class Ingest:
    """MQTT-independent message handler: handle(topic, payload) stores and
    returns the ack (topic, payload bytes) to publish, or None."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self.counts = {"new": 0, "dup": 0, "conflict": 0, "rejected": 0}

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != "bill":
            return self._reject(topic, "not a h2pile/v1/<pile>/bill topic", payload)
        pile = parsed[0]
        try:
            rec = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            return self._reject(topic, "not JSON: %s" % e, payload)
        err = validate(pile, rec)
        if err:
            return self._reject(topic, err, payload)
        result = self.db.store(rec)
        self.counts[result] += 1
        if result == "conflict":
            log.error("CONFLICT %s from %s: stored before with different content; kept in table conflicts",
                      rec["id"], pile)
        else:
            log.info("%s %s %.1f Wh", "stored" if result == "new" else "duplicate", rec["id"],
                     rec["energy_wh"])
        return topics.topic(pile, "bill/ack"), json.dumps({"id": rec["id"]}).encode()

    def _reject(self, topic: str, reason: str, payload: bytes) -> tuple[str, bytes] | None:
        self.counts["rejected"] += 1
        log.warning("REJECTED message on %s: %s (not acknowledged)", topic, reason)
        try:
            self.db.reject(topic, reason, payload)
        except Exception as e:  # the reject log is best effort
            log.error("could not record the reject: %s", e)
        return None


def subscription(share: str | None = None) -> str:
    """Every pile's bills; with a share group, one member of the group gets each."""
    sub = topic_filter(name="bill")
    if share:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", share):
            raise LedgerError("--share %r: use letters, digits, '_' and '-'" % share)
        sub = "$share/%s/%s" % (share, sub)
    return sub


def ingest(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from host_tools.cmd import parse_broker

    host, port = parse_broker(args.broker)
    sub = subscription(args.share)
    db = DB(args.db)
    handler = Ingest(db)
    client_id = args.client_id
    persistent = True
    if not client_id:
        if args.share:
            # each member of a share group needs its own id; the piles'
            # re-sends cover messages lost with a non-persistent session
            client_id = "%s-%s-%d" % (DEFAULT_CLIENT_ID, args.share, os.getpid())
            persistent = False
        else:
            client_id = DEFAULT_CLIENT_ID
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                    protocol=mqtt.MQTTv311, manual_ack=True)
    if args.user:
        c.username_pw_set(args.user, secret_from(args, LEDGER_PASSWORD, required=False))
    if args.tls_ca:
        c.tls_set(ca_certs=args.tls_ca)
    c.reconnect_delay_set(1, 30)
    c.max_inflight_messages_set(100)
    waiting: dict[int, tuple[int, int]] = {}  # mid of our bill/ack -> (mid, qos) of the bill it confirms
    lock = threading.Lock()

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        log.info("connected to %s:%d as %s (session present: %s)", host, port, client_id,
                 flags.session_present)
        if not flags.session_present:
            with lock:
                waiting.clear()  # those bills come again (or the piles re-send)
        client.subscribe(sub, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("subscription to %s refused: %s", sub, rcs)
        else:
            log.warning("subscribed to %s", sub)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        try:
            ack = handler.handle(msg.topic, msg.payload)
        except Exception as e:  # database down etc.: no PUBACK, no bill/ack
            log.error("could not store message on %s: %s; not acknowledged", msg.topic, e)
            try:
                db.rollback()
            except Exception:
                pass
            return
        if ack is None:
            client.ack(msg.mid, msg.qos)  # rejected: logged, no bill/ack
            return
        # PUBACK the bill only once the broker has our bill/ack: a crash in
        # between gets the bill re-delivered (a duplicate, acked again).
        info = client.publish(ack[0], ack[1], qos=1)
        with lock:
            waiting[info.mid] = (msg.mid, msg.qos)

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        with lock:
            m = waiting.pop(mid, None)
        if m is not None:
            client.ack(m[0], m[1])

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_publish = on_publish

    def stop(signum: int, frame: Any) -> None:
        c.disconnect()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        log.warning("broker %s:%d not reachable (%s); retrying", host, port, e)
    c.loop_forever(retry_first_connection=True)
    log.warning("stopped: %s", json.dumps(handler.counts))
    db.close()
    return 0


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
    except (LedgerError, ValueError) as e:
        for line in str(e).splitlines() or [""]:  # a tariff file: one line per mistake
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
                    help="sqlite:///file.db or postgresql://... (default %(default)s)")
    pi.add_argument("--share", metavar="GROUP", help="shared subscription group: several ingest processes "
                    "split the stream")
    pi.add_argument("--client-id", help="MQTT client id; a fixed id gets a persistent session "
                    "(default %s without --share)" % DEFAULT_CLIENT_ID)
    pi.add_argument("-v", "--verbose", action="store_true", help="log every record")
    pr = sp.add_parser("report", help="settlement per sponsor and pile")
    pr.add_argument("--db", default=DEFAULT_DB,
                    help="sqlite:///file.db or postgresql://... (default %(default)s)")
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
