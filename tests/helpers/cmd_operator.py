"""An operator on the broker for system tests: publishes raw command bytes
to a pile and collects its cmd/ack messages by command id."""

import json
import threading

import paho.mqtt.client as mqtt

from tests.helpers.pilewait import until


class Operator:
    def __init__(self, port, pile, client_id="op"):
        self.topic = f"h2pile/v1/{pile}/cmd"
        self.acks = {}  # command id -> its acks, in arrival order
        self.lock = threading.Lock()
        self.ready = threading.Event()  # subscribed to cmd/ack
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.topic + "/ack", 1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c, u, m):
        d = json.loads(m.payload)
        with self.lock:
            self.acks.setdefault(d.get("id"), []).append(d)

    def send(self, raw, retain=False):
        self.c.publish(self.topic, raw, qos=1, retain=retain)

    async def ack(self, cid, n=1, timeout=30):
        """The n-th ack of command cid, or None if it did not come."""
        ok = await until(lambda: len(self.acks.get(cid, [])) >= n, timeout)
        return self.acks[cid][n - 1] if ok else None

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
