"""Test helper: the ledger's tables read with a client of the test's own
(sqlite3 or psycopg), not through host_tools.ledger_db, the code under test.

    with LedgerRows(url) as db:
        db.all("SELECT id FROM sessions WHERE pile = ?", ("P1",))
        db.one("SELECT COUNT(*) FROM conflicts")

Every query sees what is committed at that moment (autocommit). Safe to use
from a paho callback thread and the test's thread at once.
"""
import sqlite3
import threading


class LedgerRows:
    def __init__(self, url):
        self.pg = url.startswith(("postgresql://", "postgres://"))
        if self.pg:
            import psycopg
            self.conn = psycopg.connect(url, autocommit=True, application_name="h2pile-test")
        else:
            self.conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, check_same_thread=False,
                                        timeout=30)
        self.lock = threading.Lock()

    def all(self, sql, args=()):
        if self.pg:
            sql = sql.replace("?", "%s")
        with self.lock:
            return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    def one(self, sql, args=()):
        rows = self.all(sql, args)
        return rows[0][0] if rows else None

    def sessions(self):
        """(id, energy_wh) of every stored bill, by id."""
        return self.all("SELECT id, energy_wh FROM sessions ORDER BY id")

    def count(self, table):
        return self.one("SELECT COUNT(*) FROM %s" % table)

    def close(self):
        with self.lock:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
