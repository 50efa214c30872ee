"""Integration: journal + session + billing on MicroPython with the real
MQTT client (h2p.mqtt), mosquitto and `h2pile ledger ingest`: broker down
at start, ingest killed and restarted, the pile SIGKILLed mid-session;
every session must end up in the ledger exactly once, energy within 1 Wh.
On SQLite and on PostgreSQL (the `ledger_url` fixture: tests/conftest.py)."""
import json
import time
from pathlib import Path

import pytest

from tests.helpers.ledger_broker import Ingest, Mosquitto, PileProc
from tests.helpers.ledger_rows import LedgerRows

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython, pytest.mark.broker]


def test_sessions_reach_ledger_exactly_once(tmp_path, ledger_url):
    d = tmp_path / "pile"
    d.mkdir()
    url = ledger_url
    broker = Mosquitto(tmp_path)  # port chosen, broker not running yet
    procs = []
    try:
        # 1. broker down: sessions are journaled, nothing can be billed
        p1 = PileProc(d, broker.port, 8, 1)
        procs.append(p1)
        p1.wait_for("CLOSED 5")
        time.sleep(0.15)  # into the next session
        p1.kill()  # SIGKILL, probably mid-session
        broker.start()
        ing = Ingest(broker.port, url)
        procs.append(ing)
        # 2. restart: recovers the open session, bills the backlog
        p2 = PileProc(d, broker.port, 8, 2)
        procs.append(p2)
        boot2 = p2.wait_for("BOOT")
        p2.wait_for("CLOSED 2")
        ing.kill()  # the ledger dies and comes back
        time.sleep(0.5)
        ing = Ingest(broker.port, url)
        procs.append(ing)
        p2.wait_for("CLOSED 5")
        time.sleep(0.15)
        p2.kill()
        # 3. a clean run to the end
        p3 = PileProc(d, broker.port, 5, 3)
        procs.append(p3)
        boot3 = p3.wait_for("BOOT")
        done = json.loads(p3.wait_for("DONE", timeout=60)[5:])
        time.sleep(0.5)
        with LedgerRows(url) as db:
            rows = db.all("SELECT id, energy_wh, reason FROM sessions ORDER BY id")
            conflicts = db.count("conflicts")
        meter = float((d / "meter").read_text())
        ids = [r[0] for r in rows]
        n_closed = 5 + sum(ln.startswith("CLOSED") for ln in p2.lines) + done["sessions"]
        recovered = int(boot2.split()[2][10:]) + int(boot3.split()[2][10:])
        assert len(ids) == len(set(ids)) == n_closed + recovered, (ids, n_closed, recovered)
        assert conflicts == 0 and recovered >= 1
        total = sum(r[1] for r in rows)
        assert abs(total - meter) <= 1.0, (total, meter)
        print("\nledger rows=%d (closed normally %d, recovered after SIGKILL %d) energy %.1f Wh vs meter %.1f Wh; "
              "pile run 3: %s" % (len(rows), n_closed, recovered, total, meter,
                                  {k: done[k] for k in ("sent", "acked")}))
    finally:
        for p in procs:
            p.kill()
        broker.stop()
