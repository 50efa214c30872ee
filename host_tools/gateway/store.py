"""What the gateway keeps across restarts, in one SQLite file:

  queue   per pile, in order: the transaction events and meter values not yet
          answered by the CSMS. A row is deleted only once the CSMS's
          CallResult (or CallError) for it is in: a gateway killed before
          that sends it again after its restart, with the same content
          (2.0.1: the same seqNo), never a new one.
  piles   each pile's state as the gateway tracks it (open transaction,
          energy register, the last pile message it handled, settings) as
          JSON, written in the same transaction as the rows it queued.

Bounded: at most max_per_pile rows a pile; over that the oldest meter
value ("updated") of the pile goes, never a transaction's start or end
(there are two of those per session). Counted in `dropped` and logged.

WAL, synchronous=NORMAL: a commit survives the gateway process being
killed (the case the queue is for); a power cut of the host may lose the
last commits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

log = logging.getLogger("gateway")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, pile TEXT NOT NULL, "
    "kind TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS queue_pile ON queue (pile, id)",
    "CREATE TABLE IF NOT EXISTS piles (pile TEXT PRIMARY KEY, state TEXT NOT NULL)",
)


class Store:
    def __init__(self, path: str, max_per_pile: int = 10000) -> None:
        self.path = path
        self.max_per_pile = max_per_pile
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for stmt in _SCHEMA:
            self.db.execute(stmt)
        self.counts: dict[str, int] = {}  # pile -> rows queued
        for pile, n in self.db.execute("SELECT pile, COUNT(*) FROM queue GROUP BY pile"):
            self.counts[pile] = n
        self.dropped = 0

    def state(self, pile: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT state FROM piles WHERE pile = ?", (pile,)).fetchone()
        return None if row is None else json.loads(row[0])

    def commit(self, pile: str, state: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Save the pile's state and append its new items, atomically."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("INSERT INTO piles (pile, state) VALUES (?, ?) ON CONFLICT (pile) DO UPDATE SET "
                       "state = excluded.state", (pile, json.dumps(state, separators=(",", ":"))))
            n = self.counts.get(pile, 0)
            for it in items:
                if n >= self.max_per_pile and self._drop_oldest_meter(pile):
                    n -= 1
                db.execute("INSERT INTO queue (pile, kind, body) VALUES (?, ?, ?)",
                           (pile, it["t"], json.dumps(it, separators=(",", ":"))))
                n += 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.counts[pile] = n

    def _drop_oldest_meter(self, pile: str) -> bool:
        row = self.db.execute("SELECT id FROM queue WHERE pile = ? AND kind = 'updated' ORDER BY id LIMIT 1",
                              (pile,)).fetchone()
        if row is None:
            return False
        self.db.execute("DELETE FROM queue WHERE id = ?", (row[0],))
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("%s: queue full (%d events): oldest meter values dropped (%d so far)", pile,
                        self.max_per_pile, self.dropped)
        return True

    def peek(self, pile: str) -> tuple[int, dict[str, Any]] | None:
        """The pile's oldest queued item: (row id, item)."""
        if not self.counts.get(pile):
            return None
        row = self.db.execute("SELECT id, body FROM queue WHERE pile = ? ORDER BY id LIMIT 1", (pile,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def done(self, pile: str, row_id: int, state: dict[str, Any] | None = None) -> None:
        """Row answered by the CSMS: delete it (and save the pile's state,
        e.g. the CSMS's transaction id, in the same commit)."""
        db = self.db
        db.execute("BEGIN")
        try:
            if state is not None:
                db.execute("UPDATE piles SET state = ? WHERE pile = ?",
                           (json.dumps(state, separators=(",", ":")), pile))
            cur = db.execute("DELETE FROM queue WHERE id = ?", (row_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if cur.rowcount:
            self.counts[pile] = self.counts.get(pile, 1) - 1

    def queued(self, pile: str) -> int:
        return self.counts.get(pile, 0)

    def close(self) -> None:
        self.db.close()
