"""3. Memory.

- A full (short) session on the unix port at high speed with MQTT on: boot,
  warm start, an EV plugs in, charges, stops, is unplugged, the session is
  closed in the journal and billed. Peak of the heap in use (STATUS "heap":
  gc.mem_alloc() after gc.collect(), every 0.5 s wall) and whether it
  completed, at a given -X heapsize.
- The same session without MQTT, and with the bytecode loaded into the heap
  instead of run from the board's flash (the ROM image), for comparison.
- The smallest heap at which that session completes, by bisection.
- Bytes allocated per control cycle in steady charging (bench/mp_alloc.py
  on MicroPython, the compiled core, gc disabled).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

from bench.pile import QUICK_CONFIG, QUICK_PLANT, WARM, BenchPile, firmware_build
from host_tools import ROOT
from host_tools.pilerun import MICROPYTHON


async def session(heap: str, speed: float = 20.0, mqtt: bool = True, timeout_wall: float = 60.0,
                  rom: bool = True) -> dict:
    params = dict(WARM)
    params.update(QUICK_PLANT)
    cfg = dict(QUICK_CONFIG, auto_charge=True)
    cfg["bus"] = {"data_age_ms": 5000}
    pr = BenchPile(speed=speed, heap=heap, params=params, config=cfg, mqtt=mqtt, rom=rom)
    peak = 0
    peak_free_min = None
    res = {"heap": heap, "completed": False, "reason": "", "mqtt": mqtt, "code": "rom" if rom else "ram"}
    t0 = time.monotonic()

    def on_line(line):
        nonlocal peak, peak_free_min
        if line.startswith("STATUS "):
            try:
                h = json.loads(line[7:]).get("heap")
            except ValueError:
                return
            if h:
                peak = max(peak, h[0])
                peak_free_min = h[1] if peak_free_min is None else min(peak_free_min, h[1])

    pr.on_line = on_line
    sub = None
    try:
        await pr.start()
        if mqtt:
            # "MQTT on" means the uplink works: the session's bill must reach
            # the broker (a 96K heap once left the uplink waiting for memory
            # for good while the session itself completed).
            sub = _Subscriber(pr.mqtt_port, pr.config["pile_id"])
        end = time.monotonic() + timeout_wall

        def dead():
            return pr.fw.returncode is not None or any("MemoryError" in x for x in pr.lines[-20:])

        stage = "ready"
        while time.monotonic() < end and not dead():
            if stage == "ready" and pr.state == "ready":
                await pr.inject("ev_plug", soc=40, kwh=60, target=41.5)
                stage = "charging"
            elif stage == "charging" and any(e["kind"] == "session_stop" for e in pr.events):
                await asyncio.sleep(1.0)
                await pr.inject("ev_unplug")
                stage = "closing"
            elif stage == "closing" and any(x.startswith("LOG session closed") for x in pr.lines):
                await asyncio.sleep(2.0)  # the bill goes out, STATUS shows the heap after
                if sub is not None:
                    for _ in range(100):
                        if sub.count("bill") or dead():
                            break
                        await asyncio.sleep(0.05)
                if not dead() and (sub is None or sub.count("bill")):
                    res["completed"] = True
                elif sub is not None and not sub.count("bill"):
                    stage = "bill over MQTT"
                break
            await asyncio.sleep(0.05)
        if not res["completed"]:
            res["reason"] = ("MemoryError" if any("MemoryError" in x for x in pr.lines) else
                             f"firmware exited {pr.fw.returncode}" if pr.fw.returncode is not None else
                             f"stuck at stage {stage} (state {pr.state})")
            res["tail"] = pr.tail(8)
    finally:
        if sub is not None:
            res["mqtt_msgs"] = sub.total()
            sub.close()
        await pr.stop()
    res.update({"peak_alloc": peak, "min_free": peak_free_min, "wall_s": round(time.monotonic() - t0, 1),
                "sim_s": round((time.monotonic() - t0) * speed, 1)})
    return res


class _Subscriber:
    """Counts the pile's MQTT messages by sub-topic (h2p.topics' names)."""

    def __init__(self, port: int, pile_id: str) -> None:
        import threading

        import paho.mqtt.client as paho

        from h2p import topics

        self.prefix = topics.PREFIX + pile_id + "/"
        self.n: dict[str, int] = {}
        self._lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-memory")

        def on_message(_c, _u, m) -> None:  # type: ignore[no-untyped-def]
            with self._lock:
                name = m.topic[len(self.prefix):]
                self.n[name] = self.n.get(name, 0) + 1

        self.c.on_message = on_message
        self.c.on_connect = lambda c, *a: c.subscribe(self.prefix + "#", 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def count(self, name: str) -> int:
        with self._lock:
            return self.n.get(name, 0)

    def total(self) -> int:
        with self._lock:
            return sum(self.n.values())

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


async def smallest_heap(lo_k=32, hi_k=256, step_k=8, log=print) -> dict:
    """Bisection over heap sizes (KB) for the smallest that completes."""
    tried = {}

    async def ok(k):
        r = await session(f"{k}K")
        if not r["completed"] and r["reason"] != "MemoryError":
            # Not the heap's doing (a stage stuck on a loaded machine): try
            # once more. (The cell_trip at stack start this used to cover was
            # the firmware judging a cell read before the stack started:
            # fixed, issue 15.)
            r = await session(f"{k}K")
        tried[k] = r["completed"]
        log(f"    heap {k:>4}K: {'completes' if r['completed'] else 'fails (' + r['reason'] + ')'}"
            f", peak in use {r['peak_alloc']} B")
        return r["completed"]

    if not await ok(hi_k):
        return {"smallest_k": None, "tried": tried, "note": f"does not complete even at {hi_k}K"}
    lo, hi = lo_k, hi_k  # invariant: hi completes; lo assumed to fail
    while hi - lo > step_k:
        mid = (lo + hi) // 2 // step_k * step_k or step_k
        if mid <= lo:
            break
        if await ok(mid):
            hi = mid
        else:
            lo = mid
    return {"smallest_k": hi, "resolution_k": step_k, "tried": tried}


def alloc_per_cycle(n=200) -> dict:
    out = firmware_build()
    env = dict(os.environ, MICROPYPATH=".frozen:" + os.path.join(out, "lib") + ":" +
               os.path.join(ROOT, "tests", "helpers"))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=512K", os.path.join(ROOT, "bench", "mp_alloc.py"), str(n)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    for line in r.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (r.stdout + r.stderr).strip()[-800:]}
