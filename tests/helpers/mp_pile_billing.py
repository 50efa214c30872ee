# MicroPython integration harness: journal + session + billing with the real
# MQTT client (h2p.mqtt) against a broker and `h2pile ledger ingest`.
# A fake billing meter (DIR/meter, survives kills) advances 10 Wh/s while a
# session runs. Runs NSESS sessions, then waits until every bill is
# acknowledged by the ledger and prints DONE.
# Usage: micropython mp_pile_billing.py DIR PORT NSESS SEED [PILE_ID [SESSION_S [JOURNAL_BYTES]]]
#   SESSION_S: longest session in seconds (default 0.4; each lasts 1/4 to all of it)
import json
import random
import sys

from mp_fake_meter import read_meter, write_meter  # beside this file

from h2p.billing import Billing
from h2p.compat import asyncio, sleep_ms, ticks_diff, ticks_ms
from h2p.journal import Journal
from h2p.mqtt import MQTTClient
from h2p.session import SessionRecorder

d = sys.argv[1]
port = int(sys.argv[2])
nsess = int(sys.argv[3])
random.seed(int(sys.argv[4]))
pile = sys.argv[5] if len(sys.argv) > 5 else "PM1"
session_s = float(sys.argv[6]) if len(sys.argv) > 6 else 0.4
journal_bytes = int(sys.argv[7]) if len(sys.argv) > 7 else 16384
RATE = 10.0


async def main():
    t0 = ticks_ms()

    def now():
        return ticks_diff(ticks_ms(), t0) / 1000.0

    j = Journal(d + "/j.bin", max_bytes=journal_bytes, checkpoint_interval_s=0.5)
    rep = j.open()
    c = MQTTClient(pile, "127.0.0.1", port, keepalive=5, backoff_min_ms=200, backoff_max_ms=1000)
    bill = Billing(j, pile, lambda t, p, qos=1: c.publish(t, p, qos=qos), retry_s=(2, 5),
                   max_per_poll=4, online=lambda: c.connected)
    rec = SessionRecorder(j, pile, wall=None, max_power_w=40000, on_close=bill.bill)
    meter = read_meter(d)
    got = rec.recover(now(), meter_wh=meter, reason="power_loss")
    boot = rec.boot()
    print("BOOT %d recovered=%d pending=%d torn=%d" % (boot, len(got), len(j.unacked_ids()), rep["torn_bytes"]))
    c.on_message = bill.on_message
    c.on_connect = bill.wake
    for t, q in bill.subscriptions():
        c.subscribe(t, q)
    task = asyncio.create_task(c.run())
    done = 0
    while True:
        t = now()
        if rec.active is None:
            if done < nsess:
                rec.start(t, "sponsor:acme:%d" % (done % 3), meter_wh=meter, premix_l=0.0, ev_soc=30)
                t_end = t + random.uniform(session_s / 4, session_s)
            elif not j.unacked_ids():
                break
        else:
            meter += RATE * 0.02
            write_meter(d, meter)
            rec.step(t, meter_wh=meter, power_w=RATE * 3600, ev_soc=50)
            if t >= t_end:
                rec.stop(t, "ev_stop", meter_wh=meter, ev_soc=80)
                done += 1
                print("CLOSED %d" % done)
        bill.poll(t)
        await sleep_ms(20)
    print("DONE " + json.dumps({"sessions": done, "meter": meter, "sent": bill.sent, "acked": bill.acked,
                                "mqtt": c.stats, "journal": j.stats()}))
    task.cancel()


asyncio.run(main())
