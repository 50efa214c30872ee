"""End-to-end billing campaign with the real firmware (issue 6 "Must show").

The simulator and the firmware (MicroPython unix port, host_tools.pilerun.
PileRun with its private mosquitto), `h2pile ledger ingest` as a subprocess
on SQLite. N charging sessions (warm pile, small EV pack, close target SOC,
some unplugged mid-charge) while, at random moments chosen from one seed:

* the firmware is SIGKILLed (mid-charge, right at the session_stop event,
  right after "session closed", right after boot/recovery) and restarted in
  the same board directory; sometimes a torn partial record is appended to
  data/journal.bin while it is down (a power cut during a flash append);
* the broker is down (killed, a fresh one on the same port later: no
  persistence, so queued messages and the ledger's session are gone);
* the ingest is killed (SIGKILL or SIGTERM) and restarted.

Ground truth is the simulator's meter (plant()["meter_kwh"]) read before
each plug-in and after the EV is gone and the contactor is open: the meter
only moves while the contactor is closed, so each window's meter advance
is the energy the ledger must bill for that window (one record, or a
recovered record plus the one the pile opened after reboot).

    res = asyncio.run(Campaign(tmp_path, seed=1234, sessions=20).run())
    res.summary()  # figures; res.problems(): list of what went wrong

Replay a failure: H2P_E2E_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field

from host_tools.pilerun import HEAP, PileRun

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PY = sys.executable

WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {
    "idle_shutdown_s": 0,
    "checkpoint_s": 10,  # more checkpoint writes: more moments to die in
    "journal_kb": 8,  # the smallest journal: compactions (tmp + rename) happen mid-campaign too
    "bus": {"data_age_ms": 8000},  # a busy CI machine must not starve the bus into faults
    "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05},
}

@dataclass
class Window:
    """One EV plug-in, from just before the plug to the EV gone and the
    contactor open."""

    n: int
    plan: dict
    m0: float = 0.0  # simulator meter, Wh
    m1: float = 0.0
    ids: list = field(default_factory=list)  # session ids the firmware reported in it
    kills: list = field(default_factory=list)
    t_wall: float = 0.0


def tolerance_wh(meter_wh):
    """1 Wh (the issue's bound) plus what the meter's own register cannot
    show: an SDM630 sends kWh as float32, so each of the two readings that
    bound a session is off by up to half a float32 step, one step for the
    pair (0.12 Wh at 1235 kWh, ~1 Wh at 10 MWh). The simulator's count is
    exact (double)."""
    import math

    kwh = max(meter_wh / 1000.0, 1.0)
    ulp_wh = 2.0 ** (math.floor(math.log2(kwh)) - 23) * 1000.0
    return 1.0 + ulp_wh


class Ingest:
    def __init__(self, port, db_url, log_path):
        self.port = port
        self.db_url = db_url
        self.log_path = log_path
        self.proc = None
        self.starts = 0

    def start(self):
        args = ["ledger", "ingest", "--broker", "127.0.0.1:%d" % self.port, "--db", self.db_url, "-v"]
        cmd = [PY, "-m", "host_tools.cli"] + args
        self.log = open(self.log_path, "a")
        self.log.write("=== start %d\n" % self.starts)
        self.log.flush()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log,
                                     start_new_session=True)
        self.starts += 1

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def up(self):
        return self.proc is not None and self.proc.poll() is None


def journal_state(path):
    """Open a copy of the board's journal on CPython (never the live file:
    open() may repair it). Returns (stats, unacked ids, open ids, acked ids, report)."""
    from h2p.journal import Journal

    if not os.path.exists(path):
        return None
    tmpd = path + ".inspect"
    shutil.rmtree(tmpd, ignore_errors=True)
    os.makedirs(tmpd)
    cp = os.path.join(tmpd, "journal.bin")
    shutil.copy(path, cp)
    j = Journal(cp)
    rep = j.open()
    return {"stats": j.stats(), "unacked": j.unacked_ids(), "open": [o["id"] for o, _c in j.open_sessions()],
            "acked": sorted(j._acked), "report": rep}


class Campaign:
    def __init__(self, tmp, seed, sessions=20, speed=20.0, firmware_build=None, verbose=True):
        self.tmp = str(tmp)
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = sessions
        self.speed = speed
        self.verbose = verbose
        self.db_path = os.path.join(self.tmp, "ledger.db")
        if firmware_build is None:
            from host_tools.build import build

            firmware_build = build("unix_sim", os.path.join(self.tmp, "fw"))  # run alone: a build of its own
        self.pr = PileRun(speed=speed, heap=HEAP, mqtt=True, config=CONFIG, sim_args=WARM,
                          board_dir=os.path.join(self.tmp, "board"), log_path=os.path.join(self.tmp, "sim.jsonl"),
                          firmware_build=firmware_build)
        self.ingest = None
        # every kind of kill at least once, the rest at random
        r = self.rng
        kinds = ["mid_charge", "mid_charge", "at_stop", "after_close", "at_boot"][:sessions]
        kinds += r.choices(["none", "mid_charge", "at_stop", "after_close", "at_boot"], [45, 25, 10, 10, 10],
                           k=sessions - len(kinds))
        r.shuffle(kinds)
        self.kill_kinds = kinds
        self.windows: list[Window] = []
        self.fwlog: list[tuple[float, str]] = []  # (wall, line), no STATUS
        # The firmware's whole console, STATUS lines included, with the
        # campaign's own lines (SESSION, KILL, BROKER...): kept in the tmp
        # dir for a post-mortem (a crash's traceback, the heap before it).
        self.console = open(os.path.join(self.tmp, "console.log"), "a", buffering=1)
        self._waiters: list = []
        self.boot = None  # journal boot counter of the running firmware
        self.seq = 0
        self.started_ids: list[str] = []  # reconstructed from session_start events
        self.closed_ids: dict = {}  # id -> (Wh, reason)
        self.recovered_ids: dict = {}  # id -> Wh
        self.open_id = None  # the session the firmware has open, per its log
        self.kills: list[dict] = []
        self.outages: list[tuple[float, float]] = []
        self.ingest_restarts: list[dict] = []
        self.torn = 0
        self.repairs: list[str] = []
        self.crashes: list[str] = []  # firmware exits we did not cause
        self.operator_reboots: list[dict] = []  # controller power-cycled to clear a latched false weld
        self._killing = False
        self._bg: list[asyncio.Task] = []
        self.t0 = time.monotonic()
        self.final = {}

    # ---------------------------------------------------------------- logging
    def say(self, *a):
        text = "[e2e %6.1fs] %s" % (time.monotonic() - self.t0, " ".join(str(x) for x in a))
        self.console.write(text + "\n")
        if self.verbose:
            print(text, flush=True)

    def _on_line(self, line):
        now = time.monotonic() - self.t0
        self.console.write("%7.2f %s\n" % (now, line))
        if line.startswith("STATUS "):
            return
        self.fwlog.append((now, line))
        p = line.split()
        if line.startswith("LOG journal boot "):
            self.boot = int(p[3])
            self.seq = 0
        elif line.startswith("LOG journal repaired"):
            self.repairs.append(line)
        elif line.startswith("LOG event ") and len(p) > 3 and p[3] == "session_start":
            if self.boot is not None:
                self.seq += 1
                sid = "%s-%05d-%03d" % (self.pr.config["pile_id"], self.boot, self.seq)
                self.started_ids.append(sid)
                self.open_id = sid
        elif line.startswith("LOG session closed "):
            self.closed_ids[p[3]] = (float(p[4]), p[6] if len(p) > 6 else "")
            self.open_id = None
            if self.windows:
                self.windows[-1].ids.append(p[3])
        elif line.startswith("LOG session recovered "):
            self.recovered_ids[p[3]] = float(p[4])
            if self.windows:
                self.windows[-1].ids.append(p[3])
        elif "Traceback" in line or "MemoryError" in line or line.startswith("watchdog"):
            self.crashes.append(line)
        for w in list(self._waiters):
            pred, fut, action = w
            if not fut.done() and pred(line):
                if action == "kill":
                    self._kill_now()  # no await between the line and the signal
                fut.set_result(line)
                self._waiters.remove(w)

    def _kill_now(self):
        fw = self.pr.fw
        if fw and fw.returncode is None:
            try:
                os.killpg(fw.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def wait_line(self, pred, timeout, action=None):
        fut = asyncio.get_running_loop().create_future()
        w = (pred, fut, action)
        self._waiters.append(w)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            if w in self._waiters:
                self._waiters.remove(w)

    # --------------------------------------------------------------- firmware
    async def restart_firmware(self, why, immediate=False, torn=False):
        """SIGKILL the firmware (already dead if immediate), optionally leave
        a torn record on its journal, start it again in the same board dir."""
        w = self.windows[-1] if self.windows else None
        plant = await self.pr.plant()
        rec = {"why": why, "wall": round(time.monotonic() - self.t0, 2), "sim_t": plant["t"],
               "state": self.pr.state, "open": self.open_id, "ev_a": plant["ev_a"], "torn": torn}
        if not immediate:
            self._kill_now()
        await self.pr.kill_firmware(signal.SIGKILL)
        if self.pr.fw.returncode not in (-9, 137) and not immediate:
            rec["rc"] = self.pr.fw.returncode
        if torn:
            self._tear_journal()
        self.kills.append(rec)
        if w:
            w.kills.append(why)
        self.say("KILL", why, rec)
        self.boot = None
        self.open_id = None
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))  # the board is off a moment
        await self.pr.start_firmware()

    def _tear_journal(self):
        # A power cut in the middle of a flash append: the first k bytes of
        # a checkpoint record (its write never completed, so nothing acted
        # on it). The firmware must drop it at boot and carry on.
        from h2p import journal as J

        path = os.path.join(self.pr.board_dir, "data", "journal.bin")
        body = json.dumps({"id": self.open_id or "torn", "ts": 0, "dur": 1, "e": 99999.0, "ep": 0, "p": 0,
                           "pk": 0, "m": None, "pm": None, "soc1": None, "seen": False, "fl": []}).encode()
        rec = J.encode(J.CKPT, body)
        k = self.rng.randrange(3, len(rec) - 1)
        with open(path, "ab") as f:
            f.write(rec[:k])
        self.torn += 1

    def fw_alive(self):
        return self.pr.fw is not None and self.pr.fw.returncode is None

    async def watch_firmware(self):
        # A firmware exit we did not cause (crash, watchdog, MemoryError):
        # record it and restart, as the board would reboot.
        while True:
            await asyncio.sleep(0.2)
            fw = self.pr.fw
            if fw is not None and fw.returncode is not None and not self._killing:
                tail = [ln for _t, ln in self.fwlog[-15:]]
                self.crashes.append("exit %s: %s" % (fw.returncode, " | ".join(tail)))
                self.say("FIRMWARE EXITED by itself", fw.returncode, tail[-5:])
                await self.pr.start_firmware()

    # -------------------------------------------------------------- outages
    async def broker_outage(self, delay, dur):
        await asyncio.sleep(delay)
        if not self.pr.broker_up():
            return
        t = time.monotonic() - self.t0
        self.pr.stop_broker()
        self.say("BROKER down for %.1fs" % dur)
        await asyncio.sleep(dur)
        self.pr.start_broker()
        self.outages.append((round(t, 2), round(dur, 2)))
        self.say("BROKER up")

    async def ingest_restart(self, delay, dur, sig):
        await asyncio.sleep(delay)
        if not self.ingest.up():
            return
        self.ingest.stop(sig)
        self.say("INGEST stopped (%s) for %.1fs" % (signal.Signals(sig).name, dur))
        await asyncio.sleep(dur)
        self.ingest.start()
        self.ingest_restarts.append({"sig": signal.Signals(sig).name, "down_s": round(dur, 2)})

    # ------------------------------------------------------------------ plan
    def make_plan(self, i):
        r = self.rng
        kill = self.kill_kinds[i - 1]
        return {
            "target": r.choice([53, 54, 55, 56]),
            "unplug_after": r.uniform(1.5, 5.0) if r.random() < 0.3 else None,  # wall s after session_start
            "kill": kill,
            "kill_after": r.uniform(0.3, 5.0),  # mid_charge: wall s after session_start
            "kill_delay": r.choice([0.0, 0.0, r.uniform(0.0, 0.05)]),  # at_stop / after_close
            "torn": r.random() < 0.3,
            "broker": (r.uniform(0, 6), r.uniform(1, 10)) if r.random() < 0.35 else None,
            "ingest": (r.uniform(0, 6), r.uniform(0.3, 6), r.choice([signal.SIGKILL, signal.SIGTERM]))
            if r.random() < 0.25 else None,
        }

    # ------------------------------------------------------------------- run
    async def wait_ready(self, timeout=90, states=("ready",)):
        end = time.monotonic() + timeout
        fault_since = None
        while time.monotonic() < end:
            if self.pr.state in states and self.boot is not None and self.fw_alive():
                return True
            faults = self.pr.status.get("faults") or []
            if self.pr.state == "fault" and "contactor_welded" in faults:
                fault_since = fault_since or time.monotonic()
                p = await self.pr.plant()
                if time.monotonic() - fault_since > 1.0 and not p["contactor"]:
                    await self.operator_reboot(faults, p)
                    fault_since = None
            else:
                fault_since = None
            await asyncio.sleep(0.05)
        raise AssertionError("firmware not ready in %ds (state %s); last lines: %s"
                             % (timeout, self.pr.state, [ln for _t, ln in self.fwlog[-12:]]))

    async def operator_reboot(self, faults, plant):
        # The pile latched a weld the plant does not have (its contactor is
        # open). A signed `reset` clears the latch but sends the pile through
        # cooldown and a cold preheat (tens of simulated minutes), so do what
        # a technician would do on site: power-cycle the controller. Counted
        # as a firmware problem (see problems()).
        rec = {"wall": round(time.monotonic() - self.t0, 2), "faults": list(faults),
               "plant_contactor": plant["contactor"], "lines": [ln for _t, ln in self.fwlog[-14:]]}
        self.say("OPERATOR REBOOT needed: pile latched %s, plant contactor open" % faults)
        self.operator_reboots.append(rec)
        killing, self._killing = self._killing, True
        try:
            await self.restart_firmware("operator_reboot")
        finally:
            self._killing = killing

    async def meter_wh(self):
        return (await self.pr.plant())["meter_kwh"] * 1000.0

    async def quiet(self, timeout=60):
        """EV gone, contactor open, firmware ready with no open session, and
        the meter standing still: the end of a window."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            p = await self.pr.plant()
            m = p["meter_kwh"]
            ok = (not p["ev_present"] and not p["contactor"] and abs(p["ev_a"]) < 0.01 and self.fw_alive()
                  and self.pr.state == "ready" and self.open_id is None and self.boot is not None)
            if ok and last == m:
                return m * 1000.0
            last = m if ok else None
            await asyncio.sleep(0.3)
        raise AssertionError("window did not settle: state %s open %s plant %s; ids %s; last lines %s" % (
            self.pr.state, self.open_id, {k: p[k] for k in ("ev_present", "ev_asking", "contactor", "ev_a", "pilot")},
            self.windows[-1].ids if self.windows else [], [ln for _t, ln in self.fwlog[-20:]]))

    async def one(self, i):
        plan = self.make_plan(i)
        w = Window(i, plan)
        self.windows.append(w)
        t_start = time.monotonic()
        self.say("SESSION %d plan %s" % (i, {k: v for k, v in plan.items() if v not in (None, False)}))
        w.m0 = await self.meter_wh()
        if plan["broker"]:
            self._bg.append(asyncio.create_task(self.broker_outage(*plan["broker"])))
        if plan["ingest"]:
            self._bg.append(asyncio.create_task(self.ingest_restart(*plan["ingest"])))
        n_start = len(self.started_ids)
        started = asyncio.ensure_future(self.wait_line(lambda ln: " session_start " in ln, 60))
        await self.pr.inject("ev_plug", soc=50, kwh=10, target=plan["target"])
        if not await started:
            raise AssertionError("session %d did not start; last lines %s" % (i, [x for _t, x in self.fwlog[-10:]]))
        kill = plan["kill"]
        self._killing = True
        try:
            if kill == "mid_charge":
                stop = asyncio.ensure_future(self.wait_line(lambda ln: " session_stop " in ln, plan["kill_after"]))
                unplug_first = plan["unplug_after"] is not None and plan["unplug_after"] < plan["kill_after"]
                if unplug_first:
                    await asyncio.sleep(plan["unplug_after"])
                    await self.pr.inject("ev_unplug")
                    await asyncio.sleep(max(0.0, plan["kill_after"] - plan["unplug_after"]))
                else:
                    await asyncio.sleep(plan["kill_after"])
                stop.cancel()
                await self.restart_firmware("mid_charge", torn=plan["torn"])
            elif kill in ("at_stop", "after_close"):
                if kill == "at_stop":
                    pred = lambda ln: " session_stop " in ln  # noqa: E731
                else:
                    pred = lambda ln: ln.startswith("LOG session closed ")  # noqa: E731
                action = "kill" if plan["kill_delay"] == 0 else None
                hit = asyncio.ensure_future(self.wait_line(pred, 60, action))
                if plan["unplug_after"] is not None:
                    await asyncio.sleep(plan["unplug_after"])
                    if not hit.done():
                        await self.pr.inject("ev_unplug")
                if await hit is None:
                    raise AssertionError("session %d: no %s line" % (i, kill))
                if action is None:
                    await asyncio.sleep(plan["kill_delay"])
                await self.restart_firmware(kill, immediate=action == "kill", torn=plan["torn"])
            elif kill == "at_boot":
                # die again while recovering: right after the journal opened
                await asyncio.sleep(plan["kill_after"])
                if self.fw_alive():
                    await self.restart_firmware("mid_charge", torn=False)
                hit = await self.wait_line(lambda ln: ln.startswith("LOG journal boot "), 60, "kill")
                if hit is None:
                    raise AssertionError("session %d: firmware did not boot again" % i)
                await self.restart_firmware("at_boot", immediate=True, torn=plan["torn"])
            elif plan["unplug_after"] is not None:
                await asyncio.sleep(plan["unplug_after"])
                await self.pr.inject("ev_unplug")
        finally:
            self._killing = False
        # The rest of the window: the EV charges to its target and stops
        # asking (or was unplugged); then it leaves. (A pile rebooted with
        # the EV still plugged in may be charging again.)
        await self.wait_ready(90, ("ready", "charging", "stopping"))
        end = time.monotonic() + 90
        while time.monotonic() < end:
            p = await self.pr.plant()
            if not p["ev_present"]:
                break
            if not p["ev_asking"]:
                # let the pile close the session on C->B first (ev_stopped)
                t_end = time.monotonic() + 3.0
                while time.monotonic() < t_end and not (self.open_id is None and self.pr.state == "ready"):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                await self.pr.inject("ev_unplug")
                break
            await asyncio.sleep(0.1)
        w.m1 = await self.quiet()
        w.t_wall = time.monotonic() - t_start
        self.say("SESSION %d done: meter %.1f Wh, ids %s, %.1fs wall" % (i, w.m1 - w.m0, w.ids, w.t_wall))
        _ = n_start

    async def settle(self, timeout=180):
        """Broker and ingest up; wait for every reported session in the
        ledger and the journal holding nothing unacknowledged."""
        for t in self._bg:
            await t
        self.pr.start_broker()
        if not self.ingest.up():
            self.ingest.start()
        ids = set(self.closed_ids) | set(self.recovered_ids)
        jpath = os.path.join(self.pr.board_dir, "data", "journal.bin")
        end = time.monotonic() + timeout
        js = None
        progress = (None, time.monotonic())
        while time.monotonic() < end:
            have = {r[0] for r in self.db_rows("SELECT id FROM sessions")}
            js = journal_state(jpath)
            if ids <= have and js and not js["unacked"] and not js["open"]:
                return True
            state = (len(have), tuple(js["unacked"]) if js else None)
            if state != progress[0]:
                progress = (state, time.monotonic())
            elif self.db_rows("SELECT 1 FROM rejects LIMIT 1") and time.monotonic() - progress[1] > 30:
                break  # the ledger refuses what is left: no point waiting
            await asyncio.sleep(1.0)
        self.say("SETTLE TIMED OUT: missing in DB %s; journal %s" % (
            sorted(ids - {r[0] for r in self.db_rows("SELECT id FROM sessions")}), js))
        return False

    def db_rows(self, sql):
        if not os.path.exists(self.db_path):
            return []
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    async def run(self):
        self.pr.on_line = self._on_line
        self.t0 = time.monotonic()
        self.say("seed", self.seed, "sessions", self.n, "speed", self.speed)
        await self.pr.start()
        watcher = asyncio.create_task(self.watch_firmware())
        try:
            self.ingest = Ingest(self.pr.mqtt_port, "sqlite:///" + self.db_path,
                                 os.path.join(self.tmp, "ingest.log"))
            self.ingest.start()
            await self.wait_ready(120)
            for i in range(1, self.n + 1):
                await self.one(i)
            self.final["settled"] = await self.settle()
            pl = await self.pr.plant()
            self.final["opened_under_load"] = (pl["opened_under_load"], pl["max_open_a"])
            self.final["settle_wall"] = round(time.monotonic() - self.t0, 1)
            self._killing = True
            await self.pr.kill_firmware(signal.SIGTERM)
            self.final["journal"] = journal_state(os.path.join(self.pr.board_dir, "data", "journal.bin"))
            self.ingest.stop(signal.SIGTERM)
        finally:
            watcher.cancel()
            for t in self._bg:
                t.cancel()
            if self.ingest:
                self.ingest.stop(signal.SIGKILL)
            await self.pr.stop()
        self.final["wall_s"] = round(time.monotonic() - self.t0, 1)
        self.console.close()
        return self

    # ------------------------------------------------------------- verdict
    def ledger(self):
        rows = self.db_rows("SELECT id, energy_wh, reason, flags, payload FROM sessions ORDER BY id")
        return {r[0]: {"energy_wh": r[1], "reason": r[2], "flags": json.loads(r[3] or "[]"),
                       "rec": json.loads(r[4])} for r in rows}

    def problems(self):
        """Everything that contradicts the issue's promise, as sentences."""
        out = []
        led = self.ledger()
        rejects = self.db_rows("SELECT reason, payload FROM rejects")
        conflicts = self.db_rows("SELECT id, payload FROM conflicts")
        reported = set(self.closed_ids) | set(self.recovered_ids)
        for r in rejects[:5]:
            out.append("ledger REJECTED a bill: %s (payload %s)" % (r[0], r[1][:160]))
        if len(rejects) > 5:
            out.append("... %d rejects in all" % len(rejects))
        for c in conflicts:
            out.append("CONFLICT: %s stored twice with different content: %s" % (c[0], c[1][:200]))
        missing = sorted(reported - set(led))
        if missing:
            out.append("sessions reported by the firmware but not in the ledger: %s" % missing)
        unknown = sorted(set(led) - reported)
        for sid in unknown:
            # a kill between the journal write and the log line: accept it if
            # its meter range falls in a window (checked below by the sums)
            pass
        silent = sorted(set(self.started_ids) - reported - set(led))
        if silent:
            out.append("sessions started (per the firmware's events) but never closed/recovered/billed: %s" % silent)
        # every ledger record in exactly one window, by reported id or meter range
        by_win = {w.n: [] for w in self.windows}
        for sid, row in led.items():
            win = next((w for w in self.windows if sid in w.ids), None)
            if win is None:
                m0 = row["rec"].get("meter0")
                win = next((w for w in self.windows if m0 is not None and w.m0 - 1 <= m0 <= w.m1 + 1), None)
            if win is None:
                out.append("ledger record %s (%s Wh) belongs to no window" % (sid, row["energy_wh"]))
                continue
            by_win[win.n].append(sid)
        for w in self.windows:
            got = sum(led[s]["energy_wh"] for s in by_win[w.n])
            err = got - (w.m1 - w.m0)
            if abs(err) > tolerance_wh(w.m1):
                out.append("window %d: ledger %.1f Wh (%s) vs meter %.1f Wh: error %+.1f Wh; kills %s" % (
                    w.n, got, {s: led[s]["energy_wh"] for s in by_win[w.n]}, w.m1 - w.m0, err, w.kills))
        # recovered sessions: flagged, and billed with what the log said
        for sid, wh in self.recovered_ids.items():
            row = led.get(sid)
            if row is not None:
                if "recovered" not in row["flags"]:
                    out.append("%s was recovered at boot but its record has no 'recovered' flag" % sid)
                if abs(row["energy_wh"] - wh) > 0.05:
                    out.append("%s recovered with %.1f Wh per the log, %.1f Wh in the ledger" % (sid, wh, row["energy_wh"]))
        js = self.final.get("journal")
        if js is None:
            out.append("no journal file on the board at the end")
        else:
            if js["unacked"] or js["open"]:
                out.append("journal not empty at the end: unacked %s, open %s" % (js["unacked"], js["open"]))
        for r in self.operator_reboots:
            out.append("after a reboot the pile latched %s although the plant's contactor was open; it needed "
                       "an operator reboot (firmware lines: %s)" % (r["faults"], " | ".join(r["lines"][-8:])))
        for c in self.crashes:
            out.append("firmware crashed: " + c[:300])
        return out

    def figures(self):
        led = self.ledger()
        errs = []
        for w in self.windows:
            ids = [s for s in led if s in w.ids]
            if ids:
                errs.append(abs(sum(led[s]["energy_wh"] for s in ids) - (w.m1 - w.m0)))
        self.window_errors = errs
        single = [abs(led[w.ids[0]]["energy_wh"] - (w.m1 - w.m0)) for w in self.windows
                  if len(w.ids) == 1 and w.ids[0] in led]
        return {
            "seed": self.seed,
            "sessions (EV plug-ins)": len(self.windows),
            "ledger records": len(led),
            "recovered records": len(self.recovered_ids),
            "kills": len(self.kills),
            "kills by kind": {k: sum(1 for x in self.kills if x["why"] == k) for k in
                              ("mid_charge", "at_stop", "after_close", "at_boot", "operator_reboot")},
            "torn tails injected": self.torn,
            "journal repairs logged": len(self.repairs),
            "broker outages": len(self.outages),
            "broker down s": round(sum(d for _t, d in self.outages), 1),
            "ingest restarts": len(self.ingest_restarts),
            "operator reboots (latched false weld after reboot)": len(self.operator_reboots),
            "contactor opened under load (plant: times, max A)": self.final.get("opened_under_load"),
            "energy err per window max/mean Wh": (round(max(errs), 2), round(sum(errs) / len(errs), 2)) if errs else None,
            "energy err single-record windows max Wh": round(max(single), 2) if single else None,
            "zero-energy records": sorted((s, r["reason"], [f for f in r["flags"] if f.startswith("cause")]) for s, r in led.items() if r["energy_wh"] == 0),
            "metered Wh": round(sum(w.m1 - w.m0 for w in self.windows), 1),
            "billed Wh": round(sum(r["energy_wh"] for r in led.values()), 1),
            "journal at end": (self.final.get("journal") or {}).get("stats"),
            "wall s": self.final.get("wall_s"),
        }
