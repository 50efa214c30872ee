"""`h2pile hass` apart from a broker: the discovery payload as Home Assistant
reads it (tests/helpers/hass_check), the relay requests and what is refused,
and the bridge's decisions (what it publishes, signs, drops). The whole
thing against the real pile: tests/system/test_hass_pile.py."""

from __future__ import annotations

import json

import pytest

from h2p import keys, signer, states, topics
from h2p.topics_doc import TELE_FIELDS
from h2p.uplink import _TELE_JSON
from host_tools import cli
from host_tools import hass_discovery as hd
from host_tools.hass import Bridge
from tests.helpers import hass_check as ha
from tests.helpers.mqtt_broker import free_port

SECRET = "hass-fleet-secret"
PUB = {t[topics.T_NAME] for t in topics.TOPICS if t[topics.T_DIR] == "pub"}
# A tele message as h2p.uplink formats it (its own format string), nulls included.
TELE = _TELE_JSON % (21.5, 402.1, 53.5, 1.234, 41.0, 77.5, 160.2, 270.1, 38.5, 0.0, 3.2, 18.4, 53.0, 45.2,
                     "charging", 9, 3)
TELE_NULLS = _TELE_JSON % (("null",) * 14 + ("preheat", 10, 3))
STATE = json.dumps({"state": "fault", "faults": ["h2_leak", "door_open"], "limit_by": "interlock", "limit_a": 0,
                    "stack_limit_by": "interlock", "seq": 4, "boot": 3})


def test_discovery_is_what_home_assistant_accepts():
    cfg = ha.normalise(json.dumps(hd.config("P-1", {"fw": "1.2.3", "board": "esp32_generic"}, "0.1.0")))
    assert cfg["device"]["identifiers"] == ["h2pile_P-1"] and cfg["device"]["sw_version"] == "1.2.3"
    assert cfg["device"]["hw_version"] == "esp32_generic" and cfg["origin"]["sw_version"] == "0.1.0"
    comps = cfg["components"]
    assert {c["platform"] for c in comps.values()} == {"sensor", "binary_sensor", "button", "number"}
    units = {f: u for f, u, _d, _m in TELE_FIELDS}
    for cid, c in comps.items():
        # every topic read is one the pile publishes; every command goes to the relay
        if "state_topic" in c:
            pile, name = topics.parse(c["state_topic"])
            assert pile == "P-1" and name in PUB, (cid, c["state_topic"])
        if "command_topic" in c:
            assert hd.parse_ctl(c["command_topic"], b"PRESS" if c["platform"] == "button" else b"16")[0] == "P-1"
        assert c["availability"] == [{"topic": topics.topic("P-1", "status"), "value_template": hd._AVAILABLE,
                                      "payload_available": "online", "payload_not_available": "offline"}]
        # the unit is the one the pile states for the field the template reads
        if "unit_of_measurement" in c:
            field = c["value_template"].split("value_json.")[1].split()[0]
            assert c["unit_of_measurement"] == units[field], cid
    assert comps["state"]["options"] == list(states.NAMES)
    assert comps["energy"]["state_class"] == "total_increasing" and comps["energy"]["device_class"] == "energy"
    spec = {a[0]: a for a in topics.CMD_BY_OP["set_limit"][1]}["amps"]
    assert (comps["current_limit"]["min"], comps["current_limit"]["max"]) == (spec[3], spec[4])
    for key in ("power", "session_energy", "energy", "ev_soc", "battery_soc", "premix", "deliverable"):
        assert key in comps, key
    assert hd.discovery_topic("P-1") == "homeassistant/device/P-1/config"


def test_templates_read_the_pile_s_messages_and_null_is_unknown():
    comps = ha.normalise(json.dumps(hd.config("P1")))["components"]
    tele = topics.topic("P1", "tele")
    shown = {cid: ha.state(c, TELE) for cid, c in comps.items() if c.get("state_topic") == tele}
    assert shown == {"power": 21.5, "session_energy": 1.234, "energy": 1.234, "ev_soc": 41.0, "battery_soc": 77.5,
                     "premix": 38.5, "deliverable": 45.2, "current_limit": 53.0}
    # a reading the pile could not take goes out as null: unknown, not 0, not an error
    assert all(ha.state(c, TELE_NULLS) is None for c in comps.values() if c.get("state_topic") == tele)
    st = {cid: ha.state(c, STATE) for cid, c in comps.items() if c.get("state_topic") == topics.topic("P1", "state")}
    assert st == {"state": "fault", "fault": "ON", "faults": "h2_leak, door_open", "limit_by": "interlock"}
    ack = json.dumps({"id": "x", "op": "start", "ok": False, "reason": "refused", "detail": "pile is in fault"})
    assert ha.state(comps["last_command"], ack) == "start: refused"
    cfg = ha.normalise(json.dumps(hd.config("P1")))
    assert ha.available(cfg, topics.topic("P1", "status"), '{"online": true, "seq": 1, "boot": 2}') is True
    assert ha.available(cfg, topics.topic("P1", "status"), '{"online": false, "seq": 0, "boot": 2}') is False


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x" * 33, "p 1", "$SYS"])
def test_a_bad_pile_id_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="bad pile id"):
        hd.config(bad)
    with pytest.raises(ValueError, match="bad pile id"):
        hd.discovery_topic(bad)


@pytest.mark.parametrize("topic,payload,want", [
    ("h2pile/ctl/P1/start", b"PRESS", ("P1", "start", {})),
    ("h2pile/ctl/P1/stop", b"PRESS", ("P1", "stop", {})),
    ("h2pile/ctl/P1/set_limit", b"16", ("P1", "set_limit", {"amps": 16})),
    ("h2pile/ctl/P1/set_limit", b" 12.5\n", ("P1", "set_limit", {"amps": 12.5})),
    ("h2pile/ctl/P1/set_limit", b"0", ("P1", "set_limit", {"amps": 0})),
    ("h2pile/ctl/P1/enable", b"true", ("P1", "start", {})),
    ("h2pile/ctl/P1/enable", b"False", ("P1", "stop", {})),
    ("h2pile/v1/P1/cmd", b"x", None),
])
def test_relay_requests(topic, payload, want):
    assert hd.parse_ctl(topic, payload) == want


@pytest.mark.parametrize("topic,payload,why", [
    ("h2pile/ctl/P1/set_limit", b"lots", "'lots' is not a number of amps"),
    ("h2pile/ctl/P1/set_limit", b"501", "outside 0..500 A"),
    ("h2pile/ctl/P1/set_limit", b"-1", "outside 0..500 A"),
    ("h2pile/ctl/P1/set_limit", b"nan", "outside"),
    ("h2pile/ctl/P1/set_limit", b"inf", "outside"),
    ("h2pile/ctl/P1/enable", b"yes please", "is not true or false"),
    ("h2pile/ctl/P1/start", b"", "empty payload"),
    ("h2pile/ctl/P1/stop", b"  ", "empty payload"),
    ("h2pile/ctl/P1/start", b"x" * 65, "payload of 65 bytes"),
    ("h2pile/ctl/P1/start", b"\xff\xfe", "not UTF-8"),
    ("h2pile/ctl/P1/reset", b"PRESS", "not a relay topic"),
    ("h2pile/ctl/P1/start/x", b"PRESS", "not a relay topic"),
    ("h2pile/ctl/a+b/start", b"PRESS", "not a relay topic"),
])
def test_a_bad_request_is_refused_naming_topic_and_reason(topic, payload, why):
    with pytest.raises(ValueError) as e:
        hd.parse_ctl(topic, payload)
    assert topic in str(e.value) and why in str(e.value), str(e.value)


class Out:
    """What the bridge publishes and logs."""

    def __init__(self):
        self.pubs: list[tuple[str, str, int, bool]] = []
        self.logs: list[str] = []

    def publish(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        self.pubs.append((topic, payload, qos, retain))


def _bridge(now=1_800_000_000.0):
    out = Out()
    return Bridge(SECRET, out.publish, version="9.9", log=out.logs.append, clock=lambda: now), out


def test_bridge_publishes_discovery_once_per_change_and_on_home_assistant_s_birth():
    b, out = _bridge()
    status = json.dumps({"online": True, "seq": 1, "boot": 4}).encode()
    b.feed(topics.topic("P1", "status"), status, retain=True)
    assert [(t, q, r) for t, _p, q, r in out.pubs] == [("homeassistant/device/P1/config", 1, True)]
    b.feed(topics.topic("P1", "status"), status)  # nothing new: nothing sent
    b.feed(topics.topic("P1", "tele"), TELE.encode())
    assert len(out.pubs) == 1
    b.feed(topics.topic("P1", "meta"), json.dumps({"fw": "2.0", "board": "rp2_pico_w", "seq": 2, "boot": 4}).encode())
    assert len(out.pubs) == 2 and json.loads(out.pubs[-1][1])["dev"]["sw_version"] == "2.0"
    b.feed(topics.topic("P2", "status"), status)
    b.feed("homeassistant/status", b"offline")
    assert len(out.pubs) == 3
    b.feed("homeassistant/status", b"online")
    assert sorted(t for t, *_ in out.pubs[3:]) == ["homeassistant/device/P1/config", "homeassistant/device/P2/config"]
    # after a reconnect the broker may have lost the retained discovery: sent again
    b.connected()
    b.feed(topics.topic("P1", "status"), status, retain=True)
    assert out.pubs[-1][0] == "homeassistant/device/P1/config" and len(out.pubs) == 6
    # a message to the pile (cmd), not from it, makes no pile appear
    b.feed(topics.topic("P9", "cmd"), b"{}")
    b.feed("homeassistant/status", b"online")
    assert {t for t, *_ in out.pubs[6:]} == {"homeassistant/device/P1/config", "homeassistant/device/P2/config"}


def test_bridge_signs_each_request_with_the_pile_s_key():
    b, out = _bridge()
    b.feed(topics.topic("P1", "status"), b'{"online": true, "seq": 1, "boot": 4}')
    out.pubs.clear()
    b.feed("h2pile/ctl/P1/set_limit", b"32")
    [(topic, text, qos, retain)] = out.pubs
    assert topic == topics.topic("P1", "cmd") and qos == topics.qos("cmd") and retain is False
    cmd, why = signer.verify_command(text.encode(), keys.cmd_key(SECRET, "P1"), 1_800_000_001, [], pile_id="P1")
    assert why == "ok" and cmd["op"] == "set_limit" and cmd["args"] == {"amps": 32}
    assert cmd["expires"] - cmd["issued"] == 30
    # another pile's key does not verify it
    assert signer.verify_command(text.encode(), keys.cmd_key(SECRET, "P2"), 1_800_000_001, [], pile_id="P1")[0] is None
    # the pile's ack is logged against the command
    b.feed(topics.topic("P1", "cmd/ack"), json.dumps({"id": cmd["id"], "op": "set_limit", "ok": False,
                                                      "reason": "refused", "detail": "pile is in estop"}).encode())
    assert out.logs[-1].endswith("rejected: refused (pile is in estop)") and cmd["id"] in out.logs[-1]


@pytest.mark.parametrize("topic,payload,retain,why", [
    ("h2pile/ctl/P1/stop", b"PRESS", True, "retained request ignored"),
    ("h2pile/ctl/P1/set_limit", b"999", False, "outside 0..500 A"),
    ("h2pile/ctl/P7/stop", b"PRESS", False, "no pile P7 has published its status"),
    ("h2pile/ctl/P1/start", b"", False, "empty payload"),
])
def test_bridge_drops_what_it_must_not_sign(topic, payload, retain, why):
    b, out = _bridge()
    b.feed(topics.topic("P1", "status"), b'{"online": true, "seq": 1, "boot": 4}')
    out.pubs.clear()
    b.feed(topic, payload, retain)
    assert out.pubs == [] and why in out.logs[-1] and topic in out.logs[-1], out.logs


def test_bridge_names_a_pile_message_it_can_not_read():
    b, out = _bridge()
    b.feed(topics.topic("P1", "meta"), b"not json")
    b.feed(topics.topic("P1", "status"), b"[1, 2]")
    assert out.pubs == [] and len(out.logs) == 2
    assert all(topics.topic("P1", n) in ln for ln, n in zip(out.logs, ("meta", "status")))
    b.feed(topics.topic("P1", "status"), b"")  # a cleared retained status: nothing to say
    assert out.pubs == [] and len(out.logs) == 2


def test_cli_refuses_bad_arguments_and_an_unreachable_broker(capsys, monkeypatch):
    monkeypatch.delenv("H2PILE_FLEET_SECRET", raising=False)
    assert cli.main(["hass", "--broker", "127.0.0.1:%d" % free_port()]) == 2
    assert "fleet secret" in capsys.readouterr().err
    monkeypatch.setenv("H2PILE_FLEET_SECRET", SECRET)
    assert cli.main(["hass", "--broker", "nowhere:port"]) == 2
    assert "--broker" in capsys.readouterr().err
    assert cli.main(["hass", "--ttl", "0"]) == 2
    assert "--ttl" in capsys.readouterr().err
    assert cli.main(["hass", "--discovery-prefix", "home/#"]) == 2
    assert "--discovery-prefix" in capsys.readouterr().err
    assert cli.main(["hass", "--broker", "127.0.0.1:%d" % free_port()]) == 3
    assert "cannot connect" in capsys.readouterr().err


@pytest.mark.broker
def test_cli_says_when_the_broker_refuses_the_login(tmp_path, capsys, monkeypatch):
    from tests.helpers.mqtt_broker import Broker

    monkeypatch.setenv("H2PILE_FLEET_SECRET", SECRET)
    monkeypatch.setenv("H2PILE_MQTT_PASSWORD", "wrong")
    with Broker(tmp_path, anonymous=False) as b:
        assert cli.main(["hass", "--broker", "127.0.0.1:%d" % b.port, "--user", "nobody"]) == 3
    err = capsys.readouterr().err
    assert "refused the login" in err and "127.0.0.1:%d" % b.port in err, err
