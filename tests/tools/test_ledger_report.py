"""`h2pile ledger report`: settlement per sponsor and pile, on SQLite and on
PostgreSQL (the `ledger_url` fixture: tests/conftest.py)."""
import csv
import datetime
from pathlib import Path

import pytest

from host_tools import ledger
from tests.helpers.ledger_broker import record

ROOT = Path(__file__).resolve().parents[2]


def ts(s):
    return int(datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp())


def fill(url):
    db = ledger.DB(url)
    jan = ts("2026-01-15T12:00:00")
    recs = [
        record("PA", 1, 1, 10000.0, "sponsor:acme:r1", 8.5, stop=jan),
        record("PA", 1, 2, 20000.0, "sponsor:acme:r2", 19.0, stop=jan + 3600),
        record("PB", 4, 1, 5000.0, "sponsor:acme:r3", 4.6, stop=ts("2026-01-31T23:59:59")),  # last second: in
        record("PA", 2, 1, 12345.6, "sponsor:beta:x", 11.111, stop=jan),
        record("PB", 4, 2, 2000.0, "rfid:04a1b2", 2.0, stop=jan),  # not a sponsor token
        record("PB", 4, 3, 0.0, "sponsor:gamma:1", 0.1, stop=jan),  # no energy: no L/kWh
        record("PA", 1, 3, 7000.0, "sponsor:acme:late", 7.0, stop=ts("2026-02-01T00:00:00")),  # out
        record("PA", 1, 4, 7000.0, "sponsor:acme:early", 7.0, stop=ts("2025-12-31T23:59:59")),  # out
        # closed while the clock was not set: counted at its receipt time
        record("PB", 5, 1, 1000.0, "sponsor:acme:noclock", 1.0, start="boot:5+10", stop="boot:5+990"),
    ]
    for r in recs:
        assert ledger.validate(r["pile"], r) is None, r
        received = jan if r["stop"] == "boot:5+990" else 1_900_000_000
        assert db.store(r, now=received) == "new"
    assert db.store(recs[0]) == "dup"  # counted once
    assert db.store(dict(recs[1], energy_wh=1.0)) == "conflict"  # not counted
    db.close()


def test_report_csv_and_totals(ledger_url, tmp_path, capsys):
    url = ledger_url
    fill(url)
    out_csv = tmp_path / "s.csv"
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-31",
                      "--csv", str(out_csv)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["sponsor", "pile", "sessions", "kwh", "premix_l", "l_per_kwh"]
    # hand-computed: acme PA 10+20 kWh, 8.5+19 L; acme PB 5 + 1 kWh, 4.6 + 1 L
    assert rows[1:] == [
        ["-", "PB", "1", "2.0", "2.0", "1.0"],
        ["-", "*", "1", "2.0", "2.0", "1.0"],
        ["acme", "PA", "2", "30.0", "27.5", "0.917"],
        ["acme", "PB", "2", "6.0", "5.6", "0.933"],
        ["acme", "*", "4", "36.0", "33.1", "0.919"],
        ["beta", "PA", "1", "12.346", "11.111", "0.9"],
        ["beta", "*", "1", "12.346", "11.111", "0.9"],
        ["gamma", "PB", "1", "0.0", "0.1", ""],
        ["gamma", "*", "1", "0.0", "0.1", ""],
        ["*", "*", "7", "50.346", "46.311", "0.92"],
    ]
    assert "acme" in cap.out and "50.346" in cap.out
    assert "1 conflicting duplicate" in cap.err


def test_report_date_errors(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "l.db")
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-13-01", "--to", "2026-01-31"])
    assert rc == 2 and "date '2026-13-01'" in capsys.readouterr().err
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-02-01", "--to", "2026-01-01"])
    assert rc == 2 and "is before" in capsys.readouterr().err
    rc = ledger.main(["ledger", "report", "--db", "sqlite:///" + str(tmp_path / "no/such/dir.db"),
                      "--from", "2026-01-01", "--to", "2026-01-02"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_empty_period(ledger_url, tmp_path, capsys):
    url = ledger_url
    fill(url)
    f = tmp_path / "e.csv"
    assert ledger.main(["ledger", "report", "--db", url, "--from", "2024-01-01", "--to", "2024-01-31",
                        "--csv", str(f)]) == 0
    assert list(csv.reader(f.open()))[1:] == [["*", "*", "0", "0.0", "0.0", ""]]


TARIFF = """\
[default]
currency = "EUR"
per_kwh = 0.45
per_session = 1.50

[sponsor.acme]
per_kwh = 0.39
per_session = 0
budget = 14
period = "month"

[sponsor.beta]
budget = 100
"""


def test_report_prices_sessions_and_sets_spend_against_budgets(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "l.db")
    fill(url)
    (tmp_path / "t.toml").write_text(TARIFF)
    out_csv, sess_csv = tmp_path / "s.csv", tmp_path / "sessions.csv"
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-31",
                      "--tariff", str(tmp_path / "t.toml"), "--csv", str(out_csv), "--sessions-csv", str(sess_csv)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = list(csv.reader(out_csv.open()))
    assert rows[0][-2:] == ["cost", "currency"]
    # hand-computed: acme 0.39/kWh, no fee: PA 30 kWh = 11.70, PB 5 + 1 kWh = 1.95 + 0.39;
    # the others 1.50 + 0.45/kWh: "-" 2 kWh = 2.40, beta 12.3456 kWh = 7.06, gamma 0 kWh = 1.50
    assert [(r[0], r[1], r[-2], r[-1]) for r in rows[1:]] == [
        ("-", "PB", "2.40", "EUR"), ("-", "*", "2.40", "EUR"),
        ("acme", "PA", "11.70", "EUR"), ("acme", "PB", "2.34", "EUR"), ("acme", "*", "14.04", "EUR"),
        ("beta", "PA", "7.06", "EUR"), ("beta", "*", "7.06", "EUR"),
        ("gamma", "PB", "1.50", "EUR"), ("gamma", "*", "1.50", "EUR"),
        ("*", "*", "25.00", "EUR"),
    ]
    sessions = list(csv.DictReader(sess_csv.open()))
    assert len(sessions) == 7 and sum(float(s["price"]) for s in sessions) == pytest.approx(25.00)
    assert {s["id"]: s["price"] for s in sessions}["PA-00002-001"] == "7.06"
    # acme's budget for January: 14.04 spent of 14, over; beta's monthly budget (the default period)
    spend = {ln.split()[0]: ln.split() for ln in cap.out.split("SPENT")[1].splitlines()[1:] if ln.strip()}
    assert spend["acme"] == ["acme", "2026-01", "4", "36.000", "14.04", "14.00", "-0.04", "EUR", "OVER"]
    assert spend["beta"] == ["beta", "2026-01", "1", "12.346", "7.06", "100.00", "92.94", "EUR"]
    assert spend["gamma"] == ["gamma", "-", "1", "0.000", "1.50", "-", "-", "EUR"]
    assert "sponsor acme spent 14.04 EUR of its 14 budget for 2026-01" in cap.err


def test_report_refuses_a_bad_tariff_naming_each_line(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "l.db")
    fill(url)
    bad = TARIFF.replace("per_kwh = 0.39", "per_kwh = -0.39").replace("budget = 100", "budget = nan")
    (tmp_path / "t.toml").write_text(bad)
    out_csv = tmp_path / "s.csv"
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-31",
                      "--tariff", str(tmp_path / "t.toml"), "--csv", str(out_csv)])
    err = capsys.readouterr().err.splitlines()
    t = str(tmp_path / "t.toml")
    assert rc == 2 and err == [
        "h2pile ledger: error: %s:7: sponsor.acme.per_kwh: -0.39 is negative (price per kWh)" % t,
        "h2pile ledger: error: %s:13: sponsor.beta.budget: nan is not a finite number (budget per period)" % t,
    ]
    assert not out_csv.exists()  # nothing half-priced is written


def test_report_refuses_sessions_the_tariff_cannot_price(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "l.db")
    fill(url)
    (tmp_path / "t.toml").write_text('[sponsor.acme]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 0\n')
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-31",
                      "--tariff", str(tmp_path / "t.toml")])
    err = capsys.readouterr().err
    assert rc == 2 and "no tariff for sponsor 'beta' (1 session(s))" in err and "no tariff for sessions " \
        "without a sponsor (1): add a [default]" in err
    rc = ledger.main(["ledger", "report", "--db", url, "--from", "2026-01-01", "--to", "2026-01-31",
                      "--sessions-csv", str(tmp_path / "x.csv")])
    assert rc == 2 and "--sessions-csv needs --tariff" in capsys.readouterr().err
