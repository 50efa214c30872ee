# Stamps every pile message with "seq" (per-boot sequence number) and "boot"
# (boot counter), serialises it and hands it to the MQTT client with the
# topic's QoS/retain from h2p.topics. seq starts at 1; 0 is the last will.
# seq counts messages handed over even if the client drops them, so a gap
# in seq at the receiver shows a loss.
import json

from h2p import topics


class Publisher:
    def __init__(self, client, pile_id, boot):
        self.client = client
        self.boot = boot
        self.seq = 0
        self._t = {}
        for t in topics.TOPICS:
            self._t[t[0]] = (topics.topic(pile_id, t[0]).encode(), t[1], t[2])

    def pub(self, name, obj):
        # obj is a dict; it is stamped in place (no copy). -> bool queued
        t = self._t[name]
        self.seq += 1
        obj["seq"] = self.seq
        obj["boot"] = self.boot
        return self.client.publish(t[0], json.dumps(obj), t[2], t[1])

    def topic(self, name):
        return self._t[name][0]

    def will(self):
        # (topic, payload, retain, qos) for MQTTClient(will=...)
        t = self._t["status"]
        return (t[0], json.dumps({"online": False, "seq": 0, "boot": self.boot}), t[2], t[1])


def tele_due(prev, cur):
    # True if any telemetry field in cur moved by more than its deadband
    # from prev (the last values sent), or appeared/disappeared.
    db = topics.TELE_DEADBAND
    for k in cur:
        d = db.get(k)
        if d is None:
            continue
        a = prev.get(k)
        b = cur[k]
        if a is None or b is None:
            if a is not b:
                return True
        elif abs(b - a) > d:
            return True
    for k in prev:
        if k in db and k not in cur:
            return True
    return False
