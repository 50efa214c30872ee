"""Every event and fault the simulator can inject, by name.

Used by scenarios, by ``h2pile sim inject`` and by tests. Each entry gives
its arguments with their allowed ranges, so a bad request is refused before
anything changes: ``check(name, args)`` raises ValueError with the reason.
"""

from __future__ import annotations

from h2p import registers as R

DEVICES = tuple(R.DEVICE_ORDER)

# name: (doc, {arg: (default, lo, hi)}, needs a device argument)
EVENTS: dict[str, tuple[str, dict[str, tuple[float, float, float]], bool]] = {
    "ev_plug": ("EV plugs in (pilot A->B, then C while it wants charge)",
                {"soc": (20.0, 0.0, 100.0), "kwh": (60.0, 5.0, 200.0), "target": (80.0, 1.0, 100.0)}, False),
    "ev_stop": ("EV stops asking for current (C->B)", {}, False),
    "ev_resume": ("EV asks again (B->C)", {}, False),
    "ev_unplug": ("EV unplugged (pilot to A), also mid-charge", {}, False),
    "pilot_short": ("pilot line shorted to earth (IEC 61851 state E)", {}, False),
    "ev_greedy": ("EV asks for more than the pile can give", {"amps": (500.0, 1.0, 1000.0)}, False),
    "h2_leak": ("hydrogen leak: % LEL ramps to `lel` at `rate` %LEL/s", {"lel": (30.0, 0.0, 100.0), "rate": (5.0, 0.01, 1000.0)}, False),
    "meoh_leak": ("methanol in the tank bund", {}, False),
    "reformer_overtemp": ("reformer bed heats by `rate` K/s beyond control", {"rate": (1.0, 0.01, 50.0)}, False),
    "reformer_alarm": ("the reformer controller raises alarm bits `bits` (1 flame-out: the burner goes out; 2 pump: no flow; 4 sensor; 8 over-pressure)",
                       {"bits": (1.0, 1.0, 15.0)}, False),
    "bed_heat_loss": ("the reformer bed loses `watts` more heat (wind, failed insulation): the bed loop must fire harder",
                      {"watts": (1500.0, 10.0, 20000.0)}, False),
    "co_high": ("CO in the reformate rises to `pct` % (aged catalyst), whatever the bed temperature", {"pct": (2.5, 0.0, 6.0)}, False),
    "stack_overtemp": ("oil cooler fails and the stack gains `watts` of extra heat", {"watts": (20000.0, 100.0, 1e6)}, False),
    "starvation": ("hydrogen reaching the stack falls to `fraction` of the feed (low cell voltage)", {"fraction": (0.3, 0.0, 1.0)}, False),
    "tank_empty": ("premix tank empty", {}, False),
    "insulation": ("insulation resistance of the DC output drops to `kohm`", {"kohm": (20.0, 0.0, 65535.0)}, False),
    "contactor_welded": ("contactor welds: stays closed when commanded open", {}, False),
    "contactor_stuck_open": ("contactor does not close", {}, False),
    "tilt": ("pile tilted", {}, False),
    "door_open": ("enclosure door open", {}, False),
    "water": ("water ingress", {}, False),
    "vent_fail": ("ventilation airflow lost", {}, False),
    "estop": ("E-stop pressed (hard-wired chain opens)", {}, False),
    "silent": ("a device stops answering (master sees timeouts)", {}, True),
    "bad_crc": ("a device answers with bad CRCs", {}, True),
    "garbage": ("a device answers with garbage bytes", {}, True),
    "bms_alarm": ("battery BMS raises an alarm", {"bits": (1.0, 1.0, 7.0)}, False),
    "battery_temp": ("buffer battery cells at `c` degC (the BMS limits follow; over-temperature alarm from bat_alarm_c)",
                     {"c": (55.0, -40.0, 90.0)}, False),
    "clear": ("clear an injected fault by name (`fault`), or all with fault=all", {}, False),
}


# Faults that `clear` undoes (EV events are undone by other EV events).
CLEARABLE = tuple(k for k in EVENTS if not k.startswith("ev_") and k != "clear") + ("ev_greedy",)


def markdown() -> str:
    """The table of events for docs/scenarios.md."""
    out = ["| event | arguments (default, range) | what happens |", "|---|---|---|"]
    for name, (doc, spec, needs_dev) in EVENTS.items():
        args = []
        if needs_dev:
            args.append("`device` (one of " + ", ".join(DEVICES) + ")")
        if name == "clear":
            args.append("`fault` (default all; one of " + ", ".join(CLEARABLE) + ")")
            args.append("`device` (for silent/bad_crc/garbage; default every device)")
        for a, (d, lo, hi) in spec.items():
            args.append(f"`{a}` ({d:g}, {lo:g}..{hi:g})")
        out.append(f"| `{name}` | {'; '.join(args) or '-'} | {doc} |")
    return "\n".join(out) + "\n"


def check(name: str, args: dict) -> dict:
    """Validate an event; returns its arguments with defaults filled in."""
    if not isinstance(name, str) or name not in EVENTS:
        raise ValueError(f"unknown event '{name}' (known: {', '.join(sorted(EVENTS))})")
    _doc, spec, needs_dev = EVENTS[name]
    out: dict = {}
    args = dict(args or {})
    if needs_dev:
        dev = args.pop("device", None)
        if dev not in DEVICES:
            raise ValueError(f"event '{name}' needs device= one of {', '.join(DEVICES)} (got {dev!r})")
        out["device"] = dev
    if name == "clear":
        f = args.pop("fault", "all")
        if f != "all" and f not in CLEARABLE:
            raise ValueError(f"clear: fault={f!r} is not a fault that can be cleared (one of: all, {', '.join(CLEARABLE)})")
        out["fault"] = f
        if "device" in args:
            dev = args.pop("device")
            if dev not in DEVICES:
                raise ValueError(f"clear: device={dev!r} is not one of {', '.join(DEVICES)}")
            out["device"] = dev
    for k, v in args.items():
        if k not in spec:
            raise ValueError(f"event '{name}' has no argument '{k}' (arguments: {', '.join(spec) or 'none'})")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"event '{name}': {k}={v!r} is not a number") from None
        _d, lo, hi = spec[k]
        if not lo <= x <= hi or x != x:
            raise ValueError(f"event '{name}': {k}={x} is outside {lo}..{hi}")
        out[k] = x
    for k, (d, _lo, _hi) in spec.items():
        out.setdefault(k, d)
    return out


def apply(sim, name: str, args: dict) -> None:
    """Apply a checked event to a running PileSim."""
    a = check(name, args)
    p = sim.plant
    sim.advance()
    if name == "ev_plug":
        p.ev.plug(a["soc"], a["kwh"], a["target"])
    elif name == "ev_stop":
        p.ev.asking = False
    elif name == "ev_resume":
        p.ev.asking = p.ev.present
    elif name == "ev_unplug":
        p.ev.unplug()
    elif name == "pilot_short":
        p.ev.pilot_short = True
    elif name == "ev_greedy":
        p.ev.greedy = True
        p.ev.greedy_a = a["amps"]
    elif name == "h2_leak":
        p.h2_target = a["lel"]
        p.h2_rate = a["rate"]
    elif name == "meoh_leak":
        p.reformer.leak = True
    elif name == "reformer_overtemp":
        p.reformer.overheat = a["rate"]
    elif name == "stack_overtemp":
        p.stack.overheat = a["watts"]
    elif name == "starvation":
        p.p["starvation_fraction"] = a["fraction"]
    elif name == "tank_empty":
        p.reformer.tank = 0.0
    elif name == "insulation":
        p.charger.iso_kohm = a["kohm"]
    elif name == "contactor_welded":
        p.charger.welded = True
    elif name == "contactor_stuck_open":
        p.charger.stuck_open = True
    elif name in ("tilt", "door_open", "estop", "water"):
        bit = {"tilt": R.SIO_TILT, "door_open": R.SIO_DOOR_OPEN, "estop": R.SIO_ESTOP, "water": R.SIO_WATER}[name]
        p.status_bits |= bit
    elif name == "vent_fail":
        p.vent_blocked = True
    elif name == "silent":
        sim.silent.add(a["device"])
    elif name == "bad_crc":
        sim.bad_crc.add(a["device"])
    elif name == "garbage":
        sim.garbage.add(a["device"])
    elif name == "bms_alarm":
        p.battery.alarm = int(a["bits"])
    elif name == "reformer_alarm":
        p.reformer.alarm = int(a["bits"])
    elif name == "bed_heat_loss":
        p.reformer.extra_loss_w = a["watts"]
    elif name == "co_high":
        p.reformer.co_force = a["pct"]
    elif name == "battery_temp":
        p.battery.temp = a["c"]
    elif name == "clear":
        _clear(sim, a["fault"], a.get("device"))


def _clear(sim, fault: str, device=None) -> None:
    p = sim.plant
    every = fault == "all"
    if every or fault == "h2_leak":
        p.h2_target = 0.0
    if every or fault == "meoh_leak":
        p.reformer.leak = False
    if every or fault == "reformer_overtemp":
        p.reformer.overheat = 0.0
    if every or fault == "stack_overtemp":
        p.stack.overheat = 0.0
    if every or fault == "starvation":
        p.p["starvation_fraction"] = 1.0
    if every or fault == "tank_empty":
        if p.reformer.tank <= 0.0:
            p.reformer.tank = p.p["tank_l"]  # refilled
    if every or fault == "insulation":
        p.charger.iso_kohm = p.p["iso_kohm"]
    if every or fault == "contactor_welded":
        p.charger.welded = False
    if every or fault == "contactor_stuck_open":
        p.charger.stuck_open = False
    for name, bit in (("tilt", R.SIO_TILT), ("door_open", R.SIO_DOOR_OPEN), ("estop", R.SIO_ESTOP), ("water", R.SIO_WATER)):
        if every or fault == name:
            p.status_bits &= ~bit
    if every or fault == "vent_fail":
        p.vent_blocked = False
    for s, n in ((sim.silent, "silent"), (sim.bad_crc, "bad_crc"), (sim.garbage, "garbage")):
        if every or fault == n:
            if device:
                s.discard(device)
            else:
                s.clear()
    if every or fault == "bms_alarm":
        p.battery.alarm = 0
    if every or fault == "reformer_alarm":
        p.reformer.alarm = 0
    if every or fault == "bed_heat_loss":
        p.reformer.extra_loss_w = 0.0
    if every or fault == "co_high":
        p.reformer.co_force = None
    if every or fault == "battery_temp":
        p.battery.temp = p.p["ambient_c"]
    if every or fault == "ev_greedy":
        p.ev.greedy = False
    if every or fault == "pilot_short":
        p.ev.pilot_short = False
