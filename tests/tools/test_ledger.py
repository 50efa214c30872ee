"""`h2pile ledger ingest` against a private mosquitto, on SQLite and on
PostgreSQL (the `ledger_url` fixture: tests/conftest.py)."""
import json
import time
from pathlib import Path

import pytest

from host_tools import ledger
from tests.helpers.ledger_broker import Ingest, Mosquitto, Pile, record
from tests.helpers.ledger_rows import LedgerRows

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker]



def test_validate_caps():
    # A bill carries the caps of the command that started its session; the
    # ledger holds them to the command's own ranges (h2p.cmdspec).
    good = record("P1", 1, 1, 1000.0, reason="energy_cap", cap_kwh=1.0, cap_min=None)
    assert ledger.validate("P1", good) is None
    assert ledger.validate("P1", dict(good, reason="time_cap", cap_kwh=None, cap_min=90)) is None
    assert ledger.validate("P1", {k: v for k, v in good.items() if k not in ("cap_kwh", "cap_min")}) is None
    for change, why in (
        ({"cap_kwh": -1}, "cap_kwh=-1 out of range 0.1..500"),
        ({"cap_kwh": float("nan")}, "cap_kwh must be a number"),
        ({"cap_kwh": 1e9}, "cap_kwh=1000000000.0 out of range"),
        ({"cap_min": "90"}, "cap_min must be a number"),
        ({"cap_min": 0}, "cap_min=0 out of range 1..1440"),
    ):
        assert why in (ledger.validate("P1", dict(good, **change)) or ""), change


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path) as b:
        try:
            yield b
        finally:
            Ingest.kill_all()  # a failed test leaves no ingest running


def wait_until(fn, timeout=15):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if fn():
            return True
        time.sleep(0.05)
    return False


def test_validate_reasons():
    good = record("P1", 1, 1, 1000.0)
    assert ledger.validate("P1", good) is None
    cases = [
        ({"energy_wh": -1}, "energy_wh=-1 out of range"),
        ({"energy_wh": "12"}, "energy_wh must be a number"),
        ({"energy_wh": True}, "energy_wh must be a number"),
        ({"premix_l": 5000}, "premix_l=5000 out of range"),
        ({"soc1": 101}, "soc1=101 out of range"),
        ({"id": "P2-00001-001", "idem": "P2-00001-001"}, "is not '<pile>-<boot>-<seq>'"),
        ({"pile": "P2"}, "does not match the topic's pile"),
        ({"idem": "x"}, "idempotency id"),
        ({"stop": "yesterday"}, "stop must be epoch seconds"),
        ({"start": 1_780_000_001, "stop": 1_780_000_000}, "is before start"),
        ({"start": 12}, "not a plausible epoch"),
        ({"reason": "bored"}, "reason 'bored' not one of"),
        ({"v": 2}, "unsupported schema version"),
        ({"flags": "x"}, "flags must be a list"),
        ({"token": 5}, "token must be a string"),
    ]
    for change, why in cases:
        rec = dict(good, **change)
        err = ledger.validate("P1", rec)
        assert err and why in err, (change, err)
    assert "missing energy_wh" in ledger.validate("P1", {k: v for k, v in good.items() if k != "energy_wh"})
    assert ledger.validate("P1", dict(good, start="boot:3+12", stop="boot:3+99")) is None
    assert ledger.validate("P1", [1]) == "record is not a JSON object"
    assert ledger.sponsor_of("sponsor:acme:42") == "acme"
    assert ledger.sponsor_of("sponsor:a:b:c") == "a"
    assert ledger.sponsor_of("rfid:1234") == ledger.sponsor_of(None) == ledger.sponsor_of("sponsor::x") == "-"


def test_ingest_once_ack_after_commit_dups_and_malformed(broker, ledger_url):
    ing = Ingest(broker.port, ledger_url)
    db = LedgerRows(ledger_url)
    pile = Pile(broker.port)
    seen_at_ack = []

    def on_ack(sid):  # the record must already be committed when its ack arrives
        seen_at_ack.append(db.one("SELECT COUNT(*) FROM sessions WHERE id=?", (sid,)))

    pile.on_ack = on_ack
    good = [record("PA", 1, i, 1000.0 + i) for i in range(1, 31)] + [record("PB", 7, i, 500.0) for i in range(1, 11)]
    for r in good:
        pile.publish(r["pile"], r)
    for r in good[:5]:  # the pile re-sends: identical duplicates
        pile.publish(r["pile"], r)
    conflict = dict(good[0], energy_wh=9999.0)
    pile.publish("PA", conflict)
    bad = [
        ("PA", b"{not json"),
        ("PA", json.dumps(record("PA", 2, 1, -5.0))),
        ("PA", json.dumps(record("PB", 2, 2, 5.0))),  # pile does not match topic
        ("PA", json.dumps({k: v for k, v in record("PA", 2, 3, 5.0).items() if k != "reason"})),
        ("PA", b"\xff\xfe"),
        ("PA", b"[" * 100000 + b"]" * 100000),  # deeper than json goes
    ]
    for p, payload in bad:
        pile.publish(p, payload)
    # one ingest stores in arrival order: once this one is acked, an ack for
    # any of the malformed ones would have come already
    last = record("PB", 7, 99, 1.0)
    pile.publish("PB", last)
    assert pile.wait_acks(len(good) + 5 + 1 + 1), (len(pile.acks), ing.lines[-5:])
    good.append(last)
    acked = sorted(pile.acks)
    assert acked == sorted([r["id"] for r in good] + [r["id"] for r in good[:5]] + [good[0]["id"]])
    assert all(n == 1 for n in seen_at_ack)
    got = db.sessions()
    assert got == sorted((r["id"], r["energy_wh"]) for r in good)  # the conflict did not overwrite
    assert db.count("conflicts") == 1 and db.count("rejects") == 6
    # Its log comes through a reader thread, which may lag the acks: the
    # last bill's line is the last line, so every line before it is read too.
    assert wait_until(lambda: ing.count("stored") >= 41, 10), ing.lines[-5:]
    assert ing.count("stored") == 41 and ing.count("duplicate") == 5
    assert ing.count("CONFLICT") == 1 and ing.count("REJECTED") == 6
    pile.close()
    ing.kill()
    db.close()


def test_ingest_killed_and_restarted_loses_nothing(broker, ledger_url):
    url = ledger_url
    ing = Ingest(broker.port, url)
    db = LedgerRows(url)
    pile = Pile(broker.port)
    recs = [record("PK", 1, i, float(i)) for i in range(1, 401)]
    for r in recs[:300]:
        pile.publish("PK", r)
    # kill it in the middle of the stream
    assert wait_until(lambda: len(pile.acks) >= 20, timeout=10)
    ing.kill()
    n_before = len(db.sessions())
    # published while the ledger is down: the broker queues them for the
    # persistent session (clean_session=False, fixed client id)
    assert n_before < 300, "the kill was meant to land mid-stream"
    infos = [pile.publish("PK", r) for r in recs[300:]]
    for i in infos:
        i.wait_for_publish(5)
    time.sleep(0.3)
    ing2 = Ingest(broker.port, url)
    assert wait_until(lambda: len(db.sessions()) == 400, 20), len(db.sessions())
    assert pile.wait_acks(400), sorted({r["id"] for r in recs} - set(pile.acks))[:10]
    time.sleep(0.3)
    got = db.sessions()
    assert got == sorted((r["id"], r["energy_wh"]) for r in recs)
    assert sum(e for _, e in got) == sum(range(1, 401))
    assert set(pile.acks) == {r["id"] for r in recs}
    dup_acks = len(pile.acks) - 400
    print("\nkill/restart: stored before kill=%d, total=400, acks=%d (re-delivered after kill: %d)"
          % (n_before, len(pile.acks), dup_acks))
    pile.close()
    ing2.kill()
    db.close()


def test_two_shared_ingests_split_the_stream(broker, ledger_url):
    url = ledger_url
    a = Ingest(broker.port, url, share="ledger")
    b = Ingest(broker.port, url, share="ledger")
    pile = Pile(broker.port)
    recs = [record("P%d" % (i % 5), 1, i, 10.0 + i) for i in range(1, 301)]
    for r in recs:
        pile.publish(r["pile"], r)
    assert pile.wait_acks(300)
    # (the log lines come through reader threads, which may lag the acks)
    assert wait_until(lambda: a.count("stored") + b.count("stored") >= 300, 10), (a.count("stored"),
                                                                                 b.count("stored"))
    with LedgerRows(url) as db:
        got = db.sessions()
    assert len(got) == 300 and sorted(got) == sorted((r["id"], r["energy_wh"]) for r in recs)
    assert sorted(pile.acks) == sorted(r["id"] for r in recs)
    na, nb = a.count("stored"), b.count("stored")
    assert na + nb == 300 and na > 50 and nb > 50, (na, nb)
    print("\nshared: ingest A stored %d, ingest B stored %d, rows %d" % (na, nb, len(got)))
    pile.close()
    a.kill()
    b.kill()


def test_postgres_without_psycopg_is_a_clear_error(capsys, monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "psycopg":
            raise ImportError("no psycopg")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    rc = ledger.main(["ledger", "report", "--db", "postgresql://u:secret@db/ledger", "--from", "2026-01-01",
                      "--to", "2026-01-31"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs the 'psycopg' package" in err and "secret" not in err


def test_database_outage_acks_nothing_then_everything(broker, pg_cluster, pg_url):
    # The ledger's connections are cut and refused for a while (a server
    # restart, a failover): ingest keeps the bills unacknowledged, reconnects,
    # stores them, and every ack still finds its row committed.
    name = pg_url.rsplit("/", 1)[1]
    ing = Ingest(broker.port, pg_url)
    db = LedgerRows(pg_url)
    pile = Pile(broker.port)
    missing_at_ack = []

    def on_ack(sid):  # the record must already be committed when its ack arrives
        if db.one("SELECT COUNT(*) FROM sessions WHERE id=?", (sid,)) != 1:
            missing_at_ack.append(sid)

    pile.on_ack = on_ack
    recs = [record("PO", 2, i, 10.0 + i) for i in range(1, 201)]
    for r in recs[:100]:
        pile.publish("PO", r)
    assert pile.wait_acks(20)
    pg_cluster.admin().execute('ALTER DATABASE "%s" ALLOW_CONNECTIONS false' % name)
    assert pg_cluster.terminate(pg_url) == 1
    for r in recs[100:]:
        pile.publish("PO", r)
    assert wait_until(lambda: ing.count("database") >= 1 and "trying again" in "".join(ing.lines), 15), ing.lines[-5:]
    n_down = len(pile.acks)
    stored_down = len(db.sessions())
    assert stored_down < 200
    n_tries = "".join(ing.lines).count("trying again")
    assert wait_until(lambda: "".join(ing.lines).count("trying again") > n_tries, 15)
    assert len(pile.acks) == n_down and len(db.sessions()) == stored_down  # nothing stored, nothing acked
    pg_cluster.admin().execute('ALTER DATABASE "%s" ALLOW_CONNECTIONS true' % name)
    assert pile.wait_acks(200, 30), len(pile.acks)
    assert db.sessions() == sorted((r["id"], r["energy_wh"]) for r in recs)
    assert set(pile.acks) == {r["id"] for r in recs} and not missing_at_ack
    log = "".join(ing.lines)
    assert "back after" in log and pg_cluster.url(name, password=False) in log and pg_cluster.password not in log
    print("\noutage: %d acked before the cut, %d stored when it was noticed, %d reconnect attempts failed"
          % (n_down, stored_down, log.count("trying again")))
    pile.close()
    ing.kill()
    db.close()
