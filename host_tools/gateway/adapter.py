"""What both OCPP adapters (ocpp201, ocpp16) share, on top of the `ocpp`
package's ChargePoint, which does the framing and the schemas:

  - A frame that is not OCPP-J (not JSON, not a message array) is logged
    with the pile id and dropped; the connection stays.
  - A request for an action the gateway has no handler for is answered with
    a CallError as OCPP-J defines the codes (part 4, and table 7 of 1.6J):
    NotImplemented for an action the receiver does not know, NotSupported
    for one of the version's actions it does not support. (The package
    answers the other way round: mobilityhouse/ocpp issue #493.)
  - A call to the CSMS gives up as soon as the connection drops, instead of
    waiting out the response timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.messages import MessageType, unpack

from host_tools.gateway.bridge import Ack

if TYPE_CHECKING:
    from host_tools.gateway.link import Link

log = logging.getLogger("gateway")


class LinkDown(Exception):
    """The websocket to the CSMS closed (or the CSMS stopped answering)."""


class Base:
    """Mixed in before the version's ChargePoint."""

    id: str
    route_map: dict[str, Any]
    _ocpp_version: str
    actions: frozenset[str] = frozenset()  # the version's action names

    def setup(self, link: Link) -> None:
        self.link = link
        self.agent = link.agent
        self.bridge = link.bridge
        self.reader: asyncio.Task[None] | None = None

    async def route_message(self, raw_msg: Any) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError as e:
            log.warning("%s: malformed frame from the CSMS dropped (%s: %s): %.300r", self.id, e.code,
                        (e.details or {}).get("cause", e.description), raw_msg)
            return
        if msg.message_type_id == MessageType.Call and msg.action not in self.route_map:
            if isinstance(msg.action, str) and msg.action in self.actions:
                err: OCPPError = NotSupportedError(
                    description="Requested Action is recognized but not supported by the receiver",
                    details={"cause": "the h2pile gateway does not support %s" % msg.action})
            else:
                err = OcppNotImplemented(description="Requested Action is not known by receiver",
                                         details={"cause": "no action %.40r in OCPP %s" % (msg.action,
                                                                                         self._ocpp_version)})
            log.warning("%s: the CSMS sent %.40r: answered %s", self.id, msg.action, err.code)
            await self._send(msg.create_call_error(err).to_json())  # type: ignore[attr-defined]
            return
        await super().route_message(raw_msg)  # type: ignore[misc]

    async def request(self, payload: Any) -> Any:
        """call() the CSMS; LinkDown if the connection drops first; the
        CSMS's CallError raised as OCPPError."""
        t = asyncio.ensure_future(self.call(payload, suppress=False))  # type: ignore[attr-defined]
        waits: set[asyncio.Future[Any]] = {t}
        if self.reader is not None:
            waits.add(self.reader)
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if t not in done:
            # The connection closed; its last frame may have been this
            # answer, already handed to the call but not yet run: taking it
            # keeps the event from being sent again.
            done, _ = await asyncio.wait({t}, timeout=0.5)
        if t in done:
            try:
                return t.result()
            except asyncio.TimeoutError:
                raise LinkDown("no answer to %s within %.0f s" % (type(payload).__name__,
                                                                   self.link.cfg.call_timeout_s))
        t.cancel()
        raise LinkDown("connection closed")


def status_info(ack: Ack) -> dict[str, str]:
    """2.0.1 StatusInfoType from an ack: reasonCode is at most 20 characters."""
    out = {"reason_code": ack.reason[:20]}
    if ack.detail or len(ack.reason) > 20:
        out["additional_info"] = (ack.reason + ": " + ack.detail if len(ack.reason) > 20 else ack.detail)[:512]
    return out


def profile_limit(schedule: Any) -> tuple[float | None, str]:
    """A charging schedule (one of a profile's) -> (amps in force at its
    start, "") or (None, why not). Only a current limit is a pile command:
    a schedule in W is refused."""
    if not isinstance(schedule, dict):
        return None, "no charging schedule"
    unit = schedule.get("charging_rate_unit")
    if unit != "A":
        return None, "UnsupportedRateUnit"
    periods = schedule.get("charging_schedule_period") or []
    first = [p for p in periods if isinstance(p, dict) and p.get("start_period") == 0]
    if not first:
        return None, "no period starting at 0"
    limit = first[0].get("limit")
    if not isinstance(limit, (int, float)):
        return None, "no limit"
    return float(limit), ""
