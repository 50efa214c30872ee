"""False stops (issue 15): a campaign of charging sessions on a busy machine.

The firmware (MicroPython unix port, 96K heap, compiled) against the simulator
at test speed, a warm pile with the bench's quick plant, while a CPU burner
(`python3 -c "while 1: pass"`) keeps one core busy. Each session: an EV plugs
in and asks for a little energy, charges until it stops asking (C -> B), then
leaves, and the next one plugs in at once (before the pile has closed the
last record: that path lost records and stopped sessions with meter_timeout).
A session the pile ends while the EV still asks is a false stop: its reason,
the faults in force and the pile's last events are reported. A pile that
latched a fault is rebooted (a technician's reset) so the campaign goes on,
and that is reported too; so is a session without its own record (energy
> 0) in the journal.

    python -m bench.stops                   # 50 sessions at speed 20, burner on
    python -m bench.stops --sessions 10 --speed 10 --no-burner

Exit status 1 if any session was stopped while the EV asked (or did not start).
`tests/system/test_stops_campaign.py` (marked slow) runs the same campaign.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from bench.pile import QUICK_CONFIG, QUICK_PLANT, WARM, BenchPile
from host_tools.pilerun import HEAP  # the unix board's heap budget (boards/unix_sim.json)

# The EV's own end: ~0.25 kWh into a 10 kWh pack, ~20 s simulated.
EV = {"soc": 50.0, "kwh": 10.0, "target": 52.5}
# A stop with one of these reasons is the EV's doing, not the pile's.
EV_REASONS = ("ev_stopped", "ev_unplugged")
CONFIG = {
    **QUICK_CONFIG,
    "auto_charge": True,
    # Raised for accelerated simulation only (config.md): at 20x the 2.5 s
    # default is 125 ms of wall time, less than a busy host's scheduling gap.
    "bus": {"data_age_ms": 8000},
}


def burner() -> subprocess.Popen:
    """One core kept busy (the caller stops it by its pid: stop_burner)."""
    return subprocess.Popen(["python3", "-c", "while 1: pass"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_burner(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait(5)


class StopsCampaign:
    def __init__(self, sessions=50, speed=20.0, burn=True, heap=HEAP, log=print):
        self.n = sessions
        self.speed = speed
        self.burn = burn
        self.heap = heap
        self.log = log
        self.results: list[dict] = []  # one per plug-in
        self.records: list[tuple] = []  # (id, Wh, reason) per "LOG session closed" line
        self.reboots: list[dict] = []
        self.pr: BenchPile | None = None

    def _stops(self):
        return [e for e in self.pr.events if e["kind"] == "session_stop"]

    def _starts(self):
        return [e for e in self.pr.events if e["kind"] == "session_start"]

    async def _until(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            if self.pr.fw.returncode is not None:
                return False
            await asyncio.sleep(0.02)
        return pred()

    async def _ready(self, timeout=60.0):
        """The pile ready for an EV; a latched fault is cleared by a reboot."""
        pr = self.pr
        if await self._until(lambda: pr.state == "ready", timeout):
            return True
        faults = pr.status.get("faults")
        self.reboots.append({"state": pr.state, "faults": faults, "tail": pr.tail(6)})
        self.log(f"  pile in {pr.state} {faults}: reboot")
        await pr.restart_firmware()
        return await self._until(lambda: pr.state == "ready", timeout)

    async def one(self, i: int) -> dict:
        pr = self.pr
        res = {"n": i}
        if not await self._ready():
            res["problem"] = f"pile not ready (state {pr.state})"
            return res
        n_start, n_stop = len(self._starts()), len(self._stops())
        t0 = time.monotonic()
        await pr.inject("ev_plug", **EV)
        if not await self._until(lambda: len(self._starts()) > n_start, 30):
            res["problem"] = f"no session started (state {pr.state}, faults {pr.status.get('faults')})"
            await pr.inject("ev_unplug")
            return res
        if not await self._until(lambda: len(self._stops()) > n_stop, 120):
            res["problem"] = f"session did not end (state {pr.state})"
            await pr.inject("ev_unplug")
            return res
        ev = self._stops()[n_stop]
        plant = await pr.plant()
        res.update({"reason": ev["b"], "t": ev["t"], "wall_s": round(time.monotonic() - t0, 1),
                    "ev_asking": plant["ev_asking"], "ev_soc": plant["ev_soc"]})
        if plant["ev_asking"] or ev["b"] not in EV_REASONS:
            res["problem"] = "stopped while the EV asked"
            res["faults"] = pr.status.get("faults")
            res["lines"] = [x for x in pr.lines if x.startswith("LOG")][-8:]
        await pr.inject("ev_unplug")
        return res

    def _on_line(self, line):
        if line.startswith("LOG session closed "):
            p = line.split()
            self.records.append((p[3], float(p[4]), p[6] if len(p) > 6 else ""))

    async def run(self) -> dict:
        params = dict(WARM)
        params.update(QUICK_PLANT)
        burn = burner() if self.burn else None
        t0 = time.monotonic()
        self.pr = BenchPile(speed=self.speed, heap=self.heap, params=params, config=CONFIG, mqtt=False)
        self.pr.on_line = self._on_line
        try:
            await self.pr.start()
            for i in range(1, self.n + 1):
                r = await self.one(i)
                self.results.append(r)
                if i == self.n:  # the last record is closed by the next meter reading
                    await self._until(lambda: len(self.records) >= len(self._starts()), 10)
                self.log(f"  session {i:2d}: {r.get('reason', '-')} {r.get('wall_s', '')} s"
                         + (f"  ** {r['problem']} {r.get('faults', '')}" if "problem" in r else ""))
                if self.pr.fw.returncode is not None:
                    self.log("  firmware exited:\n" + self.pr.tail())
                    break
        finally:
            await self.pr.stop()
            if burn is not None:
                stop_burner(burn)
        return self.summary(time.monotonic() - t0)

    def summary(self, wall_s: float) -> dict:
        bad = [r for r in self.results if "problem" in r]
        reasons: dict = {}
        for r in self.results:
            reasons[r.get("reason", "none")] = reasons.get(r.get("reason", "none"), 0) + 1
        ids = {r[0] for r in self.records}
        return {"sessions": len(self.results), "speed": self.speed, "burner": self.burn,
                "stopped_while_ev_asked": len(bad), "problems": bad, "reasons": reasons,
                "reboots": self.reboots, "records": len(self.records), "distinct_records": len(ids),
                "zero_energy_records": [r for r in self.records if r[1] <= 0],
                "energy_wh": round(sum(r[1] for r in self.records), 1), "wall_s": round(wall_s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=50, help="EV plug-ins (default 50)")
    ap.add_argument("--speed", type=float, default=20.0, help="simulation speed (default 20)")
    ap.add_argument("--no-burner", action="store_true", help="no CPU burner")
    a = ap.parse_args(argv)
    if a.sessions < 1:
        ap.error(f"--sessions must be >= 1 (got {a.sessions})")
    if not 1 <= a.speed <= 200:
        ap.error(f"--speed must be between 1 and 200 (got {a.speed})")
    print(f"false stops: {a.sessions} sessions at speed {a.speed:g}, burner {'off' if a.no_burner else 'on'}",
          flush=True)
    s = asyncio.run(StopsCampaign(a.sessions, a.speed, not a.no_burner,
                                  log=lambda *x: print(*x, flush=True)).run())
    print(f"{s['sessions']} sessions, {s['stopped_while_ev_asked']} stopped while the EV asked, "
          f"{len(s['reboots'])} reboot(s) for a latched fault; stop reasons {s['reasons']}; "
          f"{s['records']} records ({len(s['zero_energy_records'])} at 0 Wh), {s['energy_wh']} Wh; {s['wall_s']} s wall")
    for r in s["problems"]:
        print(f"  session {r['n']}: {r.get('reason')}: {r['problem']}; faults {r.get('faults')}")
        for line in r.get("lines", []):
            print("      " + line)
    bad_records = s["records"] != s["sessions"] or s["zero_energy_records"]
    return 1 if s["problems"] or s["reboots"] or bad_records else 0


if __name__ == "__main__":
    sys.exit(main())
