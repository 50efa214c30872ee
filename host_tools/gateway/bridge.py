"""CSMS requests become signed h2pile commands; the pile's cmd/ack decides
the answer. The gateway holds each pile's command key, derived from the
fleet secret as `h2pile keys` does (h2p.keys).

send() -> Ack: ok only if the pile's ack says ok; otherwise the pile's
reason and detail, or the gateway's own when no ack could come: "offline"
(the pile's status says so: nothing is sent), "no ack" (none within
cmd_timeout_s). A refusal the pile says to try again ("no memory", "busy",
"issued before boot") is retried twice, each time as a new command.

The gateway does not pre-check a command's arguments: the pile is the one
judge of what it accepts (h2p.sign.check_args runs there), and its refusal
("bad args" and the argument) is what goes back to the CSMS. So the
envelope is signed here with h2p.sign's canonical form directly, not with
h2p.signer.sign_command, which refuses out-of-range arguments itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from h2p import keys as _keys
from h2p import sign, signer, topics

log = logging.getLogger("gateway")

TTL_S = 30
# Refusals that a new command, a little later, gets past: reason -> wait (s).
# The pile refuses what was signed in the second of its boot; it takes one
# command a second over its burst.
AGAIN = {"issued before boot": 1.1, "no memory": 0.5, "busy": 1.1}
RETRIES = 2


@dataclass(frozen=True)
class Ack:
    ok: bool
    reason: str
    detail: str = ""

    def text(self) -> str:
        return self.reason + (": " + self.detail if self.detail else "")


def signed(op: str, args: dict[str, Any], key: bytes, now: float, pile: str) -> dict[str, Any]:
    """A command envelope as h2p.signer.sign_command makes it, arguments unchecked."""
    n = os.urandom(8).hex()
    now_s = int(now)
    cmd: dict[str, Any] = {"id": "gw-%s-%d-%s" % (op, now_s, n[:8]), "op": op, "args": args, "pile": pile,
                           "issued": now_s, "expires": now_s + TTL_S, "nonce": n}
    cmd["sig"] = signer.hmac_hex(key, sign.canonical(cmd))
    return cmd


class Bridge:
    def __init__(self, fleet_secret: str, publish: Callable[[str, bytes], None],
                 online: Callable[[str], bool | None], timeout_s: float = 10.0) -> None:
        self.secret = fleet_secret
        self.publish = publish  # (topic, payload): QoS 1, not retained
        self.online = online
        self.timeout_s = timeout_s
        self._keys: dict[str, bytes] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def key(self, pile: str) -> bytes:
        k = self._keys.get(pile)
        if k is None:
            k = self._keys[pile] = sign.key_bytes(_keys.cmd_key(self.secret, pile))
        return k

    async def send(self, pile: str, op: str, args: dict[str, Any] | None = None) -> Ack:
        if not self.online(pile):
            return Ack(False, "offline", "the pile is not connected to the broker")
        for attempt in range(RETRIES + 1):
            ack = await self._once(pile, op, dict(args or {}))
            if ack.reason not in AGAIN or attempt == RETRIES:
                break
            # It just rebooted (sign again once its boot second is over), or
            # it lacked RAM or was over its command rate (docs/mqtt.md: send
            # it again): a new command, signed anew, a little later.
            await asyncio.sleep(AGAIN[ack.reason])
        log.info("%s: command %s %s -> %s", pile, op, json.dumps(args or {}), ack.text())
        return ack

    async def _once(self, pile: str, op: str, args: dict[str, Any]) -> Ack:
        cmd = signed(op, args, self.key(pile), time.time(), pile)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cmd["id"]] = fut
        try:
            self.publish(topics.topic(pile, "cmd"), json.dumps(cmd).encode())
            a = await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            return Ack(False, "no ack", "no answer from the pile within %.0f s" % self.timeout_s)
        finally:
            self._waiting.pop(cmd["id"], None)
        return Ack(a.get("ok") is True, str(a.get("reason") or "?"), str(a.get("detail") or ""))

    def on_ack(self, d: dict[str, Any]) -> None:
        """A cmd/ack from any pile: completes the command waiting for it."""
        fut = self._waiting.get(d.get("id"))  # type: ignore[arg-type]
        if fut is not None and not fut.done():
            fut.set_result(d)
