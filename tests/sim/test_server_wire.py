"""The simulated RS-485 line: RTU over TCP and over a serial port, true wire
time per transaction, and silence (not exceptions) from absent devices."""

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

import sim  # noqa: F401
from h2p import registers as R
from h2p.modbus import crc16
from sim import params as P
from sim.server import PileSim, reply_time_s, wire_time_s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtu_read(unit, fc, addr, count):
    b = bytearray(struct.pack(">BBHH", unit, fc, addr, count))
    c = crc16(b, len(b))
    return bytes(b) + bytes((c & 0xFF, c >> 8))


async def tcp_sim(**kw):
    sim_ = PileSim(P.merged({"bed_c0": 265.0}), **kw)
    port = free_port()
    await sim_.serve_tcp("127.0.0.1", port)
    await asyncio.sleep(0.05)
    return sim_, port


def test_wire_time_formula_matches_domain():
    # 8-byte request, 9-byte reply, two gaps: >= 27.5 ms at 9600 baud.
    assert wire_time_s(9600, 8, 9) == pytest.approx(0.0275, abs=0.0002)
    assert wire_time_s(19200, 8, 9) == pytest.approx(0.0137, abs=0.0002)
    assert wire_time_s(115200, 8, 9) == pytest.approx(0.0051, abs=0.0002)


def test_two_register_read_takes_the_wire_time_at_9600():
    async def main():
        sim_, port = await tcp_sim(speed=1.0, baud=9600, turnaround_ms=0.0)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=2, retries=0)
        await client.connect()
        try:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                rr = await client.read_input_registers(0, count=2, device_id=R.DEVICES["reformer"]["unit"])
                times.append(time.perf_counter() - t0)
                assert not rr.isError()
            # The bed reads what the plant says (warm start: 265.0 degC).
            rr = await client.read_input_registers(3, count=1, device_id=1)
            assert 2640 <= rr.registers[0] <= 2650  # cooling slowly from 265.0
            return times
        finally:
            client.close()
            await sim_.stop()

    times = asyncio.run(main())
    # The reply is complete after 27.5 ms less the trailing t3.5 (4.0 ms),
    # which the master keeps before its next request.
    assert min(times) >= 0.0275 - 0.00401, times
    assert max(times) < 0.2, times


def test_turnaround_and_speed_scale_the_delay():
    async def main():
        sim_, port = await tcp_sim(speed=4.0, baud=9600, turnaround_ms=40.0)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=2, retries=0)
        await client.connect()
        try:
            t0 = time.perf_counter()
            rr = await client.read_input_registers(0, count=2, device_id=1)
            return time.perf_counter() - t0, rr
        finally:
            client.close()
            await sim_.stop()

    dt, rr = asyncio.run(main())
    assert not rr.isError()
    # (23.5 ms to the reply's end + 40 ms) / 4 = 15.9 ms wall.
    assert 0.0158 <= dt < 0.1


def test_silent_device_and_unknown_unit_do_not_answer():
    async def main():
        sim_, port = await tcp_sim(speed=1.0, baud=115200)
        sim_.silent.add("meter")
        r, w = await asyncio.open_connection("127.0.0.1", port)
        out = {}
        try:
            for name, frame in (
                ("bms", rtu_read(R.DEVICES["bms"]["unit"], 4, 0, 2)),
                ("meter", rtu_read(R.DEVICES["meter"]["unit"], 4, 0, 2)),
                ("unit42", rtu_read(42, 4, 0, 2)),
            ):
                w.write(frame)
                await w.drain()
                try:
                    out[name] = await asyncio.wait_for(r.read(256), 0.3)
                except asyncio.TimeoutError:
                    out[name] = b""
            # A pymodbus master sees a timeout (no reply), not an exception
            # response.
            client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=0.3, retries=0)
            await client.connect()
            t0 = time.perf_counter()
            try:
                rr = await client.read_input_registers(0, count=2, device_id=R.DEVICES["meter"]["unit"])
                out["client"] = rr
            except ModbusIOException as e:
                out["client"] = e
            out["client_s"] = time.perf_counter() - t0
            client.close()
            # Cleared: it answers again.
            sim_.silent.discard("meter")
            w.write(rtu_read(R.DEVICES["meter"]["unit"], 4, 0, 2))
            await w.drain()
            out["meter_back"] = await asyncio.wait_for(r.read(256), 1.0)
        finally:
            w.close()
            await sim_.stop()
        return out

    out = asyncio.run(main())
    assert len(out["bms"]) == 9 and out["bms"][1] == 4  # a normal reply
    assert out["meter"] == b""  # silent: nothing at all on the wire
    assert out["unit42"] == b""  # nobody there: silence, not exception 4
    assert isinstance(out["client"], ModbusIOException), out["client"]
    assert out["client_s"] >= 0.29
    assert len(out["meter_back"]) == 9


def test_bad_crc_device_reply_fails_crc():
    async def main():
        sim_, port = await tcp_sim(speed=1.0)
        sim_.bad_crc.add("bms")
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            w.write(rtu_read(R.DEVICES["bms"]["unit"], 4, 0, 2))
            await w.drain()
            return await asyncio.wait_for(r.read(256), 1.0)
        finally:
            w.close()
            await sim_.stop()

    reply = asyncio.run(main())
    assert len(reply) == 9
    c = crc16(reply, 7)
    assert (reply[7], reply[8]) != (c & 0xFF, c >> 8)


def test_write_reaches_the_plant_and_is_logged():
    async def main():
        recs = []
        sim_, port = await tcp_sim(speed=1.0, log=recs.append)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=2, retries=0)
        await client.connect()
        try:
            rr = await client.write_register(0x100, 1, device_id=R.DEVICES["charger"]["unit"])
            assert not rr.isError()
            return sim_.plant.charger.contactor_cmd, recs
        finally:
            client.close()
            await sim_.stop()

    cmd, recs = asyncio.run(main())
    assert cmd == 1
    assert recs and recs[0]["kind"] == "write" and recs[0]["cmd"] == "chg_contactor" and recs[0]["value"] == 1


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_serial_port_via_socat_pty_pair():
    d = tempfile.mkdtemp(prefix="h2pile-pty-")
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    socat = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(a) and os.path.exists(b):
                break
            time.sleep(0.02)
        else:
            pytest.fail("socat did not create the pty pair")

        async def main():
            sim_ = PileSim(P.merged({"stack_c0": 165.0}), speed=1.0, baud=19200, turnaround_ms=0.0)
            sim_.silent.add("meter")
            await sim_.serve_serial(a)
            await asyncio.sleep(0.2)
            client = AsyncModbusSerialClient(b, framer=FramerType.RTU, baudrate=19200, timeout=0.5, retries=0)
            await client.connect()
            try:
                t0 = time.perf_counter()
                rr = await client.read_input_registers(1, count=1, device_id=R.DEVICES["fuelcell"]["unit"])
                dt = time.perf_counter() - t0
                try:
                    silent = await client.read_input_registers(0, count=2, device_id=R.DEVICES["meter"]["unit"])
                except ModbusIOException as e:
                    silent = e
                return rr, dt, silent
            finally:
                client.close()
                await sim_.stop()

        rr, dt, silent = asyncio.run(main())
        assert not rr.isError()
        assert 1640 <= rr.registers[0] <= 1650  # stack at ~165.0 degC
        assert dt >= reply_time_s(19200, 8, 7)
        assert isinstance(silent, ModbusIOException)
    finally:
        socat.terminate()
        socat.wait(5)
        shutil.rmtree(d, ignore_errors=True)
