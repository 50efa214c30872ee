"""`h2pile gateway` against bad input, with real peers but emulated piles
(bench.gateway.Fleet: the MQTT contract, not the firmware): a real
mosquitto, the gateway in a subprocess, a CSMS on the `ocpp` package.

- An action the gateway does not know gets a CallError NotImplemented (one
  of the version's it does not support: NotSupported), never a crash.
- A malformed frame is logged with the pile id and dropped; the connection
  keeps working.
- Wrong CSMS credentials: one clear error, then a back-off (no tight loop).
- A command the pile refuses comes back Rejected with the pile's reason; a
  pile that is offline gets nothing sent and Rejected "offline".
- GetVariables/SetVariables (2.0.1), GetConfiguration (1.6).
"""

import asyncio
import dataclasses
import time

import pytest
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import call as c16
from ocpp.v201 import call as c201

from bench.gateway import PASSWORD, Fleet, GatewayProc, write_config
from tests.helpers.csms import Csms
from tests.helpers.mqtt_broker import Broker
from tests.helpers.pilewait import until

pytestmark = [pytest.mark.broker]


@dataclasses.dataclass
class FlyToTheMoon:  # an action no OCPP version has
    pass


async def _rig(tmp_path, piles, version="2.0.1", passwords=None, extra=""):
    broker = Broker(tmp_path).start()
    csms = Csms(version, passwords or dict.fromkeys(piles, PASSWORD))
    await csms.start()
    fleet = Fleet("127.0.0.1", broker.port, piles)
    gw = GatewayProc(write_config(str(tmp_path), broker.port, csms.url, piles, version=version, extra=extra))
    return broker, csms, fleet, gw


async def _close(broker, csms, fleet, gw, tmp_path):
    gw.kill(15)
    (tmp_path / "gateway.log").write_text("\n".join(gw.lines) + "\n")
    fleet.close()
    await csms.stop()
    broker.kill()


async def _bad_frames_and_refusals(tmp_path):
    rig = await _rig(tmp_path, ["p1", "p2"])
    broker, csms, fleet, gw = rig
    o = {}
    try:
        fleet.online("p1")
        fleet.online("p2")
        assert await csms.connected("p1") and await csms.wait("StatusNotification", pile="p2"), gw.lines
        cp = csms.cps["p1"]
        with pytest.raises(OcppNotImplemented) as e:
            await asyncio.wait_for(cp.call(FlyToTheMoon(), suppress=False, skip_schema_validation=True), 10)
        o["unknown"] = e.value
        with pytest.raises(NotSupportedError) as e:
            await asyncio.wait_for(cp.call(c201.ClearCache(), suppress=False), 10)
        o["unsupported"] = e.value
        for raw in ("this is not json", "[2, 5]", '{"a": 1}', "[9, \"x\", \"y\", {}]"):
            await cp._connection.send(raw)
        assert await until(lambda: len(gw.has("malformed frame")) >= 4, 10), gw.lines
        o["malformed"] = gw.has("malformed frame")
        # Still answering, on the same connection.
        o["vars"] = await csms.call("p1", c201.GetVariables(get_variable_data=[
            {"component": {"name": "H2Pile"}, "variable": {"name": "LimitA"}},
            {"component": {"name": "H2Pile"}, "variable": {"name": "Nope"}},
            {"component": {"name": "Nope"}, "variable": {"name": "LimitA"}}]))
        o["set_interval"] = await csms.call("p1", c201.SetVariables(set_variable_data=[
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
             "attribute_value": "15"},
            {"component": {"name": "H2Pile"}, "variable": {"name": "State"}, "attribute_value": "off"}]))
        # The pile's refusal, with its reason; an offline pile gets nothing.
        fleet.answer = lambda pile, cmd: (False, "refused", "pile is in cooldown")
        n_cmds = len(fleet.cmds)
        o["refused"] = await csms.call("p1", c201.RequestStartTransaction(
            id_token={"id_token": "t1", "type": "Central"}, remote_start_id=1))
        o["refused_cmd"] = fleet.cmds[n_cmds:]
        fleet.offline("p2")
        assert await csms.wait("StatusNotification", lambda p: p["connector_status"] == "Unavailable", pile="p2")
        n_cmds = len(fleet.cmds)
        o["offline"] = await csms.call("p2", c201.Reset(type="Immediate"))
        o["offline_cmds"] = [c for c in fleet.cmds[n_cmds:] if c[1] == "p2"]
        o["alive"] = gw.p.poll() is None
        o["tracebacks"] = gw.has("Traceback")
        return o
    finally:
        await _close(*rig, tmp_path)


def test_bad_frames_unknown_actions_and_refusals(tmp_path):
    o = asyncio.run(_bad_frames_and_refusals(tmp_path))
    assert o["unknown"].description == "Requested Action is not known by receiver"
    assert "FlyToTheMoon" in o["unknown"].details["cause"]
    assert "ClearCache" in o["unsupported"].details["cause"]
    assert len(o["malformed"]) == 4 and all("p1: malformed frame from the CSMS dropped" in ln
                                            for ln in o["malformed"]), o["malformed"]
    r = o["vars"].get_variable_result
    assert r[0]["attribute_status"] == "Accepted" and r[0]["attribute_value"] == "125"
    assert [x["attribute_status"] for x in r[1:]] == ["UnknownVariable", "UnknownComponent"]
    assert [x["attribute_status"] for x in o["set_interval"].set_variable_result] == ["Accepted", "Rejected"]
    assert o["refused"].status == "Rejected"
    assert o["refused"].status_info == {"reason_code": "refused", "additional_info": "pile is in cooldown"}
    (t, pile, cmd), = o["refused_cmd"]
    assert cmd["op"] == "start" and cmd["args"] == {"auth": "t1"}
    assert o["offline"].status == "Rejected" and o["offline"].status_info["reason_code"] == "offline"
    assert o["offline_cmds"] == []
    assert o["alive"] and not o["tracebacks"]


async def _wrong_credentials(tmp_path):
    # bench.gateway.write_config: backoff_min_s = 0.2, backoff_max_s = 2
    rig = await _rig(tmp_path, ["p1"], passwords={"p1": "not-the-password-at-all"})
    broker, csms, fleet, gw = rig
    try:
        fleet.online("p1")
        assert await until(lambda: len(csms.attempts) >= 1, 20), gw.lines
        t0 = csms.attempts[0][0]
        await until(lambda: time.monotonic() - t0 >= 6, 10)
        return [a for a in csms.attempts if a[0] - t0 <= 6], gw.has("refused the pile's credentials"), gw.lines
    finally:
        await _close(*rig, tmp_path)


def test_wrong_credentials_one_error_and_a_back_off(tmp_path):
    attempts, errors, lines = asyncio.run(_wrong_credentials(tmp_path))
    # 0.2, 0.4, 0.8, 1.6, 2 s apart (+-20 %): 5 or 6 in the first 6 s, not hundreds
    assert 3 <= len(attempts) <= 7 and not any(a[2] for a in attempts), attempts
    assert len(errors) == 1, lines
    assert "p1: the CSMS refused the pile's credentials (HTTP 401)" in errors[0]


async def _ocpp16_configuration(tmp_path):
    rig = await _rig(tmp_path, ["p1"], version="1.6")
    broker, csms, fleet, gw = rig
    try:
        fleet.online("p1")
        assert await csms.connected("p1"), gw.lines
        got = await csms.call("p1", c16.GetConfiguration(key=["H2PileLimitA", "NoSuchKey"]))
        changed = await csms.call("p1", c16.ChangeConfiguration(key="H2PileLimitA", value="32"))
        cmd = fleet.cmds[-1][2]
        with pytest.raises(OcppNotImplemented):
            await asyncio.wait_for(csms.cps["p1"].call(FlyToTheMoon(), suppress=False,
                                                       skip_schema_validation=True), 10)
        return got, changed, cmd
    finally:
        await _close(*rig, tmp_path)


def test_ocpp16_configuration_keys(tmp_path):
    got, changed, cmd = asyncio.run(_ocpp16_configuration(tmp_path))
    assert got.configuration_key == [{"key": "H2PileLimitA", "readonly": False, "value": "125"}]
    assert got.unknown_key == ["NoSuchKey"]
    assert changed.status == "Accepted" and cmd["op"] == "set_limit" and cmd["args"] == {"amps": 32}
