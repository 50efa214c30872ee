"""The simulated RS-485 line: every device of the pile on one Modbus RTU bus.

pymodbus serves the devices (SimDevice API) with RTU framing, over TCP by
default or a serial port. Each reply is delayed by the wire time of the
request and the reply at the configured baud plus the device's turnaround,
divided by the time-acceleration factor. A silent device's replies are
dropped (the master sees a timeout, as on a real bus); a faulty one's get a
broken CRC or garbage.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Callable

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from h2p import registers as R
from h2p.modbus import char_time_us, crc16, gap_us
from sim.plant import Plant


def wire_time_s(baud: int, req_bytes: int, reply_bytes: int) -> float:
    """Time the wire needs for one transaction: both frames and two gaps."""
    chars = req_bytes + reply_bytes
    return (chars * char_time_us(baud) + 2 * gap_us(baud)) / 1e6


def reply_time_s(baud: int, req_bytes: int, reply_bytes: int) -> float:
    """When the reply's last byte is on the wire: request, the gap before
    the reply, the reply. The silence after it is the master's to keep (it
    waits t3.5 before its next request), so it is not added here."""
    return wire_time_s(baud, req_bytes, reply_bytes) - gap_us(baud) / 1e6


class RegisterMismatch(ValueError):
    """The register map names a reading the plant does not produce."""


class PileSim:
    def __init__(
        self,
        params: dict[str, float],
        speed: float = 1.0,
        baud: int = 115200,
        turnaround_ms: float = 2.0,
        units: dict[str, int] | None = None,
        meter_profile: str = "sdm630",
        wire_timing: bool = True,
        log: Callable[[dict], None] | None = None,
    ):
        self.plant = Plant(params)
        self.speed = speed
        self.baud = baud
        self.turnaround_s = turnaround_ms / 1000.0
        self.wire_timing = wire_timing
        self.units = {d: R.DEVICES[d]["unit"] for d in R.DEVICE_ORDER}
        self.units.update(units or {})
        self.by_unit = {u: d for d, u in self.units.items()}
        self.meter = R.METER_PROFILES[meter_profile]
        self._check_registers()
        self.silent: set[str] = set()
        self.bad_crc: set[str] = set()
        self.garbage: set[str] = set()
        self.log = log or (lambda rec: None)
        self._t0 = time.monotonic()
        self.epoch_ns = time.time_ns()  # wall clock at simulated t=0
        self._sim0 = 0.0
        self.requests = 0
        self.writes: list[tuple[float, str, str, float]] = []
        self.hooks: list[Callable[[str, str, float], None]] = []  # on write
        self._trips_logged = 0  # comm watchdog trips already logged
        self.server = None

    # ---- time ------------------------------------------------------------
    def now(self) -> float:
        """Simulated seconds since start."""
        return self._sim0 + (time.monotonic() - self._t0) * self.speed

    def set_speed(self, speed: float):
        self._sim0 = self.now()
        self._t0 = time.monotonic()
        self.speed = speed

    def advance(self):
        self.plant.advance(self.now())
        trips = self.plant.comm_trips
        while self._trips_logged < len(trips):
            t, dev = trips[self._trips_logged]
            self._trips_logged += 1
            self.log({"kind": "comm_timeout", "t": t, "dev": dev})

    # ---- devices ---------------------------------------------------------
    def _fields(self, dev: str):
        """(input fields, holding fields) for a device, as register maps."""
        if dev == "meter":
            fs = self.meter["fields"]
            return (fs, ()) if self.meter["fc"] == 4 else ((), fs)
        return R.DEVICES[dev]["readings"], R.DEVICES[dev]["commands"]

    def _from_plant(self, dev: str) -> dict[int, tuple]:
        """Function code -> the fields whose values the plant gives: every
        input register, and the meter's fields whatever function reads them.
        (A device's holding registers are its commands: they read back what
        was written.)"""
        inputs, holdings = self._fields(dev)
        return {4: inputs, 3: holdings} if dev == "meter" else {4: inputs}

    def _check_registers(self) -> None:
        """A register the plant does not produce would read 0 forever: refuse
        to start instead, naming it."""
        have = self.plant.readings()
        for dev in R.DEVICE_ORDER:
            for fields in self._from_plant(dev).values():
                for f in fields:
                    if f[0] not in have:
                        raise RegisterMismatch(f"the plant produces no reading {f[0]!r} "
                                               f"({dev} register 0x{f[1]:04X} in firmware/h2p/registers.py): "
                                               f"add it to sim.plant.Plant.readings()")

    def _simdevice(self, dev: str) -> SimDevice:
        inputs, holdings = self._fields(dev)

        def span(fields):
            if not fields:
                return [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
            lo = min(f[1] for f in fields)
            hi = max(f[1] + R.TYPE_WORDS[f[2]] for f in fields)
            return [SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        dev_fields = self._from_plant(dev)

        async def action(fc, start, address, count, regs, values):
            return await self._action(dev, dev_fields, fc, start, address, count, regs, values)

        return SimDevice(
            id=self.units[dev],
            simdata=(list(bits), list(bits), span(holdings), span(inputs)),
            action=action,
        )

    def devices(self) -> list[SimDevice]:
        return [self._simdevice(d) for d in R.DEVICE_ORDER]

    async def _action(self, dev, dev_fields, fc, start, address, count, regs, values):
        self.requests += 1
        self.advance()
        if dev not in self.silent:
            # Any request the device hears feeds its comm watchdog, reads
            # too (as on real controllers); a silent one was cut off.
            self.plant.heard(dev)
        if values is None:
            fields = dev_fields.get(4 if fc == 4 else 3, ())
            if fields:
                r = self.plant.readings()
                for name, addr, typ, scale in fields:  # every name is there (_check_registers)
                    words = R.encode(r[name], typ, scale)
                    for k, w in enumerate(words):
                        regs[addr - start + k] = w
            elif fc == 3 and dev != "meter":
                # Commands read back what they hold now: after a comm
                # watchdog trip, the safe values, not the last write.
                for name, addr, typ, scale in R.DEVICES[dev]["commands"]:  # regs: the whole span
                    regs[addr - start] = R.encode(self.plant.command_value(name), typ, scale)[0]
            reply = 5 + 2 * count
            req = 8
        else:
            reply = 8
            req = 8 if fc == 6 else 9 + 2 * len(values)
            now = self.now()
            if dev in self.silent:
                return None  # off or cut off: it never heard the request
            for k, w in enumerate(values):
                self._write(dev, address + k, int(w), now)
        if self.wire_timing and dev not in self.silent:
            await asyncio.sleep(
                (reply_time_s(self.baud, req, reply) + self.turnaround_s) / self.speed
            )
        return None

    def _write(self, dev, addr, word, now):
        for name, a, typ, scale in R.DEVICES[dev]["commands"]:
            if a == addr:
                if typ == R.I16 and word & 0x8000:
                    word -= 0x10000
                value = word * scale
                unsafe = self.plant.command(name, value)
                self.writes.append((now, dev, name, value))
                rec = {"kind": "write", "t": round(now, 4), "dev": dev, "cmd": name, "value": value}
                if unsafe:
                    rec["unsafe"] = unsafe
                self.log(rec)
                for h in self.hooks:
                    h(dev, name, value)
                return

    # ---- wire faults -----------------------------------------------------
    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        dev = self.by_unit.get(data[0])
        if dev is None or dev in self.silent:
            return b""  # a real bus stays silent for a unit nobody answers to
        if dev in self.garbage:
            return bytes(random.getrandbits(8) for _ in range(len(data)))
        if dev in self.bad_crc:
            b = bytearray(data)
            c = crc16(b, len(b) - 2) ^ 0x5A5A
            b[-2], b[-1] = c & 0xFF, c >> 8
            return bytes(b)
        return data

    # ---- serving ---------------------------------------------------------
    async def physics_task(self, every_s: float = 0.02, sample_s: float = 0.0):
        """Keep the plant moving; log a `sample` record of the plant's
        summary every `sample_s` simulated seconds (0: none)."""
        next_sample = 0.0
        while True:
            self.advance()
            if sample_s > 0 and self.plant.t >= next_sample:
                self.log(sample_record(self.plant))
                next_sample = self.plant.t + sample_s
            await asyncio.sleep(every_s)

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> int:
        """Serve RTU over TCP; returns the port bound (port 0: one the system
        picks, so a test rig never races another process for a free one)."""
        self.server = ModbusTcpServer(
            self.devices(),
            framer=FramerType.RTU,
            address=(host, port),
            trace_packet=self.trace_packet,
        )
        await self.server.serve_forever(background=True)
        return self.server.transport.sockets[0].getsockname()[1]

    async def serve_serial(self, device: str):
        self.server = ModbusSerialServer(
            self.devices(),
            framer=FramerType.RTU,
            port=device,
            baudrate=self.baud,
            trace_packet=self.trace_packet,
        )
        await self.server.serve_forever(background=True)

    async def stop(self):
        if self.server:
            await self.server.shutdown()


SAMPLE_FIELDS = ("bed_c", "burner_c", "stack_c", "bat_c", "stack_a", "stack_w", "net_w", "bop_w", "ev_w",
                 "bat_a", "bat_soc", "ev_soc", "h2_lel", "min_cell_v", "tank_l", "delivered_kwh", "contactor")


def sample_record(plant) -> dict:
    s = plant.summary()
    rec = {"kind": "sample", "t": s["t"]}
    for k in SAMPLE_FIELDS:
        rec[k] = s[k]
    if not s["ev_present"]:
        rec["ev_soc"] = None
    return rec


def jsonl_writer(path):
    f = open(path, "a", buffering=1)

    def write(rec):
        rec.setdefault("wall", round(time.time(), 4))
        f.write(json.dumps(rec) + "\n")

    return write
