"""host_tools.tariff: a tariff file is read, every mistake refused with its
line and key, sessions priced to the cent, spend set against budgets."""

import datetime
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools import tariff

GOOD = """\
# what sponsors pay
[default]
currency = "EUR"
per_kwh = 0.45
per_session = 1.50

[sponsor.acme]
per_kwh = 0.39
per_session = 0
budget = 5000
period = "month"

[sponsor."city-fleet"]
currency = "USD"
per_kwh = 0.5
per_session = 2
budget = 100
period = "week"
"""


def ts(s):
    return int(datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp())


def errors(text):
    with pytest.raises(tariff.TariffError) as e:
        tariff.loads(text, "t.toml")
    return e.value.errors


def test_a_good_file():
    t = tariff.loads(GOOD, "t.toml")
    assert t.default == tariff.Tariff("EUR", Decimal("0.45"), Decimal("1.50"))
    assert t.of("acme") == tariff.Tariff("EUR", Decimal("0.39"), Decimal(0), Decimal(5000), "month")
    assert t.of("city-fleet").currency == "USD" and t.of("city-fleet").period == "week"
    assert t.of("someone-else") is t.default and t.of("-") is t.default


def test_prices_to_the_cent_half_up_without_binary_float_noise():
    t = tariff.Tariff("EUR", Decimal("0.45"), Decimal("1.50"))
    assert t.price(10000.0) == Decimal("6.00")
    assert t.price(12345.6) == Decimal("7.06")  # 1.5 + 5.55552
    assert t.price(0.0) == Decimal("1.50")
    # 0.1 kWh at 0.05: 0.005 exactly, up to the next cent (a float would make it 0.00499...)
    assert tariff.Tariff("EUR", Decimal("0.05"), Decimal(0)).price(100.0) == Decimal("0.01")


@pytest.mark.parametrize("text,want", [
    # negative, NaN, infinite, absurd: each named with its line and key
    ('[default]\ncurrency = "EUR"\nper_kwh = -0.45\nper_session = 1\n',
     ["t.toml:3: default.per_kwh: -0.45 is negative (price per kWh)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = nan\nper_session = 1\n',
     ["t.toml:3: default.per_kwh: nan is not a finite number (price per kWh)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = inf\n',
     ["t.toml:4: default.per_session: inf is not a finite number (price per session)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 45000\nper_session = 1\n',
     ["t.toml:3: default.per_kwh: 45000 is absurd for a price per kWh (at most 10000)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor.acme]\n\nbudget = -10\n',
     ["t.toml:7: sponsor.acme.budget: -10 is negative (budget per period)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor.acme]\nbudget = 1e13\n',
     ["t.toml:6: sponsor.acme.budget: 1E+13 is absurd for a budget per period (at most 1000000000000)"]),
    # not numbers
    ('[default]\ncurrency = "EUR"\nper_kwh = "0.45"\nper_session = true\n',
     ["t.toml:3: default.per_kwh: '0.45' is not a number (price per kWh)",
      "t.toml:4: default.per_session: true is not a number (price per session)"]),
    # unknown keys and tables, wherever they are
    ('colour = "red"\n[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\nbudget = 3\n',
     ["t.toml:1: colour: unknown key (a tariff file has [default] and [sponsor.<name>] tables)",
      "t.toml:6: default.budget: unknown key (known here: currency, per_kwh, per_session)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsors.acme]\nper_kwh = 1\n',
     ["t.toml:5: sponsors: unknown key (a tariff file has [default] and [sponsor.<name>] tables)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n\n[sponsor.acme]\nper_kwh = 0.3\n'
     '  per_kWh = 0.2\n',
     ["t.toml:8: sponsor.acme.per_kWh: unknown key (known here: currency, per_kwh, per_session, budget, "
      "period)"]),
    # currencies, periods, names
    ('[default]\ncurrency = "euro"\nper_kwh = 0.4\nper_session = 1\n',
     ["t.toml:2: default.currency: 'euro' is not a currency code (three capitals, ISO 4217: EUR, USD, ...)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor.acme]\nbudget = 9\n'
     'period = "fortnight"\n',
     ["t.toml:7: sponsor.acme.period: 'fortnight' is not a period (one of day, week, month, year)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor.acme]\nperiod = "day"\n',
     ["t.toml:6: sponsor.acme.period: a period without a budget"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor."a:b"]\nper_kwh = 1\n',
     ["t.toml:5: sponsor.\"a:b\": a sponsor name is 1-64 characters, no ':' or spaces, not '-' ([default] "
      "prices sessions without a sponsor)"]),
    # what is missing: named at its table
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\n',
     ["t.toml:1: default: per_session missing"]),
    ('[sponsor.acme]\ncurrency = "EUR"\nper_kwh = 0.4\n',
     ["t.toml:1: sponsor.acme: per_session missing (and no [default] to take it from)"]),
    # keys written other ways: dotted, quoted, inline tables
    ('default.currency = "EUR"\ndefault.per_kwh = 0.4\ndefault.per_session = -1\n',
     ["t.toml:3: default.per_session: -1 is negative (price per session)"]),
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 1\n[sponsor]\nacme = { per_kwh = -1 }\n',
     ["t.toml:6: sponsor.acme.per_kwh: -1 is negative (price per kWh)"]),
    ('[default]\n"currency" = "EUR"\n\'per_kwh\' = 0.4\n"per_session" = -2\n',
     ["t.toml:4: default.per_session: -2 is negative (price per session)"]),
    # a multi-line string does not fool the line scan
    ('[default]\ncurrency = "EUR"\nnote = """\nper_kwh = 1\n"""\nper_kwh = -3\nper_session = 1\n',
     ["t.toml:3: default.note: unknown key (known here: currency, per_kwh, per_session)",
      "t.toml:6: default.per_kwh: -3 is negative (price per kWh)"]),
    # not TOML at all: tomllib's own line
    ('[default]\ncurrency = "EUR"\nper_kwh = 0.4.5\n',
     ["t.toml:3: not TOML: Expected newline or end of document after a statement"]),
    ('[default]\n[default]\n', ["t.toml:2: not TOML: Cannot declare ('default',) twice"]),
])
def test_every_mistake_is_named_with_its_line_and_key(text, want):
    assert errors(text) == want


def test_every_mistake_of_a_file_at_once():
    text = GOOD.replace("per_kwh = 0.39", "per_kwh = -0.39").replace('period = "week"', 'period = "weekly"')
    assert errors(text) == [
        "t.toml:8: sponsor.acme.per_kwh: -0.39 is negative (price per kWh)",
        "t.toml:18: sponsor.city-fleet.period: 'weekly' is not a period (one of day, week, month, year)",
    ]


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(tariff.TariffError) as e:
        tariff.load(str(tmp_path / "none.toml"))
    assert "none.toml" in str(e.value) and "No such file" in str(e.value)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[default]")
    with pytest.raises(tariff.TariffError) as e:
        tariff.load(str(tmp_path / "bin.toml"))
    assert "bin.toml" in str(e.value)


def test_sessions_of_a_sponsor_without_a_tariff_are_refused():
    t = tariff.loads('[sponsor.acme]\ncurrency = "EUR"\nper_kwh = 0.4\nper_session = 0\n', "t.toml")
    rows = [("P-00001-001", "acme", "P", 0, 1000.0, "ev_stop"), ("P-00001-002", "beta", "P", 0, 1.0, "user"),
            ("P-00001-003", "beta", "P", 0, 1.0, "user"), ("P-00001-004", "-", "P", 0, 1.0, "user")]
    with pytest.raises(tariff.TariffError) as e:
        tariff.price_sessions(t, rows)
    assert e.value.errors == [
        "t.toml: no tariff for sessions without a sponsor (1): add a [default]",
        "t.toml: no tariff for sponsor 'beta' (2 session(s)): add [sponsor.beta] or a [default]",
    ]


def test_spend_against_budgets_per_period():
    t = tariff.loads(GOOD, "t.toml")
    rows = [
        ("P-1", "acme", "P", ts("2026-03-01T00:00:00"), 30000.0, "energy_cap"),  # 11.70
        ("P-2", "acme", "P", ts("2026-03-31T23:59:59"), 10000.0, "ev_stop"),  # 3.90
        ("P-3", "acme", "P", ts("2026-04-01T00:00:00"), 1000.0, "ev_stop"),  # next month: 0.39
        ("P-4", "city-fleet", "P", ts("2026-03-01T10:00:00"), 100000.0, "time_cap"),  # Sunday, W09: 52.00
        ("P-5", "city-fleet", "P", ts("2026-03-02T10:00:00"), 100000.0, "ev_stop"),  # Monday, W10
        ("P-6", "city-fleet", "P", ts("2026-03-03T10:00:00"), 100000.0, "ev_stop"),  # W10: 104.00, over
        ("P-7", "zeta", "P", ts("2026-03-05T10:00:00"), 2000.0, "ev_stop"),  # default: 2.40, no budget
    ]
    priced = tariff.price_sessions(t, rows)
    assert [p.price for p in priced] == [Decimal(x) for x in ("11.70", "3.90", "0.39", "52.00", "52.00",
                                                              "52.00", "2.40")]
    sp = tariff.spend(priced, ts("2026-03-01T00:00:00"), ts("2026-04-01T00:00:00"))
    got = [(s.sponsor, s.period, s.sessions, s.spent, s.budget, s.left, s.over, s.partial) for s in sp]
    assert got == [
        ("acme", "2026-03", 2, Decimal("15.60"), Decimal(5000), Decimal("4984.40"), False, False),
        ("acme", "2026-04", 1, Decimal("0.39"), Decimal(5000), Decimal("4999.61"), False, True),
        ("city-fleet", "2026-W09", 1, Decimal("52.00"), Decimal(100), Decimal("48.00"), False, True),
        ("city-fleet", "2026-W10", 2, Decimal("104.00"), Decimal(100), Decimal("-4.00"), True, False),
        ("zeta", "", 1, Decimal("2.40"), None, None, False, False),
    ]
    costs = tariff.cost_by(priced)
    assert costs[("acme", "*")] == (Decimal("15.99"), "EUR") and costs[("city-fleet", "P")][1] == "USD"
    assert costs[("*", "*")] == (Decimal(0), "mixed")  # EUR and USD are not added up


@pytest.mark.parametrize("at,period,want", [
    ("2026-03-15T12:00:00", "day", ("2026-03-15", "2026-03-15", "2026-03-16")),
    ("2026-03-15T12:00:00", "week", ("2026-W11", "2026-03-09", "2026-03-16")),
    ("2027-01-01T00:00:00", "week", ("2026-W53", "2026-12-28", "2027-01-04")),  # ISO week of the old year
    ("2026-12-31T23:59:59", "month", ("2026-12", "2026-12-01", "2027-01-01")),
    ("2026-02-10T00:00:00", "year", ("2026", "2026-01-01", "2027-01-01")),
])
def test_periods_are_calendar_periods_in_utc(at, period, want):
    label, a, b = tariff.period_of(ts(at), period)
    assert (label, a, b) == (want[0], ts(want[1] + "T00:00:00"), ts(want[2] + "T00:00:00"))


LINES = st.sampled_from([
    "[default]", "[sponsor.acme]", '[sponsor."a b"]', "[sponsor]", "[[sponsor]]", 'currency = "EUR"',
    "currency = 3", "per_kwh = 0.4", "per_kwh = -1", "per_kwh = nan", "per_session = inf", "budget = 1e99",
    'period = "week"', "period = 7", "x = [1,", "2]", 'note = """', '"""', "acme = { per_kwh = 1 }",
    "default.per_kwh = 2", "sponsor.b.budget = 5", "# c", "", "= 1", "[", "per_kwh = 2024-01-01",
])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(LINES | st.text(max_size=20), max_size=14))
def test_any_text_is_a_tariff_or_refused_with_a_reason(lines):
    # Never another exception; every refusal names the file, and a line
    # wherever a key is concerned.
    try:
        t = tariff.loads("\n".join(lines), "t.toml")
    except tariff.TariffError as e:
        assert e.errors and all(x.startswith("t.toml") for x in e.errors)
        for x in e.errors:
            assert re.match(r"^t\.toml:\d+: ", x), x
        return
    for s in t.sponsors.values():
        assert s.per_kwh >= 0 and s.per_session >= 0 and s.per_kwh.is_finite()
