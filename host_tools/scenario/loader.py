"""Read a scenario file and check every part of it before anything runs:
unknown keys, bad durations, conditions naming unknown values, events and
their arguments, [config] against the firmware's own schema, [expect]
checks. A mistake is a ScenarioError naming the file, the line and what is
wrong."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from typing import Any, NoReturn

from h2p import interlocks as IL
from h2p import registers as R
from h2p import states as S
from host_tools.scenario.condition import Condition, context_types
from host_tools.scenario.durations import parse_duration
from host_tools.scenario.model import Event, Latency, Scenario, ScenarioError
from host_tools.scenario.verdict import EXPECT_KEYS
from sim import faults
from sim import params as P

TOP_KEYS = {"name", "description", "speed", "duration", "until", "settle", "heap", "xfail", "sample",
            "start", "params", "config", "event", "expect"}
START_KEYS = {"warm"}
EVENT_KEYS = {"do", "at", "when", "delay"}


def _line_of(text: str, key: str, start: int = 1) -> int:
    """Line of `key = ...` or `[key]`/`[[key]]` at or after line `start`."""
    pat = re.compile(r"^\s*(\[\[?\s*" + re.escape(key) + r"\s*\]\]?|" + re.escape(key) + r"\s*=|\"" +
                     re.escape(key) + r"\"\s*=)")
    lines = text.splitlines()
    for i in range(max(0, start - 1), len(lines)):
        if pat.match(lines[i]):
            return i + 1
    return start if start > 1 else 0


def _nth_header(text: str, header: str, n: int) -> int:
    k = -1
    for i, ln in enumerate(text.splitlines()):
        if re.match(r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]", ln):
            k += 1
            if k == n:
                return i + 1
    return 0


def load(path: str) -> Scenario:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ScenarioError(path, 0, f"cannot read: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    return loads(text, path)


def loads(text: str, path: str = "<scenario>") -> Scenario:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ScenarioError(path, int(m.group(1)) if m else 0, f"not valid TOML: {e}") from None

    def err(key: str, reason: str, start: int = 1) -> NoReturn:
        raise ScenarioError(path, _line_of(text, key, start), reason)

    for k in d:
        if k not in TOP_KEYS:
            err(k, f"unknown key '{k}' (known: {', '.join(sorted(TOP_KEYS))})")
    name = d.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str):
        err("name", "name must be text")
    sc = Scenario(path=path, name=name)
    sc.description = str(d.get("description", ""))
    if "speed" in d:
        v = d["speed"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1000:
            err("speed", f"speed must be a number in (0, 1000], got {v!r}")
        sc.speed = float(v)
    if "duration" not in d:
        raise ScenarioError(path, 0, "missing 'duration' (simulated time limit, e.g. duration = \"10m\")")
    for key in ("duration", "settle", "sample"):
        if key in d:
            try:
                setattr(sc, key, parse_duration(d[key]))
            except ValueError as e:
                err(key, f"{key}: {e}")
    if sc.duration <= 0:
        err("duration", "duration must be > 0")
    if sc.duration > 48 * 3600:
        err("duration", "duration longer than 48 h of simulated time")
    types = context_types()
    if "until" in d:
        try:
            sc.until = Condition(d["until"], types)
        except ValueError as e:
            err("until", f"until: {e}")
    for key in ("heap", "xfail"):
        if key in d:
            if not isinstance(d[key], str):
                err(key, f"{key} must be text")
            setattr(sc, key, d[key])
    if not re.fullmatch(r"\d+[KM]?", sc.heap):
        err("heap", f"heap must look like '200K', got {sc.heap!r}")
    # [start]
    start = d.get("start", {})
    if not isinstance(start, dict):
        err("start", "[start] must be a table")
    for k, v in start.items():
        if k not in START_KEYS:
            err(k, f"[start]: unknown key '{k}' (known: warm)", _line_of(text, "start"))
        if not isinstance(v, bool):
            err(k, "[start] warm must be true or false", _line_of(text, "start"))
    sc.warm = start.get("warm", False)
    # [params]
    params = d.get("params", {})
    if not isinstance(params, dict):
        err("params", "[params] must be a table")
    pl = _line_of(text, "params")
    for k, v in params.items():
        if k not in P.DEFAULTS:
            err(k, f"[params]: unknown parameter '{k}' (see docs/sim.md)", pl)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            err(k, f"[params]: {k} must be a number, got {v!r}", pl)
        sc.params[k] = float(v)
    # [config]: checked against the firmware's own schema.
    cfg = d.get("config", {})
    if not isinstance(cfg, dict):
        err("config", "[config] must be a table")
    _check_config(cfg, path, text)
    sc.config = cfg
    reason = data_age_too_short(sc, sc.speed)
    if reason:
        err("data_age_ms", reason, _line_of(text, "config"))
    # [[event]]
    evs = d.get("event", [])
    if not isinstance(evs, list):
        err("event", "events are [[event]] tables")
    for i, table in enumerate(evs):
        sc.events.append(_event(table, i, path, text, types))
    # [expect]
    exp = d.get("expect", {})
    if not isinstance(exp, dict):
        err("expect", "[expect] must be a table")
    el = _line_of(text, "expect")
    for k, v in exp.items():
        if k not in EXPECT_KEYS:
            err(k, f"[expect]: unknown check '{k}' (known: {', '.join(EXPECT_KEYS)})", el)

        def bad_check(reason: str, k: str = k) -> NoReturn:
            err(k, f"[expect] {k}: {reason}", el)

        _check_expect(k, v, bad_check)
    for i, lat in enumerate(exp.get("latency", [])):
        ln = _nth_header(text, "expect.latency", i) or _line_of(text, "latency", el)
        if not isinstance(lat, dict):
            raise ScenarioError(path, ln, "[[expect.latency]] entries must be tables")
        bad = set(lat) - {"from", "to", "max_ms"}
        if bad or not {"from", "to", "max_ms"} <= set(lat):
            raise ScenarioError(path, ln, "latency needs exactly from = EVENT, to = 'cmd=value', max_ms = N")
        src = lat["from"]
        if src not in faults.EVENTS:
            raise ScenarioError(path, _line_of(text, "from", ln), f"latency: unknown event {src!r}")
        if not any(ev.name == src for ev in sc.events):
            raise ScenarioError(path, _line_of(text, "from", ln),
                                f"latency: the scenario never injects {src!r}")
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*", str(lat["to"]))
        if not m or m.group(1) not in R.command_names():
            raise ScenarioError(path, _line_of(text, "to", ln),
                                f"latency: to must be 'command=value' with a command of "
                                f"{', '.join(R.command_names())}, got {lat['to']!r}")
        mx = lat["max_ms"]
        if isinstance(mx, bool) or not isinstance(mx, (int, float)) or mx <= 0:
            raise ScenarioError(path, _line_of(text, "max_ms", ln), "latency: max_ms must be a number > 0")
        sc.latency.append(Latency(ln, src, m.group(1), float(m.group(2)), float(mx)))
    sc.expect = {k: v for k, v in exp.items() if k != "latency"}
    return sc


def _event(e: Any, i: int, path: str, text: str, types: dict[str, type]) -> Event:
    ln = _nth_header(text, "event", i)
    if not isinstance(e, dict):
        raise ScenarioError(path, ln, "an [[event]] must be a table")

    def err(key: str | None, reason: str) -> NoReturn:
        raise ScenarioError(path, _line_of(text, key, ln) if key else ln, f"event {i + 1}: {reason}")

    name = e.get("do")
    if name is None:
        err(None, "missing do = EVENT")
    if name not in faults.EVENTS:
        err("do", f"unknown event {name!r} (known: {', '.join(faults.EVENTS)})")
    has_at, has_when = "at" in e, "when" in e
    if has_at == has_when:
        err(None, "give exactly one of at = TIME or when = CONDITION")
    ev = Event(index=i, line=ln, name=name, args={})
    try:
        if has_at:
            ev.at = parse_duration(e["at"])
        else:
            ev.when = Condition(e["when"], types)
    except ValueError as x:
        err("at" if has_at else "when", str(x))
    if "delay" in e:
        if not has_when:
            err("delay", "delay goes with when = CONDITION")
        try:
            ev.delay = parse_duration(e["delay"])
        except ValueError as x:
            err("delay", str(x))
    args = {k: v for k, v in e.items() if k not in EVENT_KEYS}
    for k, v in args.items():
        if isinstance(v, (dict, list)):
            err(k, f"argument {k} must be a single value")
    try:
        faults.check(name, args)
    except ValueError as x:
        bad = next((k for k in args if f"'{k}'" in str(x) or f"{k}=" in str(x)), "do")
        err(bad, str(x))
    ev.args = args
    return ev


def _check_expect(k: str, v: Any, bad: Callable[[str], NoReturn]) -> None:
    def names(known: tuple | list, what: str) -> None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            bad("must be a list of names")
        for x in v:
            if x not in known:
                bad(f"unknown {what} {x!r} (known: {', '.join(known)})")

    if k == "state":
        for x in (v if isinstance(v, list) else [v]):
            if x not in S.NAMES:
                bad(f"unknown state {x!r} (states: {', '.join(S.NAMES)})")
    elif k in ("states", "not_states"):
        names(S.NAMES, "state")
    elif k in ("faults", "no_faults"):
        names(tuple(IL.ROW), "fault")
    elif k == "events":
        if not isinstance(v, list) or not all(isinstance(x, str) and x.split() for x in v):
            bad("must be a list of 'kind [arg ...]' strings")
    elif k == "contactor":
        if v not in ("open", "closed"):
            bad("must be 'open' or 'closed'")
    elif k == "fuel":
        if v not in ("on", "off"):
            bad("must be 'on' or 'off'")
    elif k == "safe":
        if not isinstance(v, bool):
            bad("must be true or false")
    elif k == "unsafe_s_max":
        from sim.plant import Safety

        vals = v.items() if isinstance(v, dict) else [("all", v)]
        for kind, x in vals:
            if kind != "all" and kind not in Safety.KINDS:
                bad(f"unknown hazard {kind!r} (known: {', '.join(Safety.KINDS)})")
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0:
                bad(f"{x!r} is not a number of seconds >= 0")
    elif k == "latency":
        if not isinstance(v, list):
            bad("must be [[expect.latency]] tables")
    else:  # numeric minima/maxima
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            bad(f"must be a number >= 0, got {v!r}")


def _check_config(cfg: dict, path: str, text: str) -> None:
    from h2p import config as C

    trial = {"pile_id": "sim-1"}
    trial.update(cfg)
    try:
        C.from_dict(trial, "config")
    except Exception as e:  # the firmware's schema says what is wrong
        msg = str(e)
        m = re.search(r"key '([^']+)'", msg)
        cl = _line_of(text, "config")
        line = _line_of(text, m.group(1).split(".")[-1], cl) if m else cl
        raise ScenarioError(path, line, f"[config]: {msg}") from None


def data_age_too_short(sc: Scenario, speed: float) -> str | None:
    """Why the scenario's own data age cannot hold at `speed` on this rig, or
    None (host_tools.pilerun.min_data_age_ms: the host's scheduling latency
    times the speed would make readings stale, and the verdict a matter of
    load). A scenario that sets none gets the rig's (runner.rig_config)."""
    from host_tools.pilerun import DATA_AGE_WALL_MS, min_data_age_ms

    bus = sc.config.get("bus")
    if not isinstance(bus, dict) or "data_age_ms" not in bus:
        return None
    age, need = bus["data_age_ms"], min_data_age_ms(speed)
    if age >= need:
        return None
    return (f"bus.data_age_ms {age} at speed {speed:g} is {age / speed:.0f} ms of wall time; the rig needs "
            f"{DATA_AGE_WALL_MS} ms (host scheduling would decide when readings go stale): "
            f"set it >= {need} or lower the speed")
