"""The verdict of a run: the [expect] checks (EXPECT_KEYS says what each
means) evaluated over the merged log and the plant's state at the end, each
a (passed, one line) pair, and the Result a run returns."""

from __future__ import annotations

from dataclasses import dataclass

from host_tools.scenario.model import Scenario

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
    "latency": "array of tables {from = EVENT, to = 'cmd=value', max_ms = N}: first such write after "
               "the injection",
}


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

    def latency_ms(self, source: str, cmd: str, value: float) -> float | None:
        return latency_ms(self.records, source, cmd, value)


def latency_ms(records: list[dict], source: str, cmd: str, value: float) -> float | None:
    """Simulated ms from the first injection of `source` to the first write
    of cmd=value after it (None if either never happened)."""
    t_inj = next((r["t"] for r in records if r.get("kind") == "inject" and r.get("event") == source), None)
    if t_inj is None:
        return None
    for r in records:
        if r.get("kind") == "write" and r["t"] >= t_inj and r.get("cmd") == cmd and r.get("value") == value:
            return (r["t"] - t_inj) * 1000.0
    return None


def evaluate(sc: Scenario, records: list[dict], plant: dict, state: str, alive: bool, until_t: float | None,
             fired: list[bool], notes: list[str]) -> list[tuple[bool, str]]:
    """Every check of the run: the built-in ones (the firmware ran to the end, every event
    was injected, `until` held, nothing unsafe written) and the scenario's [expect]."""
    checks = []

    def chk(ok: object, text: str) -> None:
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
        held = f"held at t={until_t:.1f}s" if until_t is not None else "never held"
        chk(until_t is not None, f"until {sc.until.text!r} {held}")
    if "state" in exp:
        want = exp["state"] if isinstance(exp["state"], list) else [exp["state"]]
        chk(state in want, f"final state {' or '.join(want)} (got {state})")
    for s in exp.get("states", []):
        chk(s in states_seen,
            f"state {s} visited" + ("" if s in states_seen else f" (visited: {', '.join(states_seen)})"))
    for s in exp.get("not_states", []):
        chk(s not in states_seen, f"state {s} never entered")
    for f in exp.get("faults", []):
        seen = ', '.join(sorted(faults_seen)) or 'none'
        chk(f in faults_seen, f"fault {f} seen" + ("" if f in faults_seen else f" (seen: {seen})"))
    for f in exp.get("no_faults", []):
        chk(f not in faults_live, f"fault {f} never in force after self-test")
    for spec in exp.get("events", []):
        words = spec.split()
        ok = any(e["event"] == words[0]
                 and all(w in (e["a"], e["b"]) or w in e["a"].split(",") for w in words[1:])
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
