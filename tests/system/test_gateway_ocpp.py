"""The OCPP gateway against real peers: a CSMS built on the `ocpp` package's
central-system side (tests/helpers/csms.py, in this process) on a real
websocket to `h2pile gateway` (a subprocess), which talks over a real
mosquitto to the real firmware (MicroPython unix port) against the
simulator; the ledger (`h2pile ledger ingest`, SQLite) takes the bills.

2.0.1: boot -> Available; RequestStartTransaction with an idToken ->
Charging, TransactionEvent Started/Updated; SetChargingProfile -> the
pile's limit follows, a profile it refuses comes back Rejected with its
reason; the CSMS down for 30 s of pile time mid-transaction (and at least
3 s of wall time, so the gateway's back-off runs), then back; the gateway
SIGKILLed mid-transaction and started again; RequestStopTransaction ->
Ended: every event delivered, in order, none twice (seqNo 0..n), the
energy the CSMS sees equals the ledger's bill, the idToken is the bill's
token (its sponsor in the ledger); the pile killed: Unavailable within its
keepalive; the pile back: Available.

1.6J: RemoteStartTransaction -> StartTransaction, MeterValues,
RemoteStopTransaction -> StopTransaction: meterStop - meterStart is the bill.

The outage is counted in pile time: what a 30 s outage means to the queue
is what the pile produces meanwhile (at speed 10, 3 s of wall time).
"""

import asyncio
import re
import sqlite3
import time

import pytest
from ocpp.v16 import call as c16
from ocpp.v201 import call as c201

from bench.gateway import GatewayProc, write_config
from host_tools.pilerun import HEAP, PileRun
from tests.helpers.csms import Csms
from tests.helpers.ledger_broker import Ingest
from tests.helpers.pilewait import until

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.system]

PILE = "gw-1"
SPEED = 10  # 20 and up: a loaded 2-core machine starves the bus into comm faults
KEEPALIVE_S = 5
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {"pile_id": PILE, "auto_charge": False, "idle_shutdown_s": 0, "mqtt": {"keepalive_s": KEEPALIVE_S},
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}, "bus": {"data_age_ms": 3000}}
PASSWORD = "gateway-test-password-1"
TOKEN = "sponsor:acme:42"


def profile(amps, nested=True):
    sched = {"id": 1, "charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": amps}]}
    if nested:  # 2.0.1: a list of schedules
        return {"id": 1, "stack_level": 0, "charging_profile_purpose": "TxDefaultProfile",
                "charging_profile_kind": "Absolute", "charging_schedule": [sched]}
    del sched["id"]
    return {"charging_profile_id": 1, "stack_level": 0, "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute", "charging_schedule": sched}


class Rig:
    """The pile (+ broker), the ledger, the CSMS and the gateway."""

    async def start(self, tmp_path, fw_build, version):
        self.tmp = tmp_path
        self.run = PileRun(speed=SPEED, heap=HEAP, mqtt=True, config=CONFIG, sim_args=WARM,
                           firmware_build=fw_build, board_dir=str(tmp_path / "board"))
        await self.run.start()
        self.csms = Csms(version, {PILE: PASSWORD})
        await self.csms.start()
        self.db = tmp_path / "ledger.db"
        self.ingest = Ingest(self.run.mqtt_port, "sqlite:///" + str(self.db))
        self.config = write_config(str(tmp_path), self.run.mqtt_port, self.csms.url, [PILE], version=version,
                                   meter_interval_s=0.5, password=PASSWORD, secret=self.run.fleet_secret)
        self.gws = [GatewayProc(self.config)]
        return self

    @property
    def gw(self):
        return self.gws[-1]

    def restart_gateway(self):
        self.gws.append(GatewayProc(self.config))

    def bills(self):
        if not self.db.exists():
            return []
        con = sqlite3.connect(str(self.db))
        try:
            return con.execute("SELECT id, energy_wh, token, sponsor FROM sessions").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    async def stop(self):
        for g in self.gws:
            g.kill(15)
        self.ingest.kill()
        await self.csms.stop()
        await self.run.stop()
        lines = []
        for i, g in enumerate(self.gws):
            lines += ["--- gateway run %d" % (i + 1)] + g.lines
        (self.tmp / "gateway.log").write_text("\n".join(lines) + "\n")
        (self.tmp / "console.log").write_text("\n".join(self.run.lines) + "\n")


async def _start_charging(r, start_call):
    """Boot, ready, EV plugged (auto_charge off: it waits), remote start."""
    assert await r.csms.wait("BootNotification", timeout=60), r.gw.lines[-10:]
    assert await r.run.wait_state("ready", 90), r.run.lines[-10:]
    await r.run.inject("ev_plug", soc=30, kwh=60, target=90)
    res = await r.csms.call(PILE, start_call)
    assert await r.run.wait_state("charging", 30), (res, r.gw.lines[-10:])
    return res


def _events(csms):
    return [m.payload for m in csms.find("TransactionEvent")]


def _once(msgs):
    """The transaction's events, each once, in order of first arrival; checks
    that a repeat only follows a copy whose answer was not sent, and equals it."""
    first = {}
    for m in msgs:
        k = m.payload["seq_no"]
        if k in first:
            assert not first[k].answered, ("sent again after its answer", m.payload)
            assert m.payload == first[k].payload, ("a repeat differs", first[k].payload, m.payload)
            first[k] = m
        else:
            first[k] = m
    seqs = [m.payload["seq_no"] for m in msgs]
    uniq = list(dict.fromkeys(seqs))
    assert uniq == list(range(len(uniq))), seqs
    return [first[k].payload for k in uniq]


def _queued_in(events_at, outage):
    """Events stamped while the CSMS was down (epoch e_down..e_back), all
    received after it came back (monotonic t_back): how many."""
    import datetime

    e_down, e_back, t_back = outage
    n = 0
    for t, ev in events_at:
        e = datetime.datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
        if e_down < e < e_back:
            assert t >= t_back, ("an event of the outage arrived during it", ev)
            n += 1
    return n


def _register(ev):
    for sv in ev["meter_value"][0]["sampled_value"]:
        if sv["measurand"] == "Energy.Active.Import.Register":
            return float(sv["value"])
    raise AssertionError("no register in %r" % ev)


async def _limit_above(run, amps, timeout_s=20.0):
    """The charger's limit once the session's current is above amps (the
    contactor closes and the limit ramps up after the start)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        lim = (await run.plant())["chg_limit_a"]
        if lim > amps:
            return lim
        await asyncio.sleep(0.05)
    return lim


async def _limit_follows(run, amps, timeout_s=10.0):
    """Simulated ms from now (the pile has acked the command) until the limit
    the firmware writes to the charger is down to amps; None if it is not."""
    t0 = (await run.plant())["t"]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        p = await run.plant()
        if p["chg_limit_a"] <= amps + 0.05:
            return round((p["t"] - t0) * 1000)
        await asyncio.sleep(0.002)
    return None


async def _kill_gateway_when_quiet(r, csms):
    """SIGKILL the gateway just after the CSMS answered a meter value (so
    none is half delivered: a gateway killed between the CSMS's answer and
    its commit sends that event again, with the same seqNo)."""
    answered = asyncio.Event()
    csms.on_answered = lambda pile, action, p: answered.set() if p.get("event_type") == "Updated" else None
    await asyncio.wait_for(answered.wait(), 20)
    csms.on_answered = None
    await asyncio.sleep(0.05)
    r.gw.kill(9)


async def _scenario_201(tmp_path, fw_build):
    r = await Rig().start(tmp_path, fw_build, "2.0.1")
    csms, run = r.csms, r.run
    o = {}
    try:
        o["start"] = await _start_charging(r, c201.RequestStartTransaction(
            id_token={"id_token": TOKEN, "type": "Central"}, remote_start_id=7))
        o["first_status"] = (await csms.wait("StatusNotification", timeout=5)).payload["connector_status"]
        o["occupied"] = await csms.wait("StatusNotification", lambda p: p["connector_status"] == "Occupied", 10)
        o["started"] = (await csms.wait("TransactionEvent", lambda p: p["event_type"] == "Started", 10)).payload

        # SetChargingProfile: the limit follows; one the pile refuses is Rejected with its reason.
        o["limit_before"] = await _limit_above(run, 40.0)
        o["profile_40"] = await csms.call(PILE, c201.SetChargingProfile(evse_id=1, charging_profile=profile(40)))
        o["limit_follow_ms"] = await _limit_follows(run, 40.0)
        assert await until(lambda: run.status.get("ev_limit_a") == 40.0, 10), run.status
        o["profile_600"] = await csms.call(PILE, c201.SetChargingProfile(evse_id=1, charging_profile=profile(600)))
        o["limit_after_600"] = run.status.get("ev_limit_a")

        # The CSMS down for 30 s of pile time (at least 3 s of wall time) mid-transaction.
        assert await until(lambda: len(csms.find("TransactionEvent")) >= 3, 20)
        await csms.stop()
        t_down, p_down, e_down = time.monotonic(), run.status["t"], time.time()
        await until(lambda: run.status["t"] - p_down >= 30_000 and time.monotonic() - t_down >= 3, 30)
        o["outage_pile_s"] = (run.status["t"] - p_down) / 1000
        t_back, e_back = time.monotonic(), time.time()
        await csms.start()
        assert await csms.wait("BootNotification", since=t_back, timeout=20), r.gw.lines[-10:]
        assert await until(lambda: len(csms.find("TransactionEvent", since=t_back)) >= 3, 20)
        o["outage_1"] = (e_down, e_back, t_back)

        # The CSMS down again, and the gateway SIGKILLed while events wait in
        # its queue; started again before the CSMS is back.
        await csms.stop()
        t_down, p_down, e_down = time.monotonic(), run.status["t"], time.time()
        await until(lambda: run.status["t"] - p_down >= 30_000, 30)  # meter values queue meanwhile
        r.gw.kill(9)
        r.restart_gateway()
        up = await r.gw.wait_line("up:", 20)
        o["waiting_at_restart"] = int(re.search(r"\((\d+) event", up).group(1)) if up else None
        assert await r.gw.wait_line("unreachable", 20), r.gw.lines  # it tried the CSMS, still down
        t_back, e_back = time.monotonic(), time.time()
        await csms.start()
        assert await csms.wait("BootNotification", since=t_back, timeout=20), r.gw.lines[-10:]
        assert await until(lambda: len(csms.find("TransactionEvent", since=t_back)) >= 3, 20)
        o["outage_2"] = (e_down, e_back, t_back)

        # The gateway killed mid-transaction while connected, and started again.
        await _kill_gateway_when_quiet(r, csms)
        t_restart = time.monotonic()
        r.restart_gateway()
        assert await csms.wait("BootNotification", since=t_restart, timeout=20), r.gw.lines[-10:]
        assert await until(lambda: len(csms.find("TransactionEvent", since=t_restart)) >= 2, 20)

        # Remote stop: Ended, with the bill's energy.
        tx_id = o["started"]["transaction_info"]["transaction_id"]
        o["stop"] = await csms.call(PILE, c201.RequestStopTransaction(transaction_id=tx_id))
        assert await csms.wait("TransactionEvent", lambda p: p["event_type"] == "Ended", 60), r.gw.lines[-10:]
        assert await until(lambda: r.bills(), 20), r.ingest.lines[-5:]
        o["bills"] = r.bills()
        o["events"] = _events(csms)
        o["tx_msgs"] = csms.find("TransactionEvent")
        o["events_at"] = [(m.t, m.payload) for m in csms.find("TransactionEvent")]

        # The pile killed: Unavailable within its keepalive; back: Available.
        t_kill = time.monotonic()
        await run.kill_firmware()
        m = await csms.wait("StatusNotification", lambda p: p["connector_status"] == "Unavailable",
                            KEEPALIVE_S * 1.5 + 5, since=t_kill)
        o["unavailable_s"] = None if m is None else m.t - t_kill
        t_up = time.monotonic()
        await run.start_firmware()
        m = await csms.wait("StatusNotification", lambda p: p["connector_status"] == "Available", 30, since=t_up)
        o["available_s"] = None if m is None else m.t - t_up
        o["gateway_errors"] = [ln for g in r.gws for ln in g.lines if "Traceback" in ln or "ERROR" in ln]
        return o
    finally:
        await r.stop()


def test_ocpp201_session_outages_and_status(tmp_path, fw_build):
    o = asyncio.run(_scenario_201(tmp_path, fw_build))
    ev = o["events"]
    resent = len(o["tx_msgs"]) - len(_once(o["tx_msgs"]))
    queued = [_queued_in(o["events_at"], o[k]) for k in ("outage_1", "outage_2")]
    print("\n2.0.1: %d transaction events; limit followed in %d ms of pile time; outage %.0f s of pile time: "
          "%d meter values queued, then delivered; gateway killed in an outage with %s event(s) waiting, %d "
          "delivered after; %d sent again (unanswered when a connection closed); pile killed -> Unavailable in "
          "%.1f s, back -> Available in %.1f s"
          % (len(ev), o["limit_follow_ms"], o["outage_pile_s"], queued[0], o["waiting_at_restart"], queued[1],
             resent, o["unavailable_s"], o["available_s"]))
    assert o["start"].status == "Accepted"
    assert o["first_status"] == "Available"
    assert o["occupied"] is not None
    st = o["started"]
    assert st["transaction_info"]["remote_start_id"] == 7 and st["id_token"]["id_token"] == TOKEN
    # SetChargingProfile
    assert o["profile_40"].status == "Accepted"
    assert o["limit_before"] > 40
    # a few control cycles: a poll cycle is ~120 ms of pile time at 115200 Bd (docs/timing.md)
    assert o["limit_follow_ms"] is not None and o["limit_follow_ms"] <= 1000, o["limit_follow_ms"]
    assert o["profile_600"].status == "Rejected"
    assert o["profile_600"].status_info["reason_code"] == "bad args", o["profile_600"]
    assert "amps" in o["profile_600"].status_info.get("additional_info", "")
    assert o["limit_after_600"] == 40.0
    # Every event, in order, none twice, across the outages and the restarts.
    # An event whose answer never reached the gateway (the connection closed
    # in between) is sent again, the same (seqNo, time, values): that is
    # the one repeat allowed, and a CSMS sees it by its seqNo.
    assert o["stop"].status == "Accepted"
    ev = _once(o["tx_msgs"])
    assert [e["event_type"] for e in ev] == ["Started"] + ["Updated"] * (len(ev) - 2) + ["Ended"]
    assert {e["transaction_info"]["transaction_id"] for e in ev} == {st["transaction_info"]["transaction_id"]}
    assert [e["timestamp"] for e in ev] == sorted(e["timestamp"] for e in ev)
    # Events made while the CSMS was down reached it after it came back:
    # in the first outage, and in the second across the gateway's SIGKILL.
    assert o["outage_pile_s"] >= 30 and queued[0] >= 1, queued
    assert o["waiting_at_restart"] and o["waiting_at_restart"] >= 1 and queued[1] >= 1
    # The energy the CSMS sees is the ledger's bill; the idToken is its token.
    (bill_id, energy_wh, token, sponsor), = o["bills"]
    seen = _register(ev[-1]) - _register(ev[0])
    assert abs(seen - energy_wh) <= 1.0, (seen, energy_wh)
    assert energy_wh > 100
    assert token == TOKEN and sponsor == "acme"
    assert ev[-1]["transaction_info"]["stopped_reason"] == "Remote"
    # The pile's status.
    assert o["unavailable_s"] is not None and o["unavailable_s"] <= KEEPALIVE_S * 1.5 + 2
    assert o["available_s"] is not None
    assert not o["gateway_errors"], o["gateway_errors"]


async def _scenario_16(tmp_path, fw_build):
    r = await Rig().start(tmp_path, fw_build, "1.6")
    csms = r.csms
    o = {}
    try:
        o["start"] = await _start_charging(r, c16.RemoteStartTransaction(id_tag=TOKEN, connector_id=1))
        o["started"] = (await csms.wait("StartTransaction", timeout=10)).payload
        assert await until(lambda: len(csms.find("MeterValues")) >= 2, 20)
        o["profile_40"] = await csms.call(PILE, c16.SetChargingProfile(connector_id=1,
                                                                      cs_charging_profiles=profile(40, False)))
        o["charging"] = await csms.wait("StatusNotification", lambda p: p["status"] == "Charging", 5)
        tid = csms.find("StartTransaction")[0]
        o["stop"] = await csms.call(PILE, c16.RemoteStopTransaction(transaction_id=1001))
        o["stopped"] = await csms.wait("StopTransaction", timeout=60)
        assert await until(lambda: r.bills(), 20), r.ingest.lines[-5:]
        o["bills"] = r.bills()
        o["meter_values"] = [m.payload for m in csms.find("MeterValues")]
        o["tid"] = tid
        return o
    finally:
        await r.stop()


def test_ocpp16_remote_start_meter_values_stop(tmp_path, fw_build):
    o = asyncio.run(_scenario_16(tmp_path, fw_build))
    assert o["start"].status == "Accepted" and o["profile_40"].status == "Accepted"
    assert o["started"]["id_tag"] == TOKEN and o["charging"] is not None
    assert o["stop"].status == "Accepted" and o["stopped"] is not None
    stop = o["stopped"].payload
    assert stop["transaction_id"] == 1001 and stop["reason"] == "Remote" and stop["id_tag"] == TOKEN
    assert all(m["transaction_id"] == 1001 for m in o["meter_values"])
    (bill_id, energy_wh, token, sponsor), = o["bills"]
    assert abs(stop["meter_stop"] - o["started"]["meter_start"] - energy_wh) <= 1.0, (stop, energy_wh)
    assert token == TOKEN and sponsor == "acme"
    print("\n1.6: meterStop - meterStart = %d Wh, bill %.1f Wh, %d MeterValues"
          % (stop["meter_stop"] - o["started"]["meter_start"], energy_wh, len(o["meter_values"])))
