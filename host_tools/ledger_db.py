"""The ledger's database, SQLite or PostgreSQL behind one small class.

    db = DB("sqlite:///ledger.db" | "postgresql://user:pw@host:5432/ledger")
    db.store(record) -> "new" | "dup" | "conflict"   (committed when it returns)

One schema serves both (types both understand, `INSERT ... ON CONFLICT`,
which SQLite has since 3.24). A bill is stored exactly once however many
ingest processes store it at the same time: the session id is the primary
key, and under READ COMMITTED (SQLite: one writer at a time) an insert of an
id another transaction is inserting waits for that one to commit or roll
back, then either inserts or finds the committed row and compares it.

Errors name the database by its URL without the password (`DB.where`). A
lost connection is `retryable()`: the ingest reconnects and stores the bill
again, and acknowledges nothing meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import urllib.parse
from typing import Any

from host_tools.exitcodes import UNREACHABLE, USAGE, CliError
from host_tools.ledger_records import canonical, sponsor_of

PG_SCHEMES = ("postgresql://", "postgres://")
# Two ingests starting together would race on CREATE TABLE IF NOT EXISTS
# (PostgreSQL: a unique violation in pg_type); they take turns on this
# advisory lock instead. The number is arbitrary, fixed: "h2pl".
_SCHEMA_LOCK = 0x6832706C
# Defaults for a connection to PostgreSQL unless the URL sets them: give up
# connecting after 10 s, and notice a dead server or network within about
# 30 s instead of waiting on TCP's retransmissions for many minutes.
_PG_DEFAULTS = {"connect_timeout": "10", "application_name": "h2pile-ledger", "keepalives": "1",
                "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
                "tcp_user_timeout": "30000"}

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
        peak_w DOUBLE PRECISION,
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


class LedgerError(CliError):
    """A user-facing error (bad argument, missing package, bad or unreachable
    database); `code` is the exit code (host_tools.exitcodes)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message, code)


def redact(url: str) -> str:
    """The URL as it may be shown: without a password, in the user part or
    in a `password=` parameter; the rest as given."""
    if not url.startswith(PG_SCHEMES):
        return url
    scheme, _, rest = url.partition("://")
    cut = len(rest)
    for ch in "/?":
        if ch in rest:
            cut = min(cut, rest.index(ch))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        authority = userinfo.partition(":")[0] + "@" + hosts
    tail = re.sub(r"([?&])password=[^&#]*", r"\1password=***", tail)
    return scheme + "://" + authority + tail


def _password(url: str) -> str | None:
    try:
        u = urllib.parse.urlsplit(url)
        pw = u.password or dict(urllib.parse.parse_qsl(u.query)).get("password")
    except ValueError:
        return None
    return urllib.parse.unquote(pw) if pw else None


def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    if url.startswith("sqlite://"):
        raise LedgerError("--db %r: use sqlite:///relative.db or sqlite:////absolute/path.db" % url)
    return url


class DB:
    """One connection. Not shared between threads: the ingest's worker is the
    only user once it runs (check_same_thread is off for that hand-over)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self.kind = "postgresql" if url.startswith(PG_SCHEMES) else "sqlite"
        self.ph = "%s" if self.kind == "postgresql" else "?"
        self.conn: Any = None
        self._open()

    def _open(self) -> None:
        """Connect and create the tables that are missing."""
        self.conn = self._connect()
        try:
            if self.kind == "postgresql":
                self.q("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA:
                self.q(stmt)
            self.conn.commit()
        except Exception as e:
            self.close()
            raise LedgerError("--db %s: cannot create tables: %s" % (self.where, self.say(e)),
                              UNREACHABLE if self.retryable(e) else USAGE)

    # ------------------------------------------------------------ connection
    def _connect(self) -> Any:
        if self.kind == "postgresql":
            return self._connect_pg()
        path = _sqlite_path(self.url)
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise LedgerError("--db %s: directory %s does not exist" % (self.url, d))
        try:
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            raise LedgerError("--db %s: not a usable SQLite database: %s" % (self.url, e))
        return conn

    def _connect_pg(self) -> Any:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise LedgerError(
                "--db %s: PostgreSQL needs the 'psycopg' package, which is not installed "
                "(pip install 'psycopg[binary]'), or use --db sqlite:///ledger.db" % self.where)
        try:
            given = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as e:
            raise LedgerError("--db %s: not a PostgreSQL URL: %s" % (self.where, self.say(e)))
        ports = str(given.get("port", "5432")).split(",")
        if not all(p.strip().isdigit() for p in ports):
            raise LedgerError("--db %s: the port %r is not a number" % (self.where, given["port"]))
        extra: dict[str, Any] = {k: v for k, v in _PG_DEFAULTS.items() if k not in given}
        try:
            conn = psycopg.connect(self.url, **extra)
        except psycopg.Error as e:
            raise LedgerError("--db %s: cannot connect: %s" % (self.where, self.say(e)), UNREACHABLE)
        # stated, not left to the server's default_transaction_isolation:
        # store() relies on an insert waiting for a concurrent one (above)
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

    def reconnect(self) -> None:
        """Drop the connection and open a new one (LedgerError if it fails)."""
        self.close()
        self._open()

    def retryable(self, e: BaseException) -> bool:
        """False if e is the record's fault (a value the database refuses,
        a constraint): storing it again fails again. True for the rest: the
        server down or restarted, the connection or network lost, a lock,
        a full disk, a table or a right gone. Worth reconnecting and storing
        the same bill again."""
        if self.kind == "sqlite":
            return not isinstance(e, (sqlite3.DataError, sqlite3.IntegrityError))
        import psycopg
        return not isinstance(e, (psycopg.DataError, psycopg.IntegrityError))

    def say(self, e: BaseException) -> str:
        """e's message on one line, without the password."""
        text = " ".join(str(e).split()) or type(e).__name__
        pw = _password(self.url)
        return text.replace(pw, "***") if pw else text

    # ------------------------------------------------------------- queries
    def q(self, sql: str, args: tuple | list = ()) -> Any:
        if self.ph != "?":
            sql = sql.replace("?", self.ph)
        return self.conn.execute(sql, args)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # the connection is gone: nothing to roll back
            pass

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def store(self, rec: dict, now: float | None = None) -> str:
        """Insert one validated record. Returns 'new', 'dup' or 'conflict'.
        Committed when it returns; rolled back when it raises."""
        now = int(time.time() if now is None else now)
        text = canonical(rec)
        stop = rec.get("stop")
        try:
            cur = self.q(
                "INSERT INTO sessions (id, pile, sponsor, token, start_ts, stop_ts, stop_epoch, energy_wh,"
                " premix_l, peak_w, reason, soc0, soc1, flags, payload, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (rec["id"], rec["pile"], sponsor_of(rec.get("token")), rec.get("token"),
                 str(rec["start"]), str(stop), stop if isinstance(stop, int) else None,
                 float(rec["energy_wh"]), float(rec["premix_l"]), _float(rec.get("peak_w")), rec["reason"],
                 _float(rec.get("soc0")), _float(rec.get("soc1")), json.dumps(rec.get("flags", [])), text, now))
            if cur.rowcount == 1:
                result = "new"
            else:
                row = self.q("SELECT payload FROM sessions WHERE id = ?", (rec["id"],)).fetchone()
                if row is not None and row[0] == text:
                    result = "dup"
                else:
                    self.q("INSERT INTO conflicts (id, pile, digest, payload, received_at)"
                           " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id, digest) DO NOTHING",
                           (rec["id"], rec["pile"], hashlib.sha256(text.encode()).hexdigest(), text, now))
                    result = "conflict"
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return result

    def reject(self, topic: str, reason: str, payload: bytes, now: float | None = None) -> None:
        """Keep a message that is not a valid bill, with the reason."""
        now = int(time.time() if now is None else now)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = "hex:" + payload.hex()
        if "\x00" in text:  # PostgreSQL's TEXT has no NUL: keep the bytes as hex
            text = "hex:" + payload.hex()
        try:
            self.q("INSERT INTO rejects (topic, reason, payload, received_at) VALUES (?, ?, ?, ?)",
                   (topic, reason, text[:4096], now))
            self.commit()
        except BaseException:
            self.rollback()
            raise


def _float(v: object) -> float | None:
    # a number in a DOUBLE PRECISION column: the same value on both databases
    return None if v is None else float(v)  # type: ignore[arg-type]
