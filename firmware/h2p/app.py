# The imperative shell: asyncio tasks that move bytes. The bus task reads
# the poll schedule, steps the supervisor after every read (so a hazard is
# answered within one read plus one write) and writes what changed, the
# charger first. Other tasks print status, drain events and feed the
# watchdog only when both the bus and the control step made progress.
import gc
import json

from h2p import VERSION
from h2p import states as S
from h2p.compat import asyncio, ticks_diff
from h2p import devices as D
from h2p.log import log
from h2p.modbus import Master, ModbusError
from h2p.readings import Readings, INDEX, UNKNOWN
from h2p.supervisor import Supervisor

_REFRESH_MS = 10000  # re-assert setpoints so a rebooted device gets them


class Pile:
    def __init__(self, board, config):
        self.board = board
        self.cfg = config
        clock = board.clock
        self.clock = clock
        bus = config["bus"]
        self.rd = Readings(bus["data_age_ms"])
        self.devices = D.build(config)
        self.master = Master(board.line, clock, bus["baud"], bus["timeout_ms"], bus["retries"])
        self.sup = Supervisor(config, self.devices, clock.ms())
        self.cycles = 0
        self.steps = 0
        self.slow_every = bus["slow_every"]
        self.refresh_ms = [0] * len(self.devices)
        self.session_wh0 = None
        self.session_wh = 0
        self.session_ms = 0  # when the session started or stopped
        self.closing = False  # stopped; waiting for a meter reading after it
        self.force_slow = False
        self.total_wh = 0
        self.listeners = []  # fn(kind, a, b) for events (MQTT, journal)

    # ---- bus ---------------------------------------------------------------
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
        for k in range(len(self.devices)):
            dev = self.devices[k]
            n = len(dev.want)
            if not n:
                continue
            now = self.clock.ms()
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
                continue
            for i in range(n):
                dev.sent[i] = dev.want[i]

    def _step(self):
        sup = self.sup
        sup.estop_in = self.board.estop_pressed()
        sup.step(self.clock.ms(), self.rd)
        self.steps += 1
        if sup.events:
            self._drain()

    async def bus_task(self):
        await self.board.open()
        while True:
            slow = self.force_slow or self.cycles % self.slow_every == 0
            self.force_slow = False
            for dev in self.devices:
                for blk in dev.blocks:
                    if blk.fast or slow:
                        await self._read(dev, blk)
                        self._step()
                        await self._flush()
            self.cycles += 1
            # Yield even when every device answers at once.
            await asyncio.sleep_ms(0)

    # ---- events and status -------------------------------------------------
    def _drain(self):
        ev = self.sup.events
        while ev:
            kind, a, b = ev.pop(0)
            now = self.clock.ms()
            if kind == "session_start":
                # Energy is billing data read on the slow schedule: take a
                # fresh reading now for the baseline, and another after stop.
                self.session_wh0 = None
                self.session_wh = 0
                self.session_ms = now
                self.force_slow = True
            elif kind == "session_stop":
                self.session_ms = now
                self.closing = True
                self.force_slow = True
            log("event", now, kind, a, b)
            for fn in self.listeners:
                fn(kind, a, b)

    def _meter_wh(self, now):
        # Only a reading taken after the session's start/stop counts.
        i = INDEX["met_wh"]
        v = self.rd.get(i, now)
        if v == UNKNOWN or ticks_diff(self.rd.ts[i], self.session_ms) < 0:
            return None
        return v

    def _count_energy(self, now):
        wh = self._meter_wh(now)
        if wh is None:
            return
        if self.session_wh0 is None:
            self.session_wh0 = wh
        self.session_wh = wh - self.session_wh0
        if self.closing:
            self.closing = False
            log("session", now, "closed", self.sup.session_n, self.session_wh, "Wh", self.sup.stop_reason)

    def status(self):
        now = self.clock.ms()
        if self.sup.session_active or self.closing:
            self._count_energy(now)
        st = self.sup.status(now)
        st["t"] = now
        st["session_wh"] = self.session_wh
        st["cycles"] = self.cycles
        st["bus"] = self.master.stats
        gc.collect()
        st["heap"] = [gc.mem_alloc(), gc.mem_free()]
        st["r"] = self.rd.snapshot(now)
        return st

    async def status_task(self, every_wall_ms):
        # A status line on the console (the unix board's stdout is what the
        # runner and the tests read; on a board it is the USB REPL).
        while True:
            await asyncio.sleep_ms(every_wall_ms)
            print("STATUS " + json.dumps(self.status()))

    async def watchdog_task(self):
        # Feed only when both the bus and the control step moved on.
        wdt = self.board.wdt
        last_c, last_s = -1, -1
        while True:
            await asyncio.sleep_ms(200)
            if self.cycles != last_c and self.steps != last_s:
                wdt.feed()
                last_c, last_s = self.cycles, self.steps


async def run(pile, board):
    tasks = [
        asyncio.create_task(pile.bus_task()),
        asyncio.create_task(pile.status_task(500)),
        asyncio.create_task(pile.watchdog_task()),
    ]
    if hasattr(board.wdt, "run"):
        tasks.append(asyncio.create_task(board.wdt.run()))
    await asyncio.gather(*tasks)


def main(board, config, unload=None):
    pile = Pile(board, config)
    if unload:
        # The register maps were needed to build the drivers, not after.
        unload("h2p.registers")
    log("boot", "h2pile", VERSION, "board", board.name, "pile", config["pile_id"], "reset", board.reset_cause)
    gc.collect()
    # One machine-readable line for `h2pile verify` and the runner.
    print("BOOT " + json.dumps({
        "version": VERSION, "board": board.name, "pile": config["pile_id"],
        "reset": board.reset_cause, "baud": config["bus"]["baud"],
        "meter": config["meter_profile"], "mqtt": config["mqtt"]["host"] or None,
        "heap_free": gc.mem_free(), "heap_used": gc.mem_alloc(),
    }))
    asyncio.run(run(pile, board))
    return 0
