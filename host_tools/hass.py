"""`h2pile hass`: a fleet in Home Assistant (and evcc), from one process.

It reads every pile on the broker (h2pile/v1/+/status, meta, cmd/ack) and,
for each pile it sees, publishes retained device-based MQTT discovery on
homeassistant/device/<pile>/config: state, faults, power, session energy and
an energy total for the energy dashboard, EV and buffer battery SOC, premix
left, deliverable energy, available while the pile's status says online;
buttons to start and stop, a number for the current limit. It publishes it
again when Home Assistant says `online` on homeassistant/status, when it
reconnects to the broker, and when a pile's firmware or board changes.

Home Assistant's buttons and number (and evcc's charger, docs/operators.md)
publish plain requests on h2pile/ctl/<pile>/<action>; each becomes a command
signed with that pile's key, derived from the fleet secret as `h2pile keys`
does, and the pile's ack is logged. A retained or malformed request is
logged and dropped, never sent.

Runs until Ctrl-C. Exit status: 2 bad argument or no fleet secret, 3 broker
unreachable or the login refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from h2p import keys as _keys
from h2p import sign, signer, topics
from host_tools import hass_discovery as hd
from host_tools.cmd import parse_broker
from host_tools.exitcodes import UNREACHABLE, USAGE, CliError
from host_tools.secret_args import FLEET_SECRET, MQTT_PASSWORD, add_secret, required_secret, secret_from

# publish(topic, payload, qos, retain)
Publish = Callable[[str, str, int, bool], None]

PENDING_MAX = 256  # commands sent and not yet acked that we remember, to log their acks


def _stderr(line: str) -> None:
    print("h2pile hass: " + line, file=sys.stderr, flush=True)


class Bridge:
    """What `h2pile hass` does with each message, apart from the broker:
    feed() it every message; it calls publish() for what goes out."""

    def __init__(self, fleet_secret: str, publish: Publish, prefix: str = hd.DISCOVERY_PREFIX,
                 ttl_s: int = 30, version: str = "", log: Callable[[str], None] = _stderr,
                 clock: Callable[[], float] = time.time) -> None:
        if not fleet_secret:
            raise ValueError("the fleet secret is empty")
        self.secret = fleet_secret
        self.publish = publish
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.version = version
        self.log = log
        self.clock = clock
        self.meta: dict[str, dict[str, Any]] = {}  # pile -> its last meta ({} until one came)
        self.published: dict[str, str] = {}  # pile -> the discovery text last published
        self.pending: OrderedDict[str, tuple[str, str]] = OrderedDict()  # cmd id -> (pile, request topic)
        self._keys: dict[str, bytes] = {}
        self.lock = threading.Lock()

    # ---- in ---------------------------------------------------------------
    def feed(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self.lock:
            if topic == self.prefix + "/status":  # Home Assistant's birth and will
                if payload.strip() == hd.HA_ONLINE:
                    self.republish("Home Assistant is online")
                return
            if topic.startswith(hd.CTL_PREFIX):
                self._relay(topic, payload, retain)
                return
            p = topics.parse(topic)
            if p is None:
                return
            pile, name = p
            if name in ("status", "meta"):
                self._seen(pile, name, payload)
            elif name == "cmd/ack":
                self._ack(pile, payload)

    def connected(self) -> None:
        """After every CONNACK: the broker may have lost its retained
        messages (a restart without persistence), so discovery goes out
        again as each pile's retained status and meta come back in."""
        with self.lock:
            self.published.clear()

    def republish(self, why: str) -> None:
        piles = sorted(self.meta)
        for pile in piles:
            self._discover(pile, force=True)
        self.log("%s: discovery published again for %d pile(s)" % (why, len(piles)))

    # ---- piles ------------------------------------------------------------
    def _seen(self, pile: str, name: str, payload: bytes) -> None:
        if not payload:
            return  # a retained message being cleared
        try:
            d = json.loads(payload)
        except ValueError:
            d = None
        if not isinstance(d, dict):
            self.log("%s: %s is not a JSON object, ignored: %r" % (pile, topics.topic(pile, name), payload[:80]))
            return
        if name == "meta":
            self.meta[pile] = d
        else:
            self.meta.setdefault(pile, {})
        self._discover(pile)

    def _discover(self, pile: str, force: bool = False) -> None:
        text = json.dumps(hd.config(pile, self.meta.get(pile), self.version), separators=(",", ":"))
        if not force and self.published.get(pile) == text:
            return
        topic = hd.discovery_topic(pile, self.prefix)
        self.publish(topic, text, 1, True)
        if self.published.get(pile) is None:
            self.log("%s: discovery published on %s" % (pile, topic))
        self.published[pile] = text

    # ---- requests from Home Assistant / evcc --------------------------------
    def _relay(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            if payload:
                self.log("%s: retained request ignored (it would run again at every reconnect); "
                         "clear it with an empty retained message" % topic)
            return
        try:
            req = hd.parse_ctl(topic, payload)
        except ValueError as e:
            self.log("request ignored: %s" % e)
            return
        if req is None:
            return
        pile, op, args = req
        if pile not in self.meta:
            self.log("%s: request ignored: no pile %s has published its status on this broker" % (topic, pile))
            return
        cmd = signer.sign_command(op, args, self._key(pile), self.clock(), ttl_s=self.ttl_s, pile=pile)
        self.pending[cmd["id"]] = (pile, topic)
        while len(self.pending) > PENDING_MAX:
            self.pending.popitem(last=False)
        self.publish(topics.topic(pile, "cmd"), json.dumps(cmd), topics.qos("cmd"), False)
        self.log("%s: %s %s sent as command %s" % (topic, op, json.dumps(args), cmd["id"]))

    def _key(self, pile: str) -> bytes:
        k = self._keys.get(pile)
        if k is None:
            k = self._keys[pile] = sign.key_bytes(_keys.cmd_key(self.secret, pile))
        return k

    def _ack(self, pile: str, payload: bytes) -> None:
        try:
            a = json.loads(payload)
        except ValueError:
            return
        if not isinstance(a, dict) or a.get("id") not in self.pending:
            return  # not one of ours
        _pile, topic = self.pending.pop(a["id"])
        if a.get("ok") is True:
            self.log("%s: command %s ok" % (pile, a["id"]))
        else:
            self.log("%s: command %s (from %s) rejected: %s%s" % (
                pile, a["id"], topic, a.get("reason"), " (%s)" % a["detail"] if a.get("detail") else ""))


# ---- the process -----------------------------------------------------------

def subscriptions(prefix: str = hd.DISCOVERY_PREFIX) -> list[tuple[str, int]]:
    """What `h2pile hass` reads: the piles' status, meta and acks, Home
    Assistant's birth, and the relay topics."""
    return [(topics.PREFIX + "+/status", 1), (topics.PREFIX + "+/meta", 1), (topics.PREFIX + "+/cmd/ack", 1),
            (prefix + "/status", 1), (hd.CTL_PREFIX + "+/+", 1)]


def handler(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from host_tools.cli import version

    try:
        host, port = parse_broker(args.broker)
        if not 0 < args.ttl <= sign.MAX_TTL_S:
            raise ValueError("--ttl must be 1..%d s" % sign.MAX_TTL_S)
        if not args.discovery_prefix or any(c in args.discovery_prefix for c in "#+ "):
            raise ValueError("--discovery-prefix %r is not a topic prefix" % args.discovery_prefix)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    secret = required_secret(args, FLEET_SECRET)
    password = secret_from(args, MQTT_PASSWORD, required=False)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="h2pile-hass-%d" % os.getpid())
    bridge = Bridge(secret, lambda t, p, q, r: c.publish(t, p, q, r), prefix=args.discovery_prefix,
                    ttl_s=args.ttl, version=version())
    first = threading.Event()
    err: dict[str, str] = {}

    def on_connect(cl: mqtt.Client, ud: Any, flags: mqtt.ConnectFlags, rc: mqtt.ReasonCode,
                   props: mqtt.Properties | None = None) -> None:
        if getattr(rc, "is_failure", rc != 0):
            if not first.is_set():
                err["e"] = "broker %s:%d refused the login: %s" % (host, port, rc)
                first.set()
            else:
                _stderr("broker refused the login: %s (retrying)" % rc)
            return
        bridge.connected()
        cl.subscribe(subscriptions(args.discovery_prefix))
        _stderr("connected to %s:%d" % (host, port))
        first.set()

    def on_message(cl: mqtt.Client, ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            bridge.feed(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception as e:  # noqa: BLE001 - one bad message must not end the bridge
            _stderr("%s: %s: %s" % (msg.topic, type(e).__name__, e))

    if args.user is not None:
        c.username_pw_set(args.user, password)
    if args.tls_ca:
        c.tls_set(ca_certs=args.tls_ca)
    c.on_connect = on_connect
    c.on_message = on_message
    c.reconnect_delay_set(1, 30)
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ValueError) as e:
        raise CliError("cannot connect to %s:%d: %s" % (host, port, e), UNREACHABLE)
    c.loop_start()
    try:
        if not first.wait(args.timeout):
            raise CliError("no answer from the broker %s:%d within %.0f s" % (host, port, args.timeout), UNREACHABLE)
        if "e" in err:
            raise CliError(err["e"], UNREACHABLE)
        threading.Event().wait()  # until Ctrl-C; paho reconnects by itself meanwhile
        return 0
    finally:
        c.disconnect()
        c.loop_stop()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("hass", help="the fleet in Home Assistant: MQTT discovery, buttons as signed commands",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--user", help="MQTT user (a gateway account: `h2pile broker-config --gateway`)")
    add_secret(p, MQTT_PASSWORD, "MQTT password of --user")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate file: connect with TLS")
    add_secret(p, FLEET_SECRET, "the fleet secret, to derive each pile's command key")
    p.add_argument("--discovery-prefix", default=hd.DISCOVERY_PREFIX,
                   help="Home Assistant's discovery prefix (default %s)" % hd.DISCOVERY_PREFIX)
    p.add_argument("--ttl", type=int, default=30, help="seconds a relayed command stays valid (default 30)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the broker at start (default 10)")
    p.set_defaults(func=handler)
    return p
