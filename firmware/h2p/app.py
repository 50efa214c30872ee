# The imperative shell: asyncio tasks that move bytes. The bus task reads
# the poll schedule, steps the supervisor after every read (so a hazard is
# answered within one read plus one write) and writes what changed, the
# charger first. Sessions go to the flash journal; the uplink (MQTT) is
# optional. The watchdog is fed only when both the bus and the control step
# made progress.
import gc
import json
import sys

from h2p import VERSION
from h2p.compat import asyncio, const, forget, ticks_diff
from h2p import devices as D
from h2p.chores import GC, STATUS, Chores
from h2p.chores import N as _N_CHORES
from h2p.log import log
from h2p.modbus import Master, ModbusError
from h2p.readings import Readings, SCALES, UNKNOWN
from h2p.readings import INDEX as _IX
from h2p.states import OFF as _S_OFF

TYPE_CHECKING = const(0)  # mypy reads it as true: the block under it is for mypy only

if TYPE_CHECKING:
    from typing import Any  # noqa: F401 - type comments

    from h2p.board import Board  # noqa: F401 - type comments

_REFRESH_MS = 10000  # re-assert setpoints so a rebooted device gets them
_THROTTLE_MS = 250  # stack/pump setpoints ramp slowly: one write per 250 ms
_I_WH = _IX["met_wh"]
_I_W = _IX["met_w"]
_I_V = _IX["met_v"]
_I_TANK = _IX["ref_tank_l"]
_I_EVSOC = _IX["chg_ev_soc"]
# The energy manager's slots the shell reads and stores (h2p.energy's contract).
_EM_LPK = const(0)
_EM_WARM_L = const(1)
_EM_SAVES = const(5)
del _IX  # the index by name is dropped after boot (readings.release)
# Pile.cap, the running session's caps: a list, for RAM (no class).
_C_MS = const(0)  # time cap, ms of the clock (0: none, or reached)
_C_T0 = const(1)  # when the session started (ms)
_C_LAST = const(2)  # when the energy was last read (ms)
_C_BASE = const(3)  # the session's current limit before the energy cap tapered it (0.1 A)
_C_SET = const(4)  # the limit the taper set (-1: none)
_C_CAPS = const(5)  # (cap_kwh, cap_min) as the start command gave them: the record shows them
_C_ON = const(6)  # the energy cap is armed (not reached)
_C_NEAR = const(7)  # the energy cap is within reach: its energy is read every cycle
_TAPER_S = const(5)  # the energy left under a cap takes this long at the tapered current
_HOT = ("charger", "safety")  # read before every other block (Pile._schedule)
_CHORE_YIELDS = const(20)  # a chore's task gone (cancelled) does not hold the bus


class Pile:
    def __init__(self, board, config):
        # type: (Board, dict) -> None
        self.board = board
        self.cfg = config  # until run() has built the uplink, then dropped
        # What the journal, opened after the first poll cycles, needs.
        self.journal_cfg = (config["data_dir"], config["journal_kb"], config["checkpoint_s"], config["pile_id"],
                            int(config["limits"]["charger_max_a"] * 1000))
        clock = board.clock
        self.clock = clock
        bus = config["bus"]
        self.rd = Readings(bus["data_age_ms"])
        self.devices = D.build(config)
        # The register maps and the drivers' builder were needed to build
        # the drivers, not after: dropped before the supervisor and its
        # interlocks are loaded, so the two never sit in the heap together
        # (that was the boot peak).
        forget("h2p.registers", "h2p.devbuild")
        from h2p.supervisor import Supervisor

        self.master = Master(board.line, clock, bus["baud"], bus["timeout_ms"], bus["retries"],
                             D.frame_max(self.devices))
        self.sup = Supervisor(config, self.devices, clock.ms())
        self.cycles = 0
        self.steps = 0
        self.polls = 0  # bus transactions done, answered or timed out (the watchdog's sign of progress)
        self.slow_every = bus["slow_every"]
        # The parked cycle (bus_task): under half the data age and half the
        # devices' comm watchdog (h2p.devbuild), so readings stay fresh and
        # the devices fed.
        age = bus["data_age_ms"]
        self.idle_ms = min(bus["idle_cycle_ms"], age // 2, (bus["comm_timeout_ms"] or 2 * age) // 2)
        self.refresh_ms = [0] * len(self.devices)
        # The devices that take commands (_flush), the charger (0) first.
        self.writers = [k for k in range(len(self.devices)) if len(self.devices[k].want)]
        self.wrote_ms = [0] * len(self.devices)
        self.schedule = self._schedule()
        # Housekeeping runs in the turns of the blocks after the hot reads
        # (h2p.chores): every n_hot + 1-th entry of the schedule.
        self.chores = Chores()
        n = 0
        while n < len(self.schedule) and self.schedule[n][0].name in _HOT:
            n += 1
        self.n_hot = n
        self.heap = [0, 0]  # in use, free: after the last gc.collect()
        self.energy_blk = None
        for d in self.devices:
            for b in d.blocks:
                if any(f[0] == _I_WH for f in b.fields):
                    self.energy_blk = b
        self.force_slow = False
        self.session_ms = 0  # when the running session started or stopped
        self.closing = None  # stop reason, until a meter reading after the stop
        self.starting = None  # type: str | None  # auth of a session that waits for the last one to close
        self.cap = None  # type: list | None  # the running session's caps (_C_*), None without
        self.listeners = []  # type: list  # fn(kind, a, b) for events (MQTT)
        self._up_ms = clock.ms()
        self._up = 0  # uptime in simulated ms, never wraps
        self.rec = None  # type: Any  # SessionRecorder, once the journal is open
        self.report_errors = 0  # status/telemetry that could not be built
        self.step_ms = clock.ms()
        self.step_gap = 0
        self.boot_no = 0
        # Crash handling (h2p.crash): the record the last boots left, and
        # whether this boot stays in maintenance because of it.
        self.last_crash = None
        self.maintenance = None  # type: Any  # h2p.maintenance.Maintenance (takes commands first) while in maintenance
        self.link = None  # h2p.link.Keeper on a board with WiFi configured

    def link_state(self):
        return "none" if self.link is None else self.link.report()

    def link_ready(self):
        # May the network be used? (no WiFi to keep: the host's network)
        return self.link is None or self.link.ready()

    def uptime_s(self):
        now = self.clock.ms()
        self._up += ticks_diff(now, self._up_ms)
        self._up_ms = now
        return self._up / 1000

    # ---- bus ---------------------------------------------------------------
    def _schedule(self):
        # The charger (pilot, contactor aux, current) and the safety I/O
        # (H2, E-stop chain, tilt, door) are read before every other read, so
        # a hazard there is seen within three transactions, not a whole
        # cycle. Everything else once a cycle;
        # blocks marked slow (meter energy) every `slow_every` cycles.
        hot = _HOT  # EV, contactor, E-stop chain, H2, tilt, door
        ch = [(d, b) for d in self.devices if d.name in hot for b in d.blocks]
        rest = [(d, b) for d in self.devices if d.name not in hot for b in d.blocks]
        out = []
        for x in rest:
            out.extend(ch)
            out.append(x)
        return out

    async def _read(self, dev, blk):
        try:
            buf = await self.master.read(dev.unit, blk.fc, blk.start, blk.count)
        except ModbusError:
            dev.errors += 1
            if ticks_diff(self.clock.ms(), dev.ok_ms) > self.rd.max_age_ms:
                dev.silent = True
            return False
        dev.store(blk, buf, self.rd, self.clock.ms())
        return True

    async def _flush(self):
        # After every read: on the RP2040 this was 2.1 ms a read (half of
        # the control step). It read the clock for each device and visited
        # the devices without commands; now the clock once (again after a
        # write) and the devices that take commands (~0.4 ms a read less).
        urgent = not self.sup.il.fuel_ok  # (fuel_allowed(), as its flag: no call)
        now = self.clock.ms()
        for k in self.writers:
            if k and not urgent and ticks_diff(now, self.wrote_ms[k]) < _THROTTLE_MS:
                continue  # the charger (k == 0) and fuel-off are never held back
            dev = self.devices[k]
            n = len(dev.want)
            if ticks_diff(now, self.refresh_ms[k]) > _REFRESH_MS:
                self.refresh_ms[k] = now
                for i in range(n):
                    dev.sent[i] = -1
            if not dev.dirty():
                continue
            try:
                await self.master.write(dev.unit, dev.cmd_base, dev.want, n)
            except ModbusError:
                dev.errors += 1
                now = self.clock.ms()
                continue
            self.wrote_ms[k] = now
            for i in range(n):
                dev.sent[i] = dev.want[i]
            if not k:  # the charger has the contactor word (its first)
                self.sup.contactor.delivered(dev.want[0], now)
            now = self.clock.ms()

    def _step(self):
        sup = self.sup
        sup.estop_in = self.board.estop_pressed()
        now = self.clock.ms()
        gap = ticks_diff(now, self.step_ms)
        self.step_ms = now
        if gap > self.step_gap:
            self.step_gap = gap  # worst interval between control steps, per report
        sup.step(now, self.rd)
        self.steps += 1
        c = self.cap
        if c is not None and c[_C_MS] and ticks_diff(now, c[_C_T0]) >= c[_C_MS]:
            # The session's time cap, on the clock. (Inline, as the energy
            # cap's in _session_tick: RAM, a method costs ~160 B on the board.)
            c[_C_MS] = 0
            if sup.session_active and not sup.stop_req:
                log("session", "time_cap")
                sup.stop_req = "time_cap"  # the session's stop reason (h2p.session.REASONS)
        if sup.events:
            self._drain()

    async def _poll(self, dev, blk):
        # One read, the control step after it, what changed written.
        ok = await self._read(dev, blk)
        self.polls += 1
        self._step()
        await self._flush()
        if blk is self.energy_blk and (ok or self.closing is not None):
            # Every energy reading goes to the session record as
            # it arrives: the baseline is the reading before the
            # contactor closed, the end the first one after it
            # opened.
            self._session_tick(ok)

    async def bus_task(self):
        await self.board.open()
        chores = self.chores
        chores.bus = True
        sched = self.schedule
        nh = self.n_hot
        while True:
            t0 = self.clock.ms()
            # force_slow stays on until the session has the energy reading it
            # waits for (a read lost to a timeout is asked for again).
            slow = self.force_slow or self.cycles % self.slow_every == 0
            for i in range(len(sched)):
                dev, blk = sched[i]
                if i % (nh + 1) == nh and chores.want and chores.give():
                    # The hot reads are answered, stepped and written: a
                    # chore takes this block's turn (h2p.chores), then the
                    # hot reads come again before the block. (Tasks due at
                    # the same tick may run first: yield until it has run.)
                    for _ in range(_CHORE_YIELDS):
                        await asyncio.sleep_ms(0)
                        if not chores.busy:
                            break
                    if blk.fast or slow:
                        for j in range(i - nh, i):
                            d, b = sched[j]
                            await self._poll(d, b)
                if blk.fast or slow:
                    await self._poll(dev, blk)
            self.cycles += 1
            if self.cycles == 2:
                self._open_journal()
            if self.sup.state == _S_OFF and self.idle_ms and self.cycles >= 2:
                # Parked (off: nothing energised, nothing to ramp down): one
                # cycle per idle period, not back to back. The CPU sleeps
                # (a parked pile's controller runs off its buffer battery),
                # the waiting chores are served first, and a wake or start
                # waits at most one period (self-test takes seconds). Each
                # chore once: one that asks again at once waits for a turn.
                # Not before the journal is open (the second cycle): a
                # session the last boot left open is closed at once.
                for _ in range(_N_CHORES):
                    if not (chores.want and chores.give()):
                        break
                    for _ in range(_CHORE_YIELDS):
                        await asyncio.sleep_ms(0)
                        if not chores.busy:
                            break
                left = self.idle_ms - ticks_diff(self.clock.ms(), t0)
                if left > 0:
                    await self.clock.sleep_ms(left)
            # Yield even when every device answers at once.
            await asyncio.sleep_ms(0)

    # ---- sessions: one record each, in the flash journal ------------------------
    def _open_journal(self):
        # After the first poll cycles, so a session the last boot left open
        # is closed with the meter's count now, not just its last checkpoint.
        from h2p.journal import Journal
        from h2p.session import SessionRecorder

        data_dir, kb, ckpt_s, pile_id, max_a = self.journal_cfg
        try:
            import os

            os.mkdir(data_dir)
        except OSError:
            pass  # exists
        j = Journal(data_dir + "/journal.bin", max_bytes=kb * 1024, checkpoint_interval_s=ckpt_s,
                    sync=self.board.fs_sync)
        rep = j.open()
        if rep["torn_bytes"] or rep["garbage"]:
            log("journal", "repaired", "torn", rep["torn_bytes"], "garbage", rep["garbage"])
        wall = getattr(self.board, "unix_time", None)
        self.rec = SessionRecorder(j, pile_id, wall, max_a, on_close=self._closed)
        reason = "reboot" if self.board.reset_cause == "soft" else "power_loss"
        for r in self.rec.recover(self.uptime_s(), self._fresh(_I_WH, 0), self._premix(0), reason):
            log("session", "recovered", r["id"], r["energy_wh"], "Wh")
        self.boot_no = self.rec.boot()
        # Contactor operations survive reboots (its wear is a lifetime count).
        self.sup.contactor.cycles_base = j.get_meta("contactor_cycles", 0)
        # The energy manager's measured figures (premix per kWh, warm-up)
        # are this pile's, kept across reboots.
        # (the figures [mL/kWh, 0.1 L]; anything implausible is ignored)
        v = j.get_meta("energy", None)
        try:
            lpk, warm = int(v[0]), int(v[1])
            if not (500 <= lpk <= 3000 and 0 <= warm <= 500):
                raise ValueError
            a = self.sup.em
            a[_EM_LPK], a[_EM_WARM_L] = lpk, warm
        except (TypeError, ValueError, IndexError):
            if v is not None:  # (None: nothing measured yet)
                log("journal", "ignored", v)
        log("journal", "boot", self.boot_no, "records", rep["records"])

    def _save_cycles(self):
        c = self.sup.contactor
        total = c.cycles_base + c.cycles
        if self.rec and total != self.rec.j.get_meta("contactor_cycles", 0):
            try:
                self.rec.j.set_meta("contactor_cycles", total)
            except Exception as e:  # noqa: BLE001 - a full journal must not stop the pile
                log("journal", "cannot store contactor cycles", type(e).__name__)

    def _premix(self, since):
        # The recorder wants a counter of premix used that only rises: the
        # tank level falling is that counter negated (a refill shows as a
        # step back, which the recorder flags and re-bases on).
        v = self._fresh(_I_TANK, since)
        return None if v is None else -v

    def _fresh(self, i, since):
        # A reading taken at or after `since`, or None. Billing data is
        # judged by when it was read, not by the control loop's age limit.
        rd = self.rd
        if not rd.seen[i] or rd.raw[i] == UNKNOWN or ticks_diff(rd.ts[i], since) < 0:
            return None
        return rd.raw[i] * SCALES[i]

    def _closed(self, rec):
        for fn in self.listeners:
            fn("bill", rec, None)

    def _session_tick(self, meter_ok=True):
        rec = self.rec
        if rec is None:
            return
        a = self.sup.em
        if a[_EM_SAVES]:
            # A new premix-per-kWh or warm-up figure from the energy manager:
            # stored (one flash write per window_kwh of stack energy, one per
            # warm-up; here, with the energy readings); the count is ours to clear.
            a[_EM_SAVES] = 0
            try:
                rec.j.set_meta("energy", [a[_EM_LPK], a[_EM_WARM_L]])
            except Exception as e:  # noqa: BLE001 - a full journal must not stop the pile
                log("journal", "not stored", "energy", type(e).__name__)
        if self.closing is not None:
            wh = self._fresh(_I_WH, self.session_ms)
            # Close on the first meter reading after the stop; a meter that
            # stays silent past the data-age limit closes it without.
            if wh is not None or (not meter_ok and ticks_diff(self.clock.ms(), self.session_ms) > self.rd.max_age_ms):
                from h2p.session import reason_for

                reason = reason_for(self.closing)
                if reason != self.closing and rec.s is not None:
                    rec.s["flags"].append("cause:" + self.closing)
                r = rec.stop(self.uptime_s(), reason, wh, self._premix(self.session_ms),
                             self._fresh(_I_EVSOC, 0))
                self.closing = None
                self.force_slow = False
                if r:
                    log("session", "closed", r["id"], r["energy_wh"], "Wh", r["reason"])
                # One flash write per session, not per operation.
                self._save_cycles()
                if self.starting is not None:
                    # The next EV plugged in before this close: the same
                    # reading (the contactor was open in between) starts it.
                    self.session_ms = self.clock.ms()
                    self._open_record(wh)
        elif rec.active:
            wh = self._fresh(_I_WH, self.session_ms)
            rec.step(self.uptime_s(), wh, self._premix(0), self._fresh(_I_W, 0),
                     self._fresh(_I_EVSOC, 0))
            if wh is not None:
                self.sup.hold_close = False
                self.force_slow = False
                c = self.cap
                if c is not None and c[_C_ON]:
                    # The session's energy cap, on the billing meter's energy
                    # register (the bill's energy). Within reach of it (more
                    # energy left than the power now could deliver before the
                    # register is read twice more and the taper has run; the
                    # power: the meter's, or what the charger's limit allows,
                    # whichever is more: an EV still ramping up) the register
                    # is read every cycle and the current is tapered: the
                    # limit at which the energy left takes _TAPER_S. It falls
                    # by 1/_TAPER_S of itself per second, slower than a
                    # charger ramps down (the stop path expects its full
                    # current in 5 s), so the charger follows it; below the
                    # stop current the session stops and what flows after is
                    # next to nothing: the bill ends a few Wh under the cap.
                    # (Inline: RAM, a method costs ~160 B on the board.)
                    sup = self.sup
                    now = self.clock.ms()
                    gap = ticks_diff(now, c[_C_LAST])
                    c[_C_LAST] = now
                    left = c[_C_CAPS][0] * 1000 - rec.s["e"]
                    v = self._fresh(_I_V, 0)
                    lim = 0  # 0.1 A; None: out of reach
                    if left > 0:
                        lim = None  # type: ignore[assignment]
                        if v is not None and v >= 1:  # no voltage, no estimate: the register still stops it
                            p = self._fresh(_I_W, 0) or 0
                            if v * sup.ev_limit / 10 > p:
                                p = v * sup.ev_limit / 10
                            if c[_C_NEAR] or left * 3600 <= p * (_TAPER_S + 2 * gap / 1000):
                                c[_C_NEAR] = True  # every cycle from here (gap: one cycle now)
                                lim = int(left * 36000 / (v * _TAPER_S))
                    if c[_C_NEAR]:
                        self.force_slow = True
                    if lim is not None and lim < sup.stop_a:
                        c[_C_MS] = 0
                        c[_C_ON] = False
                        if sup.session_active and not sup.stop_req:
                            log("session", "energy_cap")
                            sup.stop_req = "energy_cap"
                    elif lim is not None and lim < sup.session_limit:
                        sup.session_limit = c[_C_SET] = lim

    def _open_record(self, wh):
        # The session the supervisor started (auth in self.starting): its
        # record, with the start meter value wh if there is one already.
        auth, self.starting = self.starting, None
        rec = self.rec
        self.sup.hold_close = False
        if rec is None or rec.active:
            return
        c = self.cap
        sid = rec.start(self.uptime_s(), auth or None, wh, self._premix(0), self._fresh(_I_EVSOC, 0),
                        c[_C_CAPS] if c is not None else None)
        if sid is None:
            # The journal is full of bills the ledger has not
            # acknowledged: charging now could not be billed.
            log("session", "refused", rec.last_error)
            self.sup.stop_req = "journal_full"
        elif wh is None:
            # No energy may flow before the start meter value.
            self.sup.hold_close = True
            self.force_slow = True

    def _drain(self):
        ev = self.sup.events
        while ev:
            kind, a, b = ev.pop(0)
            now = self.clock.ms()
            if kind == "session_start":
                # Energy is read on the slow schedule: ask for it now.
                self.force_slow = True
                self.starting = b or ""
                # Its caps, copied: a new start command changes the
                # supervisor's for the next session only.
                c = self.sup.session_caps
                self.cap = None if c is None else [int((c[1] or 0) * 60000), now, now, self.sup.session_limit, -1,
                                                   c, bool(c[0]), False]
                if self.closing is None or self.rec is None:
                    self.session_ms = now
                    self._open_record(None)
                else:
                    # The last session still waits for its end meter value
                    # (an EV that plugged in at once): its record is closed
                    # first, then this one opened (_session_tick). It used to
                    # be skipped, and the pending close then closed the new
                    # record at 0 Wh and left it waiting for a start value
                    # on the slow schedule: meter_timeout with the EV asking.
                    self.sup.hold_close = True
            elif kind == "session_stop":
                c = self.cap
                if c is not None and self.sup.session_limit == c[_C_SET]:
                    self.sup.session_limit = c[_C_BASE]  # the taper's limit is not the next session's
                self.cap = None
                self.force_slow = True
                self.session_ms = now
                self.closing = b
            log("event", now, kind, a, b)
            for fn in self.listeners:
                fn(kind, a, b)

    # ---- status ------------------------------------------------------------
    def session_wh(self):
        s = self.rec.s if self.rec else None
        return round(s["e"], 1) if s else 0

    def status(self):
        now = self.clock.ms()
        st = self.sup.status(now)
        st["t"] = now
        st["session_wh"] = self.session_wh()
        st["cycles"] = self.cycles
        st["step_gap_ms"] = self.step_gap
        self.step_gap = 0
        c = self.sup.contactor
        st["contactor_ops"] = c.cycles_base + c.cycles
        st["bus"] = self.master.stats
        st["link"] = self.link_state()
        st["clock_set"] = self.board.unix_time() is not None
        st["heap"] = self.heap  # after the last collect (status_task)
        return st

    async def status_task(self, every_wall_ms):
        # A status line on the console (the unix board's stdout is what the
        # runner and the tests read; on a board it is the USB REPL). Only a
        # report: if it cannot be built (out of memory), skip it, never stop.
        chores = self.chores
        heap = self.heap
        while True:
            await asyncio.sleep_ms(every_wall_ms)
            # The collect and the line, each in a turn of the bus task of
            # its own (h2p.chores). On the emulated RP2040: the collect
            # 19 ms, mem_alloc and mem_free 5 ms each (each scans the whole
            # heap's table), the rest of the line ~9 ms, against a turn of
            # ~10 ms at 115200. The heap in use is taken right after the
            # collect (garbage made before the line's turn is not "in use");
            # free is the heap's size now (it may grow) less that.
            await chores.turn(GC)
            gc.collect()
            heap[0] = gc.mem_alloc()
            if self.board.console:
                await chores.turn(STATUS)
                heap[1] = gc.mem_free() + gc.mem_alloc() - heap[0]
                out = sys.stdout
                try:
                    st = self.status()
                    # Serialised straight to the console: no line-sized
                    # string in the heap (the largest transient it had).
                    out.write("STATUS ")
                    json.dump(st, out)
                    out.write("\n")
                except Exception as e:  # noqa: BLE001 - MemoryError included
                    self.report_errors += 1
                    # A line cut short is ended first: readers drop it (not JSON).
                    print("\nSTATUS-ERROR", type(e).__name__)
                st = None

    async def watchdog_task(self, stable_s):
        # Feed only when both the bus and the control step moved on. The
        # bus's sign is a transaction done, not a whole poll cycle: with
        # every device silent each read waits out its timeout, and a cycle
        # (with the hot reads again at each housekeeping turn, h2p.chores)
        # took longer than the watchdog: a silent bus is not a hang.
        wdt = self.board.wdt
        last_c, last_s = -1, -1
        while True:
            await asyncio.sleep_ms(200)
            if self.polls != last_c and self.steps != last_s:
                wdt.feed()
                last_c, last_s = self.polls, self.steps
            if self.last_crash is not None and self.uptime_s() > stable_s:
                # This boot ran long enough: the crashes before it no longer
                # count towards maintenance (meta keeps the last one).
                from h2p.crash import clear

                clear()
                self.last_crash["n"] = 0


async def clock_task(sntp, board, ready, server, port, retry_s, resync_s):
    # Keeps the board's clock set by SNTP (signed commands' expiry, TLS
    # dates): once the network is up, again every resync_s, sooner after a
    # miss (retry_s doubling to 10x).
    wait = retry_s
    while True:
        while not ready():
            await asyncio.sleep_ms(500)
        try:
            t = await sntp.query(server, port)
            board.set_time(int(t))
            log("clock", "set", int(t), "from", server)
            wait, pause = retry_s, resync_s
        except (OSError, ValueError) as e:
            log("clock", "not set:", e)
            pause, wait = wait, min(wait * 2, retry_s * 10)
        await asyncio.sleep_ms(pause * 1000)


def _start(pile, board):
    # The pile's tasks, started; -> the list of them. A plain function, so
    # that its locals (the config) are gone once it returns.
    cfg = pile.cfg
    c = asyncio.create_task
    tasks = [c(pile.status_task(500))]
    if pile.maintenance:
        from h2p.maintenance import maintenance_task

        tasks.append(c(maintenance_task(pile)))
    else:
        tasks.append(c(pile.bus_task()))
        tasks.append(c(pile.watchdog_task(cfg["stable_s"])))
    if hasattr(board.wdt, "run"):
        tasks.append(c(board.wdt.run()))
    if board.has_led:
        from h2p import led

        tasks.append(c(led.run(board, pile)))
    w = cfg["wifi"]
    if board.has_wifi and w["ssid"]:
        from h2p import link

        pile.link = link.Keeper(w["join_s"] * 1000, w["backoff_max_s"] * 1000, link.jitter)
        tasks.append(c(link.run(board, pile.link, w["ssid"], w["password"])))
    n = cfg["ntp"]
    if n["server"] and board.unix_time() is None:
        from h2p import sntp

        tasks.append(c(clock_task(sntp, board, pile.link_ready, n["server"], n["port"], n["retry_s"],
                                  n["resync_s"])))
    if cfg["mqtt"]["host"]:
        from h2p.uplink import Uplink

        tasks.append(c(Uplink(pile).run()))
    # Every part has copied out what it needs: the config dict (~4 KB on
    # the 64-bit port) can go.
    pile.cfg = None
    return tasks


async def run(pile, board):
    # Runs the pile's tasks until one dies: never a silent death, never a
    # silent loop. gather() hands us the first exception (the others run
    # on); the pile goes safe, the reason is kept and the board resets on
    # purpose (h2p.crash, which names the task from the traceback: no
    # wrapper per task, no heap).
    tasks = _start(pile, board)
    gc.collect()
    try:
        await asyncio.gather(*tasks)
    except Exception as e:  # noqa: BLE001 - any failure takes the crash path
        tasks = None
        gc.collect()  # the dead task's memory: room to load the crash path
        try:
            from h2p import crash
        except MemoryError:
            # Not even room for the crash path (it is loaded only now): say
            # what died on the console, which needs no heap, and reset; the
            # devices' comm watchdogs take the charger and the fuel safe
            # (docs/safety.md) and the next boot starts `off`.
            print("CRASH task ? (no memory for the crash path)")
            pe = getattr(sys, "print_exception", None)  # MicroPython
            if pe is not None:
                pe(e)
            else:
                print(repr(e))
            board.reset("crash")
            return
        try:
            await crash.handle(pile, e)
        finally:
            board.reset("crash")


def boot(board, config):
    # Build the pile and report it; the caller drops its own reference to
    # the config afterwards (run_forever frees the rest).
    pile = Pile(board, config)
    from h2p import crash, interlocks, readings

    last = pile.last_crash = crash.load()
    if last is not None and last["n"] >= config["maintenance_after"]:
        # Crashed that often in a row: stay up, safe and reachable.
        from h2p.maintenance import Maintenance

        pile.maintenance = Maintenance()
        from h2p import states

        pile.sup.state = states.MAINTENANCE
        print("MAINTENANCE after %d crashes in a row, last: %s in task %s (a `reset` command restarts)"
              % (last["n"], last["error"], last["task"]))
    crash = None  # type: ignore[assignment]
    forget("h2p.crash")  # loaded again only if something crashes

    interlocks.release()  # the rules are compiled; the source table can go
    if config["mqtt"]["host"]:
        import h2p.uplink  # noqa: F401 - resolves the reading names it sends while loading
    readings.release()  # every module has its reading indices now
    # The codes module: its tables and names were for boot (the register
    # maps, the interlock table); the modules that run have their codes as
    # constants. (~1.4 KB on this port.)
    forget("h2p.codes")
    log("boot", "h2pile", VERSION, "board", board.name, "pile", config["pile_id"], "reset", board.reset_cause)
    gc.collect()
    # One machine-readable line for `h2pile verify` and the runner.
    print("BOOT " + json.dumps({
        "version": VERSION, "board": board.name, "pile": config["pile_id"],
        "reset": board.reset_cause, "baud": config["bus"]["baud"],
        "meter": config["meter_profile"], "mqtt": config["mqtt"]["host"] or None,
        "heap_free": gc.mem_free(), "heap_used": gc.mem_alloc(),
        # Where the bytecode runs from: flash (/rom, in place) or the heap.
        "code": "rom" if __file__.startswith("/rom") else "ram",
        "mpy": ".".join(str(x) for x in sys.implementation.version[:3]),
        "crash": last, "maintenance": pile.maintenance is not None,
    }))
    return pile


def run_forever(pile):
    asyncio.run(run(pile, pile.board))
    return 0
