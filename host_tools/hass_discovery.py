"""Home Assistant MQTT discovery for one pile, and the relay topics that Home
Assistant's buttons and number (and evcc) publish on.

Built from the firmware's contract (h2p.topics, h2p.topics_doc, h2p.states,
h2p.cmdspec): every state topic is one the pile publishes, every value
template names a field the pile sends, every unit is the one the pile states,
and the current limit's range is the one the pile accepts. Nothing here talks
to a broker: `h2pile hass` (host_tools/hass.py) does.

Discovery is device-based, one retained message per pile on
`homeassistant/device/<pile>/config` with `dev`, `o` and `cmps` (Home
Assistant 2024.11+). Home Assistant renders each `value_template` with Jinja2,
the message's JSON as `value_json`; a field the pile sends as null renders as
`None`, which Home Assistant shows as unknown.

The relay topics `h2pile/ctl/<pile>/<action>` are not the pile's: Home
Assistant and evcc can not sign a command, so they publish a plain request
and `h2pile hass`, which holds the per-pile command keys, turns it into a
signed command on the pile's `cmd`. Whoever may publish on a pile's relay
topics may start and stop it: the broker's ACL must let only Home
Assistant's (or evcc's) account write them (docs/operators.md).
"""

from __future__ import annotations

from typing import Any

from h2p import states, topics
from h2p.topics_doc import TELE_FIELDS

DISCOVERY_PREFIX = "homeassistant"
# Home Assistant's birth message on <prefix>/status (its MQTT integration's
# default): "online" asks every device to publish its discovery again.
HA_ONLINE = b"online"

CTL_PREFIX = "h2pile/ctl/"
# action -> what it becomes: start/stop/set_limit are the pile's ops of the
# same name; enable (evcc's charger switch) is start for true, stop for false.
ACTIONS = ("start", "stop", "set_limit", "enable")
CTL_MAX_PAYLOAD = 64  # a button's "PRESS", a number, true/false: anything longer is not ours

ORIGIN = "h2pile hass"

# The tele fields' units, as the pile states them (docs/mqtt.md).
TELE_UNIT = {f: u for f, u, _db, _d in TELE_FIELDS}

# Sensors of numbers the pile sends in tele: (component id, field, name,
# device_class, state_class). The unit is the field's own (TELE_UNIT).
# Two sensors read e_kwh, the session's energy on the billing meter: one to
# show, and one "total_increasing" for Home Assistant's energy dashboard,
# which takes each drop to 0 at the end of a session as a meter reset and
# adds up the sessions (the pile publishes no lifetime meter reading).
TELE_SENSORS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("power", "p_kw", "Charging power", "power", "measurement"),
    ("session_energy", "e_kwh", "Session energy", "energy", None),
    ("energy", "e_kwh", "Energy delivered", "energy", "total_increasing"),
    ("ev_soc", "ev_soc", "EV state of charge", "battery", "measurement"),
    ("battery_soc", "bat_soc", "Buffer battery", "battery", "measurement"),
    ("premix", "premix_l", "Premix left", "volume_storage", "measurement"),
    ("deliverable", "deliver_kwh", "Deliverable energy", "energy_storage", "measurement"),
)

_AVAILABLE = "{{ 'online' if value_json.online else 'offline' }}"


def discovery_topic(pile: str, prefix: str = DISCOVERY_PREFIX) -> str:
    _check_pile(pile)
    return "%s/device/%s/config" % (prefix, pile)


def ctl_topic(pile: str, action: str) -> str:
    _check_pile(pile)
    if action not in ACTIONS:
        raise ValueError("unknown action %r (one of: %s)" % (action, ", ".join(ACTIONS)))
    return CTL_PREFIX + pile + "/" + action


def limit_range() -> tuple[float, float]:
    """The range of set_limit's amps, as the pile checks it (h2p.cmdspec)."""
    for name, _type, _req, lo, hi in topics.CMD_BY_OP["set_limit"][1]:
        if name == "amps":
            return float(lo), float(hi)
    raise LookupError("h2p.cmdspec: set_limit has no amps argument")


def config(pile: str, meta: dict[str, Any] | None = None, version: str = "") -> dict[str, Any]:
    """The device discovery payload of one pile (a dict: json.dumps it).
    meta: the pile's last `meta` message, for the firmware version and board."""
    _check_pile(pile)
    meta = meta or {}
    uid = "h2pile_" + pile
    dev: dict[str, Any] = {"identifiers": [uid], "name": "h2pile " + pile, "manufacturer": "h2pile",
                           "model": "mobile EV charging pile", "serial_number": pile}
    if isinstance(meta.get("fw"), str):
        dev["sw_version"] = meta["fw"]
    if isinstance(meta.get("board"), str):
        dev["hw_version"] = meta["board"]
    origin: dict[str, Any] = {"name": ORIGIN}
    if version:
        origin["sw_version"] = version
    tele, state = topics.topic(pile, "tele"), topics.topic(pile, "state")
    cmps: dict[str, dict[str, Any]] = {}

    def add(cid: str, platform: str, **opts: Any) -> None:
        cmps[cid] = dict(p=platform, unique_id=uid + "_" + cid, **opts)

    add("state", "sensor", name="State", state_topic=state, value_template="{{ value_json.state }}",
        device_class="enum", options=list(states.NAMES), icon="mdi:ev-station")
    add("fault", "binary_sensor", name="Fault", state_topic=state, device_class="problem",
        value_template="{{ 'ON' if value_json.faults else 'OFF' }}")
    add("faults", "sensor", name="Faults", state_topic=state, icon="mdi:alert",
        value_template="{{ value_json.faults | join(', ') if value_json.faults else 'none' }}")
    add("limit_by", "sensor", name="Current limited by", state_topic=state, entity_category="diagnostic",
        value_template="{{ value_json.limit_by }}")
    for cid, field, name, dclass, sclass in TELE_SENSORS:
        opts: dict[str, Any] = dict(name=name, state_topic=tele, value_template="{{ value_json.%s }}" % field,
                                    unit_of_measurement=TELE_UNIT[field], device_class=dclass)
        if sclass:
            opts["state_class"] = sclass
        add(cid, "sensor", **opts)
    add("last_command", "sensor", name="Last command", state_topic=topics.topic(pile, "cmd/ack"),
        entity_category="diagnostic", icon="mdi:console",
        value_template="{{ value_json.op }}: {{ 'ok' if value_json.ok else value_json.reason }}")
    add("start", "button", name="Start charging", command_topic=ctl_topic(pile, "start"), icon="mdi:play")
    add("stop", "button", name="Stop charging", command_topic=ctl_topic(pile, "stop"), icon="mdi:stop")
    lo, hi = limit_range()
    add("current_limit", "number", name="Current limit", command_topic=ctl_topic(pile, "set_limit"),
        state_topic=tele, value_template="{{ value_json.limit_a }}", min=lo, max=hi, step=1,
        unit_of_measurement=TELE_UNIT["limit_a"], device_class="current", mode="box")
    return {
        "dev": dev,
        "o": origin,
        "cmps": cmps,
        "availability": [{"topic": topics.topic(pile, "status"), "value_template": _AVAILABLE,
                          "payload_available": "online", "payload_not_available": "offline"}],
        "qos": 1,
    }


# ---- the relay: what Home Assistant and evcc publish ----------------------------

def parse_ctl(topic: str, payload: bytes) -> tuple[str, str, dict[str, Any]] | None:
    """A relay message -> (pile, op, args) of the signed command it asks for;
    None if the topic is not a relay topic. ValueError, naming the topic and
    what was wrong with it, for a payload that asks for nothing valid."""
    if not topic.startswith(CTL_PREFIX):
        return None
    pile, _, action = topic[len(CTL_PREFIX):].partition("/")
    if not topics.valid_pile_id(pile) or action not in ACTIONS:
        raise ValueError("%s: not a relay topic (%s<pile>/<%s>)" % (topic, CTL_PREFIX, "|".join(ACTIONS)))
    if len(payload) > CTL_MAX_PAYLOAD:
        raise ValueError("%s: payload of %d bytes, at most %d" % (topic, len(payload), CTL_MAX_PAYLOAD))
    try:
        text = payload.decode().strip()
    except UnicodeDecodeError:
        raise ValueError("%s: payload is not UTF-8 text" % topic)
    if not text:
        # Also what clearing a retained message looks like to a subscriber
        # that is already connected: never a button press.
        raise ValueError("%s: empty payload, nothing asked" % topic)
    if action in ("start", "stop"):
        return pile, action, {}  # a button: whatever it carries ("PRESS") is a press
    if action == "enable":
        word = text.lower()
        if word in ("true", "1", "on"):
            return pile, "start", {}
        if word in ("false", "0", "off"):
            return pile, "stop", {}
        raise ValueError("%s: %r is not true or false" % (topic, text))
    try:
        amps = float(text)
    except ValueError:
        raise ValueError("%s: %r is not a number of amps" % (topic, text))
    lo, hi = limit_range()
    if not lo <= amps <= hi:  # NaN fails this too
        raise ValueError("%s: %s A is outside %g..%g A" % (topic, text, lo, hi))
    return pile, "set_limit", {"amps": int(amps) if amps == int(amps) else amps}


def _check_pile(pile: str) -> None:
    if not topics.valid_pile_id(pile):
        raise ValueError("bad pile id %r: use 1-%d letters, digits, '_' or '-'" % (pile, topics.PILE_ID_MAX))
