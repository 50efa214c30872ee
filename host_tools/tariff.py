"""Tariffs: what each sponsor pays for a session, and its budget.

`h2pile ledger report --tariff FILE` prices every session with it and
shows each sponsor's spend against its budget. The file is TOML:

    [default]                  # every sponsor without a section of its own,
    currency = "EUR"           # and sessions with no sponsor ("-")
    per_kwh = 0.45             # per kWh on the billing meter
    per_session = 1.50         # per session, whatever its energy

    [sponsor.acme]             # the <name> of "sponsor:<name>:<ref>" tokens
    per_kwh = 0.39             # a key left out is taken from [default]
    per_session = 0
    budget = 5000              # optional: spend allowed per period
    period = "month"           # day, week (ISO), month or year (UTC); default month

A session costs per_session + per_kwh x kWh, rounded to the cent (half up).
Every mistake is reported with the file, the line and the key, e.g.
`tariff.toml:7: sponsor.acme.per_kwh: -0.39 is negative`; nothing is priced
from a file with any. Amounts are in the sponsor's currency, and their
ranges leave room for any currency's unit (Indonesian rupiah included) while
refusing what no tariff is: a negative, NaN or infinite amount, more than
10,000 per kWh, 100,000 per session or 10^12 a period.
"""

from __future__ import annotations

import csv
import datetime
import json
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TextIO

from host_tools.ledger import NO_SPONSOR  # sessions without a sponsor token
from host_tools.toml_lines import key_lines, line_of

CENT = Decimal("0.01")
PERIODS = ("day", "week", "month", "year")
# key -> (largest sane value, what it is); every amount is >= 0
AMOUNTS = {
    "per_kwh": (Decimal(10_000), "price per kWh"),
    "per_session": (Decimal(100_000), "price per session"),
    "budget": (Decimal(10**12), "budget per period"),
}
PRICE_KEYS = ("currency", "per_kwh", "per_session")
SPONSOR_KEYS = PRICE_KEYS + ("budget", "period")
_CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217 code
_SPONSOR = re.compile(r"^[^:\s]{1,64}$")  # what fits between the colons of a token


class TariffError(ValueError):
    """Every mistake in a tariff file, one per line: 'FILE:LINE: key: what'."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Tariff:
    currency: str
    per_kwh: Decimal
    per_session: Decimal
    budget: Decimal | None = None
    period: str = "month"

    def price(self, energy_wh: float) -> Decimal:
        kwh = Decimal(repr(float(energy_wh))) / 1000
        return (self.per_session + self.per_kwh * kwh).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class Tariffs:
    path: str
    default: Tariff | None
    sponsors: dict[str, Tariff]

    def of(self, sponsor: str) -> Tariff | None:
        return self.sponsors.get(sponsor, self.default)


# ---------------------------------------------------------------------- loading
def load(path: str) -> Tariffs:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TariffError(["%s: %s" % (path, e)])
    return loads(text, path)


def loads(text: str, path: str = "<tariff>") -> Tariffs:
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        n = m.group(1) if m else max(1, len(text.splitlines()))  # else "(at end of document)"
        raise TariffError(["%s:%s: not TOML: %s" % (path, n, re.sub(r" \(at .*\)$", "", str(e)))])
    lines = key_lines(text)
    errors: list[str] = []

    def err(keys: tuple[str, ...], what: str) -> None:
        n = line_of(lines, keys)
        errors.append("%s%s: %s: %s" % (path, ":%d" % n if n else "", dotted(keys), what))

    for k in doc:
        if k not in ("default", "sponsor"):
            err((k,), "unknown key (a tariff file has [default] and [sponsor.<name>] tables)")
    default = None
    d = doc.get("default")
    if d is not None:
        if not isinstance(d, dict):
            err(("default",), "must be a table: [default]")
        else:
            fields = _fields(d, ("default",), PRICE_KEYS, err)
            for k in PRICE_KEYS:
                if k not in d:
                    err(("default",), "%s missing" % k)
            if all(k in fields for k in PRICE_KEYS):
                default = Tariff(**fields)
    sponsors: dict[str, Tariff] = {}
    sp = doc.get("sponsor", {})
    if not isinstance(sp, dict):
        err(("sponsor",), "must be tables: [sponsor.<name>]")
        sp = {}
    for name, t in sp.items():
        where = ("sponsor", name)
        if not _SPONSOR.match(name) or name == NO_SPONSOR:
            err(where, "a sponsor name is 1-64 characters, no ':' or spaces, not '-' ([default] prices "
                       "sessions without a sponsor)")
            continue
        if not isinstance(t, dict):
            err(where, "must be a table: [sponsor.%s]" % name)
            continue
        fields = _fields(t, where, SPONSOR_KEYS, err)
        for k in PRICE_KEYS:
            if k not in t:
                if default is None:
                    err(where, "%s missing (and no [default] to take it from)" % k)
                else:
                    fields.setdefault(k, getattr(default, k))
        if "period" in t and "budget" not in t:
            err(where + ("period",), "a period without a budget")
        if all(k in fields for k in PRICE_KEYS):
            sponsors[name] = Tariff(**fields)
    if errors:
        raise TariffError(errors)
    return Tariffs(path, default, sponsors)


def _fields(t: dict, where: tuple[str, ...], allowed: tuple[str, ...],
            err: Callable[[tuple[str, ...], str], None]) -> dict:
    # The table's keys checked one by one; -> those that are fine.
    out: dict = {}
    for k, v in t.items():
        keys = where + (k,)
        if k not in allowed:
            err(keys, "unknown key (known here: %s)" % ", ".join(allowed))
        elif k == "currency":
            if isinstance(v, str) and _CURRENCY.match(v):
                out[k] = v
            else:
                err(keys, "%s is not a currency code (three capitals, ISO 4217: EUR, USD, ...)" % _show(v))
        elif k == "period":
            if v in PERIODS:
                out[k] = v
            else:
                err(keys, "%s is not a period (one of %s)" % (_show(v), ", ".join(PERIODS)))
        else:
            hi, what = AMOUNTS[k]
            if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
                err(keys, "%s is not a number (%s)" % (_show(v), what))
            elif not Decimal(v).is_finite():
                err(keys, "%s is not a finite number (%s)" % (_show(v), what))
            elif v < 0:
                err(keys, "%s is negative (%s)" % (_show(v), what))
            elif v > hi:
                err(keys, "%s is absurd for a %s (at most %s)" % (_show(v), what, hi))
            else:
                out[k] = Decimal(v)
    return out


def dotted(keys: Iterable[str]) -> str:
    # a key path as TOML writes it: sponsor.acme, sponsor."big corp"
    return ".".join(k if re.match(r"^[A-Za-z0-9_-]+$", k) else json.dumps(k) for k in keys)


def _show(v: object) -> str:
    # a value as the file wrote it
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal) and not v.is_finite():
        return "nan" if v.is_nan() else "-inf" if v < 0 else "inf"
    return str(v) if isinstance(v, (int, Decimal)) else repr(v)


# ---------------------------------------------------------------------- pricing
@dataclass(frozen=True)
class Priced:
    id: str
    sponsor: str
    pile: str
    epoch: int  # stop time, or the ledger's receipt time if the pile's clock was not set
    energy_wh: float
    reason: str
    tariff: Tariff
    price: Decimal


def price_sessions(tariffs: Tariffs, rows: Iterable[tuple[str, str, str, int, float, str]]) -> list[Priced]:
    """rows: (id, sponsor, pile, epoch, energy_wh, reason) -> each priced.
    TariffError naming every sponsor the file has no tariff for."""
    out: list[Priced] = []
    missing: dict[str, int] = {}
    for sid, sponsor, pile, epoch, wh, reason in rows:
        t = tariffs.of(sponsor)
        if t is None:
            missing[sponsor] = missing.get(sponsor, 0) + 1
            continue
        out.append(Priced(sid, sponsor, pile, int(epoch), float(wh), reason, t, t.price(wh)))
    if missing:
        raise TariffError([
            "%s: no tariff for sessions without a sponsor (%d): add a [default]" % (tariffs.path, n)
            if s == NO_SPONSOR else
            "%s: no tariff for sponsor %r (%d session(s)): add [sponsor.%s] or a [default]"
            % (tariffs.path, s, n, s) for s, n in sorted(missing.items())])
    return out


def cost_by(priced: Iterable[Priced]) -> dict[tuple[str, str], tuple[Decimal, str]]:
    """(sponsor, pile) -> (cost, currency), with (sponsor, '*') per sponsor
    and ('*', '*') for all when they share one currency ('mixed' if not)."""
    out: dict[tuple[str, str], tuple[Decimal, str]] = {}
    currencies = set()
    for p in priced:
        currencies.add(p.tariff.currency)
        for key in ((p.sponsor, p.pile), (p.sponsor, "*"), ("*", "*")):
            c, _ = out.get(key, (Decimal(0), p.tariff.currency))
            out[key] = (c + p.price, p.tariff.currency)
    if len(currencies) > 1:
        out[("*", "*")] = (Decimal(0), "mixed")
    return out


def period_of(epoch: int, period: str) -> tuple[str, int, int]:
    """The calendar period (UTC) an instant falls in: (label, start, end)."""
    t = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    day = datetime.datetime(t.year, t.month, t.day, tzinfo=datetime.timezone.utc)
    if period == "day":
        a, b, label = day, day + datetime.timedelta(days=1), day.strftime("%Y-%m-%d")
    elif period == "week":
        a = day - datetime.timedelta(days=t.weekday())
        y, w, _ = t.isocalendar()
        b, label = a + datetime.timedelta(days=7), "%d-W%02d" % (y, w)
    elif period == "month":
        a = day.replace(day=1)
        b = (a + datetime.timedelta(days=32)).replace(day=1)
        label = a.strftime("%Y-%m")
    else:
        a = day.replace(month=1, day=1)
        b, label = a.replace(year=a.year + 1), "%d" % a.year
    return label, int(a.timestamp()), int(b.timestamp())


@dataclass(frozen=True)
class Spend:
    sponsor: str
    period: str  # its label, or "" for a sponsor without a budget (the report's range)
    sessions: int
    kwh: float
    spent: Decimal
    currency: str
    budget: Decimal | None
    partial: bool  # the report's range covers only part of the period

    @property
    def left(self) -> Decimal | None:
        return None if self.budget is None else self.budget - self.spent

    @property
    def over(self) -> bool:
        return self.budget is not None and self.spent > self.budget


def spend(priced: Iterable[Priced], t_from: int, t_to: int) -> list[Spend]:
    """Each sponsor's spend per budget period (sponsors without a budget:
    one row for the whole range), sorted by sponsor then period."""
    acc: dict[tuple[str, str], list] = {}
    for p in priced:
        t = p.tariff
        if t.budget is None:
            key, partial = (p.sponsor, ""), False
        else:
            label, a, b = period_of(p.epoch, t.period)
            key, partial = (p.sponsor, label), a < t_from or b > t_to
        row = acc.setdefault(key, [0, 0.0, Decimal(0), t, partial])
        row[0] += 1
        row[1] += p.energy_wh / 1000
        row[2] += p.price
    return [Spend(s, per, n, round(kwh, 3), spent, t.currency, t.budget, partial)
            for (s, per), (n, kwh, spent, t, partial) in sorted(acc.items())]


# ---------------------------------------------------------------- report parts
SPEND_HEADER = ("sponsor", "period", "sessions", "kwh", "spent", "budget", "left", "currency")


def spend_rows(spends: Iterable[Spend]) -> list[tuple]:
    """Rows for the report's budget table and CSV (SPEND_HEADER)."""
    return [(s.sponsor, (s.period or "-") + (" (part)" if s.partial else ""), s.sessions, s.kwh, s.spent,
             "" if s.budget is None else s.budget.quantize(CENT), "" if s.left is None else s.left.quantize(CENT),
             s.currency) for s in spends]


def print_spend(spends: list[Spend], out: TextIO) -> None:
    """Each sponsor's spend against its budget, OVER where it is spent."""
    fmt = "%-16s %-16s %8s %10s %12s %12s %12s %-4s"
    print(file=out)
    print(fmt % tuple(h.upper() for h in SPEND_HEADER), file=out)
    for s, r in zip(spends, spend_rows(spends)):
        cells = tuple("-" if v == "" else v for v in r[:3]) + ("%.3f" % r[3],) + tuple(
            "-" if v == "" else v for v in r[4:])
        print((fmt % cells).rstrip() + ("  OVER" if s.over else ""), file=out)


SESSION_HEADER = ("id", "sponsor", "pile", "stop_epoch", "kwh", "reason", "per_kwh", "per_session", "price",
                  "currency")


def write_sessions_csv(path: str, priced: Iterable[Priced]) -> None:
    """One row per session with its price (an invoice's lines)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SESSION_HEADER)
        for p in priced:
            t = p.tariff
            w.writerow((p.id, p.sponsor, p.pile, p.epoch, round(p.energy_wh / 1000, 4), p.reason, t.per_kwh,
                        t.per_session, p.price, t.currency))
