"""host_tools.ledger_db on SQLite and PostgreSQL: a bill stored exactly once
however many writers store it at the same time, conflicts kept, values the
same on both, a lost connection retried, errors that name the database
without its password."""
import threading

import pytest

from host_tools import ledger
from host_tools.ledger_db import DB, redact
from tests.helpers.ledger_broker import record
from tests.helpers.ledger_rows import LedgerRows
from tests.helpers.mqtt_broker import free_port


def test_concurrent_writers_store_each_bill_once(ledger_url):
    recs = [record("PC", 3, i, 100.0 + i) for i in range(1, 151)]
    altered = {r["id"] for r in recs[::10]}  # 15 bills the second writer has with other content
    mine = [recs, [dict(r, energy_wh=1.0) if r["id"] in altered else r for r in recs]]
    dbs = [DB(ledger_url), DB(ledger_url)]
    go = threading.Barrier(2)
    results = [[], []]
    errors = []

    def writer(k):
        try:
            go.wait(10)
            for r in mine[k]:
                results[k].append((r["id"], dbs[k].store(r)))
        except Exception as e:  # shown by the assertion below
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    both = sorted(results[0] + results[1])
    for i in range(0, len(both), 2):
        (sid, a), (sid2, b) = both[i], both[i + 1]
        assert sid == sid2
        # one writer inserted it, the other found it: the same or a conflict
        assert sorted((a, b)) == (["conflict", "new"] if sid in altered else ["dup", "new"]), (sid, a, b)
    with LedgerRows(ledger_url) as db:
        assert db.count("sessions") == 150 and db.count("conflicts") == 15
        # whichever copy won is whole: its payload is the canonical text of that copy
        for sid, energy, payload in db.all("SELECT id, energy_wh, payload FROM sessions"):
            assert ledger.canonical(next(r for r in mine[energy == 1.0] if r["id"] == sid)) == payload
    for d in dbs:
        d.close()


def test_values_are_the_same_on_both(ledger_url):
    db = DB(ledger_url)
    r = record("PV", 1, 1, 12345.678, token="sponsor:Müller & Söhne:7", peak_w=22000.5, soc0=12, soc1=81.5,
               flags=["meter_gap"])
    assert db.store(r, now=1_780_000_100) == "new"
    assert db.store(dict(r, seq=9, boot=3)) == "dup"  # the envelope is not part of the bill
    db.reject("h2pile/v1/PV/bill", "not JSON", b"\x00\xffjunk")
    db.reject("h2pile/v1/PV/bill", "not JSON", b"nul \x00 inside")
    db.close()
    with LedgerRows(ledger_url) as rows:
        got = rows.all("SELECT sponsor, token, stop_epoch, energy_wh, premix_l, peak_w, soc0, soc1, flags, reason,"
                       " received_at FROM sessions")
        assert got == [("Müller & Söhne", "sponsor:Müller & Söhne:7", 1_780_000_000, 12345.678, 12.345678,
                        22000.5, 12.0, 81.5, '["meter_gap"]', "ev_stop", 1_780_000_100)]
        assert rows.all("SELECT payload FROM rejects ORDER BY payload") == [("hex:00ff6a756e6b",),
                                                                           ("hex:6e756c200020696e73696465",)]


def test_token_postgresql_cannot_store_is_rejected_with_its_reason():
    for tok in ("sponsor:a:\x00", "sponsor:a:\x1b[2J", "sponsor:a:\ud800"):
        err = ledger.validate("P1", record("P1", 1, 1, 1.0, token=tok))
        assert err and "control characters or unpaired surrogates" in err, (tok, err)


def test_schema_created_by_many_at_once(pg_url):
    # ingests started together each create the tables: they take turns
    go = threading.Barrier(6)
    errors = []

    def start():
        try:
            go.wait(10)
            DB(pg_url).close()
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_lost_connection_is_retried_not_rejected(pg_cluster, pg_url):
    db = DB(pg_url)
    r1, r2 = record("PL", 1, 1, 1.0), record("PL", 1, 2, 2.0)
    assert db.store(r1) == "new"
    assert pg_cluster.terminate(pg_url) == 1  # as a server restart would
    with pytest.raises(Exception) as e:
        db.store(r2)
    assert db.retryable(e.value), e.value
    db.reconnect()
    assert db.store(r2) == "new" and db.store(r1) == "dup"
    with pytest.raises(Exception) as e:
        db.q("SELECT 1 / 0").fetchall()  # what a bad value does: storing again would fail again
    assert not db.retryable(e.value)
    db.rollback()
    db.close()


def test_errors_name_the_database_without_its_password(pg_cluster, capsys):
    def report(url):
        rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-02"])
        return rc, capsys.readouterr().err

    good = pg_cluster.url(pg_cluster.create_db().rsplit("/", 1)[1])
    shown = pg_cluster.url(good.rsplit("/", 1)[1], password=False)  # postgresql://h2pile@127.0.0.1:PORT/t_...
    nobody = ":%d/" % free_port()
    cases = [
        (good.replace(pg_cluster.password, "Wr0ng-S3cret"), "Wr0ng-S3cret", shown, "password authentication failed"),
        (good.replace(":%d/" % pg_cluster.port, nobody), pg_cluster.password,
         shown.replace(":%d/" % pg_cluster.port, nobody), "cannot connect"),
        (good.rsplit("/", 1)[0] + "/no_such_db", pg_cluster.password, "@127.0.0.1", "does not exist"),
    ]
    for url, secret, where, why in cases:
        rc, err = report(url)
        assert rc == 3, (url, err)
        assert err.count("\n") == 1 and err.startswith("h2pile ledger: error: --db postgresql://h2pile@"), err
        assert where in err and why in err and secret not in err, err
    rc, err = report("postgresql://h2pile:S3cret@127.0.0.1:notaport/x")
    assert rc == 2 and "S3cret" not in err and "postgresql://h2pile@127.0.0.1:notaport/x: the port" in err, err
    rc, err = report(good)
    assert rc == 0 and err == "", err


def test_redact():
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u@h:5432/db"
    assert redact("postgres://u@h/db?sslmode=require&password=x") == "postgres://u@h/db?sslmode=require&password=***"
    assert redact("postgresql:///db?host=/run/postgresql") == "postgresql:///db?host=/run/postgresql"
    assert redact("postgresql://u:pw@h1:5432,h2:5433/db?password=a&x=1") == (
        "postgresql://u@h1:5432,h2:5433/db?password=***&x=1")
    assert redact("sqlite:///ledger.db") == "sqlite:///ledger.db"
