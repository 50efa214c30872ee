"""Run the whole pile on this machine: the simulator and the firmware on the
MicroPython unix port, wired by RTU frames over TCP, at one time factor.

Used by `make sim` (live view), by `h2pile sim run` (scenarios) and by the
integration tests. The firmware's console (STATUS and LOG lines) is parsed
into `status` and `events`; the simulator is reached on its control port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from host_tools import ROOT
from host_tools.build import build

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def _heap_budget() -> str:
    # The unix board's heap budget, from its description (boards/unix_sim.json
    # heap_kb, read with the board loader): the one place it is set;
    # docs/memory.md says why it is what it is.
    from h2p import boardcfg

    return "%dK" % boardcfg.load(os.path.join(ROOT, "boards", "unix_sim.json"))["heap_kb"]


HEAP = _heap_budget()

# The rig's clocks run `speed` times the wall, and the host's scheduling
# latency is multiplied with them: at 40x, a poll cycle slowed by 125 ms of
# wall time (a busy 2-core machine, every transaction a wake-up of two
# processes) is 5 s of simulated time, and a reading that old is unknown,
# which is unsafe (CI, 2026-12: cold_start at 40x with data_age_ms 5000
# went to fault in preheat). So an accelerated run's data age must cover
# this much wall time; what the rules do once data *is* stale is tested at
# real time (tests/core/test_supervisor.py).
DATA_AGE_WALL_MS = 300


def min_data_age_ms(speed: float) -> int:
    """The shortest `bus.data_age_ms` the rig honours at `speed`: below it
    the host's scheduling, not the pile, decides when a reading goes stale."""
    return int(DATA_AGE_WALL_MS * speed + 0.5)


def rig_data_age_ms(speed: float) -> int:
    """The data age a run at `speed` gets when its config sets none: the
    firmware's default (for real time), raised to the rig's minimum."""
    from h2p import config as C

    return max(C.BUS["data_age_ms"][1], min_data_age_ms(speed))


UNIX_FLASH = os.path.join(ROOT, "host_tools", "unix_flash.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PileRun:
    def __init__(self, speed: float = 50.0, heap: str = HEAP, config: dict[str, Any] | None = None,
                 sim_args: Iterable[str] = (), board_dir: str | None = None,
                 log_path: str | None = None, baud: int = 115200, wall_floor_ms: int | None = None,
                 firmware_build: str | None = None, mqtt: bool = False, fleet_secret: str = "sim-fleet-secret",
                 port: int | None = None, ctl_port: int | None = None,
                 sim_module: str = "sim", rom: bool = True) -> None:
        self.speed = speed
        # The firmware's code in the unix board's flash (a ROMFS image mapped
        # outside the heap, host_tools/unix_flash.py), as on a board; False
        # loads every .mpy into the heap (to measure what that costs).
        self.rom = rom
        self.heap = heap
        self.baud = baud
        self.config: dict[str, Any] = {"pile_id": "sim-1", "auto_start": True, "auto_charge": True,
                                       "idle_shutdown_s": 120, "bus": {"baud": baud}}
        _deep_update(self.config, config or {})
        self.sim_args = list(sim_args)
        self.sim_module = sim_module  # `python -m <this>`: the bench swaps in its host
        self.board_dir = board_dir
        self.log_path = log_path
        self.wall_floor_ms = wall_floor_ms
        self.firmware_build = firmware_build
        self._own_build: str | None = None  # the build made for this run, if none was given
        self._own_board: str | None = None  # the board directory made for this run, if none was given
        # 0: the simulator binds ports the system picks and says which (no
        # race with another process for a port found free a moment before).
        self.port = port or 0
        self.ctl_port = ctl_port or 0
        self.sim: asyncio.subprocess.Process | None = None
        self.fw: asyncio.subprocess.Process | None = None
        self.broker: subprocess.Popen[bytes] | None = None
        self.mqtt_port: int | None = None
        self.fleet_secret = fleet_secret
        if mqtt:
            from h2p import keys

            self.mqtt_port = free_port()
            pid = self.config["pile_id"]
            _deep_update(self.config, {"mqtt": {"host": "127.0.0.1", "port": self.mqtt_port,
                                                "cmd_key": keys.cmd_key(fleet_secret, pid)}})
        self.status: dict[str, Any] = {}
        self.state = "off"
        self.events: list[dict[str, Any]] = []  # {"t": sim s, "wall": s, "kind":..., "a":..., "b":...}
        self.states: list[tuple[float, str]] = []
        self.lines: list[str] = []
        self.on_line: Callable[[str], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.t0 = time.monotonic()

    # ---- set-up ------------------------------------------------------------
    def _prepare_board(self) -> str:
        # A build of its own unless given one: two runs at once (two scenarios
        # in two terminals) must not rebuild each other's firmware mid-run.
        out = self.firmware_build
        if not out:
            self._own_build = tempfile.mkdtemp(prefix="h2pile-fw-")
            out = build("unix_sim", self._own_build)
        d = self.board_dir
        if d is None:
            d = self._own_board = tempfile.mkdtemp(prefix="h2pile-board-")
        self.board_dir = d
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        shutil.copy(os.path.join(out, "main.py"), d)
        shutil.copy(os.path.join(out, "board.json"), d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        self.lib = os.path.join(out, "lib")
        self.rom_img = os.path.join(out, "rom.img")
        return d

    async def start(self) -> None:
        self._prepare_board()
        if self.mqtt_port:
            from host_tools import broker

            self.broker = broker.start(self.mqtt_port)
        sim_cmd = [sys.executable, "-m", self.sim_module, "--port", str(self.port), "--control-port",
                   str(self.ctl_port), "--speed", str(self.speed), "--baud", str(self.baud)]
        if self.log_path:
            sim_cmd += ["--log", self.log_path]
        sim_cmd += self.sim_args
        self.sim = await asyncio.create_subprocess_exec(
            *sim_cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        assert self.sim.stdout is not None  # stdout=PIPE
        line = await asyncio.wait_for(self.sim.stdout.readline(), 20)
        if b"serving" not in line:
            rest = await self.sim.stdout.read()
            raise RuntimeError("simulator did not start: " + (line + rest).decode(errors="replace"))
        self.epoch_ns = int(line.split(b"epoch_ns ")[1].split()[0])
        # "sim: serving on 127.0.0.1:PORT (control CTL), ...": the ports bound
        m = re.search(rb":(\d+) \(control (\d+)\)", line)
        if m:
            self.port, self.ctl_port = int(m.group(1)), int(m.group(2))
        self._tasks.append(asyncio.create_task(self._drain_sim()))
        await self.start_firmware()

    async def start_firmware(self) -> None:
        env = dict(os.environ, MICROPYPATH=".frozen" if self.rom else ".frozen:" + self.lib,
                   H2P_SPEED=str(self.speed),
                   H2P_BUS_PORT=str(self.port), H2P_BUS_HOST="127.0.0.1",
                   H2P_EPOCH_NS=str(self.epoch_ns))
        if self.wall_floor_ms is not None:
            env["H2P_WALL_FLOOR_MS"] = str(self.wall_floor_ms)
        cmd = ([sys.executable, UNIX_FLASH, self.rom_img] if self.rom else [MICROPYTHON])
        self.fw = await asyncio.create_subprocess_exec(
            *cmd, "-X", f"heapsize={self.heap}", "main.py", cwd=self.board_dir, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._tasks.append(asyncio.create_task(self._read_fw(self.fw)))

    async def _drain_sim(self) -> None:
        while self.sim and self.sim.stdout:
            line = await self.sim.stdout.readline()
            if not line:
                return
            self.lines.append("SIM " + line.decode(errors="replace").rstrip())

    async def _read_fw(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None  # stdout=PIPE
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if len(self.lines) > 5000:
                del self.lines[:1000]
            if line.startswith("STATUS "):
                try:
                    self.status = json.loads(line[7:])
                    self.state = self.status.get("state", self.state)
                except ValueError:
                    pass
            elif line.startswith("LOG event "):
                parts = line.split(" ", 6)
                ev: dict[str, Any] = {"t": int(parts[2]) / 1000.0, "wall": time.monotonic() - self.t0,
                                      "kind": parts[3], "a": parts[4] if len(parts) > 4 else "",
                                      "b": parts[5] if len(parts) > 5 else ""}
                self.events.append(ev)
                if ev["kind"] == "state":
                    self.state = ev["b"]
                    self.states.append((ev["t"], ev["b"]))
            if self.on_line:
                self.on_line(line)

    # ---- the private broker (mqtt=True) --------------------------------------
    def stop_broker(self, sig: int = signal.SIGKILL) -> None:
        """Take the private mosquitto down (an outage); start_broker() brings
        a fresh one back on the same port (no persistence: its sessions and
        queued messages are gone, as after a broker crash)."""
        if self.broker and self.broker.poll() is None:
            self.broker.send_signal(sig)
            self.broker.wait(5)

    def start_broker(self) -> None:
        if not self.mqtt_port:
            raise RuntimeError("PileRun(mqtt=False) has no broker")
        if self.broker and self.broker.poll() is None:
            return
        from host_tools import broker

        self.broker = broker.start(self.mqtt_port)

    def broker_up(self) -> bool:
        return bool(self.broker and self.broker.poll() is None)

    # ---- the simulator's control port --------------------------------------
    async def control(self, req: dict[str, Any]) -> dict[str, Any]:
        from sim import control

        return await control.request("127.0.0.1", self.ctl_port, req)

    async def inject(self, event: str, **args: Any) -> dict[str, Any]:
        r = await self.control({"op": "inject", "event": event, "args": args})
        if not r.get("ok"):
            raise RuntimeError(r.get("error"))
        return r

    async def plant(self) -> dict[str, Any]:
        return (await self.control({"op": "status"}))["status"]

    async def wait_state(self, state: str, timeout_wall: float) -> bool:
        end = time.monotonic() + timeout_wall
        while time.monotonic() < end:
            if self.state == state:
                return True
            if self.fw and self.fw.returncode is not None:
                return False
            await asyncio.sleep(0.02)
        return False

    # ---- tear-down ---------------------------------------------------------
    async def kill_firmware(self, sig: int = signal.SIGKILL) -> None:
        if self.fw and self.fw.returncode is None:
            try:
                os.killpg(self.fw.pid, sig)
            except ProcessLookupError:
                pass
            await self.fw.wait()

    async def stop(self) -> None:
        if self.broker and self.broker.poll() is None:
            self.broker.terminate()
            self.broker.wait(5)
        for p in (self.fw, self.sim):
            if p and p.returncode is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    await asyncio.wait_for(p.wait(), 5)
                except asyncio.TimeoutError:
                    os.killpg(p.pid, signal.SIGKILL)
                    await p.wait()
        for t in self._tasks:
            t.cancel()
        # What this run made for itself goes with it; a board_dir the caller
        # gave stays (tests read the journal and the crash record from it).
        for d in (self._own_build, self._own_board):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        if self._own_board:
            self.board_dir = None  # (a start() after this makes a new one)
        self._own_build = self._own_board = None


def _deep_update(d: dict[str, Any], u: dict[str, Any]) -> None:
    for k, v in u.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            _deep_update(d[k], v)
        else:
            d[k] = v
