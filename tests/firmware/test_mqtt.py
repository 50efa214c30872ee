"""h2p.mqtt on the MicroPython unix port against a real mosquitto (and a fake broker)."""
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from h2p import topics
from tests.helpers.mqtt_broker import Broker, Pile, paho_client

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython, pytest.mark.broker]



class Sub:
    """paho subscriber collecting (topic, payload, retain)."""

    def __init__(self, port, topic, **kw):
        self.msgs = []
        self.cond = threading.Condition()
        self.c = paho_client(port, **kw)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on(self, c, u, m):
        with self.cond:
            self.msgs.append((m.topic, m.payload, m.retain))
            self.cond.notify_all()

    def wait(self, pred, timeout=5.0):
        t_end = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = t_end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def paho_pub(port, topic, payload, qos=1, retain=False):
    c = paho_client(port)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


T = lambda name: topics.topic("P1", name)  # noqa: E731


def test_connect_publish_receive_retained(tmp_path):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, duration=6, evt_every=2) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        live = Sub(b.port, "h2pile/v1/P1/#")
        # QoS1 evt and QoS0 tele from the pile arrive, stamped with seq/boot
        m = live.wait(lambda m: m[0] == T("evt"))
        assert m, live.msgs
        d = json.loads(m[1])
        assert d["boot"] == 7 and d["seq"] > 2 and isinstance(d["n"], int)
        assert live.wait(lambda m: m[0] == T("tele") and json.loads(m[1])["bat_soc"] == 80)
        # late subscriber sees retained status online
        late = Sub(b.port, T("status"))
        m = late.wait(lambda m: m[2])
        assert m and json.loads(m[1])["online"] is True
        late.close()
        # QoS1 message to the pile's cmd topic is received
        n = len(pile.events)
        paho_pub(b.port, T("cmd"), b'{"hello": 1}')
        e = pile.wait(lambda e: e["ev"] == "msg", 5, start=n)
        assert e and e["topic"] == T("cmd") and e["len"] == 12
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["acked"] >= 3, 5, start=n)
        assert st and st["stats"]["connects"] == 1 and st["stats"]["bad_packets"] == 0
        live.close()


def test_broker_restart_reconnect_and_ticker(tmp_path):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, duration=20, evt_every=2, keepalive=5, tele=False) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        time.sleep(1.0)
        b.kill()
        t_kill = time.monotonic()
        n = len(pile.events)
        down = pile.wait(lambda e: e["ev"] == "stat" and not e["connected"], 3, start=n)
        assert down, "pile did not notice the broker was gone"
        time.sleep(3.0)  # outage; the pile keeps queueing QoS1 evt
        n = len(pile.events)
        queued = pile.last_stat()["queued"]
        assert queued > 0
        b.start()
        t_back = time.monotonic()
        up = pile.wait(lambda e: e["ev"] == "up", 10, start=n)
        assert up, "no reconnect: %s" % pile.last_stat()
        reconnect_s = up["_t"] - t_back
        # everything queued during the outage is acknowledged after reconnect
        done = pile.wait(lambda e: e["ev"] == "stat" and e["connected"] and e["queued"] == 0, 5, start=n)
        assert done, pile.last_stat()
        # every QoS1 message (status, meta, evt), including those queued while the
        # broker was down, was acknowledged; none was dropped
        assert done["stats"]["acked"] == done["seq"]
        time.sleep(1.0)  # ticker keeps running after the reconnect too
        last = pile.last_stat()
        print("\nreconnect %.2f s after broker return (outage %.1f s); max tick lateness %d ms "
              "over %d ticks (%d > 50 ms); stats %s" % (
                  reconnect_s, t_back - t_kill, last["max_late"], last["ticks"], last["late50"],
                  last["stats"]))
        assert reconnect_s < 5.0
        # A blocking connect attempt would show up as >= 500 ms. Single spikes of
        # ~100 ms were seen on this shared 2-CPU host with no MQTT at fault.
        assert last["max_late"] < 250, "event loop was blocked %d ms" % last["max_late"]
        assert last["late50"] <= 2, last
        assert last["stats"]["connects"] == 2 and last["stats"]["drops"] == 1
        assert last["stats"]["conn_fails"] >= 1
        assert last["stats"]["dropped_qos1"] == 0


def test_will_on_sigkill(tmp_path):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, duration=20, keepalive=10) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        s = Sub(b.port, T("status"))
        assert s.wait(lambda m: json.loads(m[1])["online"] is True)
        pile.kill()
        t0 = time.monotonic()
        m = s.wait(lambda m: json.loads(m[1])["online"] is False, 5)
        assert m, s.msgs
        d = json.loads(m[1])
        assert d == {"online": False, "seq": 0, "boot": 7}
        print("\nwill delivered %.2f s after SIGKILL" % (time.monotonic() - t0))
        s.close()
        late = Sub(b.port, T("status"))  # and it is retained
        m = late.wait(lambda m: m[2])
        assert m and json.loads(m[1])["online"] is False
        late.close()


def test_garbage_and_oversize_payloads(tmp_path):
    # The pile is killed when the test ends: its lifetime only bounds a hang,
    # and a loaded machine must not end it before the last payload is in.
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, duration=120, max_payload=2048) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 30), pile.stderr
        # "up" is the CONNACK; the subscription is in place once a probe
        # comes through (a message published before the SUBACK is lost).
        end = time.monotonic() + 30
        while not pile.wait(lambda e: e["ev"] == "msg" and e["len"] == 7, 0.5):
            assert time.monotonic() < end, pile.last_stat()
            paho_pub(b.port, T("cmd"), b"probe!!", qos=1)
        mark = len(pile.events)
        for p, q in ((b"\xff\xfe\x00garbage", 1), (b"x" * (1 << 20), 1), (b"y" * 3000, 0),
                     (b"z" * 2048, 1), (b"", 1)):
            paho_pub(b.port, T("cmd"), p, qos=q)
        paho_pub(b.port, T("cmd"), b"after", qos=1)
        e = pile.wait(lambda e: e["ev"] == "msg" and e["len"] == 5, 60)
        assert e, (pile.last_stat(), pile.stderr)
        # The oversize ones are drained, and still handed over without
        # their payload (None), so that the pile can answer "too large".
        lens = [e["len"] for e in pile.events[mark:] if e["ev"] == "msg" and e["len"] != 7]
        assert lens == [10, None, None, 2048, 0, 5], (lens, pile.last_stat())
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["oversize"] == 2, 30)
        assert st, pile.last_stat()
        assert st["stats"]["connects"] == 1 and st["connected"], st
        assert pile.proc.poll() is None


# ---- fake broker: malformed packets and a dead link -----------------------------

class FakeBroker:
    """Accepts MQTT connections; behaviour per connection chosen by `script(conn, n)`."""

    def __init__(self, script, connack=True):
        self.script = script
        self.connack = connack
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(5)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.times = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            self.times.append(time.monotonic())
            threading.Thread(target=self._serve, args=(c, len(self.conns)), daemon=True).start()

    def _serve(self, c, n):
        try:
            c.settimeout(30)
            c.recv(4096)  # CONNECT
            if self.connack:
                c.sendall(b"\x20\x02\x00\x00")  # CONNACK ok
            self.script(c, n)
        except OSError:
            pass

    def close(self):
        self.srv.close()
        for c in self.conns:
            c.close()


def _blackhole(c, n):
    # never answer anything (a link that died without FIN/RST)
    while True:
        if not c.recv(4096):
            return


def test_dead_link_detected_by_keepalive(tmp_path):
    fb = FakeBroker(_blackhole)
    try:
        with Pile(tmp_path, fb.port, duration=12, keepalive=2, tele=False) as pile:
            assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
            e2 = pile.wait(lambda e: e["ev"] == "up" and e["connects"] == 2, 8)
            assert e2, pile.last_stat()
            gap = fb.times[1] - fb.times[0]
            print("\ndead link (keepalive 2 s) detected and reconnected after %.2f s" % gap)
            assert 2.0 <= gap <= 5.0  # ping after <= ka/2 + tick, PINGRESP deadline ka + tick, backoff
            st = pile.last_stat()["stats"]
            assert st["ping_timeouts"] >= 1
            assert pile.last_stat()["max_late"] < 250 and pile.last_stat()["late50"] <= 2
    finally:
        fb.close()


def test_connect_timeout_when_broker_never_answers(tmp_path):
    fb = FakeBroker(_blackhole, connack=False)
    try:
        with Pile(tmp_path, fb.port, duration=8, keepalive=2, connect_timeout=1, tele=False) as pile:
            st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["conn_fails"] >= 2, 6)
            assert st, pile.last_stat()
            assert st["stats"]["connects"] == 0 and "Timeout" in st["stats"]["last_error"]
            gap = fb.times[1] - fb.times[0]
            assert 1.3 <= gap <= 2.0  # 1 s timeout + 0.5 s (+-25 %) backoff
            assert st["max_late"] < 250 and st["late50"] <= 2
    finally:
        fb.close()


def _malformed(c, n):
    if n == 1:
        c.sendall(b"\xf0\x00")  # reserved packet type
        c.sendall(b"\x30\xff\xff\xff\xff\x7f")  # remaining length > 4 bytes
        _blackhole(c, n)
    elif n == 2:
        c.sendall(b"\x30\xff\xff\xff\x7f")  # PUBLISH of 256 MB: absurd -> disconnect
        _blackhole(c, n)
    elif n == 3:
        c.sendall(b"\x36\x05\x00\x01x\x00\x01")  # QoS 3 PUBLISH
        _blackhole(c, n)
    else:
        c.sendall(b"\x30\x05\x00\x01xhi")  # good one
        _blackhole(c, n)


def test_malformed_packets_counted_and_reconnected(tmp_path):
    fb = FakeBroker(_malformed)
    try:
        with Pile(tmp_path, fb.port, duration=10, keepalive=5, tele=False, sub=[]) as pile:
            e = pile.wait(lambda e: e["ev"] == "msg", 9)
            assert e and e["topic"] == "x" and e["len"] == 2, (pile.last_stat(), pile.stderr)
            st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["connects"] == 4, 3)
            assert st
            s = st["stats"]
            assert s["bad_packets"] >= 3 and s["oversize"] == 1 and s["drops"] == 3
            assert pile.proc.poll() is None
    finally:
        fb.close()


# ---- queue policy (pure, CPython) -----------------------------------------------

def _queued_payloads(c):
    # the client's queue holds topic, payload for each slot, oldest first
    return c._q[1:2 * c.queued():2]


def test_queue_policy_offline():
    from h2p.mqtt import MQTTClient
    c = MQTTClient("q", "127.0.0.1", max_queue=4, max_payload=16)
    assert c.publish("t", b"a", qos=0) is False  # QoS0 is not queued offline
    for i in range(6):
        assert c.publish("t", b"%d" % i, qos=1) is True
    assert c.queued() == 4
    assert _queued_payloads(c) == [b"2", b"3", b"4", b"5"]  # oldest QoS1 evicted
    assert c.stats["dropped_qos1"] == 2 and c.stats["dropped_qos0"] == 1
    assert c.publish("t", b"x" * 17, qos=1) is False and c.stats["too_big"] == 1
    with pytest.raises(ValueError):
        c.publish("t", b"x", qos=2)


def test_queue_policy_online_prefers_dropping_qos0():
    import asyncio

    from h2p.mqtt import MQTTClient
    c = MQTTClient("q", "127.0.0.1", port=1, max_queue=3)  # nothing listens on port 1
    c.connected = True
    assert c.publish("t", b"a", qos=0) and c.publish("t", b"b", qos=1) and c.publish("t", b"c", qos=0)
    assert c.publish("t", b"d", qos=0) is False  # full: new QoS0 dropped
    assert c.publish("t", b"e", qos=1) is True  # full: oldest QoS0 evicted
    assert _queued_payloads(c) == [b"b", b"c", b"e"]
    assert c.stats["dropped_qos0"] == 2 and c.stats["dropped_qos1"] == 0
    with pytest.raises(OSError):  # link lost: QoS0 discarded, QoS1 kept for resend
        asyncio.run(c._session())
    assert _queued_payloads(c) == [b"b", b"e"] and c.queued() == 2


# ---- the same client on CPython (simulator / host use) --------------------------

async def until(pred, timeout):
    # pred() true within timeout s (checked every 20 ms): -> its last value
    import asyncio

    t_end = time.monotonic() + timeout
    while not pred() and time.monotonic() < t_end:
        await asyncio.sleep(0.02)
    return pred()


def test_cpython_client_roundtrip_and_reconnect(tmp_path):
    import asyncio

    from h2p.mqtt import MQTTClient

    async def scenario(b):
        got = []
        ups = []
        c = MQTTClient("cpy", "127.0.0.1", b.port, keepalive=5)
        c.on_message = lambda t, p: got.append((t, p))
        c.on_connect = lambda: ups.append(time.monotonic())
        c.subscribe("loop/#", 1)
        task = asyncio.create_task(c.run())

        assert await until(lambda: c.connected, 5)
        await asyncio.sleep(0.2)  # SUBACK
        assert c.publish("loop/a", b"q1", qos=1) and c.publish("loop/a", "q0", qos=0)
        assert await until(lambda: len(got) == 2, 5), got
        assert sorted(p for _, p in got) == [b"q0", b"q1"]
        b.kill()
        assert await until(lambda: not c.connected, 3)
        assert c.publish("loop/b", b"offline", qos=1)
        await asyncio.sleep(1.0)
        b.start()
        t_back = time.monotonic()
        assert await until(lambda: len(ups) == 2, 6)
        assert await until(lambda: (("loop/b", b"offline") in got), 5), got
        task.cancel()
        return ups[1] - t_back, c.stats

    with Broker(tmp_path) as b:
        dt, st = asyncio.run(scenario(b))
    print("\nCPython client reconnected %.2f s after broker return; %s" % (dt, st))
    assert dt < 5 and st["connects"] == 2 and st["acked"] >= 2


def test_a_link_that_goes_down_ends_the_session_at_once_and_it_comes_back_with_the_link():
    # WiFi down leaves the TCP connection half-open: no write fails and the
    # broker is silent, so only the keepalive (here 60 s, 90 s to time out)
    # would end the session. The client asks link_ok() every supervision
    # tick and ends it at once; with the link back it connects at once.
    import asyncio
    import threading

    from h2p.mqtt import MQTTClient

    silent = threading.Event()

    def hold(c, n):  # after CONNACK: say nothing, keep the socket open
        silent.wait(30)

    fb = FakeBroker(hold)
    link = {"up": True}

    async def scenario():
        c = MQTTClient("cpy-link", "127.0.0.1", fb.port, keepalive=60, backoff_min_ms=200)
        c.link_ok = lambda: link["up"]
        task = asyncio.create_task(c.run())

        assert await until(lambda: c.connected, 5)
        t_down = time.monotonic()
        link["up"] = False
        assert await until(lambda: not c.connected, 3), "the session outlived the link"
        ended = time.monotonic() - t_down
        await asyncio.sleep(0.6)
        assert len(fb.conns) == 1  # no attempt while the link is down
        link["up"] = True
        t_up = time.monotonic()
        assert await until(lambda: c.connected, 3)
        back = time.monotonic() - t_up
        task.cancel()
        return ended, back, c.last_error

    try:
        ended, back, why = asyncio.run(scenario())
    finally:
        silent.set()
        fb.close()
    print("\nlink down -> session ended in %.2f s (%s); link up -> connected in %.2f s" % (ended, why, back))
    assert ended < 1.0 and "link down" in why and back < 1.0
