"""`h2pile cmd PILE OP [k=v ...]`: sign a command, publish it, wait for the ack.

Arguments as KEY=VALUE or as options: `h2pile cmd P1 start --auth
sponsor:acme:INV-7 --cap-kwh 30 --cap-min 90` starts a session the pile
stops at 30 kWh on its billing meter or after 90 minutes, whichever first.

The command is signed with the pile's command key: --key-file, or derived
from the fleet secret (--fleet-secret-file), or from $H2PILE_CMD_KEY /
$H2PILE_FLEET_SECRET. Exit status: 0 accepted, 1 rejected by the pile,
2 bad arguments or no key, 3 broker unreachable or refused, or no ack from
the pile before --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from h2p import keys as _keys
from h2p import sign, signer, topics
from host_tools.exitcodes import FAILED, OK, UNREACHABLE, USAGE, CliError
from host_tools.secret_args import CMD_KEY, FLEET_SECRET, MQTT_PASSWORD, add_secret, secret_from

# What send() returns, in exit codes.
EXIT_OK, EXIT_REJECTED, EXIT_TIMEOUT, EXIT_ERROR = OK, FAILED, UNREACHABLE, UNREACHABLE


def parse_broker(s: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'HOST', port 1883) -> (host, port); ValueError if bad."""
    host, _, port = s.rpartition(":")
    if not host:
        host, port = s, "1883"
    try:
        n = int(port)
        if not 0 < n < 65536:
            raise ValueError
    except ValueError:
        raise ValueError("--broker must be HOST:PORT, got %r" % s)
    return host, n


def parse_args_kv(op: str, kvs: list[str]) -> dict[str, int | float | str]:
    spec = topics.CMD_BY_OP.get(op)
    if spec is None:
        raise ValueError("unknown op %r (one of: %s)" % (op, ", ".join(c[0] for c in topics.CMD_OPS)))
    args = {a[topics.A_NAME]: a for a in spec[1]}
    out: dict[str, int | float | str] = {}
    for kv in kvs:
        if "=" not in kv:
            raise ValueError("argument %r is not KEY=VALUE" % kv)
        k, v = kv.split("=", 1)
        if k not in args:
            raise ValueError("op %s has no argument %r (has: %s)" % (op, k, ", ".join(args) or "none"))
        if k in out:
            raise ValueError("argument %s given twice" % k)
        a = args[k]
        if a[topics.A_TYPE] == "num":
            try:
                n = int(v) if v.lstrip("-").isdigit() else float(v)
            except ValueError:
                raise ValueError("argument %s=%r is not a number" % (k, v))
            # NaN fails both comparisons: named here, before the pile would refuse it
            if not a[topics.A_LO] <= n <= a[topics.A_HI]:
                raise ValueError("argument %s=%s out of range %s..%s" % (k, v, a[topics.A_LO], a[topics.A_HI]))
            out[k] = n
        else:
            out[k] = v
    r = sign.check_args(op, out)
    if r:
        raise ValueError("%s (op %s)" % (r, op))
    return out


def _key_bytes(text: str, where: str) -> bytes:
    try:
        k = sign.key_bytes(text.strip())
    except Exception:
        k = b""
    if len(k) != 32:
        raise ValueError("%s: the command key must be 64 hex characters" % where)
    return k


def command_key(args: argparse.Namespace, pile: str) -> bytes:
    """The pile's command key: --key-file/--key, else derived from
    --fleet-secret-file/--fleet-secret, else $H2PILE_CMD_KEY, else derived
    from $H2PILE_FLEET_SECRET."""
    key = secret_from(args, CMD_KEY, required=False, env=False)
    if key is not None:
        return _key_bytes(key, "--key-file " + args.key_file if args.key_file else "--key")
    secret = secret_from(args, FLEET_SECRET, required=False, env=False)
    if secret is None:
        key = os.environ.get(CMD_KEY.env, "").strip()
        if key:
            return _key_bytes(key, "$" + CMD_KEY.env)
        secret = os.environ.get(FLEET_SECRET.env, "").strip()
    if not secret:
        raise CliError("no command key: give --key-file PATH or --fleet-secret-file PATH, or set "
                       "$H2PILE_CMD_KEY or $H2PILE_FLEET_SECRET", USAGE)
    return sign.key_bytes(_keys.cmd_key(secret, pile))


def send(host: str, port: int, pile: str, cmd: dict[str, Any], user: str | None = None,
         password: str | None = None, timeout: float = 10.0,
         tls_ca: str | None = None) -> tuple[int, dict[str, Any] | str]:
    """Publish cmd, wait for its ack. -> (exit code, ack dict or error text)"""
    import paho.mqtt.client as mqtt
    ack_topic = topics.topic(pile, "cmd/ack")
    result: dict[str, Any] = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, ud: Any, flags: mqtt.ConnectFlags, rc: mqtt.ReasonCode,
                   props: mqtt.Properties | None = None) -> None:
        if getattr(rc, "is_failure", rc != 0):
            result["error"] = "broker refused connection: %s" % rc
            done.set()
            return
        c.subscribe(ack_topic, 1)

    def on_subscribe(c: mqtt.Client, ud: Any, mid: int, rcs: list[mqtt.ReasonCode],
                     props: mqtt.Properties | None = None) -> None:
        if any(getattr(r, "is_failure", False) for r in rcs):
            result["error"] = "not allowed to subscribe %s" % ack_topic
            done.set()
            return
        subscribed.set()
        c.publish(topics.topic(pile, "cmd"), json.dumps(cmd), qos=1, retain=False)

    def on_message(c: mqtt.Client, ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            a = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(a, dict) and a.get("id") == cmd["id"]:
            result["ack"] = a
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="h2pile-cmd-%d" % os.getpid())
    if user is not None:
        c.username_pw_set(user, password)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ValueError) as e:
        return EXIT_ERROR, "cannot connect to %s:%d: %s" % (host, port, e)
    c.loop_start()
    try:
        done.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    if "error" in result:
        return EXIT_ERROR, result["error"]
    if "ack" not in result:
        return EXIT_TIMEOUT, "no ack from %s within %.1f s%s" % (
            pile, timeout, "" if subscribed.is_set() else " (never subscribed)")
    return (EXIT_OK if result["ack"].get("ok") is True else EXIT_REJECTED), result["ack"]


def handler(args: argparse.Namespace) -> int:
    try:
        if not topics.valid_pile_id(args.pile):
            raise ValueError("bad pile id %r" % args.pile)
        cargs = parse_args_kv(args.op, list(args.kv) + _option_kvs(args))
        host, port = parse_broker(args.broker)
        key = command_key(args, args.pile)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    password = secret_from(args, MQTT_PASSWORD, required=False)
    for attempt in range(3):
        cmd = signer.sign_command(args.op, cargs, key, time.time(), ttl_s=args.ttl, pile=args.pile)
        code, res = send(host, port, args.pile, cmd, args.user, password, args.timeout, args.tls_ca)
        # Two refusals say "again" (docs/mqtt.md): what was signed before (or
        # in the second of) the pile's last boot, and a command the pile had
        # no RAM for at that moment. Signed again (a new command: the
        # refused one may sit in the pile's replay table), a moment later.
        why = res.get("reason") if isinstance(res, dict) else None
        if why not in ("issued before boot", "no memory") or attempt == 2:
            break
        print("h2pile cmd: %s %s; signing it again" % (args.pile, "rebooted after this command was signed"
                                                        if why == "issued before boot" else "had no memory for it"),
              file=sys.stderr)
        time.sleep(1.0)
    if isinstance(res, dict):
        print(json.dumps(res))
        return code
    raise CliError(res, code)


def _arg_names() -> list[str]:
    # every command argument, once, in h2p.cmdspec's order
    names: list[str] = []
    for a in topics.CMD_ARGS:
        if a[1] not in names:
            names.append(a[1])
    return names


def _option_kvs(args: argparse.Namespace) -> list[str]:
    # The --<argument> options, as KEY=VALUE (parse_args_kv checks them).
    return ["%s=%s" % (n, getattr(args, "arg_" + n)) for n in _arg_names()
            if getattr(args, "arg_" + n, None) is not None]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cmd", help="send a signed command to a pile and wait for the ack",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pile", help="pile id")
    p.add_argument("op", help="one of: " + ", ".join(c[0] for c in topics.CMD_OPS))
    p.add_argument("kv", nargs="*", metavar="KEY=VALUE", help="command arguments, e.g. amps=16")
    from h2p.topics_doc import ARG_DOC

    g = p.add_argument_group("command arguments as options (h2p.cmdspec; the same as KEY=VALUE)")
    for name in _arg_names():
        rows = [(a[0], a) for a in topics.CMD_ARGS if a[1] == name]
        ops, a = ", ".join(op for op, _ in rows), rows[0][1]
        rng = "%s..%s" % (a[4], a[5]) if a[2] == "num" else "%s..%s bytes" % (a[4], a[5])
        g.add_argument("--" + name.replace("_", "-"), dest="arg_" + name, metavar="X",
                       help="%s: %s (%s)" % (ops, ARG_DOC[(rows[0][0], name)], rng))
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--user", help="MQTT user (an operator account)")
    add_secret(p, MQTT_PASSWORD, "MQTT password of --user")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate file: connect with TLS")
    add_secret(p, FLEET_SECRET, "the fleet secret, to derive the pile's command key")
    add_secret(p, CMD_KEY, "the pile's command key (64 hex) instead of the fleet secret")
    p.add_argument("--ttl", type=int, default=30, help="seconds the command stays valid (default 30)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack (default 10)")
    p.set_defaults(func=handler)
    return p
