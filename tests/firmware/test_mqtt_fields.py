"""docs/mqtt.md promises exactly the fields the pile sends: the pile's own
uplink (h2p.uplink, on CPython) formats status, meta, state, tele, evt and
cmd/ack around a real control core (tests/helpers/pilebench.py) driven through
a charging session; what it hands to the MQTT client is decoded and its keys
are compared with h2p.topics_doc, both ways."""

import asyncio
import json
import re
import time
from types import SimpleNamespace

from h2p import codes as K
from h2p import signer, topics, topics_doc, uplink
from h2p.chores import Chores
from h2p.uplink import Uplink
from tests.helpers.pilebench import Bench, follow_plant

KEY = "ab" * 32


class Client:
    """Stands in for h2p.mqtt.MQTTClient: always connected, keeps what is
    published."""

    def __init__(self):
        self.sent = []  # (sub-topic, decoded message)
        self.connected = True
        self._tls = None
        self.will = None
        self.rx_retained = False

    def publish(self, topic, msg, retain=False, qos=0):
        name = topics.parse(topic.decode() if isinstance(topic, bytes) else topic)[1]
        self.sent.append((name, json.loads(msg)))
        return True

    def subscribe(self, topic, qos):
        pass

    def queued(self):
        return 0

    async def run(self):
        await asyncio.sleep(3600)


class Pile:
    """What h2p.uplink reads of h2p.app's Pile, around the bench's core."""

    def __init__(self, bench):
        self.b = bench
        self.cfg, self.sup, self.rd = bench.cfg, bench.sup, bench.rd
        self.clock = SimpleNamespace(ms=lambda: bench.now)
        self.board = SimpleNamespace(name="unix_sim", reset_cause="power_on", fs_sync=True, unix_time=time.time)
        self.last_crash = None
        self.link = None
        self.maintenance = None
        self.boot_no = 7
        self.report_errors = 0
        # the journal: no bills pending, no command floor kept
        self.rec = SimpleNamespace(j=SimpleNamespace(unacked={}, get_meta=lambda k, d: d))
        self.listeners = []
        self.chores = Chores()  # no bus task here: every turn is free

    def link_state(self):
        return "none"

    def link_ready(self):
        return True

    def uptime_s(self):
        return self.b.now // 1000

    def session_wh(self):
        return 1234

    def forward_events(self):
        # h2p.app's _drain: the core's events to the listeners (the uplink)
        ev = self.sup.events
        while ev:
            kind, a, b = ev.pop(0)
            for fn in self.listeners:
                fn(kind, a, b)


async def _session():
    b = Bench(pile_id="fields-1", mqtt={"cmd_key": KEY})
    pile = Pile(b)
    u = Uplink(pile)
    u.c = client = Client()
    task = asyncio.create_task(u.run())
    await asyncio.sleep(0)  # run() sets up (topics, will, billing) at once
    u._connected()  # what the client calls after CONNACK: status, meta
    await asyncio.sleep(0.6)  # state, tele
    # A charging session: events on evt, state changes, telemetry.
    assert b.until("ready", each=follow_plant), b.state()
    pile.forward_events()
    b.set(chg_pilot=K.PILOT_C, chg_ev_req_a=200, chg_ev_req_v=380)
    for _ in range(300):
        follow_plant(b)
        b.step(100)
        if b.state() == "charging" and b.cmd("chg_enable"):
            break
    assert b.state() == "charging", b.state()
    b.step(100, 50)
    pile.forward_events()
    await asyncio.sleep(0.6)
    b.set(chg_pilot=K.PILOT_B, chg_ev_req_a=0)
    for _ in range(100):
        follow_plant(b)
        b.step(100)
    pile.forward_events()
    await asyncio.sleep(0.6)
    # Commands: one that is not JSON, one without an op (a detail), a
    # signed one, and the same again. (Signed after the boot, as the pile
    # sees it: a command from before it is refused.)
    u.cmdmem[1][uplink._U_BOOT] = int(time.time()) - 60
    u._message(u.cmd_topic, b"\x00junk")
    u._message(u.cmd_topic, b'{"id": "x"}')
    cmd = signer.sign_command("resend_meta", {}, KEY, time.time(), pile="fields-1")
    u._message(u.cmd_topic, json.dumps(cmd).encode())
    u._message(u.cmd_topic, json.dumps(cmd).encode())
    assert not task.done(), task  # the uplink's loop is still running: nothing raised
    task.cancel()
    assert pile.report_errors == 0
    return client


def _names(fields):
    return {f[0] for f in fields}


def test_the_docs_promise_exactly_the_fields_the_pile_sends(monkeypatch):
    # MicroPython's asyncio has sleep_ms, which the uplink's loop uses
    monkeypatch.setattr(asyncio, "sleep_ms", lambda ms: asyncio.sleep(ms / 1000), raising=False)
    client = asyncio.run(_session())
    keys = {}
    for name, msg in client.sent:
        keys.setdefault(name, []).append(set(msg))
    # the last will is the client's, set up by the uplink
    topic, will, retain, qos = client.will
    keys["status"].append(set(json.loads(will)))
    assert json.loads(will)["seq"] == 0 and retain

    stamp = _names(topics_doc.STAMP_FIELDS)
    assert stamp == {"seq", "boot"}
    for name, sets in keys.items():
        for s in sets:
            assert stamp <= s, (name, s)
    doc = {
        "status": _names(topics_doc.STATUS_FIELDS),
        "meta": _names(topics_doc.META_FIELDS),
        "state": _names(topics_doc.STATE_FIELDS),
        "tele": _names(topics_doc.TELE_FIELDS),
        "evt": _names(topics_doc.EVT_FIELDS),
    }
    for name, want in doc.items():
        assert name in keys, "the pile sent no %s message in this session" % name
        for s in keys[name]:
            assert s - stamp == want, "%s: sent %s, docs/mqtt.md promises %s" % (
                name, sorted(s - stamp), sorted(want))
    # cmd/ack: "dup" only on a repeated command
    acks = keys["cmd/ack"]
    assert len(acks) == 4 and "dup" in acks[3] and "dup" not in acks[2]
    assert set().union(*acks) - stamp == _names(topics_doc.ACK_FIELDS)
    # every event kind this session produced is one the docs name
    kinds = {m["kind"] for n, m in client.sent if n == "evt"}
    assert {"selftest", "session_start", "session_stop"} <= kinds, kinds
    for k in kinds:
        assert k in topics_doc.EVT_FIELDS[0][2], k
    # only topics the contract lets the pile publish
    pub = {t[0] for t in topics.TOPICS if t[topics.T_DIR] == "pub"}
    assert set(keys) <= pub


def test_every_tele_deadband_is_a_field_the_pile_sends():
    # topics.TELE_DEADBAND is read on the board: an entry for a field the
    # uplink never sends is RAM spent for nothing and a field the docs promise.
    from h2p import uplink

    sent = set(re.findall(r'"(\w+)": ', uplink._TELE_JSON))
    assert {"p_kw", "state", "seq"} <= sent
    assert set(topics.TELE_DEADBAND) == sent - {"state", "seq", "boot"}


def test_the_docs_name_every_stop_reason_the_pile_bills():
    # A session's stop reason is on evt (session_stop) and in the bill; the
    # ledger accepts exactly h2p.session.REASONS.
    from h2p.session import REASONS

    assert tuple(r for r, _ in topics_doc.STOP_REASONS) == REASONS
