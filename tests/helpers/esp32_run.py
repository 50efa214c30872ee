"""Run the firmware's ESP32 path on the unix port, against the simulator.

No ESP32 emulator exists here, so the board is a double: tests/board/
esp32_double/ holds `machine` and `network` as the ESP32 port has them
(surface generated from micropython-esp32-stubs, host_tools/esp32_surface.py)
and esp32_boot.py, which makes sys.platform read "esp32" and runs main.py
unchanged. The firmware is built for esp32_generic (board_esp32 + board_mcu)
and, with the double compiled beside it, put in a ROM image that the unix
board maps as flash (host_tools/unix_flash.py): on an ESP32, machine and
network are in the firmware image too, not in the heap.

    with Esp32Run(tmp_path, mqtt_port=broker.port) as run:
        run.wait_for(lambda l: l.startswith("BOOT "), 30)

Heap: the double's modules are Python objects in the heap (~27 KB on the
64-bit port; on a chip they are C tables in flash), so the firmware runs
with -X heapsize= 96K plus that cost, measured by esp32_double/probe_cost.py
before each boot: the firmware itself gets the 96K the unix board has.

The board's UART2 is bridged to the simulator's RTU-over-TCP port; WiFi
succeeds with the AP's ssid/password from esp32_double.json (the `ap`
argument), `drop_wifi()` / `restore_wifi()` take the AP away and back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from host_tools.pilerun import HEAP  # the unix board's heap budget (boards/unix_sim.json)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOUBLE = os.path.join(ROOT, "tests", "board", "esp32_double")
UNIX_FLASH = os.path.join(ROOT, "host_tools", "unix_flash.py")
BIN = os.path.dirname(sys.executable)
DOUBLE_MODULES = ("machine", "network", "time", "_surface", "_esp32_sys", "_qstr_room")

_build_lock = threading.Lock()
_builds: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_esp32(out_root: str) -> str:
    """build/esp32_generic as `h2pile build` makes it, plus rom_esp32.img:
    the firmware's .mpy files and the double's, as one ROM image."""
    with _build_lock:
        if out_root in _builds:
            return _builds[out_root]
        from host_tools.build import build, mpy_cross, write_rom_image

        # The double runs on the unix port: the viper modules' machine
        # code must be x64 (host_tools.build's `march`), not the ESP32's.
        out = build("esp32_generic", out_root, march="x64")
        rom = os.path.join(out, "rom_esp32double")
        shutil.copytree(os.path.join(out, "lib"), rom)
        for m in DOUBLE_MODULES:
            r = subprocess.run([mpy_cross(), "-o", os.path.join(rom, m + ".mpy"), "-s", m + ".py",
                                os.path.join(DOUBLE, m + ".py")], capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"mpy-cross {m}.py: {r.stderr}")
        shutil.copy(os.path.join(DOUBLE, "esp32_surface.jsonl"), rom)
        write_rom_image(rom, os.path.join(out, "rom_esp32.img"))
        _builds[out_root] = out
        return out


class SntpServer:
    """A one-socket SNTP server on 127.0.0.1 answering with this host's
    clock (the firmware's clock sync must not reach a real NTP pool)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import struct

        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            if len(data) < 48:
                continue
            t = time.time() + 2208988800
            reply = bytearray(48)
            reply[0] = 0x24  # LI 0, version 4, mode 4 (server)
            reply[1] = 1  # stratum 1
            struct.pack_into("!II", reply, 24, *struct.unpack_from("!II", data, 40))  # originate
            struct.pack_into("!II", reply, 32, int(t), int((t % 1) * 2 ** 32))
            struct.pack_into("!II", reply, 40, int(t), int((t % 1) * 2 ** 32))
            self.sock.sendto(bytes(reply), addr)
            self.answered += 1

    def close(self):
        self.sock.close()


def firmware_has(key: str) -> bool:
    """Does the firmware's config schema have this top-level key yet?"""
    from h2p import config

    return key in config.SCHEMA


class Esp32Run:
    def __init__(self, tmp, *, wifi=("pilenet", "pile-pass"), ap=("pilenet", "pile-pass"),
                 mqtt_port=None, fleet_secret="sim-fleet-secret", pile_id="esp-1", heap=HEAP,
                 speed=1.0, baud=115200, config=None, build_root=None, attempt_ms=300,
                 extra_heap=True, wrong_password_reason=None):
        self.tmp = str(tmp)
        self.dir = os.path.join(self.tmp, "board")
        self.build_root = build_root or os.path.join(self.tmp, "fw")
        self.heap = heap
        self.extra_heap = extra_heap
        self.double_bytes = 0
        self.heap_used = ""  # the -X heapsize the firmware runs with
        self.speed = speed
        self.baud = baud
        self.port = free_port()
        self.ctl_port = free_port()
        self.config = {"pile_id": pile_id, "bus": {"baud": baud},
                       "wifi": {"ssid": wifi[0], "password": wifi[1]}}
        if mqtt_port:
            from h2p import keys

            self.config["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port,
                                   "cmd_key": keys.cmd_key(fleet_secret, pile_id)}
        self.sntp = None
        if firmware_has("ntp"):
            # the clock is set from 127.0.0.1, never from pool.ntp.org
            self.sntp = SntpServer()
            self.config["ntp"] = {"server": "127.0.0.1", "port": self.sntp.port}
        for k, v in (config or {}).items():
            self.config[k] = v
        self.double_cfg = {"uart": {"2": {"host": "127.0.0.1", "port": self.port}},
                           "ap": {"ssid": ap[0], "password": ap[1], "ip": "10.0.0.20",
                                  "attempt_ms": attempt_ms},
                           "link_down_file": "wifi_down"}
        if wrong_password_reason is not None:
            self.double_cfg["ap"]["wrong_password_reason"] = wrong_password_reason
        self.lines: list[str] = []
        self.sim_lines: list[str] = []
        self._cv = threading.Condition()
        self.sim = None
        self.fw = None

    # ---- set-up ------------------------------------------------------------
    def prepare(self):
        out = build_esp32(self.build_root)
        self.rom = os.path.join(out, "rom_esp32.img")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        shutil.copy(os.path.join(out, "main.py"), self.dir)
        shutil.copy(os.path.join(out, "board.json"), self.dir)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        with open(os.path.join(self.dir, "esp32_double.json"), "w") as f:
            json.dump(self.double_cfg, f, indent=1)

    def start_sim(self):
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "sim", "--port", str(self.port), "--control-port", str(self.ctl_port),
             "--speed", str(self.speed), "--baud", str(self.baud)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = self.sim.stdout.readline()
        if "serving" not in line:
            raise RuntimeError("simulator did not start: " + line + self.sim.stdout.read())
        threading.Thread(target=self._drain, args=(self.sim.stdout, self.sim_lines), daemon=True).start()

    def double_heap(self) -> int:
        """Bytes of heap the double's machine, network and time take once imported."""
        r = subprocess.run([sys.executable, UNIX_FLASH, self.rom, "-X", "heapsize=" + self.heap,
                            os.path.join(DOUBLE, "probe_cost.py")], cwd=self.dir, capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, MICROPYPATH=DOUBLE + ":.frozen"))
        for line in r.stdout.splitlines():
            if line.startswith("DOUBLE_HEAP ") and line.endswith("/rom/machine.mpy /rom/time.mpy"):
                return int(line.split()[1])
        raise RuntimeError("double heap probe failed: " + r.stdout + r.stderr)

    def heap_arg(self) -> str:
        # The firmware's budget (96K) plus what the double costs here and a
        # chip's ROM would not: the firmware gets as much heap as at 96K on
        # the unix board. extra_heap=False: the bare figure.
        if not self.extra_heap:
            return self.heap
        kb = int(self.heap.rstrip("Kk"))
        self.double_bytes = self.double_heap()
        return "%dK" % (kb + (self.double_bytes + 1023) // 1024)

    def start_firmware(self):
        if not self.heap_used:
            self.heap_used = self.heap_arg()
        env = dict(os.environ, MICROPYPATH=DOUBLE + ":.frozen")
        for k in ("H2P_BUS_PORT", "H2P_BUS_HOST", "H2P_SPEED", "H2P_EPOCH_NS"):
            env.pop(k, None)  # the unix board's settings; this board has a UART
        self.fw = subprocess.Popen(
            [sys.executable, UNIX_FLASH, self.rom, "-X", "heapsize=" + self.heap_used,
             os.path.join(DOUBLE, "esp32_boot.py")],
            cwd=self.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.t0 = time.monotonic()
        threading.Thread(target=self._drain, args=(self.fw.stdout, self.lines), daemon=True).start()

    def start(self):
        self.prepare()
        self.start_sim()
        self.start_firmware()
        return self

    def _drain(self, stream, into):
        for line in stream:
            with self._cv:
                into.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    # ---- observing ---------------------------------------------------------
    def wait_for(self, pred, timeout, start=0):
        """The first console line (from index `start`) for which pred(line)
        is true; None at the deadline or when the firmware has exited."""
        end = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or (self.fw.poll() is not None and i >= len(self.lines)):
                    return None
                self._cv.wait(min(left, 0.2))

    def statuses(self, start=0):
        out = []
        for line in self.lines[start:]:
            if line.startswith("STATUS "):
                try:
                    out.append(json.loads(line[7:]))
                except ValueError:
                    pass
        return out

    def sim_requests(self) -> int:
        """Requests the simulator has answered on its RTU line: proof the
        bus is polled through the UART double, whatever the console says."""
        import asyncio

        from sim import control

        return asyncio.run(control.request("127.0.0.1", self.ctl_port, {"op": "status"}))["requests"]

    def wait_requests(self, more, timeout) -> bool:
        """True once the simulator has answered `more` further requests."""
        n0 = self.sim_requests()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._cv:
                self._cv.wait(0.1)  # wakes on console lines too; polls the count either way
            if self.sim_requests() >= n0 + more:
                return True
            if self.fw.poll() is not None:
                return False
        return False

    def console(self, last=60) -> str:
        return "\n".join(self.lines[-last:])

    # ---- the access point ----------------------------------------------------
    def drop_wifi(self):
        open(os.path.join(self.dir, "wifi_down"), "w").close()

    def restore_wifi(self):
        try:
            os.remove(os.path.join(self.dir, "wifi_down"))
        except FileNotFoundError:
            pass

    # ---- tear-down -------------------------------------------------------------
    def stop(self):
        if self.sntp:
            self.sntp.close()
        for p in (self.fw, self.sim):
            if p and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
