"""One OCPP-J websocket per pile: <csms.url>/<pile id>, the OCPP version's
subprotocol, HTTP basic auth (user = pile id; security profile 2 adds TLS).

A link connects once the pile's meta is known (BootNotification carries
it), boots (BootNotification until Accepted), then, in this order, as long
as the connection lives:
  - BootNotification again when the pile rebooted or the CSMS asked;
  - StatusNotification whenever the pile's status for the CSMS changed;
  - the pile's queued events, oldest first, each deleted once the CSMS
    answered it (host_tools.gateway.store);
  - Heartbeat when nothing else went out for the heartbeat interval.

Connection failures back off from backoff_min_s, doubling to
backoff_max_s, with jitter. A refusal of the credentials (HTTP 401/403) is
logged once as an error naming the pile and the password file; a CSMS
that is down is logged once per outage; repeats go to the debug log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
import time
from typing import Any

from ocpp.exceptions import OCPPError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from host_tools.gateway.adapter import Base, LinkDown
from host_tools.gateway.agent import Agent
from host_tools.gateway.bridge import Bridge
from host_tools.gateway.config import Config
from host_tools.gateway.store import Store

log = logging.getLogger("gateway")


class Link:
    def __init__(self, cfg: Config, agent: Agent, bridge: Bridge, store: Store, adapter: type) -> None:
        self.cfg = cfg
        self.agent = agent
        self.bridge = bridge
        self.store = store
        self.adapter = adapter
        self.pile = agent.pile
        self.connected = False
        self.attempts = 0
        self.triggers: set[str] = set()  # boot, status, heartbeat, meter: asked by the CSMS
        self._ssl: ssl.SSLContext | None = None
        if cfg.security_profile == 2:
            self._ssl = ssl.create_default_context(cafile=cfg.csms_ca)

    def trigger(self, what: str) -> None:
        self.triggers.add(what)
        self.agent.wake.set()

    def heartbeat_s(self, from_csms: int) -> float:
        hb = self.agent.setting("heartbeat_s", self.cfg.heartbeat_s) or from_csms or 300
        return float(hb)

    async def run(self) -> None:
        await self.agent.seen.wait()
        delay = self.cfg.backoff_min_s
        said: str | None = None  # the kind of failure already logged
        auth = base64.b64encode(("%s:%s" % (self.pile, self.cfg.csms_passwords[self.pile])).encode()).decode()
        proto = self.adapter.subprotocol
        while True:
            self.attempts += 1
            try:
                ws = await connect(self.cfg.url_for(self.pile), subprotocols=[Subprotocol(proto)],
                                   additional_headers={"Authorization": "Basic " + auth}, ssl=self._ssl,
                                   open_timeout=10, ping_interval=30, ping_timeout=30, close_timeout=2,
                                   max_size=2 ** 20, compression=None, user_agent_header="h2pile-gateway")
            except InvalidStatus as e:
                code = e.response.status_code
                if code in (401, 403):
                    kind = "auth"
                    msg = ("%s: the CSMS refused the pile's credentials (HTTP %d): check its password in %s; "
                           "retrying with a back-off up to %.0f s" % (self.pile, code, "csms.password_file",
                                                                     self.cfg.backoff_max_s))
                else:
                    kind, msg = "http", "%s: the CSMS answered HTTP %d to the websocket upgrade" % (self.pile, code)
                said = self._say(kind, said, msg, logging.ERROR)
            except (OSError, asyncio.TimeoutError, InvalidHandshake) as e:
                said = self._say("down", said, "%s: CSMS %s unreachable (%s: %s); retrying with a back-off up to "
                                 "%.0f s" % (self.pile, self.cfg.csms_url, type(e).__name__, e,
                                             self.cfg.backoff_max_s), logging.WARNING)
            else:
                if ws.subprotocol != proto:
                    said = self._say("proto", said, "%s: the CSMS did not accept the subprotocol %s (got %r)"
                                     % (self.pile, proto, ws.subprotocol), logging.ERROR)
                    await ws.close()
                else:
                    if said:
                        log.warning("%s: connected to the CSMS again", self.pile)
                    said = None
                    delay = self.cfg.backoff_min_s
                    try:
                        await self.session(ws)
                    except (ConnectionClosed, LinkDown, OSError) as e:
                        said = self._say("lost", None, "%s: CSMS connection lost: %s" % (self.pile, e),
                                         logging.WARNING)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug or an answer nothing expected: this pile reconnects, the rest go on
                        log.exception("%s: the CSMS session failed; reconnecting", self.pile)
                        said = "bug"
                    finally:
                        self.connected = False
                        await ws.close()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.cfg.backoff_max_s)

    def _say(self, kind: str, said: str | None, msg: str, level: int) -> str:
        """Log a failure once per streak of the same kind; repeats to debug."""
        log.log(level if kind != said else logging.DEBUG, msg)
        return kind

    async def session(self, ws: ClientConnection) -> None:
        cp: Any = self.adapter(self.pile, ws, response_timeout=self.cfg.call_timeout_s)
        cp.setup(self)
        cp.reader = asyncio.create_task(cp.start())
        try:
            interval = await self._boot(cp, None)
            self.connected = True
            sent_status: str | None = None
            reboots = self.agent.reboots
            t_sent = time.monotonic()
            while True:
                self.agent.wake.clear()
                if self.agent.reboots != reboots or "boot" in self.triggers:
                    triggered = "boot" in self.triggers
                    self.triggers.discard("boot")
                    reboots = self.agent.reboots
                    interval = await self._boot(cp, "Triggered" if triggered else None)
                    sent_status = None
                st = self.agent.status()
                if st != sent_status or "status" in self.triggers:
                    self.triggers.discard("status")
                    await cp.send_status(st)
                    sent_status = st
                    t_sent = time.monotonic()
                    continue
                if "meter" in self.triggers:
                    self.triggers.discard("meter")
                    self.agent.meter_now()
                nxt = self.store.peek(self.pile)
                if nxt is not None:
                    row, item = nxt
                    try:
                        changed = await cp.deliver(item)
                    except OCPPError as e:
                        # The CSMS will never take it: keeping it would block the queue.
                        log.error("%s: the CSMS refused %s %s (seq %s) with %s: dropped", self.pile, item["t"],
                                  item["tx"], item.get("seq"), e)
                        changed = False
                    self.store.done(self.pile, row, self.agent.st if changed else None)
                    t_sent = time.monotonic()
                    continue
                due = t_sent + self.heartbeat_s(interval) - time.monotonic()
                if due <= 0 or "heartbeat" in self.triggers:
                    self.triggers.discard("heartbeat")
                    await cp.heartbeat()
                    t_sent = time.monotonic()
                    continue
                waiter = asyncio.ensure_future(self.agent.wake.wait())
                await asyncio.wait({waiter, cp.reader}, timeout=due, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if cp.reader.done():
                    raise LinkDown("connection closed")
        finally:
            cp.reader.cancel()

    async def _boot(self, cp: Any, reason: str | None) -> int:
        """BootNotification until Accepted; -> the CSMS's heartbeat interval."""
        while True:
            status, interval = await cp.boot(reason)
            if status == "Accepted":
                log.info("%s: booted at the CSMS (heartbeat %d s)", self.pile, interval)
                return interval
            wait = interval if interval > 0 else 60
            log.warning("%s: the CSMS answered BootNotification %s: again in %d s", self.pile, status, wait)
            await asyncio.wait({cp.reader}, timeout=wait)
            if cp.reader.done():
                raise LinkDown("connection closed")


def adapter_for(version: str) -> type[Base]:
    if version == "1.6":
        from host_tools.gateway.ocpp16 import Ocpp16

        return Ocpp16
    from host_tools.gateway.ocpp201 import Ocpp201

    return Ocpp201
