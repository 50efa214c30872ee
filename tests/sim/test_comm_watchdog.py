"""The controlled devices' comm watchdog (registers.COMM_TIMEOUT): charger,
fuel cell and reformer go to their safe state on their own when no request
addressed to them has come from the master for the time the master wrote
in their `*_comm_timeout` register. Plant level (sim time, deterministic)
and through the RTU server (any request the device hears feeds it)."""

import asyncio
import socket
import time

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient

import sim  # noqa: F401
from h2p import registers as R
from sim import params as P
from sim.plant import Plant
from sim.server import PileSim

WARM = {"bed_c0": 265.0, "stack_c0": 160.0}
DT = 0.05  # the plant's own step


def charging_plant(timeout_s=2.0, amps=100.0):
    """A warm plant delivering `amps` to an EV, the stack loaded and the
    reformer fed, every controlled device's watchdog set to timeout_s and
    fed every 0.1 s until now."""
    pl = Plant(P.merged(WARM))
    for dev in R.COMM_TIMEOUT:
        pl.command(R.COMM_TIMEOUT[dev], timeout_s)
    pl.command("ref_mode_cmd", R.REF_MODE_RUN)
    pl.command("ref_pump_sp", 30.0)
    pl.command("fc_enable", 1)
    pl.command("fc_current_sp", 40.0)
    pl.ev.plug(soc=30, target=90)
    pl.command("chg_lock", 1)
    t = 0.0
    while t < 10.0:
        t += 0.1
        if pl.charger.imd_done and not pl.charger.contactor_cmd:
            pl.command("chg_contactor", 1)
            pl.command("chg_enable", 1)
            pl.command("chg_limit_a", amps)
        pl.advance(t)
        for dev in R.COMM_TIMEOUT:
            pl.heard(dev)
    s = pl.summary()
    assert s["ev_a"] >= amps - 1 and s["contactor"] and s["fuel_on"] and s["stack_a"] > 10, s
    assert s["comm_lost"] == dict.fromkeys(R.COMM_TIMEOUT), "fed every 0.1 s: no trip"
    return pl


def run_silent(pl, seconds):
    """Advance with nobody talking; -> [(t, ev_a, contactor closed, fuel on)]."""
    trace = []
    end = pl.t + seconds
    while pl.t < end - 1e-9:
        pl.advance(pl.t + DT)
        s = pl.summary()
        trace.append((s["t"], s["ev_a"], s["contactor"], s["fuel_on"]))
    return trace


def test_master_silent_takes_every_device_safe_within_the_timeout():
    pl = charging_plant(timeout_s=2.0, amps=100.0)
    last = pl.t
    trace = run_silent(pl, 4.0)
    s = pl.summary()
    # Each device tripped when its timeout ran out, not before.
    for dev, t in s["comm_lost"].items():
        assert t is not None and 2.0 <= t - last <= 2.0 + DT + 1e-6, (dev, t, last)
    before = [x for x in trace if x[0] < last + 2.0 - 1e-6]
    assert all(a >= 99 and closed and fuel for _, a, closed, fuel in before), before[-3:]
    # Output off fast (100 A at chg_off_a_per_s: 0.2 s), fuel off at once.
    p = pl.p
    limit = last + 2.0 + DT + 100.0 / p["chg_off_a_per_s"] + DT
    after = [x for x in trace if x[0] >= limit]
    assert after and all(a == 0 and not fuel for _, a, _c, fuel in after), [x for x in trace if x[0] >= last + 2][:10]
    # The contactor opened on its own, but only once the current was down.
    assert not s["contactor"] and s["opened_under_load"] == 0 and s["last_open_a"] <= p["chg_open_a"], s
    for (_t0, a0, c0, _f0), (_t1, _a1, c1, _f1) in zip(trace, trace[1:]):
        if c0 and not c1:
            assert a0 <= p["chg_open_a"] + p["chg_off_a_per_s"] * DT, (a0, trace)
    # Stack disabled, reformer in cooldown with the pump off, connector released.
    assert pl.stack.enable == 0 and pl.stack.sp == 0
    assert pl.reformer.mode == R.REF_MODE_COOLDOWN and pl.reformer.pump_sp == 0
    assert pl.charger.lock_cmd == 0 and pl.charger.enable == 0 and pl.charger.limit == 0


def test_reads_alone_keep_it_fed():
    # Traffic of any kind feeds the watchdog: the master's polling is enough.
    pl = charging_plant(timeout_s=1.0)
    for _ in range(100):  # 5 s, the device hearing a read every 0.5 s
        pl.advance(pl.t + 0.5)
        for dev in R.COMM_TIMEOUT:
            pl.heard(dev)
    s = pl.summary()
    assert s["comm_lost"] == dict.fromkeys(R.COMM_TIMEOUT) and s["ev_a"] > 50 and s["contactor"], s


def test_one_silent_device_trips_alone():
    pl = charging_plant(timeout_s=1.0)
    for _ in range(40):
        pl.advance(pl.t + 0.1)
        pl.heard("charger")
        pl.heard("fuelcell")  # the reformer hears nothing
    s = pl.summary()
    assert s["comm_lost"]["reformer"] is not None and not s["fuel_on"]
    assert s["comm_lost"]["charger"] is None and s["comm_lost"]["fuelcell"] is None and s["contactor"]


def test_power_up_default_is_off():
    # Never written (0): a device without a master configuring it keeps
    # what it was told, as before (the firmware writes it at boot).
    pl = Plant(P.merged(WARM))
    pl.command("ref_mode_cmd", R.REF_MODE_RUN)
    pl.command("ref_pump_sp", 30.0)
    pl.advance(600.0)
    s = pl.summary()
    assert s["comm_lost"] == dict.fromkeys(R.COMM_TIMEOUT) and s["fuel_on"]


def test_after_a_trip_only_a_write_turns_the_output_back_on():
    pl = charging_plant(timeout_s=1.0)
    run_silent(pl, 2.0)
    assert pl.summary()["comm_lost"]["charger"] is not None
    for _ in range(20):  # the master is back, reading: still safe
        pl.advance(pl.t + 0.1)
        pl.heard("charger")
    s = pl.summary()
    assert s["comm_lost"]["charger"] is None and s["ev_a"] == 0 and not s["contactor"]
    pl.command("chg_lock", 1)
    pl.command("chg_contactor", 1)
    pl.command("chg_enable", 1)
    pl.command("chg_limit_a", 50.0)
    for _ in range(40):
        pl.advance(pl.t + 0.1)
        pl.heard("charger")
    assert pl.summary()["ev_a"] >= 49


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(cond, timeout_s, what):
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            pytest.fail("timed out waiting for " + what)
        await asyncio.sleep(0.01)


def test_server_requests_feed_it_and_a_silent_device_does_not():
    # Through the RTU line: the timeout is written with FC06, reads feed
    # the watchdog; a device cut off the line (silent) hears nothing.
    async def main():
        recs = []
        sim_ = PileSim(P.merged(WARM), speed=10.0, log=recs.append)
        port = free_port()
        await sim_.serve_tcp("127.0.0.1", port)
        phys = asyncio.create_task(sim_.physics_task(0.01))
        client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=0.5, retries=0)
        await client.connect()
        try:
            ch = R.DEVICES["charger"]
            addr = [c[1] for c in ch["commands"] if c[0] == "chg_comm_timeout"][0]
            rr = await client.write_register(addr, 10, device_id=ch["unit"])  # 1.0 s
            assert not rr.isError()
            assert sim_.plant.comm_timeout_s["charger"] == pytest.approx(1.0)
            cmd = {c[0]: c[1] for c in ch["commands"]}
            for name, raw in (("chg_enable", 1), ("chg_limit_a", 500)):
                assert not (await client.write_register(cmd[name], raw, device_id=ch["unit"])).isError()
            t0 = sim_.now()
            while sim_.now() - t0 < 3.0:  # reads every ~0.05 s sim for 3 s: fed
                rr = await client.read_input_registers(0, count=2, device_id=ch["unit"])
                assert not rr.isError()
                await asyncio.sleep(0.005)
            sim_.advance()
            assert sim_.plant.comm_lost["charger"] is None
            sim_.silent.add("charger")
            t_cut = sim_.now()
            try:
                await client.read_input_registers(0, count=2, device_id=ch["unit"])
            except Exception:  # noqa: BLE001 - a timeout: nobody answers
                pass

            def tripped():
                sim_.advance()
                return sim_.plant.comm_lost["charger"] is not None

            await until(tripped, 5.0, "the silent charger's watchdog")
            t_trip, heard = sim_.plant.comm_lost["charger"], sim_.plant.heard_t["charger"]
            # The read sent while silent was not heard: the last one before is.
            assert heard <= t_cut and 1.0 <= t_trip - heard <= 1.0 + 0.06, (heard, t_cut, t_trip)
            # The commands read back (FC03) the safe values it put there.
            sim_.silent.discard("charger")
            rr = await client.read_holding_registers(ch["commands"][0][1], count=len(ch["commands"]),
                                                     device_id=ch["unit"])
            assert not rr.isError()
            back = dict(zip((c[0] for c in ch["commands"]), rr.registers))
            assert back["chg_enable"] == 0 and back["chg_limit_a"] == 0 and back["chg_comm_timeout"] == 10, back
            return recs
        finally:
            client.close()
            phys.cancel()
            await sim_.stop()

    recs = asyncio.run(main())
    trips = [r for r in recs if r["kind"] == "comm_timeout"]
    assert [r["dev"] for r in trips] == ["charger"], trips
