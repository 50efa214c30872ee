"""A real CSMS for the gateway's tests and bench, in the test's process:
the `ocpp` package's central-system side (its ChargePoint, 2.0.1 or 1.6)
behind a websockets server on a free 127.0.0.1 port, with HTTP basic auth.

It answers what a charging station sends (boot accepted, every
transaction message recorded in arrival order), can call a station
(`await csms.call(pile, payload)`), and can go down and come back on the
same port (an outage: every connection closed, new ones refused).

    csms = Csms("2.0.1", {"P1": "a-long-password-123"})
    await csms.start() ... csms.url  ("ws://127.0.0.1:<port>/ocpp")
    await csms.wait(lambda m: m.action == "StatusNotification", 10)
    await csms.stop(); await csms.start()
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call_result as r16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call_result as r201
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from tests.helpers.mqtt_broker import free_port


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


@dataclass
class Msg:
    t: float  # time.monotonic() at arrival
    pile: str
    action: str
    payload: dict[str, Any]  # snake_case, as the ocpp package hands it over
    answered: bool = False  # its answer was sent (a connection closed in between: not)


class _Common:
    csms: Csms
    id: str

    def _rec(self, action: str, payload: dict[str, Any]) -> None:
        # A connection handles one request at a time: its answer (and the
        # after hook, which runs once the answer is sent) comes before the next.
        self.last = Msg(time.monotonic(), self.id, action, payload)
        self.csms._record(self.last)

    def _sent(self, action: str, payload: dict[str, Any]) -> None:
        self.last.answered = True
        self.csms._answered(self.id, action, payload)


class Central201(_Common, Cp201):
    @on("BootNotification")
    def boot(self, **kw: Any) -> Any:
        self._rec("BootNotification", kw)
        return r201.BootNotification(current_time=now_iso(), interval=self.csms.interval, status="Accepted")

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self._rec("StatusNotification", kw)
        return r201.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self._rec("Heartbeat", kw)
        return r201.Heartbeat(current_time=now_iso())

    @on("TransactionEvent")
    def tx_event(self, **kw: Any) -> Any:
        self._rec("TransactionEvent", kw)
        return r201.TransactionEvent()

    @after("TransactionEvent")
    def tx_event_answered(self, **kw: Any) -> None:
        self._sent("TransactionEvent", kw)


class Central16(_Common, Cp16):
    @on("BootNotification")
    def boot(self, **kw: Any) -> Any:
        self._rec("BootNotification", kw)
        return r16.BootNotification(current_time=now_iso(), interval=self.csms.interval, status="Accepted")

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self._rec("StatusNotification", kw)
        return r16.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self._rec("Heartbeat", kw)
        return r16.Heartbeat(current_time=now_iso())

    @on("StartTransaction")
    def start_tx(self, **kw: Any) -> Any:
        self._rec("StartTransaction", kw)
        return r16.StartTransaction(transaction_id=next(self.csms.tx_ids), id_tag_info={"status": "Accepted"})

    @on("MeterValues")
    def meter_values(self, **kw: Any) -> Any:
        self._rec("MeterValues", kw)
        return r16.MeterValues()

    @after("MeterValues")
    def meter_values_answered(self, **kw: Any) -> None:
        self._sent("MeterValues", kw)

    @after("StartTransaction")
    def start_tx_answered(self, **kw: Any) -> None:
        self._sent("StartTransaction", kw)

    @after("StopTransaction")
    def stop_tx_answered(self, **kw: Any) -> None:
        self._sent("StopTransaction", kw)

    @on("StopTransaction")
    def stop_tx(self, **kw: Any) -> Any:
        self._rec("StopTransaction", kw)
        return r16.StopTransaction()


class Csms:
    def __init__(self, version: str = "2.0.1", passwords: dict[str, str] | None = None, port: int | None = None,
                 interval: int = 300, record: bool = True) -> None:
        self.version = version
        self.passwords = passwords or {}
        self.port = port or free_port()
        self.url = "ws://127.0.0.1:%d/ocpp" % self.port
        self.interval = interval
        self.record = record  # False: only count (the bench's 1,000 piles)
        self.msgs: list[Msg] = []
        self.counts: dict[str, int] = {}
        self.attempts: list[tuple[float, str, bool]] = []  # (time, pile, credentials ok)
        self.cps: dict[str, Any] = {}
        self.on_msg: Any = None  # callable(Msg), e.g. the bench's latency probe
        self.on_answered: Any = None  # callable(pile, action, payload) once its answer is sent
        self.tx_ids = itertools.count(1001)
        self._server: Any = None
        self._cls = Central201 if version == "2.0.1" else Central16
        self._proto = "ocpp2.0.1" if version == "2.0.1" else "ocpp1.6"

    def _record(self, m: Msg) -> None:
        self.counts[m.action] = self.counts.get(m.action, 0) + 1
        if self.record:
            self.msgs.append(m)
        if self.on_msg is not None:
            self.on_msg(m)

    def _answered(self, pile: str, action: str, payload: dict[str, Any]) -> None:
        if self.on_answered is not None:
            self.on_answered(pile, action, payload)

    def _auth(self, connection: Any, request: Any) -> Any:
        pile = request.path.rsplit("/", 1)[-1]
        ok = False
        h = request.headers.get("Authorization", "")
        if h.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
                ok = user == pile and self.passwords.get(pile) == pw
            except ValueError:
                ok = False
        self.attempts.append((time.monotonic(), pile, ok))
        if not ok:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async def _handler(self, ws: Any) -> None:
        pile = ws.request.path.rsplit("/", 1)[-1]
        cp = self._cls(pile, ws, response_timeout=10)
        cp.csms = self
        self.cps[pile] = cp
        try:
            await cp.start()
        except ConnectionClosed:
            pass

    async def start(self) -> None:
        self._server = await serve(self._handler, "127.0.0.1", self.port, subprotocols=[self._proto],
                                   process_request=self._auth, compression=None, max_queue=None)

    async def stop(self) -> None:
        """Down: listening stops and every connection is closed."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
            self.cps.clear()

    async def call(self, pile: str, payload: Any, timeout: float = 20) -> Any:
        """Send the station a request; its answer (CallError raised)."""
        return await asyncio.wait_for(self.cps[pile].call(payload, suppress=False), timeout)

    # ---- what arrived --------------------------------------------------------------
    def find(self, action: str | None = None, pile: str | None = None, pred: Any = None,
             since: float = 0.0) -> list[Msg]:
        return [m for m in list(self.msgs) if (action is None or m.action == action)
                and (pile is None or m.pile == pile) and m.t >= since and (pred is None or pred(m.payload))]

    async def wait(self, action: str, pred: Any = None, timeout: float = 20, pile: str | None = None,
                   since: float = 0.0) -> Msg | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.find(action, pile, pred, since)
            if got:
                return got[0]
            await asyncio.sleep(0.05)
        return None

    async def connected(self, pile: str, timeout: float = 20) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pile in self.cps:
                return True
            await asyncio.sleep(0.05)
        return False
