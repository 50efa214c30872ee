"""`h2pile ledger ingest`: bills from the broker into the ledger's database.

Each bill is acknowledged twice, in this order, and only once its row is
committed: first {"id": ...} on h2pile/v1/<pile>/bill/ack (the pile may then
free its flash), then, once the broker has that, the bill's own PUBACK. A
crash anywhere in between gets the bill stored again as a duplicate and
acknowledged again; nothing is acknowledged that is not in the database.

Threads: paho's network thread only queues what arrives (it must keep the
connection alive: pings, PUBACKs); one worker stores the bills in arrival
order, and while the database is unreachable it reconnects and stores the
same bill again, for as long as that takes, acknowledging nothing meanwhile.
The broker sends no more than its in-flight window of unacknowledged bills,
so the queue stays short.

With --share several ingest processes split the stream ($share/GROUP/...).
Their sessions are clean by default: the broker forgets the bills in flight
to a member that dies, and the piles send them again (h2p.billing re-sends
until the bill/ack), to whichever member is alive.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
from typing import Any, NamedTuple

from h2p import topics
from host_tools.ledger_db import DB, LedgerError
from host_tools.ledger_records import validate
from host_tools.secret_args import LEDGER_PASSWORD, secret_from
from host_tools.topic_filter import topic_filter

log = logging.getLogger("ledger")

DEFAULT_CLIENT_ID = "h2pile-ledger"
RETRY_FIRST_S = 0.5  # database unreachable: first wait before reconnecting,
RETRY_MAX_S = 30.0   # doubling up to this


class DatabaseDown(Exception):
    """The database failed in a way that storing again may mend
    (DB.retryable); the message is not acknowledged."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Ingest:
    """MQTT-independent message handler: handle(topic, payload) stores and
    returns the ack (topic, payload bytes) to publish, or None. Raises
    DatabaseDown when the database failed and storing again may work."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self.counts = {"new": 0, "dup": 0, "conflict": 0, "rejected": 0}

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != "bill":
            return self._reject(topic, "not a h2pile/v1/<pile>/bill topic", payload)
        pile = parsed[0]
        try:
            rec = json.loads(payload)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
            return self._reject(topic, "not JSON: %s" % e, payload)
        err = validate(pile, rec)
        if err:
            return self._reject(topic, err, payload)
        try:
            result = self.db.store(rec)
        except Exception as e:
            if self.db.retryable(e):
                raise DatabaseDown(e)
            return self._reject(topic, "the database refused it: %s" % self.db.say(e), payload)
        self.counts[result] += 1
        if result == "conflict":
            log.error("CONFLICT %s from %s: stored before with different content; kept in table conflicts",
                      rec["id"], pile)
        else:
            log.info("%s %s %.1f Wh", "stored" if result == "new" else "duplicate", rec["id"],
                     rec["energy_wh"])
        return topics.topic(pile, "bill/ack"), json.dumps({"id": rec["id"]}).encode()

    def _reject(self, topic: str, reason: str, payload: bytes) -> tuple[str, bytes] | None:
        try:
            self.db.reject(topic, reason, payload)
        except Exception as e:
            if self.db.retryable(e):
                raise DatabaseDown(e)  # kept once the database is back, like a bill
            log.error("could not record the reject: %s", self.db.say(e))
        self.counts["rejected"] += 1
        log.warning("REJECTED message on %s: %s (not acknowledged)", topic, reason)
        return None


def subscription(share: str | None = None) -> str:
    """Every pile's bills; with a share group, one member of the group gets each."""
    sub = topic_filter(name="bill")
    if share:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", share):
            raise LedgerError("--share %r: use letters, digits, '_' and '-'" % share)
        sub = "$share/%s/%s" % (share, sub)
    return sub


class Delivery(NamedTuple):
    link: int  # which connection it came on (Service.link): a PUBACK is only valid on that one
    topic: str
    payload: bytes
    mid: int
    qos: int


class Service:
    """The running ingest: paho's callbacks (network thread) and the worker."""

    def __init__(self, client: Any, db: DB, sub: str, where: str) -> None:
        self.c = client
        self.db = db
        self.handler = Ingest(db)
        self.sub = sub
        self.where = where
        self.inbox: queue.Queue[Delivery | None] = queue.Queue()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        # bumped on every connect and disconnect: a bill's PUBACK is sent only
        # on the connection it came on (a mid means nothing on another one)
        self.link = 0
        self.worker = threading.Thread(target=self.work, name="ledger-store", daemon=True)

    # ------------------------------------------------- network thread
    def on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        with self.lock:
            self.link += 1
        sock = client.socket()
        if sock is not None:
            # each bill is a small write (bill/ack, then PUBACK) waiting on the
            # broker's answer: without this, Nagle holds each one for the
            # broker's delayed ACK, 40 ms a bill
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("connected to %s (session present: %s)", self.where, flags.session_present)
        client.subscribe(self.sub, qos=1)

    def on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self.lock:
            self.link += 1
        if not self.stopping.is_set():
            log.warning("lost the broker %s (%s); reconnecting", self.where, rc)

    def on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("subscription to %s refused: %s", self.sub, rcs)
        else:
            log.warning("subscribed to %s", self.sub)

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            link = self.link
        self.inbox.put(Delivery(link, msg.topic, msg.payload, msg.mid, msg.qos))

    # ------------------------------------------------- worker thread
    def work(self) -> None:
        while True:
            d = self.inbox.get()
            if d is None or self.stopping.is_set():
                return
            ack = self.store(d)
            if self.stopping.is_set():
                return
            if ack is None:
                self.puback(d)  # rejected: logged and kept, no bill/ack
            else:
                self.confirm(d, ack)

    def store(self, d: Delivery) -> tuple[str, bytes] | None:
        """handler.handle(d), again and again through a database outage."""
        wait = RETRY_FIRST_S
        down_since = None
        while not self.stopping.is_set():
            try:
                ack = self.handler.handle(d.topic, d.payload)
            except DatabaseDown as e:
                if down_since is None:
                    down_since = time.monotonic()
                    log.error("database %s failed: %s; the bill on %s is not acknowledged, reconnecting",
                              self.db.where, self.db.say(e.cause), d.topic)
                self._reconnect_db(wait)
                wait = min(wait * 2, RETRY_MAX_S)
                continue
            except Exception as e:  # a bug on this message: keep it, go on with the others
                log.exception("ingest failed on the message on %s", d.topic)
                try:
                    return self.handler._reject(d.topic, "ingest failed on it: %r" % e, d.payload)
                except DatabaseDown:
                    return None
            if down_since is not None:
                log.warning("database %s back after %.1f s", self.db.where, time.monotonic() - down_since)
            return ack
        return None

    def _reconnect_db(self, wait: float) -> None:
        if self.stopping.wait(wait):
            return
        try:
            self.db.reconnect()
        except LedgerError as e:
            log.warning("%s; trying again", e)

    def confirm(self, d: Delivery, ack: tuple[str, bytes]) -> None:
        """bill/ack out; the bill's PUBACK once the broker has it."""
        info = self.c.publish(ack[0], ack[1], qos=1)
        if info.rc != 0:
            return  # no connection: paho sends it after the reconnect; the bill comes again
        while not self.stopping.is_set():
            try:
                info.wait_for_publish(0.5)
            except (RuntimeError, ValueError):
                return
            if info.is_published():
                self.puback(d)
                return
            with self.lock:
                if self.link != d.link:
                    return  # the connection is gone, and the bill's mid with it

    def puback(self, d: Delivery) -> None:
        with self.lock:
            same = self.link == d.link
        if same:
            self.c.ack(d.mid, d.qos)

    def stop(self) -> None:
        self.stopping.set()
        self.inbox.put(None)
        self.c.disconnect()


def ingest(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from host_tools.cmd import parse_broker

    host, port = parse_broker(args.broker)
    sub = subscription(args.share)
    db = DB(args.db)  # a bad or unreachable database ends it here, before the broker sees us
    client_id = args.client_id
    persistent = True
    if not client_id:
        if args.share:
            # each member of a share group needs its own id, and a clean
            # session: the piles re-send what a dead member had in flight
            client_id = "%s-%s-%d" % (DEFAULT_CLIENT_ID, args.share, os.getpid())
            persistent = False
        else:
            client_id = DEFAULT_CLIENT_ID
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                    protocol=mqtt.MQTTv311, manual_ack=True)
    if args.user:
        c.username_pw_set(args.user, secret_from(args, LEDGER_PASSWORD, required=False))
    if args.tls_ca:
        c.tls_set(ca_certs=args.tls_ca)
    c.reconnect_delay_set(1, 30)
    c.max_inflight_messages_set(100)
    svc = Service(c, db, sub, "%s:%d as %s" % (host, port, client_id))
    c.on_connect = svc.on_connect
    c.on_disconnect = svc.on_disconnect
    c.on_subscribe = svc.on_subscribe
    c.on_message = svc.on_message

    def stop(signum: int, frame: Any) -> None:
        svc.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    svc.worker.start()
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        log.warning("broker %s:%d not reachable (%s); retrying", host, port, e)
    c.loop_forever(retry_first_connection=True)
    svc.stop()
    svc.worker.join(10)
    log.warning("stopped: %s", json.dumps(svc.handler.counts))
    db.close()
    return 0
