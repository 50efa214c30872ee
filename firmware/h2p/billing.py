# Store-and-forward billing: every closed session record (kept in the
# journal, h2p.journal) is published on h2pile/v1/<pile>/bill at QoS 1 and
# re-published on a back-off schedule until the ledger answers on
# h2pile/v1/<pile>/bill/ack with {"id": <session id>}. A PUBACK only proves
# the broker has it; the bill/ack proves it is committed in the ledger.
# Only then is the record marked acknowledged (and later compacted away).
#
# The payload is the record as stored, unchanged on every re-send: do not
# stamp it with per-message fields (the ledger compares duplicates).
import json

from h2p.compat import const

_QOS = const(1)


# h2p.topics is imported in the call, not kept: the board drops it once the
# uplink is set up (h2p.uplink).
def bill_topic(pile_id):
    from h2p.topics import topic

    return topic(pile_id, "bill")


def ack_topic(pile_id):
    from h2p.topics import topic

    return topic(pile_id, "bill/ack")


class Billing:
    """
    journal: opened h2p.journal.Journal (holds the closed records).
    publish: callable(topic, payload_bytes, qos=1) -> bool (True = queued).
    retry_s: back-off between re-sends of one record (last value repeats).
    max_per_poll: records sent per poll() call, oldest first (no bursts
      after a long outage).
    online: optional callable -> bool; while it returns False nothing is
      handed to publish() (the MQTT client's queue is not durable and is
      shared with other messages). Call wake() from the client's on_connect.
    """

    def __init__(self, journal, pile_id, publish, retry_s=(10, 30, 60, 120, 300), max_per_poll=4, online=None):
        self.online = online
        self.j = journal
        self.pile = pile_id
        self.publish = publish
        self.retry_s = retry_s
        self.max_per_poll = max_per_poll
        self.topic = bill_topic(pile_id)
        self.ack_topic = ack_topic(pile_id)
        self._due = {}  # sid -> [next due time or None (= now), attempts]
        self.sent = 0
        self.acked = 0
        self.bad_acks = 0

    def subscriptions(self):
        return [(self.ack_topic, _QOS)]

    def pending(self):
        return len(self.j.unacked_ids())

    def bill(self, rec):
        """SessionRecorder.on_close hook: send at the next poll()."""
        self._due[rec["id"]] = [None, 0]

    def wake(self):
        """Make every pending record due now (call after an MQTT reconnect)."""
        for sid in self._due:
            self._due[sid][0] = None

    def poll(self, now):
        """Publish due records; call every second or so. now: monotonic s.
        Returns the number of records handed to publish()."""
        n = 0
        if self.online is not None and not self.online():
            return 0
        for sid in self.j.unacked_ids():
            d = self._due.get(sid)
            if d is None:
                d = self._due[sid] = [None, 0]  # found in the journal at boot
            if d[0] is not None and now - d[0] < 0:
                continue
            if n >= self.max_per_poll:
                break
            rec = self.j.get_closed(sid)
            ok = False
            if rec is not None:
                ok = self.publish(self.topic, json.dumps(rec).encode(), qos=_QOS)
            if ok:
                self.sent += 1
                n += 1
                i = d[1]
                d[1] = i + 1
                if i >= len(self.retry_s):
                    i = len(self.retry_s) - 1
                d[0] = now + self.retry_s[i]
            else:
                d[0] = now + self.retry_s[0]  # not queued: try again soon
        return n

    def on_message(self, topic, payload):
        """Feed every received message; returns True if it was a bill/ack
        for this pile (handled), False otherwise."""
        if isinstance(topic, (bytes, bytearray)):
            topic = topic.decode()
        if topic != self.ack_topic:
            return False
        try:
            sid = json.loads(payload)["id"]
        except (ValueError, KeyError, TypeError):
            self.bad_acks += 1
            return True
        if not isinstance(sid, str):
            self.bad_acks += 1
            return True
        self.ack(sid)
        return True

    def ack(self, sid):
        """Mark sid acknowledged by the ledger. Returns True if it was pending."""
        self._due.pop(sid, None)
        if self.j.ack(sid):
            self.acked += 1
            return True
        return False
