"""Issue 15: no false stops. 50 charging sessions of the real firmware (unix
port, its heap budget) against the simulator at speed 20 while a CPU burner keeps one
core busy (bench/stops.py; `python -m bench.stops` runs it by hand). None may
be ended while the EV still asks: a meter that misses polls, a contactor
aux reading that is late or stale, a cell read before the stack started.
About 4 minutes of wall time on 2 cores. Sessions: H2P_STOPS_SESSIONS.

It runs only when asked (H2P_STOPS=1, or `make bench-stops` for the bench
script): its burner would take a core from every other test of `make test`.
"""

import asyncio
import json
import os

import pytest

from bench.stops import StopsCampaign

pytestmark = [pytest.mark.micropython, pytest.mark.slow]

SESSIONS = int(os.environ.get("H2P_STOPS_SESSIONS", "50"))


@pytest.mark.skipif(not os.environ.get("H2P_STOPS"), reason="the false-stops campaign (~4 min, burns a core): H2P_STOPS=1")
def test_no_session_stopped_while_the_ev_asked_with_one_core_busy():
    s = asyncio.run(StopsCampaign(SESSIONS, speed=20.0, burn=True).run())
    print("\nstops campaign: " + json.dumps({k: v for k, v in s.items() if k != "problems"}, default=str))
    for r in s["problems"]:
        print("PROBLEM:", json.dumps(r, default=str))
    assert s["sessions"] == SESSIONS, s
    assert s["stopped_while_ev_asked"] == 0, s["problems"]
    assert not s["reboots"], s["reboots"]  # no latched fault took the pile out of service
    assert set(s["reasons"]) == {"ev_stopped"}, s["reasons"]
    # Every session its own record, with the energy it took (the next EV
    # plugs in before the pile has closed the last one).
    assert s["records"] == s["distinct_records"] == SESSIONS and not s["zero_energy_records"], s
