# MicroPython: bytes the control core allocates per control cycle in steady
# charging. Run by bench.memory with
#   MICROPYPATH=.frozen:<build>/lib:tests/helpers micropython -X heapsize=512K bench/mp_alloc.py N
# It imports the compiled core (.mpy from host_tools.build), drives a
# tests/helpers/pilebench.Bench into charging, then with gc disabled measures
# gc.mem_alloc() across (a) Supervisor.step alone and (b) one whole poll
# cycle as app.Pile runs it minus the I/O: every block of the schedule
# decoded from a register image (Device.store) and a step after each.
# Prints one JSON line.
import gc
import json
import sys

import pilebench as PB

from h2p import codes as K
from h2p.readings import SCALES

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200

b = PB.Bench(idle_shutdown_s=0)
b.set(ref_bed_c=265, fc_stack_c=165)


def plant(bb):
    PB.follow_plant(bb)


b.step(100, 5, True)
ok = b.until("ready", 100, 20000, plant)
b.set(chg_pilot=K.PILOT_B, chg_ev_req_v=380, chg_ev_req_a=200, chg_ev_soc=40)
b.step(100, 2)
b.set(chg_pilot=K.PILOT_C)
reached = b.until("charging", 100, 2000, plant)
for _ in range(200):  # through lock, insulation, close, current flowing
    plant(b)
    b.step(100)
state = b.state()

# (a) the supervisor step alone, readings fresh (refreshed outside the window)
sup = b.sup
per_step = []
gc.collect()
gc.disable()
for i in range(N):
    b.now += 100
    b.refresh()
    a0 = gc.mem_alloc()
    sup.step(b.now, b.rd)
    per_step.append(gc.mem_alloc() - a0)
    if sup.events:
        sup.events.clear() if hasattr(sup.events, "clear") else sup.events.__init__()
    if gc.mem_free() < 20000:
        gc.enable()
        gc.collect()
        gc.disable()
gc.enable()

# (b) a poll cycle minus the I/O: register images for every block, decoded
# into the readings store by the drivers, a step after each read.


def image(dev, blk):
    # Encode the bench's current values into the block's register bytes.
    buf = bytearray(2 * blk.count)
    for i, off, typ, f, lo, hi in blk.fields:
        v = b.values.get(__import__("h2p.readings", None, None, ["NAMES"]).NAMES[i], 0)
        raw = v / SCALES[i] / f
        if typ == K.F32:
            import struct

            bb = struct.pack(">f", raw)
            buf[2 * off:2 * off + 4] = bb
        elif typ == K.U32:
            x = int(raw)
            buf[2 * off:2 * off + 4] = bytes(((x >> 24) & 255, (x >> 16) & 255, (x >> 8) & 255, x & 255))
        else:
            x = int(raw) & 0xFFFF
            buf[2 * off] = x >> 8
            buf[2 * off + 1] = x & 255
    return memoryview(buf)


sched = []
ch = [(d, bl) for d in b.devs if d.name == "charger" for bl in d.blocks]
for d in b.devs:
    if d.name == "charger":
        continue
    for bl in d.blocks:
        sched.extend(ch)
        sched.append((d, bl))
images = [(d, bl, image(d, bl), d.name + ":" + str(bl.start)) for d, bl in sched]
per_cycle = []
per_store = {}
gc.collect()
gc.disable()
for c in range(max(10, N // 10)):
    a0 = gc.mem_alloc()
    for d, bl, mv, k in images:
        b.now += 10
        s0 = gc.mem_alloc()
        d.store(bl, mv, b.rd, b.now)
        s1 = gc.mem_alloc()  # before any bookkeeping of ours allocates
        per_store[k] = max(per_store.get(k, 0), s1 - s0)
        sup.step(b.now, b.rd)
        if sup.events:
            del sup.events[:]
    per_cycle.append(gc.mem_alloc() - a0)
    if gc.mem_free() < 20000:
        gc.enable()
        gc.collect()
        gc.disable()
gc.enable()
steady = per_step[N // 4:]
print(json.dumps({
    "state": state, "reached_ready": ok, "reached_charging": reached, "n": N,
    "step_bytes_max": max(steady), "step_bytes_mean": sum(steady) / len(steady),
    "step_bytes_first": per_step[:5],
    "cycle_bytes_mean": sum(per_cycle) / len(per_cycle), "cycle_bytes_max": max(per_cycle),
    "store_bytes": per_store, "schedule_len": len(sched),
}))
