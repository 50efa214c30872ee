"""The MQTT client's times are wall-clock milliseconds (issue 13 item 7): the
keepalive's PINGREQ interval on a healthy but quiet link, and the reconnect
backoff doubling from backoff_min_ms, measured in real time on the
MicroPython unix port against a fake broker. (tests/firmware/test_mqtt.py
covers the dead-link deadline and the connect timeout in real time.) The
client never reads the pile's simulated clock, so these hold at any time
factor of `make sim` as well."""

import socket
import time

import pytest

from tests.firmware.test_mqtt import FakeBroker
from tests.helpers.mqtt_broker import Pile

pytestmark = [pytest.mark.micropython, pytest.mark.slow]



def _packets(c):
    # MQTT control packets from a socket: (first byte, body).
    buf = b""
    while True:
        while True:
            if len(buf) >= 2:
                n, mul, i = 0, 1, 1
                while i < len(buf):
                    b = buf[i]
                    n += (b & 0x7F) * mul
                    mul *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = -1
                if i > 0 and len(buf) >= i + n:
                    yield buf[0], buf[i:i + n]
                    buf = buf[i + n:]
                    continue
            break
        d = c.recv(4096)
        if not d:
            return
        buf += d


def test_keepalive_ping_interval_in_wall_time(tmp_path):
    pings = []

    def answer(c, n):
        for first, body in _packets(c):
            kind = first >> 4
            if kind == 12:  # PINGREQ
                pings.append(time.monotonic())
                c.sendall(b"\xd0\x00")
            elif kind == 3 and first & 6:  # PUBLISH QoS 1: PUBACK its id
                tl = (body[0] << 8) | body[1]
                c.sendall(b"\x40\x02" + body[2 + tl:4 + tl])

    fb = FakeBroker(answer)
    try:
        with Pile(tmp_path, fb.port, duration=9, keepalive=2, tele=False, sub=[]) as pile:
            assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
            assert pile.wait(lambda e: e["ev"] == "end", 15), pile.last_stat()
            st = pile.last_stat()
    finally:
        fb.close()
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    print("\nkeepalive 2 s: PINGREQ every %s s" % ", ".join("%.2f" % g for g in gaps))
    # Nothing else is sent: a ping when the link was quiet for keepalive/2
    # (1 s), judged every 500 ms.
    assert len(gaps) >= 4, (pings, st)
    assert all(0.95 <= g <= 1.7 for g in gaps), gaps
    assert st["stats"]["connects"] == 1 and st["stats"]["ping_timeouts"] == 0, st


def _refuse(c, n):
    c.shutdown(socket.SHUT_RDWR)  # read the CONNECT, then hang up
    c.close()


def test_reconnect_backoff_doubles_in_wall_time(tmp_path):
    fb = FakeBroker(_refuse, connack=False)
    try:
        with Pile(tmp_path, fb.port, duration=10, keepalive=5, tele=False, sub=[]) as pile:
            assert pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["conn_fails"] >= 5, 14), pile.last_stat()
        times = list(fb.times)
    finally:
        fb.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    print("\nbackoff 0.5 s doubling to 3 s: reconnects after %s s" % ", ".join("%.2f" % g for g in gaps))
    # 0.5, 1, 2, then the 3 s cap, each +-25 % jitter, plus the failed attempt itself (slack
    # for a loaded 2-core CI machine)
    for k, want in enumerate((0.5, 1.0, 2.0, 3.0)):
        assert 0.75 * want <= gaps[k] <= 1.25 * want + 0.4, (k, gaps)
