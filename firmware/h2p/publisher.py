# Stamps every pile message with "seq" (per-boot sequence number) and "boot"
# (boot counter), serialises it and hands it to the MQTT client with the
# topic's QoS/retain from h2p.topics. seq starts at 1; 0 is the last will.
# seq counts messages handed over even if the client drops them, so a gap
# in seq at the receiver shows a loss.
#
# For tools and tests (tests/mqtt_broker.py): the pile's uplink stamps and
# publishes its messages itself (h2p.uplink, RAM: no object per topic) and
# does not load this module.
#
# h2p.topics is only read here while constructing: the board drops that
# module once the uplink is set up (see h2p.uplink), so nothing here keeps a
# reference to it. A topic's bytes are built per message (they live only
# while the message is queued) instead of being kept for every topic.
import json

_RETAIN = 2  # flag bit next to the QoS (0/1) in _flags


class Publisher:
    def __init__(self, client, pile_id, boot):
        from h2p import topics

        self.client = client
        self.boot = boot
        self.seq = 0
        self._prefix = topics.topic(pile_id, "status")[:-len("status")]
        self._flags = {}  # name -> qos | _RETAIN
        for t in topics.TOPICS:
            self._flags[t[0]] = t[1] | (_RETAIN if t[2] else 0)

    def pub(self, name, obj):
        # obj is a dict; it is stamped in place (no copy). -> bool queued
        f = self._flags[name]
        self.seq += 1
        obj["seq"] = self.seq
        obj["boot"] = self.boot
        return self.client.publish(self.topic(name), json.dumps(obj), bool(f & _RETAIN), f & 1)

    def topic(self, name):
        if name not in self._flags:
            raise KeyError(name)
        return (self._prefix + name).encode()

    def will(self):
        # (topic, payload, retain, qos) for MQTTClient(will=...)
        f = self._flags["status"]
        return (self.topic("status"), json.dumps({"online": False, "seq": 0, "boot": self.boot}),
                bool(f & _RETAIN), f & 1)
