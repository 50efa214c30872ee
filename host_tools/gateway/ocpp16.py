"""OCPP 1.6J: the pile is a charge point with one connector (id 1).

To the CSMS: BootNotification, StatusNotification (Available, Charging,
Finishing, Faulted, Unavailable), Heartbeat, StartTransaction (meterStart:
the gateway's register, Wh), MeterValues during it, StopTransaction
(meterStop = meterStart + the bill's energy, reason, transactionData).
The transactionId the CSMS gives in StartTransaction's answer is kept in
the gateway's store, so a StopTransaction still queued across a gateway
restart carries it.

From the CSMS, as for 2.0.1 (host_tools.gateway.ocpp201), with 1.6's
names: RemoteStartTransaction, RemoteStopTransaction, SetChargingProfile,
ChangeAvailability, Reset, TriggerMessage, GetConfiguration and
ChangeConfiguration. 1.6 answers carry no reason: a refusal's reason is
in the gateway's log.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from host_tools.gateway import variables
from host_tools.gateway.adapter import Base, profile_limit
from host_tools.gateway.agent import iso
from host_tools.gateway.bridge import Ack

log = logging.getLogger("gateway")

STATUS = {"available": "Available", "occupied": "Charging", "finishing": "Finishing", "faulted": "Faulted",
          "unavailable": "Unavailable"}
REASON = {"ev_stop": "Local", "unplug": "EVDisconnected", "user": "Remote", "auth": "DeAuthorized",
          "fault": "Other", "estop": "EmergencyStop", "power_loss": "PowerLoss", "reboot": "Reboot",
          "shutdown": "Remote"}
NO_TAG = "h2pile-local"  # idTag of a session started at the pile without a token (idTag is required)
ID_TAG_MAX = 20


def _status(ack: Ack, refused: str = "Rejected") -> str:
    return "Accepted" if ack.ok else refused


def sampled(item: dict[str, Any], context: str) -> list[dict[str, Any]]:
    out = [{"value": "%.1f" % item["reg"], "context": context, "measurand": "Energy.Active.Import.Register",
            "unit": "Wh"}]
    for key, measurand, unit in (("w", "Power.Active.Import", "W"), ("a", "Current.Import", "A"),
                                 ("soc", "SoC", "Percent")):
        if key in item:
            out.append({"value": "%.1f" % item[key], "context": context, "measurand": measurand, "unit": unit})
    return out


class Ocpp16(Base, ChargePoint):
    subprotocol = "ocpp1.6"
    actions = frozenset(a.value for a in Action)

    def _tag(self, token: str | None) -> str:
        return (token or NO_TAG)[:ID_TAG_MAX]

    # ---- to the CSMS ----------------------------------------------------------------
    async def boot(self, reason: str | None) -> tuple[str, int]:
        meta = self.agent.meta or {}
        r = await self.request(call.BootNotification(
            charge_point_model=self.link.cfg.model[:20], charge_point_vendor=self.link.cfg.vendor[:20],
            firmware_version=meta["fw"][:50] if isinstance(meta.get("fw"), str) else None))
        return r.status, int(r.interval)

    async def send_status(self, st: str) -> None:
        await self.request(call.StatusNotification(connector_id=1, status=STATUS[st], timestamp=iso(),
                                                   error_code="OtherError" if st == "faulted" else "NoError"))

    async def heartbeat(self) -> None:
        await self.request(call.Heartbeat())

    async def deliver(self, item: dict[str, Any]) -> bool:
        kind = item["t"]
        ids = self.agent.st["csms_tx"]
        if kind == "started":
            r = await self.request(call.StartTransaction(connector_id=1, id_tag=self._tag(item.get("token")),
                                                         meter_start=int(round(item["reg"])), timestamp=item["ts"]))
            ids[item["tx"]] = r.transaction_id
            status = (r.id_tag_info or {}).get("status")
            if status != "Accepted":
                log.warning("%s: the CSMS answered StartTransaction %s with idTagInfo %s", self.id, item["tx"], status)
            return True
        tid = ids.get(item["tx"])
        if tid is None:
            log.error("%s: no CSMS transaction id for %s (its StartTransaction was refused): %s dropped", self.id,
                      item["tx"], kind)
            return False
        if kind == "updated":
            await self.request(call.MeterValues(
                connector_id=1, transaction_id=tid,
                meter_value=[{"timestamp": item["ts"],
                              "sampled_value": sampled(item, "Trigger" if item.get("trigger") else "Sample.Periodic")}]))
            return False
        await self.request(call.StopTransaction(
            meter_stop=int(round(item["reg"])), timestamp=item["ts"], transaction_id=tid,
            reason=REASON.get(item.get("reason") or "", "Other"), id_tag=self._tag(item.get("token")),
            transaction_data=[{"timestamp": item["ts"], "sampled_value": sampled(item, "Transaction.End")}]))
        del ids[item["tx"]]
        return True

    # ---- from the CSMS --------------------------------------------------------------
    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                              charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        args: dict[str, Any] = {"auth": id_tag} if id_tag else {}
        if charging_profile is not None:
            amps, why = profile_limit(charging_profile.get("charging_schedule"))
            if amps is None:
                log.warning("%s: RemoteStartTransaction refused: its charging profile: %s", self.id, why)
                return call_result.RemoteStartTransaction(status="Rejected")
            args["limit_a"] = amps
        self.agent.remote_start(id_tag, None)
        ack = await self.bridge.send(self.id, "start", args)
        if not ack.ok:
            self.agent.remote_start(None, None)
        return call_result.RemoteStartTransaction(status=_status(ack))

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int, **_: Any) -> Any:
        tx = self.agent.active_tx()
        if tx is None or self.agent.st["csms_tx"].get(tx["id"]) != transaction_id:
            log.warning("%s: RemoteStopTransaction for %s, which is not the running transaction", self.id,
                        transaction_id)
            return call_result.RemoteStopTransaction(status="Rejected")
        return call_result.RemoteStopTransaction(status=_status(await self.bridge.send(self.id, "stop")))

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any],
                                      **_: Any) -> Any:
        amps, why = profile_limit(cs_charging_profiles.get("charging_schedule"))
        if amps is None:
            log.warning("%s: SetChargingProfile refused: %s", self.id, why)
            return call_result.SetChargingProfile(status="NotSupported" if why == "UnsupportedRateUnit"
                                                  else "Rejected")
        ack = await self.bridge.send(self.id, "set_limit", {"amps": amps})
        return call_result.SetChargingProfile(status=_status(ack))

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        down = type == "Inoperative"
        if down and self.agent.active_tx() is not None:
            log.warning("%s: ChangeAvailability Inoperative refused: a transaction is running", self.id)
            return call_result.ChangeAvailability(status="Rejected")
        ack = await self.bridge.send(self.id, "shutdown" if down else "wake")
        if ack.ok:
            self.agent.set_inoperative(down)
        return call_result.ChangeAvailability(status=_status(ack))

    @on(Action.reset)
    async def on_reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status=_status(await self.bridge.send(self.id, "reset")))

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        if requested_message in ("Heartbeat", "MeterValues"):
            self.link.trigger("heartbeat" if requested_message == "Heartbeat" else "meter")
            return call_result.TriggerMessage(status="Accepted")
        if requested_message not in ("BootNotification", "StatusNotification"):
            return call_result.TriggerMessage(status="NotImplemented")
        ack = await self.bridge.send(self.id, "resend_meta")
        if ack.ok:
            self.link.trigger("boot" if requested_message == "BootNotification" else "status")
        return call_result.TriggerMessage(status=_status(ack))

    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        found, unknown = [], []
        for k in key if key else [v.key16 for v in variables.VARS]:
            v = variables.find(key16=k)
            if isinstance(v, str):
                unknown.append(k)
                continue
            value = variables.read(v, self.agent, self.link.cfg)
            row: dict[str, Any] = {"key": k, "readonly": v.setting is None and v.op is None}
            if value is not None:
                row["value"] = value
            found.append(row)
        return call_result.GetConfiguration(configuration_key=found, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        v = variables.find(key16=key)
        if isinstance(v, str):
            return call_result.ChangeConfiguration(status="NotSupported")
        ack = await variables.write(v, self.agent, self.bridge, value)
        if not ack.ok:
            log.warning("%s: ChangeConfiguration %s=%s refused: %s", self.id, key, value, ack.text())
        return call_result.ChangeConfiguration(status=_status(ack))
