"""OCPP 2.0.1: the pile is a charging station with one EVSE (id 1) and one
connector (id 1).

To the CSMS: BootNotification (model/vendor from the config, firmware from
meta, reason from meta.reset), StatusNotification, Heartbeat, and
TransactionEvent Started/Updated/Ended with meter values (energy register
in Wh, power in W, current in A, EV SOC in %); transactionId is
"<boot>-<session number>", seqNo counts per transaction from 0.

From the CSMS (each a signed h2pile command; Accepted only if the pile's
ack says ok, else Rejected with the pile's reason in statusInfo):
RequestStartTransaction -> start auth=<idToken> [limit_a from its profile],
RequestStopTransaction -> stop, SetChargingProfile -> set_limit amps=,
ChangeAvailability -> shutdown (Inoperative) / wake (Operative), Reset ->
reset, TriggerMessage -> resend_meta (BootNotification, StatusNotification)
or answered by the gateway (Heartbeat, MeterValues, TransactionEvent),
GetVariables/SetVariables (host_tools.gateway.variables).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from host_tools.gateway import variables
from host_tools.gateway.adapter import Base, profile_limit, status_info
from host_tools.gateway.agent import iso
from host_tools.gateway.bridge import Ack

STATUS = {"available": "Available", "occupied": "Occupied", "finishing": "Occupied", "faulted": "Faulted",
          "unavailable": "Unavailable"}
# The bill's stop reason (h2p.session.REASONS) -> stoppedReason, triggerReason
ENDED = {"ev_stop": ("StoppedByEV", "ChargingStateChanged"), "unplug": ("EVDisconnected", "EVDeparted"),
         "user": ("Remote", "RemoteStop"), "auth": ("DeAuthorized", "Deauthorized"),
         "fault": ("Other", "AbnormalCondition"), "estop": ("EmergencyStop", "AbnormalCondition"),
         "power_loss": ("PowerLoss", "AbnormalCondition"), "reboot": ("Reboot", "AbnormalCondition"),
         "shutdown": ("Remote", "RemoteStop")}
BOOT_REASON = {"power_on": "PowerUp", "watchdog": "Watchdog", "soft": "LocalReset", "hard": "LocalReset",
               "crash": "ApplicationReset", "maintenance_reset": "RemoteReset"}
CONTEXT = {"started": "Transaction.Begin", "updated": "Sample.Periodic", "ended": "Transaction.End"}
EVSE = {"id": 1, "connector_id": 1}


def _answer(ack: Ack) -> dict[str, Any]:
    return {"status": "Accepted"} if ack.ok else {"status": "Rejected", "status_info": status_info(ack)}


def sampled(item: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = "Trigger" if item.get("trigger") else CONTEXT[item["t"]]
    out = [{"value": item["reg"], "context": ctx, "measurand": "Energy.Active.Import.Register",
            "unit_of_measure": {"unit": "Wh"}}]
    for key, measurand, unit in (("w", "Power.Active.Import", "W"), ("a", "Current.Import", "A"),
                                 ("soc", "SoC", "Percent")):
        if key in item:
            out.append({"value": item[key], "context": ctx, "measurand": measurand, "unit_of_measure": {"unit": unit}})
    return out


class Ocpp201(Base, ChargePoint):
    subprotocol = "ocpp2.0.1"
    actions = frozenset(a.value for a in Action)

    # ---- to the CSMS ----------------------------------------------------------------
    async def boot(self, reason: str | None) -> tuple[str, int]:
        meta = self.agent.meta or {}
        station = {"model": self.link.cfg.model[:20], "vendor_name": self.link.cfg.vendor[:50]}
        if isinstance(meta.get("fw"), str):
            station["firmware_version"] = meta["fw"][:50]
        r = await self.request(call.BootNotification(
            charging_station=station, reason=reason or BOOT_REASON.get(meta.get("reset"), "Unknown")))
        return r.status, int(r.interval)

    async def send_status(self, st: str) -> None:
        await self.request(call.StatusNotification(timestamp=iso(), connector_status=STATUS[st], evse_id=1,
                                                   connector_id=1))

    async def heartbeat(self) -> None:
        await self.request(call.Heartbeat())

    async def deliver(self, item: dict[str, Any]) -> bool:
        kind = item["t"]
        info: dict[str, Any] = {"transaction_id": item["tx"]}
        token = item.get("token")
        if kind == "started":
            info["charging_state"] = "Charging"
            if item.get("rsid") is not None:
                info["remote_start_id"] = item["rsid"]
            trigger = "RemoteStart" if item.get("rsid") is not None else "Authorized" if token else "EVDetected"
        elif kind == "updated":
            info["charging_state"] = "Charging"
            trigger = "Trigger" if item.get("trigger") else "MeterValuePeriodic"
        else:
            stopped, trigger = ENDED.get(item.get("reason") or "", ("Other", "AbnormalCondition"))
            info["stopped_reason"] = stopped
        await self.request(call.TransactionEvent(
            event_type=kind.capitalize(), timestamp=item["ts"], trigger_reason=trigger, seq_no=item["seq"],
            transaction_info=info, meter_value=[{"timestamp": item["ts"], "sampled_value": sampled(item)}],
            evse=EVSE if kind == "started" else None,
            id_token={"id_token": token, "type": "Central"} if token and kind != "updated" else None))
        return False

    # ---- from the CSMS --------------------------------------------------------------
    @on(Action.request_start_transaction)
    async def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None,
                               charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        token = id_token.get("id_token") or ""
        args: dict[str, Any] = {"auth": token} if token else {}
        if charging_profile is not None:
            amps, why = profile_limit((charging_profile.get("charging_schedule") or [None])[0])
            if amps is None:
                return call_result.RequestStartTransaction(
                    status="Rejected", status_info=status_info(Ack(False, why, "chargingProfile")))
            args["limit_a"] = amps
        # Pending before the command: its session_start can come right after the ack.
        self.agent.remote_start(token, remote_start_id)
        ack = await self.bridge.send(self.id, "start", args)
        if not ack.ok:
            self.agent.remote_start(None, None)
        return call_result.RequestStartTransaction(**_answer(ack))

    @on(Action.request_stop_transaction)
    async def on_request_stop(self, transaction_id: str, **_: Any) -> Any:
        tx = self.agent.active_tx()
        if tx is None or tx["id"] != transaction_id:
            return call_result.RequestStopTransaction(
                status="Rejected", status_info=status_info(Ack(False, "UnknownTransaction", transaction_id)))
        return call_result.RequestStopTransaction(**_answer(await self.bridge.send(self.id, "stop")))

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        amps, why = profile_limit((charging_profile.get("charging_schedule") or [None])[0])
        if amps is None:
            return call_result.SetChargingProfile(status="Rejected", status_info=status_info(Ack(False, why)))
        return call_result.SetChargingProfile(**_answer(await self.bridge.send(self.id, "set_limit",
                                                                              {"amps": amps})))

    @on(Action.change_availability)
    async def on_change_availability(self, operational_status: str, **_: Any) -> Any:
        down = operational_status == "Inoperative"
        if down and self.agent.active_tx() is not None:
            return call_result.ChangeAvailability(
                status="Rejected", status_info=status_info(Ack(False, "TxInProgress", "stop the transaction first")))
        ack = await self.bridge.send(self.id, "shutdown" if down else "wake")
        if ack.ok:
            self.agent.set_inoperative(down)
        return call_result.ChangeAvailability(**_answer(ack))

    @on(Action.reset)
    async def on_reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(**_answer(await self.bridge.send(self.id, "reset")))

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        local = {"Heartbeat": "heartbeat", "MeterValues": "meter", "TransactionEvent": "meter"}
        if requested_message in local:
            self.link.trigger(local[requested_message])
            return call_result.TriggerMessage(status="Accepted")
        if requested_message not in ("BootNotification", "StatusNotification"):
            return call_result.TriggerMessage(status="NotImplemented")
        ack = await self.bridge.send(self.id, "resend_meta")
        if ack.ok:
            self.link.trigger("boot" if requested_message == "BootNotification" else "status")
        return call_result.TriggerMessage(**_answer(ack))

    @on(Action.get_variables)
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        out = []
        for g in get_variable_data:
            comp, var = g.get("component") or {}, g.get("variable") or {}
            res: dict[str, Any] = {"component": comp, "variable": var}
            v = variables.find(comp.get("name"), var.get("name"))
            if isinstance(v, str):
                res["attribute_status"] = v
            elif g.get("attribute_type", "Actual") != "Actual":
                res["attribute_status"] = "NotSupportedAttributeType"
            else:
                value = variables.read(v, self.agent, self.link.cfg)
                res["attribute_status"] = "Accepted" if value is not None else "Rejected"
                if value is not None:
                    res["attribute_value"] = value
                else:
                    res["attribute_status_info"] = {"reason_code": "NoValue"}
            out.append(res)
        return call_result.GetVariables(get_variable_result=out)

    @on(Action.set_variables)
    async def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        out = []
        for s in set_variable_data:
            comp, var = s.get("component") or {}, s.get("variable") or {}
            res: dict[str, Any] = {"component": comp, "variable": var}
            v = variables.find(comp.get("name"), var.get("name"))
            if isinstance(v, str):
                res["attribute_status"] = v
            elif s.get("attribute_type", "Actual") != "Actual":
                res["attribute_status"] = "NotSupportedAttributeType"
            else:
                ack = await variables.write(v, self.agent, self.bridge, str(s.get("attribute_value")))
                res.update({"attribute_status": "Accepted"} if ack.ok else
                           {"attribute_status": "Rejected", "attribute_status_info": status_info(ack)})
            out.append(res)
        return call_result.SetVariables(set_variable_result=out)
