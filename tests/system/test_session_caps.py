"""Sessions a sponsor can budget, on the whole pile: the firmware (MicroPython
unix port, its heap budget) with the simulator, its private mosquitto and `h2pile
ledger ingest`. A signed start with a small energy cap: the pile stops the
session at the cap on its billing meter, with reason energy_cap, and the
bill the ledger stores says so, its energy the simulator meter's advance and
at most one poll cycle's energy over the cap. A second start with a time cap
on the EV still plugged in: stopped by the clock with reason time_cap. Then
`h2pile ledger report --tariff` prices both for the sponsor."""

import asyncio
import json
import os
import sqlite3
import sys
import time

import pytest

from host_tools import ROOT, ledger
from host_tools.pilerun import HEAP, PileRun, min_data_age_ms
from tests.helpers.ledger_broker import Ingest
from tests.helpers.pilewait import until

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.system]

PILE = "cap-1"
SPEED = 20
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
CONFIG = {"pile_id": PILE, "auto_charge": False, "idle_shutdown_s": 0, "bus": {"data_age_ms": min_data_age_ms(SPEED)},
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}}
CAP_KWH = 0.5
CAP_MIN = 1
TARIFF = '[sponsor.acme]\ncurrency = "EUR"\nper_kwh = 0.40\nper_session = 1.00\nbudget = 2\nperiod = "day"\n'


async def _start(run, *opts):
    # As an operator starts it: `h2pile cmd` (which signs again when the pile answers "no memory").
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "host_tools.cli", "cmd", PILE, "start", "--auth", "sponsor:acme:T%d" % time.time_ns(),
        *opts, "--broker", "127.0.0.1:%d" % run.mqtt_port, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ, H2PILE_FLEET_SECRET=run.fleet_secret))
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode() + err.decode()


def _bills(db):
    con = sqlite3.connect(db, timeout=30)
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT payload FROM sessions ORDER BY id")]
    except sqlite3.OperationalError:
        return []  # the ingest has not made its tables yet
    finally:
        con.close()


def _closed(run, reason):
    return any(x.startswith("LOG session closed") and x.endswith(reason) for x in run.lines)


async def _scenario(tmp_path, fw_build):
    run = PileRun(speed=SPEED, heap=HEAP, mqtt=True, config=CONFIG, sim_args=WARM, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    db = str(tmp_path / "ledger.db")
    await run.start()
    ing = None
    out = {}
    try:
        ing = Ingest(run.mqtt_port, "sqlite:///" + db)
        assert await run.wait_state("ready", 90), run.lines[-20:]
        # A poll cycle, in simulated seconds, from two STATUS lines (the cap's bound).
        s0 = dict(run.status)
        assert await until(lambda: run.status.get("cycles", 0) > s0["cycles"] + 20, 30)
        out["cycle_s"] = (run.status["t"] - s0["t"]) / 1000 / (run.status["cycles"] - s0["cycles"])

        code, said = await _start(run, "--cap-kwh", str(CAP_KWH))
        assert code == 0, said
        m0 = (await run.plant())["meter_kwh"]
        await run.inject("ev_plug", soc=30, kwh=60, target=90)
        assert await until(lambda: _closed(run, "energy_cap"), 120), run.lines[-30:]
        out["meter_advance_wh"] = ((await run.plant())["meter_kwh"] - m0) * 1000

        # The EV still asks: a second start, with a time cap, charges it again.
        code, said = await _start(run, "--cap-min", str(CAP_MIN))
        assert code == 0, said
        assert await until(lambda: _closed(run, "time_cap"), 120), run.lines[-30:]
        assert await until(lambda: len(_bills(db)) == 2, 30), _bills(db)
        out["bills"] = _bills(db)
        out["stops"] = [e["b"] for e in run.events if e["kind"] == "session_stop"]
        # A command the pile had no RAM for is answered "no memory" (docs/mqtt.md: send it again;
        # h2pile cmd does): counted, not an error. Anything else out of memory is.
        out["no_memory"] = sum(1 for x in run.lines if x.startswith("LOG cmd not handled: MemoryError"))
        out["errors"] = [x for x in run.lines if ("MemoryError" in x or x.startswith("LOG uplink error"))
                         and not x.startswith("LOG cmd not handled: MemoryError")]
        return out
    finally:
        if ing:
            ing.kill()
        await run.stop()
        (tmp_path / "console.log").write_text("\n".join(run.lines) + "\n")


def test_a_capped_session_stops_at_its_cap_and_its_bill_says_so(tmp_path, fw_build, capsys):
    o = asyncio.run(_scenario(tmp_path, fw_build))
    e_cap, t_cap = o["bills"]
    cycle_wh = e_cap["peak_w"] * o["cycle_s"] / 3600  # one poll cycle at the session's peak power
    with capsys.disabled():
        print("\nenergy cap %.0f Wh: bill %.1f Wh (simulator meter %.1f Wh), one cycle %.2f s = %.1f Wh; "
              "time cap %d min: %d s; start commands signed again for 'no memory': %d"
              % (CAP_KWH * 1000, e_cap["energy_wh"], o["meter_advance_wh"], o["cycle_s"], cycle_wh, CAP_MIN,
                 t_cap["dur_s"], o["no_memory"]))
    assert not o["errors"], o["errors"]
    assert o["stops"] == ["energy_cap", "time_cap"]
    # The energy cap: measured on the billing meter, the bill within one poll cycle's energy over it.
    assert e_cap["reason"] == "energy_cap" and e_cap["cap_kwh"] == CAP_KWH and e_cap["cap_min"] is None
    assert e_cap["token"].startswith("sponsor:acme:")
    assert CAP_KWH * 1000 - 25 <= e_cap["energy_wh"] <= CAP_KWH * 1000 + cycle_wh, e_cap
    assert e_cap["energy_wh"] == pytest.approx(o["meter_advance_wh"], abs=1.0)
    # The time cap: on the pile's clock from the session's start (the ramp down after it is short).
    assert t_cap["reason"] == "time_cap" and t_cap["cap_min"] == CAP_MIN and t_cap["cap_kwh"] is None
    assert CAP_MIN * 60 <= t_cap["dur_s"] <= CAP_MIN * 60 + 10, t_cap
    assert t_cap["energy_wh"] > 100  # it charged until then

    # The sponsor's report prices both sessions and sets them against its budget.
    (tmp_path / "t.toml").write_text(TARIFF)
    day0, day1 = (time.strftime("%Y-%m-%d", time.gmtime(b["stop"])) for b in o["bills"])
    assert ledger.main(["ledger", "report", "--db", "sqlite:///" + str(tmp_path / "ledger.db"), "--from", day0,
                        "--to", day1, "--tariff", str(tmp_path / "t.toml")]) == 0
    report = capsys.readouterr().out
    price = sum(round(1.00 + 0.40 * b["energy_wh"] / 1000, 2) for b in o["bills"])
    spend = report.split("SPENT")[1]  # the budget table: a row per day (two if the sessions straddle midnight)
    acme = [ln.split() for ln in spend.splitlines() if ln.startswith("acme ")]
    assert sum(int(r[2]) for r in acme) == 2 and sum(float(r[4]) for r in acme) == pytest.approx(price), report
