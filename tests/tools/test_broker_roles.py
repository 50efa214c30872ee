"""The generated ACL by role, against a real mosquitto: piles, operators, the
ledger, the gateway and the home account (Home Assistant, evcc) each reach
only the topics they need; `bill/ack` comes only from the ledger, a request
on h2pile/ctl/ only from the home account, and it reaches only the gateway.

mosquitto (MQTT 3.1.1) PUBACKs a denied publish and drops it, and grants
every subscription but delivers only what the subscriber may read. So a
refusal is seen as a message that does not arrive: after it, the same
client sends a probe it may send (or the feeder sends one it may read),
and the probe's arrival ends the wait; messages from one connection reach a
subscriber in order, so a refused message that was going to arrive would
have come before the probe.

Two test-only accounts are added to the generated files: `watch` reads
everything (it sees whether a publish got through), `feed` writes
everything (it offers each role messages to read)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from h2p import keys, topics
from host_tools import broker_config
from tests.helpers.ledger_broker import record
from tests.helpers.mqtt_broker import Broker, paho_client

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker]

SECRET = "roles-fleet-secret"
PW = {"ops": "ops-pw", "led": "led-pw", "gw": "gw-pw", "ha": "ha-pw", "watch": "watch-pw", "feed": "feed-pw"}
USER = {"pile": "A", "operator": "ops", "ledger": "led", "gateway": "gw", "home": "ha"}
CTL = "h2pile/ctl/A/stop"  # a relay request (docs/operators.md)
_n = itertools.count(1)


def T(pile, name):
    return topics.topic(pile, name)


def password(user):
    return PW.get(user) or keys.mqtt_password(SECRET, user)


class Account:
    """A paho client logged in as one account; collects what it receives."""

    def __init__(self, port, user):
        self.user = user
        self.cond = threading.Condition()
        self.msgs: list[tuple[str, bytes]] = []
        self.subacks: dict[int, list[int]] = {}
        self.rc = None
        self.c = paho_client(port, user=user, password=password(user), client_id="roles-%s-%d" % (user, os.getpid()))
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.wait(lambda: self.rc is not None), "%s: no CONNACK" % user
        assert self.rc == 0, "%s: login refused (%s)" % (user, self.rc)

    def _on_connect(self, c, u, flags, rc, p=None):
        with self.cond:
            self.rc = rc.value if hasattr(rc, "value") else rc
            self.cond.notify_all()

    def _on_message(self, c, u, m):
        with self.cond:
            self.msgs.append((m.topic, bytes(m.payload)))
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, rcs, p=None):
        with self.cond:
            self.subacks[mid] = [r.value for r in rcs]
            self.cond.notify_all()

    def wait(self, pred, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def sub(self, *filters):
        rc, mid = self.c.subscribe([(f, 1) for f in filters])
        assert rc == 0 and self.wait(lambda: mid in self.subacks), "%s: no SUBACK" % self.user

    def pub(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def has(self, topic, payload):
        with self.cond:
            return (topic, payload) in self.msgs

    def wait_msg(self, topic, payload, timeout=5.0):
        return self.wait(lambda: (topic, payload) in self.msgs, timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roles")
    paths = broker_config.generate(SECRET, ["A", "B"], [("ops", PW["ops"])], str(tmp / "broker"),
                                   ledgers=[("led", PW["led"])], gateways=[("gw", PW["gw"])],
                                   homes=[("ha", PW["ha"])])
    with open(paths["acl"], "a") as f:
        f.write("\nuser watch\ntopic read #\n\nuser feed\ntopic write #\n")
    with open(paths["passwd"], "a") as f:
        f.write("\n".join(broker_config.passwd_line(u, PW[u]) for u in ("watch", "feed")) + "\n")
    with Broker(tmp, extra="password_file %s\nacl_file %s\n" % (paths["passwd"], paths["acl"]),
                anonymous=False) as b:
        yield b


@pytest.fixture(scope="module")
def watch(broker):
    w = Account(broker.port, "watch")
    w.sub("#")
    yield w
    w.close()


@pytest.fixture(scope="module")
def feed(broker):
    f = Account(broker.port, "feed")
    yield f
    f.close()


# What each role may and may not publish, written from the issue (not from
# broker_config.ROLES). PROBE: a topic the role may publish to.
PILE_PUB = [t[topics.T_NAME] for t in topics.TOPICS if t[topics.T_DIR] == "pub"]
WRITES = {
    "pile": ([T("A", n) for n in PILE_PUB],
             [T("A", "cmd"), T("A", "bill/ack"), T("B", "status"), T("B", "bill"), T("B", "cmd/ack"),
              "homeassistant/status", CTL]),
    "operator": ([T("A", "cmd"), T("B", "cmd")],
                 [T("A", "bill/ack"), T("B", "bill/ack"), T("A", "status"), T("A", "bill"), T("A", "cmd/ack"),
                  "homeassistant/sensor/A/config", CTL]),
    "ledger": ([T("A", "bill/ack"), T("B", "bill/ack")],
               [T("A", "cmd"), T("A", "status"), T("A", "bill"), "homeassistant/status", CTL]),
    "gateway": ([T("A", "cmd"), "homeassistant/sensor/A/config"],
                [T("A", "bill/ack"), T("A", "status"), T("A", "bill"), T("A", "cmd/ack"), CTL]),
    # unsigned requests only; never the pile's cmd, whose signature it can not make
    "home": ([CTL, "h2pile/ctl/B/set_limit", "homeassistant/status"],
             [T("A", "cmd"), T("A", "bill/ack"), T("A", "status"), "homeassistant/device/A/config"]),
}
WRITE_PROBE = {"pile": T("A", "evt"), "operator": T("A", "cmd"), "ledger": T("A", "bill/ack"),
               "gateway": T("A", "cmd"), "home": CTL}
# What each role may and may not receive.
READS = {
    "pile": ([T("A", "cmd"), T("A", "bill/ack")],
             [T("B", "cmd"), T("B", "bill/ack"), T("A", "status"), T("A", "tele"), T("A", "bill"),
              "homeassistant/status", CTL]),
    "operator": ([T("A", n) for n, _, _, _ in topics.TOPICS],
                 ["homeassistant/status", "homeassistant/sensor/A/config", CTL]),
    "ledger": ([T("A", "bill"), T("B", "bill")],
               [T("A", "status"), T("A", "tele"), T("A", "cmd"), T("A", "bill/ack"), T("A", "cmd/ack"), CTL]),
    "gateway": ([T("A", n) for n, _, _, _ in topics.TOPICS] + ["homeassistant/status", CTL],
                ["homeassistant/sensor/A/config"]),
    # what Home Assistant shows, not the bills, nor the commands and their secrets
    "home": ([T("A", n) for n in ("status", "meta", "state", "tele", "evt", "cmd/ack")]
             + ["homeassistant/device/A/config", "homeassistant/status"],
             [T("A", "cmd"), T("A", "bill"), T("A", "bill/ack"), CTL]),
}
READ_PROBE = {"pile": T("A", "cmd"), "operator": T("A", "evt"), "ledger": T("A", "bill"),
              "gateway": "homeassistant/status", "home": T("A", "tele")}


def payload(what):
    return b"%s #%d" % (what.encode(), next(_n))


@pytest.mark.parametrize("role", list(WRITES))
def test_role_publishes_only_its_topics(role, broker, watch):
    allowed, denied = WRITES[role]
    a = Account(broker.port, USER[role])
    try:
        for t in allowed:
            m = payload("allowed")
            a.pub(t, m)
            assert watch.wait_msg(t, m), "%s (%s) could not publish %s" % (role, a.user, t)
        for t in denied:
            m, probe = payload("denied"), payload("probe")
            a.pub(t, m)
            a.pub(WRITE_PROBE[role], probe)
            assert watch.wait_msg(WRITE_PROBE[role], probe), "%s: the probe did not arrive" % role
            assert not watch.has(t, m), "%s (%s) published %s: the ACL let it through" % (role, a.user, t)
    finally:
        a.close()


@pytest.mark.parametrize("role", list(READS))
def test_role_receives_only_its_topics(role, broker, feed):
    allowed, denied = READS[role]
    a = Account(broker.port, USER[role])
    try:
        a.sub(*set(allowed + denied + [READ_PROBE[role]]))
        for t in allowed:
            m = payload("allowed")
            feed.pub(t, m)
            assert a.wait_msg(t, m), "%s (%s) did not receive %s" % (role, a.user, t)
        for t in denied:
            m, probe = payload("denied"), payload("probe")
            feed.pub(t, m)
            feed.pub(READ_PROBE[role], probe)
            assert a.wait_msg(READ_PROBE[role], probe), "%s: the probe did not arrive" % role
            assert not a.has(t, m), "%s (%s) received %s: the ACL let it through" % (role, a.user, t)
    finally:
        a.close()


def test_only_the_ledger_acks_a_bill(broker):
    """The issue: an operator's bill/ack would make the pile drop a bill the
    ledger never stored. It does not reach the pile; the ledger's does."""
    pile, ops, led = (Account(broker.port, u) for u in ("A", "ops", "led"))
    try:
        pile.sub(T("A", "cmd"), T("A", "bill/ack"))
        forged, probe = b'{"id": "A-00001-001"}', payload("probe")
        ops.pub(T("A", "bill/ack"), forged)
        ops.pub(T("A", "cmd"), probe)  # an operator may send a command: it arrives after the forged ack
        assert pile.wait_msg(T("A", "cmd"), probe)
        assert not pile.has(T("A", "bill/ack"), forged), "the operator's bill/ack reached the pile"
        led.pub(T("A", "bill/ack"), forged)
        assert pile.wait_msg(T("A", "bill/ack"), forged), "the ledger's bill/ack did not reach the pile"
    finally:
        for a in (pile, ops, led):
            a.close()


@pytest.mark.parametrize("share", [None, "g1"])
def test_ledger_ingest_works_with_the_ledger_account(broker, tmp_path, share):
    """`h2pile ledger ingest` as the ledger account: its subscription (also
    a shared one) receives a pile's bill and its bill/ack reaches the pile."""
    pwf = tmp_path / "led.pw"
    pwf.write_text(PW["led"] + "\n")
    args = [sys.executable, "-m", "host_tools.ledger", "ingest", "--broker", "127.0.0.1:%d" % broker.port,
            "--user", "led", "--password-file", str(pwf), "--db", str(tmp_path / "l.db"), "-v"]
    if share:
        args += ["--share", share]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "firmware"), str(ROOT)]))
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    lines: list[str] = []
    subscribed = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "subscribed to" in line:
                subscribed.set()

    threading.Thread(target=read, daemon=True).start()
    pile = Account(broker.port, "B")
    try:
        assert subscribed.wait(15), "".join(lines)
        pile.sub(T("B", "bill/ack"))
        rec = record("B", 3, next(_n) % 1000 + 1, 1234.0)
        pile.pub(T("B", "bill"), json.dumps(rec).encode())
        ack = json.dumps({"id": rec["id"]}).encode()
        assert pile.wait_msg(T("B", "bill/ack"), ack, timeout=15), "".join(lines)
    finally:
        pile.close()
        proc.kill()
        proc.wait(10)


def test_every_pile_subscription_has_a_writer_and_roles_stay_in_their_lane():
    """The table itself: each topic a pile subscribes to is written by some
    role; bill/ack only by the ledger; no role but the pile writes a pile's
    own "pub" topics."""
    writers: dict[str, set[str]] = {}
    for role, (_, rules) in broker_config.ROLES.items():
        for access, f in rules:
            if access == "write" and f.startswith(topics.PREFIX):
                name = f[len(topics.PREFIX):].split("/", 1)[1]
                writers.setdefault(name, set()).add(role)
    for n, _, _, d in topics.TOPICS:
        assert writers.get(n) and (d == "sub") == ("pile" not in writers[n]), (n, writers.get(n))
    assert writers["bill/ack"] == {"ledger"}


def test_broker_config_cli_roles(tmp_path, capsys, monkeypatch):
    from host_tools import cli

    (tmp_path / "ledgers").write_text("led:lpw\n# a comment\n")
    monkeypatch.setenv("H2PILE_GATEWAYS", "gw:gpw")
    out = tmp_path / "o"
    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A", "--operator", "ops:x",
                     "--ledger-file", str(tmp_path / "ledgers"), "--out", str(out)]) == 0
    acl = (out / "acl").read_text()
    assert "user led\ntopic read h2pile/v1/+/bill\ntopic write h2pile/v1/+/bill/ack\n" in acl
    assert "user gw\ntopic read h2pile/v1/#\ntopic write h2pile/v1/+/cmd\ntopic write homeassistant/#\n" \
           "topic read homeassistant/status\n" in acl
    assert acl.count("bill/ack") == 2  # the pile reads its own, the ledger writes
    users = [ln.split(":")[0] for ln in (out / "passwd").read_text().splitlines()]
    assert users == ["A", "ops", "led", "gw"]
    capsys.readouterr()
    # one name, two roles: refused, named
    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A", "--operator", "x:1",
                     "--gateway", "x:2", "--out", str(out)]) == 2
    assert "duplicate" in capsys.readouterr().err
    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A", "--ledger", "nopass",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--ledger" in err and "NAME:PASSWORD" in err and "nopass" not in err
