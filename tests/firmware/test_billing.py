"""h2p.billing: store-and-forward of closed session records."""
import json
from pathlib import Path

from h2p.billing import Billing
from h2p.journal import Journal
from h2p.session import SessionRecorder

ROOT = Path(__file__).resolve().parents[2]


class Pub:
    def __init__(self):
        self.sent = []
        self.up = True

    def __call__(self, topic, payload, qos=0):
        assert isinstance(payload, bytes)
        if not self.up:
            return False
        self.sent.append((topic, json.loads(payload), qos))
        return True


def setup(path, retry=(10, 30, 60), per_poll=4):
    j = Journal(str(path), checkpoint_interval_s=60)
    j.open()
    pub = Pub()
    b = Billing(j, "P7", pub, retry_s=retry, max_per_poll=per_poll)
    r = SessionRecorder(j, "P7", on_close=b.bill)
    r.boot()
    return j, b, r, pub


def one(r, t, e=100.0):
    r.start(t, "sponsor:acme:1", meter_wh=0.0)
    return r.stop(t + 1, "ev_stop", meter_wh=e)


def test_topics(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.open()
    b = Billing(j, "P7", Pub())
    assert b.topic == "h2pile/v1/P7/bill"
    assert b.ack_topic == "h2pile/v1/P7/bill/ack"


def test_publish_qos1_retry_until_ledger_ack(tmp_path):
    j, b, r, pub = setup(tmp_path / "j")
    assert b.subscriptions() == [("h2pile/v1/P7/bill/ack", 1)]
    rec = one(r, 0)
    assert b.poll(1) == 1
    assert pub.sent == [("h2pile/v1/P7/bill", rec, 1)]
    # back-off 10, 30, 60, 60, ... while not acknowledged (PUBACK is not enough)
    times = [t for t in range(2, 400) if b.poll(t)]
    assert times == [11, 41, 101, 161, 221, 281, 341]
    assert all(s[1] == rec for s in pub.sent)
    # a bill/ack for someone else, malformed acks, other topics: no effect
    assert not b.on_message("h2pile/v1/P7/cmd", b'{"id": "%s"}' % rec["id"].encode())
    assert b.on_message("h2pile/v1/P8/bill/ack", b"{}") is False
    assert b.on_message(b"h2pile/v1/P7/bill/ack", b"not json") and b.bad_acks == 1
    assert b.on_message("h2pile/v1/P7/bill/ack", b'{"id": 5}') and b.bad_acks == 2
    assert b.on_message("h2pile/v1/P7/bill/ack", b'{"id": "P7-00009-001"}')
    assert j.unacked_ids() == [rec["id"]]
    assert b.on_message("h2pile/v1/P7/bill/ack", json.dumps({"id": rec["id"]}).encode())
    assert j.unacked_ids() == [] and b.acked == 1 and rec["id"] in j._acked
    n = len(pub.sent)
    assert [t for t in range(400, 1000) if b.poll(t)] == [] and len(pub.sent) == n
    # a duplicate ack (the ledger re-acks duplicates) writes nothing
    w = j.writes
    b.on_message("h2pile/v1/P7/bill/ack", json.dumps({"id": rec["id"]}).encode())
    assert j.writes == w


def test_backlog_oldest_first_limited_per_poll(tmp_path):
    j, b, r, pub = setup(tmp_path / "j", per_poll=4)
    pub.up = False  # broker down: nothing queued, retried soon
    recs = [one(r, i * 10) for i in range(10)]
    assert b.poll(100) == 0
    pub.up = True
    assert b.poll(105) == 0  # retry_s[0] after a refused publish
    assert b.poll(110) == 4
    assert b.poll(110) == 4
    assert b.poll(110) == 2
    assert [s[1]["id"] for s in pub.sent] == [x["id"] for x in recs]


def test_unacked_survive_reboot_and_are_resent(tmp_path):
    j, b, r, pub = setup(tmp_path / "j")
    a, c = one(r, 0, 10.0), one(r, 5, 20.0)
    b.poll(10)
    b.on_message(b.ack_topic, json.dumps({"id": a["id"]}))
    # reboot
    j2, b2, r2, pub2 = setup(tmp_path / "j")
    assert r2.recover(0) == []
    assert b2.poll(0) == 1 and pub2.sent[0][1] == c
    b2.on_message(b2.ack_topic, json.dumps({"id": c["id"]}))
    assert j2.unacked_ids() == []  # nothing pending


def test_wake_after_reconnect(tmp_path):
    j, b, r, pub = setup(tmp_path / "j", retry=(300,))
    one(r, 0)
    assert b.poll(1) == 1 and b.poll(50) == 0
    b.wake()
    assert b.poll(51) == 1


def test_nothing_queued_while_offline(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.open()
    pub = Pub()
    link = [False]
    b = Billing(j, "P7", pub, online=lambda: link[0])
    r = SessionRecorder(j, "P7", on_close=b.bill)
    r.boot()
    one(r, 0)
    assert [b.poll(t) for t in range(0, 100, 5)] == [0] * 20 and pub.sent == []
    link[0] = True
    b.wake()  # on_connect
    assert b.poll(100) == 1
