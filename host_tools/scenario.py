"""Scenarios: a TOML file of timed or conditional events and the checks
that must hold at the end, run headless against the simulator and the
firmware (host_tools.pilerun.PileRun). The format is in docs/scenarios.md.

    sc = load("tests/scenarios/ev_stop_latency.toml")   # ScenarioError if bad
    result = asyncio.run(run(sc, log_path="x.jsonl"))
    result.passed, result.checks  # [(ok, "one line"), ...]
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import tempfile
import time
import tomllib
from dataclasses import dataclass, field

from h2p import interlocks as IL
from h2p import registers as R
from h2p import states as S
from sim import faults
from sim import params as P
from sim.plant import summary_keys

DEFAULT_SPEED = 10.0
WARM = {"bed_c0": 265.0, "stack_c0": 165.0}


class ScenarioError(Exception):
    """Bad scenario: says which file, which line and what is wrong."""

    def __init__(self, path, line, reason):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


# ---- durations -----------------------------------------------------------
_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(v) -> float:
    """'12m30s', '1h', '250ms', '90s' or a number of seconds -> seconds."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a duration")
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        s = v.strip().replace(" ", "")
        if not s:
            raise ValueError("empty duration")
        pos, x = 0, 0.0
        for m in _DUR.finditer(s):
            if m.start() != pos:
                break
            x += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
            pos = m.end()
        if pos != len(s):
            raise ValueError(f"{v!r} is not a duration (examples: '90s', '12m30s', '1h', '250ms')")
    else:
        raise ValueError(f"{v!r} is not a duration")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{v!r} is not a duration >= 0")
    return x


# ---- conditions: a tiny language, parsed here, never eval'd -------------
# expr := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | atom
# atom := '(' expr ')' | NAME OP LITERAL | NAME 'contains' LITERAL
# OP := == != < <= > >= ; LITERAL := number | 'text' | "text" | true | false
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\))|(?P<name>[A-Za-z_][A-Za-z0-9_]*))")
_OPS = ("==", "!=", "<", "<=", ">", ">=")


def context_types() -> dict[str, type]:
    """What a condition may name, with its type."""
    from sim.plant import Plant

    types = {k: type(v) for k, v in Plant(P.defaults()).summary().items() if not isinstance(v, dict)}
    types.update({"state": str, "t": float, "faults": list, "sessions": int, "stops": int})
    return types


def _tokens(text):
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read condition at {text[pos:pos + 12]!r}")
        pos = m.end()
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "num":
            out.append(("lit", float(val)))
        elif kind == "str":
            out.append(("lit", val[1:-1]))
        elif kind == "name" and val in ("true", "false"):
            out.append(("lit", val == "true"))
        elif kind == "name" and val in ("and", "or", "not", "contains"):
            out.append(("kw", val))
        else:
            out.append((kind, val))
    return out


class Condition:
    def __init__(self, text: str, types: dict[str, type] | None = None):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a condition must be a non-empty string")
        self.text = text
        self.types = types or context_types()
        self.toks = _tokens(text)
        self.i = 0
        self.tree = self._or()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.i][1]!r} in condition {text!r}")
        self.names = set()
        self._collect(self.tree)

    def _peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def _take(self):
        t = self._peek()
        if t[0] is None:
            raise ValueError(f"condition {self.text!r} ends too early")
        self.i += 1
        return t

    def _or(self):
        node = self._and()
        while self._peek() == ("kw", "or"):
            self.i += 1
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._not()
        while self._peek() == ("kw", "and"):
            self.i += 1
            node = ("and", node, self._not())
        return node

    def _not(self):
        if self._peek() == ("kw", "not"):
            self.i += 1
            return ("not", self._not())
        return self._atom()

    def _atom(self):
        kind, val = self._take()
        if (kind, val) == ("op", "("):
            node = self._or()
            if self._take() != ("op", ")"):
                raise ValueError(f"missing ')' in condition {self.text!r}")
            return node
        if kind != "name":
            raise ValueError(f"expected a name in condition {self.text!r}, got {val!r}")
        if val not in self.types:
            raise ValueError(f"unknown name {val!r} in condition (known: {', '.join(sorted(self.types))})")
        typ = self.types[val]
        okind, op = self._take()
        if (okind, op) == ("kw", "contains"):
            if typ is not list:
                raise ValueError(f"'contains' needs a list ({val!r} is not one; 'faults' is)")
        elif okind != "op" or op not in _OPS:
            raise ValueError(f"expected a comparison after {val!r} in condition {self.text!r}")
        lkind, lit = self._take()
        if lkind != "lit":
            raise ValueError(f"expected a number, 'text', true or false after {val} {op}")
        if op == "contains":
            if lit not in IL.ROW:
                raise ValueError(f"unknown fault {lit!r} (known: {', '.join(IL.ROW)})")
        elif typ is str:
            if not isinstance(lit, str) or op not in ("==", "!="):
                raise ValueError(f"{val!r} is text: compare it with == or != and a quoted value")
            if val == "state" and lit not in S.NAMES:
                raise ValueError(f"unknown state {lit!r} (states: {', '.join(S.NAMES)})")
        elif typ is list:
            raise ValueError(f"{val!r} is a list: use {val} contains 'name'")
        elif isinstance(lit, str):
            raise ValueError(f"{val!r} is a number: compare it with a number, not {lit!r}")
        return ("cmp", val, op, lit)

    def _collect(self, n):
        if n[0] == "cmp":
            self.names.add(n[1])
        else:
            for c in n[1:]:
                self._collect(c)

    def eval(self, ctx: dict) -> bool:
        return self._eval(self.tree, ctx)

    def _eval(self, n, ctx):
        k = n[0]
        if k == "or":
            return self._eval(n[1], ctx) or self._eval(n[2], ctx)
        if k == "and":
            return self._eval(n[1], ctx) and self._eval(n[2], ctx)
        if k == "not":
            return not self._eval(n[1], ctx)
        _, name, op, lit = n
        v = ctx.get(name)
        if v is None:
            return False  # not known yet: the condition does not hold
        if op == "contains":
            return lit in v
        try:
            if op == "==":
                return v == lit
            if op == "!=":
                return v != lit
            if op == "<":
                return v < lit
            if op == "<=":
                return v <= lit
            if op == ">":
                return v > lit
            return v >= lit
        except TypeError:
            return False


# ---- the scenario --------------------------------------------------------
@dataclass
class Event:
    index: int
    line: int
    name: str
    args: dict
    at: float | None = None
    when: Condition | None = None
    delay: float = 0.0


@dataclass
class Latency:
    line: int
    source: str  # injected event name
    cmd: str
    value: float
    max_ms: float


@dataclass
class Scenario:
    path: str
    name: str
    description: str = ""
    speed: float = DEFAULT_SPEED
    duration: float = 600.0
    until: Condition | None = None
    settle: float = 0.0
    heap: str = "96K"
    xfail: str = ""
    sample: float = 0.0
    warm: bool = False
    params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    expect: dict = field(default_factory=dict)
    latency: list = field(default_factory=list)

    def plant_params(self) -> dict:
        p = dict(WARM) if self.warm else {}
        p.update(self.params)
        return p


TOP_KEYS = {"name", "description", "speed", "duration", "until", "settle", "heap", "xfail", "sample",
            "start", "params", "config", "event", "expect"}
START_KEYS = {"warm"}
EVENT_KEYS = {"do", "at", "when", "delay"}
EXPECT_KEYS = {
    "state": "final firmware state (or a list: any of them)",
    "states": "states the firmware visited (list)",
    "not_states": "states the firmware must never enter (list)",
    "faults": "interlocks that were in force at some time (list)",
    "no_faults": "interlocks that must never be in force once past self-test (list; while off and in "
                 "self-test unknown data holds many rows true)",
    "events": "firmware events seen, 'kind [arg ...]', e.g. 'session_stop ev_stopped' (list)",
    "contactor": "'open' or 'closed' at the end (the plant's contactor)",
    "fuel": "'on' or 'off' at the end (burner lit or pump running)",
    "energy_kwh_min": "metered energy delivered to the EV over the run, at least",
    "energy_kwh_max": "metered energy delivered to the EV over the run, at most",
    "ev_soc_min": "EV state of charge at the end, at least",
    "opened_under_load_max": "times the contactor opened above 5 A, at most",
    "safe": "no unsafe command written (default true): fuel turned on (mode preheat/run, pump from 0) "
            "into an H2 leak >= h2_trip_lel, the contactor closed after the insulation monitor showed "
            "a fault, or closed with no EV; leak and unplug get safety_grace_s to be seen",
    "unsafe_s_max": "longest hazard exposure allowed, s: a number, or a table per kind",
    "sessions_min": "sessions started, at least",
    "sessions_max": "sessions started, at most",
    "ev_a_max": "highest current the charger gave the EV, A",
    "latency": "array of tables {from = EVENT, to = 'cmd=value', max_ms = N}: first such write after the injection",
}


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

    def err(key, reason, start=1):
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
    # [[event]]
    evs = d.get("event", [])
    if not isinstance(evs, list):
        err("event", "events are [[event]] tables")
    for i, e in enumerate(evs):
        sc.events.append(_event(e, i, path, text, types))
    # [expect]
    exp = d.get("expect", {})
    if not isinstance(exp, dict):
        err("expect", "[expect] must be a table")
    el = _line_of(text, "expect")
    for k, v in exp.items():
        if k not in EXPECT_KEYS:
            err(k, f"[expect]: unknown check '{k}' (known: {', '.join(EXPECT_KEYS)})", el)
        _check_expect(k, v, lambda reason, k=k: err(k, f"[expect] {k}: {reason}", el))
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
            raise ScenarioError(path, _line_of(text, "from", ln), f"latency: the scenario never injects {src!r}")
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


def _event(e, i, path, text, types) -> Event:
    ln = _nth_header(text, "event", i)
    if not isinstance(e, dict):
        raise ScenarioError(path, ln, "an [[event]] must be a table")

    def err(key, reason):
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


def _check_expect(k, v, bad):
    def names(known, what):
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


def _check_config(cfg, path, text):
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


# ---- running ---------------------------------------------------------------
@dataclass
class Result:
    scenario: Scenario
    checks: list  # [(ok, text)]
    records: list  # the merged log
    final: dict  # plant summary at the end
    state: str
    wall_s: float
    log_path: str = ""
    plot_path: str = ""

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.checks)

    def latency_ms(self, source: str, cmd: str, value: float):
        return latency_ms(self.records, source, cmd, value)


def latency_ms(records, source, cmd, value):
    """Simulated ms from the first injection of `source` to the first write
    of cmd=value after it (None if either never happened)."""
    t_inj = next((r["t"] for r in records if r.get("kind") == "inject" and r.get("event") == source), None)
    if t_inj is None:
        return None
    for r in records:
        if r.get("kind") == "write" and r["t"] >= t_inj and r.get("cmd") == cmd and r.get("value") == value:
            return (r["t"] - t_inj) * 1000.0
    return None


async def run(sc: Scenario, speed: float | None = None, log_path: str | None = None, plot_path: str | None = None,
              echo=None, firmware_build: str | None = None) -> Result:
    from host_tools.pilerun import PileRun

    speed = float(speed or sc.speed)
    wall0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="h2pile-scn-")
    sim_log = os.path.join(tmp, "sim.jsonl")
    sample_s = sc.sample or max(0.5, sc.duration / 800.0)
    sim_args = ["--sample-s", str(sample_s)]
    for k, v in sc.plant_params().items():
        sim_args += ["--param", f"{k}={v!r}"]
    pr = PileRun(speed=speed, heap=sc.heap, config=sc.config, sim_args=sim_args, log_path=sim_log,
                 firmware_build=firmware_build)
    wake = asyncio.Event()
    pr.on_line = lambda line: wake.set() if line.startswith("LOG event") else None
    fired = [False] * len(sc.events)
    notes = []
    plant: dict = {}
    until_t = None
    try:
        await pr.start()

        def now():
            return (time.time_ns() - pr.epoch_ns) / 1e9 * speed

        for ev in sc.events:
            if ev.at is not None:
                r = await pr.control({"op": "inject", "event": ev.name, "args": ev.args, "at": ev.at,
                                      "tag": f"event{ev.index + 1}"})
                if not r.get("ok"):
                    raise RuntimeError(f"event {ev.index + 1}: {r.get('error')}")
                fired[ev.index] = True
        while True:
            t = now()
            if t >= sc.duration:
                break
            if pr.fw.returncode is not None:
                notes.append(f"firmware exited with code {pr.fw.returncode}")
                break
            # Firmware events first, then a fresh plant sample: the plant is
            # never older than the events it is judged with.
            fw = _fw_context(pr, t)
            plant = await pr.plant()
            ctx = dict(plant)
            ctx.update(fw)
            for ev in sc.events:
                if not fired[ev.index] and ev.when is not None and ev.when.eval(ctx):
                    fired[ev.index] = True
                    req = {"op": "inject", "event": ev.name, "args": ev.args, "tag": f"event{ev.index + 1}"}
                    if ev.delay:
                        req["at"] = t + ev.delay
                    r = await pr.control(req)
                    if not r.get("ok"):
                        raise RuntimeError(f"event {ev.index + 1}: {r.get('error')}")
                    if echo:
                        echo(f"  t={t:9.1f}s  {ev.name} {ev.args or ''} (when {ev.when.text})")
            if sc.until is not None and until_t is None and sc.until.eval(ctx):
                until_t = t
            if until_t is not None and t >= until_t + sc.settle:
                break
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        try:
            plant = await pr.plant()
        except OSError:
            notes.append("simulator gone at the end")
        alive = pr.fw.returncode is None
    finally:
        await pr.stop()
    records = _merge(sc, speed, pr, sim_log)
    checks = evaluate(sc, records, plant, pr.state, alive, until_t, fired, notes)
    wall = time.monotonic() - wall0
    res = Result(sc, checks, records, plant, pr.state, wall)
    records.append({"kind": "verdict", "t": plant.get("t"), "wall": round(time.time(), 4), "passed": res.passed,
                    "checks": [[ok, text] for ok, text in checks], "wall_s": round(wall, 2)})
    if log_path:
        d = os.path.dirname(os.path.abspath(log_path))
        os.makedirs(d, exist_ok=True)
        with open(log_path, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        res.log_path = log_path
    if plot_path:
        from host_tools import report

        report.plot(records, plot_path, title=f"{sc.name} (speed {speed:g})")
        res.plot_path = plot_path
    try:
        os.remove(sim_log)
        os.rmdir(tmp)
    except OSError:
        pass
    return res


def _fw_context(pr, t):
    # sessions: started; stops: ended. The firmware reports a session's
    # start just before its state goes ready -> charging, so "sessions >= 1
    # and state == 'ready'" can hold for that instant: "after a session"
    # is stops >= 1.
    faults_now: list = []
    sessions = stops = 0
    for e in pr.events:
        if e["kind"] == "faults":
            faults_now = [] if e["a"] == "none" else e["a"].split(",")
        elif e["kind"] == "session_start":
            sessions += 1
        elif e["kind"] == "session_stop":
            stops += 1
    return {"state": pr.state, "t": t, "faults": faults_now, "sessions": sessions, "stops": stops}


def _merge(sc, speed, pr, sim_log):
    recs = [{"kind": "run", "t": 0.0, "wall": round(pr.epoch_ns / 1e9, 4), "scenario": sc.name,
             "path": sc.path, "speed": speed, "params": sc.plant_params(), "config": sc.config}]
    wall_off = time.time() - time.monotonic() + pr.t0  # PileRun's wall is monotonic - t0
    for e in pr.events:
        rec = {"t": e["t"], "wall": round(e["wall"] + wall_off, 4)}
        if e["kind"] == "state":
            rec.update({"kind": "state", "from": e["a"], "to": e["b"]})
        else:
            rec.update({"kind": "fw", "event": e["kind"], "a": e["a"], "b": e["b"]})
        recs.append(rec)
    try:
        with open(sim_log) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    recs[1:] = sorted(recs[1:], key=lambda r: r.get("t") or 0.0)
    return recs


def evaluate(sc, records, plant, state, alive, until_t, fired, notes) -> list:
    checks = []

    def chk(ok, text):
        checks.append((bool(ok), text))

    exp = sc.expect
    states_seen = [r["to"] for r in records if r["kind"] == "state"]
    faults_seen = set()
    faults_live = set()  # in force after the boot phase (off, selftest) where data is still unknown
    for r in records:
        if r["kind"] == "fw" and r["event"] == "faults" and r["a"] != "none":
            faults_seen.update(r["a"].split(","))
            if r["b"] not in ("off", "selftest"):
                faults_live.update(r["a"].split(","))
    fw_events = [r for r in records if r["kind"] == "fw"]
    chk(alive and not notes, "firmware ran to the end" + (f" ({'; '.join(notes)})" if notes else ""))
    unfired = [f"event {ev.index + 1} ({ev.name})" for ev in sc.events if not fired[ev.index]]
    chk(not unfired, "every event was injected" + (f" (never: {', '.join(unfired)})" if unfired else ""))
    if sc.until is not None:
        chk(until_t is not None, f"until {sc.until.text!r} " + (f"held at t={until_t:.1f}s" if until_t is not None
                                                                else "never held"))
    if "state" in exp:
        want = exp["state"] if isinstance(exp["state"], list) else [exp["state"]]
        chk(state in want, f"final state {' or '.join(want)} (got {state})")
    for s in exp.get("states", []):
        chk(s in states_seen, f"state {s} visited" + ("" if s in states_seen else f" (visited: {', '.join(states_seen)})"))
    for s in exp.get("not_states", []):
        chk(s not in states_seen, f"state {s} never entered")
    for f in exp.get("faults", []):
        chk(f in faults_seen, f"fault {f} seen" + ("" if f in faults_seen else f" (seen: {', '.join(sorted(faults_seen)) or 'none'})"))
    for f in exp.get("no_faults", []):
        chk(f not in faults_live, f"fault {f} never in force after self-test")
    for spec in exp.get("events", []):
        words = spec.split()
        ok = any(e["event"] == words[0] and all(w in (e["a"], e["b"]) or w in e["a"].split(",") for w in words[1:])
                 for e in fw_events)
        chk(ok, f"event '{spec}' seen")
    if "contactor" in exp:
        got = "closed" if plant.get("contactor") else "open"
        chk(got == exp["contactor"], f"contactor {exp['contactor']} at the end (got {got})")
    if "fuel" in exp:
        got = "on" if plant.get("fuel_on") else "off"
        chk(got == exp["fuel"], f"fuel {exp['fuel']} at the end (got {got})")
    kwh = plant.get("delivered_kwh", 0.0)
    if "energy_kwh_min" in exp:
        chk(kwh >= exp["energy_kwh_min"], f"energy delivered >= {exp['energy_kwh_min']} kWh (got {kwh:.2f})")
    if "energy_kwh_max" in exp:
        chk(kwh <= exp["energy_kwh_max"], f"energy delivered <= {exp['energy_kwh_max']} kWh (got {kwh:.2f})")
    if "ev_soc_min" in exp:
        soc = plant.get("ev_soc", 0.0)
        chk(soc >= exp["ev_soc_min"], f"EV SOC >= {exp['ev_soc_min']} % (got {soc:.1f})")
    if "opened_under_load_max" in exp:
        n = plant.get("opened_under_load", 0)
        chk(n <= exp["opened_under_load_max"],
            f"contactor opened under load <= {exp['opened_under_load_max']} times (got {n}, "
            f"worst {plant.get('max_open_a', 0)} A)")
    if "sessions_min" in exp:
        n = sum(1 for e in fw_events if e["event"] == "session_start")
        chk(n >= exp["sessions_min"], f"sessions started >= {exp['sessions_min']} (got {n})")
    if "sessions_max" in exp:
        n = sum(1 for e in fw_events if e["event"] == "session_start")
        chk(n <= exp["sessions_max"], f"sessions started <= {exp['sessions_max']} (got {n})")
    if "ev_a_max" in exp:
        a = plant.get("max_ev_a", 0.0)
        chk(a <= exp["ev_a_max"], f"EV current stayed <= {exp['ev_a_max']} A (got {a:.1f})")
    if exp.get("safe", True):
        uw = plant.get("unsafe_writes", {})
        bad = {k: v for k, v in uw.items() if v}
        first = next((r for r in records if r.get("kind") == "write" and r.get("unsafe")), None)
        where = f"; first at t={first['t']:.2f}s: {first['cmd']}={first['value']:g}" if first else ""
        chk(not bad and uw != {}, "no unsafe command written" + (f" (got {bad}{where})" if bad else ""))
    if "unsafe_s_max" in exp:
        lim = exp["unsafe_s_max"]
        us = plant.get("unsafe_s", {})
        for kind, got in us.items():
            mx = lim.get(kind) if isinstance(lim, dict) else lim
            if mx is not None:
                chk(got <= mx, f"{kind} exposure <= {mx} s (got {got:.2f} s)")
    for lat in sc.latency:
        ms = latency_ms(records, lat.source, lat.cmd, lat.value)
        chk(ms is not None and ms <= lat.max_ms,
            f"{lat.source} -> {lat.cmd}={lat.value:g} within {lat.max_ms:g} ms simulated "
            + (f"(got {ms:.1f} ms)" if ms is not None else "(no such write after it)"))
    return checks


def events_markdown() -> str:
    """The generated part of docs/scenarios.md: events, checks, names."""
    out = ["### Events (`do = ...`)", "", faults.markdown(), "### Checks (`[expect]`)", "",
           "| check | meaning |", "|---|---|"]
    for k, doc in EXPECT_KEYS.items():
        out.append(f"| `{k}` | {doc} |")
    out += ["", "### Names a condition may use", ""]
    types = context_types()
    out.append(", ".join(f"`{k}`" for k in sorted(types)))
    out += ["", "### Firmware states", "", ", ".join(f"`{s}`" for s in S.NAMES),
            "", "### Interlocks (for `faults`, `no_faults`, `faults contains`)", "",
            ", ".join(f"`{r[0]}`" for r in IL.TABLE), ""]
    return "\n".join(out)
