"""A pile for the bench: host_tools.pilerun.PileRun with the bench's
simulator host (bench.simhost), a private firmware build, firmware restarts
on the same simulator, and an incremental reader of the simulator's log."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time

from host_tools.pilerun import HEAP, PileRun

# Bench plant: a warm start, and the slow start-up steps that do not touch
# what is measured made short so one pile serves many trials.
WARM = {"bed_c0": 265.0, "stack_c0": 165.0}
QUICK_PLANT = {"evap_delay_s": 1.0, "lock_s": 0.05, "imd_s": 0.2}
QUICK_CONFIG = {
    "idle_shutdown_s": 0,
    "limits": {"feed_lead_s": 1, "stack_ramp_up": 0.05, "stack_min_load": 0.1},
    "bus": {"data_age_ms": 3000},
}

_build_cache: dict = {}


def firmware_build(board="unix_sim") -> str:
    """Compile the firmware once per bench run into a private directory
    (build/ is shared with `make sim` and the tests)."""
    if board not in _build_cache:
        from host_tools.build import build

        _build_cache[board] = build(board, tempfile.mkdtemp(prefix="h2pile-bench-build-"))
    return _build_cache[board]


class BenchPile(PileRun):
    def __init__(self, speed=1.0, baud=115200, params=None, config=None, heap=HEAP, mqtt=False,
                 sample_s=0.0, rom=True):
        self.tmp = tempfile.mkdtemp(prefix="h2pile-bench-")
        self.sim_log = os.path.join(self.tmp, "sim.jsonl")
        sim_args = []
        for k, v in (params or {}).items():
            sim_args += ["--param", f"{k}={v!r}"]
        if sample_s:
            sim_args += ["--sample-s", str(sample_s)]
        super().__init__(speed=speed, heap=heap, config=config or {}, sim_args=sim_args, baud=baud,
                         log_path=self.sim_log, firmware_build=firmware_build(), mqtt=mqtt,
                         sim_module="bench.simhost", rom=rom)
        self._log_f = None
        self.records: list[dict] = []

    async def stop(self):
        await super().stop()
        if self._log_f:
            self._log_f.close()
        import shutil

        for d in (self.tmp, self.board_dir):
            if d and d.startswith(tempfile.gettempdir()):
                shutil.rmtree(d, ignore_errors=True)

    async def restart_firmware(self):
        """A reboot of the board (latched faults need a technician's reset;
        a power cycle is the quickest one). The simulator keeps running."""
        await self.kill_firmware()
        self.state = "off"
        self.status = {}
        await self.start_firmware()

    async def request(self, req: dict, timeout=10.0) -> dict:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.ctl_port, limit=1 << 24),
                                      timeout)
        try:
            w.write((json.dumps(req) + "\n").encode())
            await w.drain()
            return json.loads(await asyncio.wait_for(r.readline(), timeout))
        finally:
            w.close()

    def read_log(self) -> list[dict]:
        """New records of the simulator's JSON-lines log since the last call."""
        if self._log_f is None:
            try:
                self._log_f = open(self.sim_log)
            except OSError:
                return []
        out = []
        while True:
            pos = self._log_f.tell()
            line = self._log_f.readline()
            if not line:
                break
            if not line.endswith("\n"):
                self._log_f.seek(pos)
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        self.records.extend(out)
        return out

    async def wait_for(self, pred, timeout_wall: float, every=0.01) -> bool:
        end = time.monotonic() + timeout_wall
        while time.monotonic() < end:
            if pred():
                return True
            if self.fw and self.fw.returncode is not None:
                return False
            await asyncio.sleep(every)
        return False

    def tail(self, n=15) -> str:
        return "\n".join([x for x in self.lines if not x.startswith("STATUS")][-n:])


def cleanup():
    """Remove the private firmware builds."""
    import shutil

    for out in _build_cache.values():
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    _build_cache.clear()
