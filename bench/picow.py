"""The 32-bit truth: h2pile's firmware on an emulated Raspberry Pi Pico W (official
MicroPython v1.23.0 image, rp2040py), against the simulator and a local mosquitto.

    python -m bench.picow [--emu-s 8] [--uf2 PATH]

Boots the firmware from a host-built littlefs (auto_start: the pile runs
off → selftest → preheat by itself), then measures, in the board's own time:

- heap in use at boot (BOOT line: bytecode in the heap, v1.23 has no ROMFS) and its
  peak over the run (STATUS lines, `heap: [alloc, free]` after a collect);
- the poll cycle (STATUS `t` / `cycles`) and how busy the CPU is: rp2040py counts the
  Cortex-M0+ cycles it executes (`core.cycles`), idle (WFE) time is not counted,
  so busy = cycles / 125 MHz over the emulated time;
- a control step, as the wire sees it: from a read reply's last byte to the next
  read request's first byte, the firmware decodes the reply, steps the supervisor
  and builds the next request (pairs of reads with no write between them), in
  emulated ms and CPU cycles.

`make bench` runs this when a Pico W image is available (bench/run.py section
`picow`) and prints one line otherwise. Numbers are emulated-time figures: the
emulator's cycle counts are per-instruction estimates (flash wait states and
bus contention are not modelled), so they are a floor for the real chip.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

CPU_HZ = 125_000_000


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def measure(emu_s: float = 8.0, uf2: str | None = None, log: Callable[..., Any] = print) -> dict[str, Any]:
    """Run the pile on the emulated board for `emu_s` board seconds after BOOT. Raises
    uf2.NoImage when there is no Pico W image."""
    from host_tools import broker as brokermod
    from host_tools.build import build
    from host_tools.emu import fsimage
    from host_tools.emu import uf2 as uf2mod
    from host_tools.emu.rig import PicoRig

    image = uf2mod.resolve(uf2)
    t_wall = time.monotonic()
    d = tempfile.mkdtemp(prefix="h2p-picow-bench-")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mosq = brokermod.start(port)
    cfg = {"pile_id": "bench-picow", "auto_start": True,
           "wifi": {"ssid": "h2pile-emu", "password": "bench-password"},
           "mqtt": {"host": "10.0.0.1", "port": port, "keepalive_s": 600},
           "ntp": {"server": "10.0.0.1"}}
    img = fsimage.install(os.path.join(d, "flash.lfs"), build("rp2_pico_w", d), cfg)
    rig = PicoRig(image, fs_image=img, broker_port=port)
    assert rig.bridge is not None
    rig.bridge.trace = []
    log(f"picow: booting the firmware on {image.name} (emulated; ~20x slower than wall time) ...")
    try:
        rig.start()
        con = rig.board.console
        boot = json.loads(con.wait(r"^BOOT (\{.*\})$", 600, alive=rig.board.alive).group(1))
        t_boot = time.monotonic() - t_wall
        i0 = con.mark()
        # The window starts once the journal is open (cycle 2): boot-only work is behind.
        con.wait(r'^STATUS \{.*"cycles": ([3-9]|\d\d+)', 600, start=i0, alive=rig.board.alive)
        mcu = rig.board.mcu
        a = rig.board.call(lambda: (mcu.clock.nanos, mcu.core.cycles))
        log(f"picow: BOOT after {t_boot:.0f} s wall; running {emu_s:g} s of board time ...")
        rig.board.wait_emu(emu_s, 60 * emu_s + 300)
        b = rig.board.call(lambda: (mcu.clock.nanos, mcu.core.cycles))
        lines = con.text(i0)
        trace = list(rig.bridge.trace)
        stats = dict(rig.bridge.stats)
    finally:
        rig.stop()
        mosq.kill()
        mosq.wait(5)
    st = []
    for t in lines:
        if t.startswith("STATUS {"):
            try:
                st.append(json.loads(t[7:]))
            except ValueError:
                pass
    win = [x for x in st if x["cycles"] >= 3]
    peak = max(st, key=lambda x: x["heap"][0])
    states = []
    for x in st:
        if not states or states[-1] != x["state"]:
            states.append(x["state"])
    dt_emu = (b[0] - a[0]) / 1e9
    busy = (b[1] - a[1]) / CPU_HZ / dt_emu
    cyc_ms = (win[-1]["t"] - win[0]["t"]) / max(1, win[-1]["cycles"] - win[0]["cycles"])
    # Reply end -> next read request, both reads (fc 3/4), in the measured window.
    gaps_ms, gaps_cyc = [], []
    for p, q in itertools.pairwise(trace):
        if p[1] is None or p[3] is None or p[5] not in (3, 4) or q[5] not in (3, 4) or p[0] < a[0]:
            continue
        if q[2] < p[3]:
            continue  # the chip reset in between
        gaps_ms.append((q[0] - p[1]) / 1e6)
        gaps_cyc.append(q[2] - p[3])
    per_req_ms = dt_emu * 1000 / max(1, sum(1 for x in trace if x[0] >= a[0]))
    # The poll cycle against its reads' time on the wire with the simulated
    # devices' turnaround (issue 16: <= 1.25x at 115200), as the unix port's
    # figure (bench.busjitter) counts it.
    from bench.wire import TURNAROUND_S, Layout

    reads_ta_ms = Layout().cycle_reads_s(115200, TURNAROUND_S) * 1000
    return {
        "image": image.name, "mpy": boot.get("mpy"), "code": boot.get("code"),
        "boot_heap_used": boot["heap_used"], "boot_heap_free": boot["heap_free"],
        "peak_heap_used": peak["heap"][0], "peak_heap_free": peak["heap"][1], "peak_state": peak["state"],
        "states": states, "emu_s": round(dt_emu, 2), "status_lines": len(st),
        "poll_cycle_ms": round(cyc_ms, 1), "cpu_busy": round(busy, 3),
        "cpu_ms_per_cycle": round(cyc_ms * busy, 1),
        "cycles_per_poll_cycle": int(cyc_ms / 1000 * busy * CPU_HZ),
        "transaction_ms": round(per_req_ms, 2),
        "reads_wire_turnaround_ms": round(reads_ta_ms, 1), "ratio_wire_turnaround": round(cyc_ms / reads_ta_ms, 2),
        "step_gap_ms": {"n": len(gaps_ms), "p50": round(statistics.median(gaps_ms), 2) if gaps_ms else None,
                        "p90": round(_pct(gaps_ms, 0.9), 2) if gaps_ms else None,
                        "max": round(max(gaps_ms), 2) if gaps_ms else None},
        "step_gap_cycles": {"p50": int(statistics.median(gaps_cyc)) if gaps_cyc else None,
                            "p90": int(_pct(gaps_cyc, 0.9)) if gaps_cyc else None},
        "bridge": stats, "wall_s": round(time.monotonic() - t_wall, 1), "boot_wall_s": round(t_boot, 1),
    }


def rows(p: dict[str, Any], unix: dict[str, Any] | None = None) -> list[tuple]:
    """(section, figure, measured, limit/goal, ratio, note), bench/run.py's row shape."""
    if "skipped" in p:
        return [("picow", "emulated Pico W (32-bit)", "skipped", "", "", p["skipped"])]
    unix = unix or {}
    kb = 1024
    peak_unix = unix.get("peak_alloc")
    heap_code_unix = unix.get("peak_alloc_code_in_heap")
    cyc_unix = unix.get("cycle_ms")
    sg, sc = p["step_gap_ms"], p["step_gap_cycles"]
    return [
        ("picow", "heap in use at boot (RP2040, MicroPython " + str(p["mpy"]) + ", .mpy in the heap)",
         f"{p['boot_heap_used'] / kb:.1f} KB", f"{(p['boot_heap_used'] + p['boot_heap_free']) / kb:.0f} KB heap",
         f"{p['boot_heap_used'] / (p['boot_heap_used'] + p['boot_heap_free']):.2f}", "BOOT line, after a collect"),
        ("picow", f"peak heap in use, {' -> '.join(p['states'])}, MQTT on",
         f"{p['peak_heap_used'] / kb:.1f} KB", (f"unix 64-bit: {peak_unix / kb:.1f} KB code in flash"
                                                + (f", {heap_code_unix / kb:.1f} KB code in heap" if heap_code_unix else ""))
         if peak_unix else "unix port: run the memory section", "", f"{p['peak_heap_free'] / kb:.0f} KB free at the peak; "
         f"{p['status_lines']} STATUS lines over {p['emu_s']} s"),
        ("picow", "poll cycle @115200 (board time)", f"{p['poll_cycle_ms']:.1f} ms",
         f"unix port {cyc_unix:.1f} ms" if cyc_unix else "unix port: run the reaction section",
         f"{p['poll_cycle_ms'] / cyc_unix:.1f}x" if cyc_unix else "",
         f"{p['transaction_ms']:.1f} ms per bus transaction"),
        ("picow", "poll cycle vs its reads on the wire @115200 (RP2040)",
         f"{p['poll_cycle_ms']:.1f} ms vs {p['reads_wire_turnaround_ms']:.1f} ms", "<= 1.25x",
         f"{p['ratio_wire_turnaround']:.2f}x", "reads' wire time + 2 ms device turnaround each; the cycle "
         "also holds the writes and the chores' turns (hot reads again)") if "ratio_wire_turnaround" in p else
        ("picow", "poll cycle vs its reads on the wire", "not measured", "", "", ""),
        ("picow", "CPU busy at 125 MHz (headroom = 100 % - busy)", f"{min(p['cpu_busy'], 1.0) * 100:.0f} %",
         "", "", f"executed / elapsed cycles = {p['cpu_busy']:.2f} (above 1: the emulator's cycle count runs "
         f"slightly ahead of its clock; read: no idle time); {p['cycles_per_poll_cycle'] / 1e6:.1f} M cycles per poll cycle"),
        ("picow", "read reply -> next request (decode + control step)",
         f"p50 {sg['p50']} / p90 {sg['p90']} / max {sg['max']} ms", "", "",
         f"p50 {sc['p50']} / p90 {sc['p90']} CPU cycles; n={sg['n']}"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.picow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emu-s", type=float, default=8.0, help="board seconds to run after the journal is open")
    ap.add_argument("--uf2", default=None)
    ap.add_argument("--json", default="", help="also write the figures here")
    a = ap.parse_args(argv)
    from host_tools.emu.uf2 import NoImage

    try:
        p = measure(a.emu_s, a.uf2)
    except NoImage as e:
        print(f"picow: skipped: {e}")
        return 0
    from bench.run import table

    print(table(rows(p)))
    print(json.dumps(p))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(p, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
