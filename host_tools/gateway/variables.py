"""The few settings a CSMS may read or write (2.0.1 GetVariables/
SetVariables by component and variable; 1.6 GetConfiguration/
ChangeConfiguration by key). Gateway settings are kept per pile in the
gateway's store; the pile's current limit is a signed set_limit command;
the rest is what the pile last published, read-only.

    component/variable                    1.6 key                    rw  source
    OCPPCommCtrlr/HeartbeatInterval       HeartbeatInterval          rw  gateway (s)
    SampledDataCtrlr/TxUpdatedInterval    MeterValueSampleInterval   rw  gateway (s)
    H2Pile/LimitA                         H2PileLimitA               rw  state.limit_a / set_limit amps=
    H2Pile/State                          H2PileState                r   state.state
    H2Pile/PremixL                        H2PilePremixL              r   tele.premix_l
    H2Pile/DeliverableKWh                 H2PileDeliverableKWh       r   tele.deliver_kwh
    H2Pile/BatterySoC                     H2PileBatterySoC           r   tele.bat_soc
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host_tools.gateway.agent import Agent
from host_tools.gateway.bridge import Ack, Bridge


def _fmt(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclass(frozen=True)
class Var:
    component: str
    name: str
    key16: str
    read: Callable[[Agent, Any], object]  # (agent, gateway defaults) -> value
    setting: str | None = None  # a gateway setting (per pile), integer seconds
    op: tuple[str, str] | None = None  # a pile command: (op, argument)


VARS = (
    Var("OCPPCommCtrlr", "HeartbeatInterval", "HeartbeatInterval",
        lambda a, d: a.setting("heartbeat_s", d.heartbeat_s), setting="heartbeat_s"),
    Var("SampledDataCtrlr", "TxUpdatedInterval", "MeterValueSampleInterval",
        lambda a, d: a.meter_interval_s, setting="meter_interval_s"),
    Var("H2Pile", "LimitA", "H2PileLimitA", lambda a, d: (a.state or {}).get("limit_a"), op=("set_limit", "amps")),
    Var("H2Pile", "State", "H2PileState", lambda a, d: (a.state or {}).get("state")),
    Var("H2Pile", "PremixL", "H2PilePremixL", lambda a, d: (a.tele or {}).get("premix_l")),
    Var("H2Pile", "DeliverableKWh", "H2PileDeliverableKWh", lambda a, d: (a.tele or {}).get("deliver_kwh")),
    Var("H2Pile", "BatterySoC", "H2PileBatterySoC", lambda a, d: (a.tele or {}).get("bat_soc")),
)


def find(component: str | None = None, name: str | None = None, key16: str | None = None) -> Var | str:
    """The variable, or why not: 'UnknownComponent' / 'UnknownVariable'."""
    if key16 is not None:
        for v in VARS:
            if v.key16 == key16:
                return v
        return "UnknownVariable"
    if not any(v.component == component for v in VARS):
        return "UnknownComponent"
    for v in VARS:
        if v.component == component and v.name == name:
            return v
    return "UnknownVariable"


def read(v: Var, agent: Agent, defaults: Any) -> str | None:
    return _fmt(v.read(agent, defaults))


async def write(v: Var, agent: Agent, bridge: Bridge, value: str) -> Ack:
    """Set v to value (text, as OCPP carries it)."""
    if v.setting is None and v.op is None:
        return Ack(False, "read only")
    try:
        x = float(value)
    except ValueError:
        return Ack(False, "not a number", repr(value))
    if v.setting is not None:
        if not x.is_integer() or not 0 <= x <= 86400:
            return Ack(False, "out of range", "whole seconds 0..86400")
        agent.set_setting(v.setting, int(x))
        return Ack(True, "ok")
    assert v.op is not None
    return await bridge.send(agent.pile, v.op[0], {v.op[1]: int(x) if x.is_integer() else x})
