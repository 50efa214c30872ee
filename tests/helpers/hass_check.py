"""Checks a discovery payload the way Home Assistant reads it, and an evcc
charger the way evcc reads it, without either of them here.

Home Assistant (homeassistant/components/mqtt: discovery.py, schemas.py,
abbreviations.py; sensor/const.py for units and state classes): a device
discovery payload has `dev` (at least one identifier), `o` (a name) and
`cmps`, each component a `p`latform and a unique_id; shared options
(availability, state_topic, command_topic, ...) at the top are inherited by
every component that does not set its own. A value_template is Jinja2 with the
message as `value` and its JSON as `value_json` (rendered here in a sandbox
with StrictUndefined: a template naming a field the message lacks fails
instead of rendering empty); the string "None" means unknown; a numeric
sensor must render a number.

evcc (plugin/mqtt.go, plugin/pipeline, plugin/getter.go, charger/charger.go):
a getter takes the last message on its topic through `jq` (gojq; the `jq`
package here), formats the result with %v, then parses it: a status is
A..F, a bool is cast.ToBool's (true/false/1/0), a float strconv's, times
`scale`. A setter publishes `payload` with ${name} replaced by the value
(%v when no payload is given: true/false, 16)."""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2
import jinja2.sandbox

# The abbreviations the device discovery schema expands (the ones a payload
# may use at the top, in dev, in o and in a component).
TOP_ABBR = {"dev": "device", "o": "origin", "cmps": "components", "avty": "availability",
            "avty_t": "availability_topic", "avty_tpl": "availability_template", "stat_t": "state_topic",
            "cmd_t": "command_topic", "e": "encoding"}
COMP_ABBR = {"p": "platform", "uniq_id": "unique_id", "stat_t": "state_topic", "cmd_t": "command_topic",
             "val_tpl": "value_template", "unit_of_meas": "unit_of_measurement", "dev_cla": "device_class",
             "stat_cla": "state_class", "ent_cat": "entity_category", "ic": "icon", "ops": "options",
             "pl_prs": "payload_press", "pl_on": "payload_on", "pl_off": "payload_off"}
DEV_ABBR = {"ids": "identifiers", "mf": "manufacturer", "mdl": "model", "sw": "sw_version",
            "hw": "hw_version", "sn": "serial_number", "cns": "connections"}
ORIGIN_ABBR = {"sw": "sw_version", "url": "support_url"}
AVTY_ABBR = {"t": "topic", "val_tpl": "value_template", "pl_avail": "payload_available",
             "pl_not_avail": "payload_not_available"}
SHARED = ("availability", "availability_mode", "availability_template", "availability_topic",
          "command_topic", "payload_available", "payload_not_available", "state_topic")

# sensor/const.py: the units and state classes each device class allows (the ones used here).
ENERGY_UNITS = {"Wh", "kWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "cal", "kcal", "Mcal", "Gcal"}
UNITS = {"power": {"W", "kW"}, "energy": ENERGY_UNITS, "energy_storage": ENERGY_UNITS, "battery": {"%"},
         "current": {"A", "mA"}, "voltage": {"V", "mV", "µV", "kV", "MV"},
         "volume_storage": {"L", "mL", "gal", "fl. oz.", "m³", "ft³", "CCF"}, "enum": {None}}
STATE_CLASSES = {"power": {"measurement"}, "energy": {"total", "total_increasing"},
                 "energy_storage": {"measurement"}, "battery": {"measurement"}, "current": {"measurement"},
                 "voltage": {"measurement"}, "volume_storage": {"measurement"}, "enum": set()}
PLATFORMS = {"sensor", "binary_sensor", "button", "number"}

_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


def _expand(d: dict[str, Any], abbr: dict[str, str]) -> dict[str, Any]:
    return {abbr.get(k, k): v for k, v in d.items()}


def normalise(payload: str | bytes) -> dict[str, Any]:
    """A device discovery payload as Home Assistant sees it once parsed:
    abbreviations expanded, shared options merged into each component.
    AssertionError naming what Home Assistant would refuse."""
    cfg = _expand(json.loads(payload), TOP_ABBR)
    assert isinstance(cfg.get("device"), dict), "no device (dev)"
    dev = cfg["device"] = _expand(cfg["device"], DEV_ABBR)
    assert dev.get("identifiers") or dev.get("connections"), "device without identifiers"
    assert isinstance(cfg.get("origin"), dict), "no origin (o)"
    cfg["origin"] = _expand(cfg["origin"], ORIGIN_ABBR)
    assert isinstance(cfg["origin"].get("name"), str), "origin without a name"
    if "availability" in cfg:
        cfg["availability"] = [_expand(a, AVTY_ABBR) for a in cfg["availability"]]
    comps = cfg.get("components")
    assert isinstance(comps, dict) and comps, "no components (cmps)"
    ids = set()
    for cid, c in list(comps.items()):
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", cid), "component id %r" % cid
        c = comps[cid] = _expand(c, COMP_ABBR)
        assert c.get("platform") in PLATFORMS, (cid, c.get("platform"))
        assert c.get("unique_id") and c["unique_id"] not in ids, (cid, "unique_id")
        ids.add(c["unique_id"])
        for k in SHARED:
            if k in cfg and k not in c:
                c[k] = cfg[k]
        _check_component(cid, c)
    return cfg


def _check_component(cid: str, c: dict[str, Any]) -> None:
    for k in ("state_topic", "command_topic"):
        if k in c:
            assert isinstance(c[k], str) and c[k] and not set(c[k]) & set("#+\0"), (cid, k, c.get(k))
    for k in ("value_template",):
        if k in c:
            _ENV.from_string(c[k])  # a syntax error is HA's config error
    for a in c.get("availability", []):
        assert a.get("topic"), (cid, "availability without topic")
    p = c["platform"]
    if p in ("button", "number"):
        assert c.get("command_topic"), (cid, "no command_topic")
    if p in ("sensor", "binary_sensor", "number"):
        assert c.get("state_topic") or p == "number", (cid, "no state_topic")
    dc = c.get("device_class")
    if p == "sensor" and dc in UNITS:
        assert c.get("unit_of_measurement") in UNITS[dc], (cid, dc, c.get("unit_of_measurement"))
        sc = c.get("state_class")
        assert sc is None or sc in STATE_CLASSES[dc], (cid, dc, sc)
        if dc == "enum":
            assert c.get("options") and "state_class" not in c, (cid, "enum")
    if p == "number":
        assert c["min"] < c["max"] and c.get("step", 1) > 0, (cid, "range")
        if dc:
            assert c.get("unit_of_measurement") in UNITS[dc], (cid, dc, c.get("unit_of_measurement"))


def numeric(c: dict[str, Any]) -> bool:
    """Home Assistant's rule: a sensor with a unit, a state class or a
    numeric device class must have a number (or None) as its state."""
    if c["platform"] == "number":
        return True
    return c["platform"] == "sensor" and (c.get("unit_of_measurement") is not None or c.get("state_class") is not None
                                          or c.get("device_class") not in (None, "enum"))


def render(template: str, payload: bytes | str) -> str:
    """A value_template rendered as Home Assistant does, against a real
    message; StrictUndefined: a field the message lacks is an error."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    return _ENV.from_string(template).render(value=text, value_json=json.loads(text)).strip()


def state(c: dict[str, Any], payload: bytes | str) -> Any:
    """What the entity shows for this message: a float for a numeric one,
    None for unknown, "ON"/"OFF" for a binary sensor, else the text.
    AssertionError when Home Assistant would reject the value."""
    out = render(c["value_template"], payload) if "value_template" in c else str(payload)
    if out == "None":
        return None
    if numeric(c):
        try:
            return float(out)
        except ValueError:
            raise AssertionError("%s: %r is not a number" % (c["unique_id"], out))
    if c["platform"] == "binary_sensor":
        assert out in (c.get("payload_on", "ON"), c.get("payload_off", "OFF")), (c["unique_id"], out)
    if c.get("device_class") == "enum":
        assert out in c["options"], (c["unique_id"], out, c["options"])
    return out


def available(cfg: dict[str, Any], topic: str, payload: bytes | str) -> bool | None:
    """The availability one message on `topic` gives (None: not an
    availability topic of this device)."""
    for a in cfg.get("availability", []):
        if a["topic"] == topic:
            out = render(a["value_template"], payload) if "value_template" in a else str(payload)
            if out == a.get("payload_available", "online"):
                return True
            if out == a.get("payload_not_available", "offline"):
                return False
            raise AssertionError("availability %r is neither available nor not" % out)
    return None


# ---- evcc ----------------------------------------------------------------------

def evcc_get(plugin: dict[str, Any], payload: bytes | str, kind: str) -> Any:
    """An evcc mqtt getter on one message: kind is status, bool or float."""
    import jq

    text = payload.decode() if isinstance(payload, bytes) else payload
    assert plugin.get("source") == "mqtt", plugin
    if "jq" in plugin:
        v = jq.compile(plugin["jq"]).input_text(text).first()
        out = "<nil>" if v is None else ("true" if v is True else "false" if v is False else str(v))
    else:
        out = text
    if kind == "status":
        assert out in ("A", "B", "C", "D", "E", "F"), "status %r" % out
        return out
    if kind == "bool":
        assert out.lower() in ("true", "false", "1", "0"), "bool %r" % out
        return out.lower() in ("true", "1")
    try:
        return float(out) * float(plugin.get("scale", 1))
    except ValueError:
        raise AssertionError("not a float: %r" % out)


def evcc_payload(plugin: dict[str, Any], name: str, value: Any) -> str:
    """What an evcc mqtt setter publishes for value."""
    assert plugin.get("source") == "mqtt", plugin
    v = ("true" if value else "false") if isinstance(value, bool) else "%s" % value
    tpl = plugin.get("payload")
    if not tpl:
        return v
    out = re.sub(r"\$\{(\w+)(?::[^}]*)?\}", lambda m: v if m.group(1) == name else m.group(0), tpl)
    assert "${" not in out, "unreplaced variable in %r" % tpl
    return out
