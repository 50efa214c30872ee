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

# Bills go out at QoS 1 (the "qos=1"s below).


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
    topic, ack_topic: h2pile/v1/<pile>/bill and .../bill/ack (or topics=).
    """

    def __init__(self, journal, pile_id, publish, retry_s=(10, 30, 60, 120, 300), max_per_poll=4, online=None,
                 topics=None):
        # topics: (bill topic, bill/ack topic) as h2p.topics names them, if
        # the caller has them: the pile's uplink reads h2p.topics at boot
        # only (loaded later it may find no room in the heap). Otherwise
        # h2p.topics is imported here, not kept.
        if topics is None:
            from h2p.topics import topic

            topics = (topic(pile_id, "bill"), topic(pile_id, "bill/ack"))
        self.online = online
        self.j = journal
        self.publish = publish
        self.retry_s = retry_s
        self.max_per_poll = max_per_poll
        self.topic, self.ack_topic = topics
        # RAM: sid -> (next due time or None = now, attempts), only for
        # records sent at least once; a record not in it is due now.
        self._due = {}
        self.sent = 0
        self.acked = 0
        self.bad_acks = 0

    def subscriptions(self):
        return [(self.ack_topic, 1)]

    def bill(self, rec):
        """SessionRecorder.on_close hook: send at the next poll()."""
        self._due.pop(rec["id"], None)

    def wake(self):
        """Make every pending record due now (call after an MQTT reconnect)."""
        due = self._due
        for sid in due:
            due[sid] = (None, due[sid][1])

    def poll(self, now):
        """Publish due records; call every second or so. now: monotonic s.
        Returns the number of records handed to publish()."""
        if self.online is not None and not self.online():
            return 0
        # RAM: the journal's index of unacknowledged CLOSE records is walked
        # in place (no sorted copy per poll), and a bill goes out as the
        # bytes stored in the journal (no dict is built for it).
        unacked = self.j.unacked  # sid -> loc; a smaller loc is older
        due = self._due
        retry = self.retry_s
        n = 0
        tries = len(unacked)  # each record is tried at most once per poll
        while n < self.max_per_poll and tries > 0:
            tries -= 1
            sid = None  # the oldest record due now
            for s in unacked:
                d = due.get(s)
                if (d is None or d[0] is None or now >= d[0]) and (sid is None or unacked[s] < unacked[sid]):
                    sid = s
            if sid is None:
                break
            d = due.get(sid)
            i = 0 if d is None else d[1]
            if self.publish(self.topic, self.j.record(unacked[sid]), qos=1):
                self.sent += 1
                n += 1
                due[sid] = (now + retry[min(i, len(retry) - 1)], i + 1)
            else:
                due[sid] = (now + retry[0], i)  # not queued: try again soon
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
            sid = None
        if not isinstance(sid, str):
            self.bad_acks += 1
            return True
        # the ledger has it: mark it acknowledged (False if it was not pending)
        self._due.pop(sid, None)
        if self.j.ack(sid):
            self.acked += 1
        return True
