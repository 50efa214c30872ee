"""Ingest scales out: three `h2pile ledger ingest --share fleet` processes
split the bills of three piles (the firmware's journal, sessions and billing
on the MicroPython unix port, h2p.mqtt to a real mosquitto) and store them
in one database, SQLite or PostgreSQL. One ingest hangs (SIGSTOP) while the
broker keeps handing it its share, and is then SIGKILLed: the broker forgets
the bills it had in flight (a clean session), the piles send them again, the
other two store them. Every bill ends up stored once,
every bill is acknowledged, and each bill/ack, as it is seen on the broker,
already finds its row committed."""
import json
import signal
import time

import pytest

from tests.helpers.ledger_broker import Ingest, Mosquitto, Pile, PileProc
from tests.helpers.ledger_rows import LedgerRows

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.slow]  # real-time flows of tens of seconds: make test, not test-fast

PILES = ("PF1", "PF2", "PF3")
SESSIONS = 100  # per pile: 300 bills
SESSION_S = 0.06  # longest session, so that 100 take a few seconds


def wait_until(fn, timeout):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if fn():
            return True
        time.sleep(0.02)
    return False


def test_three_shared_ingests_one_killed_store_every_bill_once(tmp_path, ledger_url):
    with Mosquitto(tmp_path) as broker:
        ingests = [Ingest(broker.port, ledger_url, share="fleet") for _ in range(3)]
        db = LedgerRows(ledger_url)
        observer = Pile(broker.port, client_id="ack-observer")  # sees every bill/ack the piles see
        missing_at_ack = []

        def on_ack(sid):
            if db.one("SELECT COUNT(*) FROM sessions WHERE id = ?", (sid,)) != 1:
                missing_at_ack.append(sid)

        observer.on_ack = on_ack
        piles = []
        try:
            for k, pid in enumerate(PILES):
                d = tmp_path / pid
                d.mkdir()
                piles.append(PileProc(d, broker.port, SESSIONS, k + 1, pid, SESSION_S, 65536))
            victim = ingests[0]
            assert wait_until(lambda: victim.count("stored") >= 10, 60), victim.lines[-5:]
            victim.proc.send_signal(signal.SIGSTOP)
            # the others go on acknowledging; the broker deals the victim its share meanwhile
            acked_at_stop = len(observer.acks)
            assert wait_until(lambda: len(observer.acks) >= acked_at_stop + 30, 60)
            victim.kill()
            acked_at_kill = len(set(observer.acks))
            assert acked_at_kill < len(PILES) * SESSIONS, "the kill was meant to land mid-stream"
            done = [json.loads(p.wait_for("DONE", timeout=120)[5:]) for p in piles]  # every bill acknowledged
            rows = db.all("SELECT id, pile, energy_wh FROM sessions ORDER BY id")
            conflicts, rejects = db.count("conflicts"), db.count("rejects")
        finally:
            for p in piles:
                p.kill()
            for ing in ingests:
                ing.kill()
            observer.close()
            db.close()
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)) == len(PILES) * SESSIONS and conflicts == 0 and rejects == 0
        for pid, d, p in zip(PILES, done, piles):
            assert d["sessions"] == SESSIONS and d["acked"] >= SESSIONS, (pid, d)
            mine = [r for r in rows if r[1] == pid]
            assert len(mine) == SESSIONS
            meter = float((tmp_path / pid / "meter").read_text())
            assert abs(sum(r[2] for r in mine) - meter) <= 1.0, (pid, sum(r[2] for r in mine), meter)
        assert set(observer.acks) == set(ids) and not missing_at_ack, missing_at_ack[:5]
        stored = [ing.count("stored") for ing in ingests]
        dups = [ing.count("duplicate") for ing in ingests]
        assert stored[1] > 0 and stored[2] > 0, stored
        sent = sum(d["sent"] for d in done)
        assert sent > len(ids), "no bill was in flight to the killed ingest: nothing was re-sent"
        print("\nscale-out (%s): stored by ingest %s (first killed after %d acks), duplicates %s, bills sent %d "
              "for %d sessions, acks seen %d"
              % (ledger_url.split(":")[0], stored, acked_at_kill, dups, sent,
                 len(ids), len(observer.acks)))
