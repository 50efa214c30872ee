# MicroPython "firmware" for the crash test (tests/test_session_crash.py):
# runs charging sessions against a fake billing meter, journals them and
# bills them through a fake publish, until it is killed with SIGKILL.
# Usage: micropython mp_crash_child.py DIR SEED METER_AT_BOOT CKPT_S [drain]
#   DIR/meter    the meter's energy register (fixed-width text, survives kills)
#   DIR/pub.log  every published bill payload, one per line
import json
import os
import random
import sys
import time

from mp_fake_meter import read_meter, write_meter  # beside this file

from h2p.billing import Billing
from h2p.journal import Journal
from h2p.session import SessionRecorder

RATE_WH_S = 10.0  # 36 kW
STEP_MS = 5

d = sys.argv[1]
random.seed(int(sys.argv[2]))
meter_at_boot = sys.argv[3] == "1"
ckpt_s = float(sys.argv[4])
drain = len(sys.argv) > 5


def publish(topic, payload, qos=0):
    with open(d + "/pub.log", "ab") as f:
        f.write(payload + b"\n")
    return True


t0 = time.ticks_ms()


def now():
    return time.ticks_diff(time.ticks_ms(), t0) / 1000.0


had_tmp = 1
try:
    os.stat(d + "/j.bin.tmp")
except OSError:
    had_tmp = 0
j = Journal(d + "/j.bin", max_bytes=4096, checkpoint_interval_s=ckpt_s, max_body=512)
rep = j.open()
bill = Billing(j, "CRASH", publish, retry_s=(0.5,), max_per_poll=8)
rec = SessionRecorder(j, "CRASH", max_power_w=40000, on_close=bill.bill)
meter = read_meter(d)
for r in rec.recover(now(), meter_wh=meter if meter_at_boot else None):
    print("RECOVERED " + json.dumps(r))
boot = rec.boot()
print("BOOT %d torn=%d garbage=%d tmp=%d" % (boot, rep["torn_bytes"], len(rep["garbage"]), had_tmp))
print("READY")
premix = 0.0
last = now()
n_ckpt = 0
while True:
    t = now()
    dt = t - last
    last = t
    if rec.active is None:
        if drain:
            if not j.unacked_ids():
                print("DRAINED")
                break
        elif random.random() < 0.05:
            if rec.start(t, "sponsor:acme:crash", meter_wh=meter, premix_l=premix, ev_soc=30) is None:
                print("FULL")
    else:
        meter += RATE_WH_S * dt
        premix += 0.0025 * dt
        write_meter(d, meter)
        n_ckpt += rec.step(t, meter_wh=meter, premix_l=premix, power_w=RATE_WH_S * 3600, ev_soc=50)
        if random.random() < 0.004:
            rec.stop(t, "ev_stop", meter_wh=meter, premix_l=premix, ev_soc=60)
    bill.poll(t)
    for sid in j.unacked_ids():  # the "ledger" acks most bills at once
        if random.random() < 0.5:
            bill.on_message(bill.ack_topic, json.dumps({"id": sid}))
    time.sleep_ms(STEP_MS)
