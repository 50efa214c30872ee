"""The broker side of the gateway: paho-mqtt in its own thread, every
message handed to the asyncio loop, handled there in order.

The session is persistent (a fixed client id, clean_session off) and acks
are manual: a QoS 1 message (evt, bill, cmd/ack, state, status, meta) is
PUBACKed only after the gateway has handled it and committed what it
queued, so one that arrives while the gateway is down, or while it dies
halfway, is delivered again. tele is QoS 0: while the gateway is down it
is gone, and the next one replaces it.

Subscribes h2pile/v1/+/<name> for each name the gateway reads (the
gateway role's ACL allows h2pile/v1/#); messages from piles not in the
config are dropped (said once per pile id).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from h2p import topics
from host_tools.topic_filter import topic_filter

log = logging.getLogger("gateway")

READS = ("status", "meta", "state", "tele", "evt", "bill", "cmd/ack")

Handler = Callable[[str, str, dict[str, Any]], None]  # (pile, topic name, message)


class MqttSide:
    def __init__(self, host: str, port: int, handler: Handler, user: str | None = None,
                 password: str | None = None, tls_ca: str | None = None,
                 client_id: str = "h2pile-gateway") -> None:
        import paho.mqtt.client as mqtt

        self.host, self.port = host, port
        self.handler = handler
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.unknown: set[str] = set()
        self.bad = 0  # messages not JSON objects
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, manual_ack=True)
        if user is not None:
            self.c.username_pw_set(user, password)
        if tls_ca:
            self.c.tls_set(ca_certs=tls_ca)
        self.c.reconnect_delay_set(1, 30)
        self.c.max_inflight_messages_set(100)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message

    # ---- paho's thread -----------------------------------------------------------
    def _on_connect(self, c: Any, ud: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker %s:%d refused the gateway: %s", self.host, self.port, rc)
            return
        log.info("connected to the broker %s:%d (session present: %s)", self.host, self.port,
                 flags.session_present)
        c.subscribe([(topic_filter(name=n), topics.qos(n)) for n in READS])
        self._soon(self.connected.set)

    def _on_disconnect(self, c: Any, ud: Any, flags: Any, rc: Any, props: Any = None) -> None:
        log.warning("lost the broker %s:%d (%s); reconnecting", self.host, self.port, rc)
        self._soon(self.connected.clear)

    def _on_subscribe(self, c: Any, ud: Any, mid: int, rcs: Any, props: Any = None) -> None:
        bad = [r for r in rcs if r.is_failure]
        if bad:
            log.error("the broker refused the gateway's subscriptions %s: is its account a gateway "
                      "(h2pile broker-config --gateway)?", bad)
        else:
            self._soon(self.subscribed.set)

    def _on_message(self, c: Any, ud: Any, m: Any) -> None:
        self._soon(self._handle, m.topic, m.payload, m.mid, m.qos)

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    # ---- the asyncio loop ------------------------------------------------------
    def _handle(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        try:
            parsed = topics.parse(topic)
            if parsed is None:
                return
            pile, name = parsed
            try:
                d = json.loads(payload) if payload else None
            except ValueError:
                d = None
            if not isinstance(d, dict):
                self.bad += 1
                if payload:  # an empty payload clears a retained message: not an error
                    log.warning("%s: %s is not a JSON object: dropped", pile, name)
                return
            self.handler(pile, name, d)
        except Exception:
            # Not acked: the broker delivers it again (at the reconnect).
            log.exception("handling %s failed", topic)
            return
        if qos:
            self.c.ack(mid, qos)

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1, retain=False)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.c.connect_async(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            log.warning("broker %s:%d: %s; retrying", self.host, self.port, e)
        self.c.loop_start()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

