"""How `make test` spreads the suite over its xdist workers (tests/conftest.py
wires it in; the figures are in tests/README.md, "Wall time").

Units: a file is one unit (its tests share a booted board or a running pile,
and run in order), and the whole board tier is one unit: an emulated Pico W
keeps a core busy (~20 CPU seconds per board second with WiFi up), and two at
once left the whole-pile tests that run at 20-80x no core when they needed
one: their readings went stale (a 250 ms stall is 20 s simulated at 80x).

Order: units start in collection order, longest first, so the board tier
runs on one worker from the start, the other long files beside it, and the
short ones fill the gaps. (xdist's own order, most tests first, started the
one-test files of minutes last, to run alone at the end.)
"""

from __future__ import annotations

BOARD = "tests/board"

# Wall seconds of a unit on a worker (2026-12-08, the idle 2-core machine,
# the whole suite): only their order matters. A file not listed runs after
# these, in the usual order.
LONG = {
    BOARD: 520,  # test_pile 346, test_crash 142, test_net 20, the rest ~15
    "tests/scenarios/test_scenarios.py": 170,
    "tests/system/test_sessions_e2e.py": 145,
    "tests/system/test_session_integration.py": 80,
    "tests/tools/test_flash_romfs.py": 55,
    "tests/system/test_rates_realtime.py": 35,
    "tests/tools/test_flash.py": 30,
    "tests/system/test_watchdog.py": 30,
    "tests/system/test_gateway_ocpp.py": 30,
    "tests/system/test_cmd_replay.py": 25,
    "tests/firmware/test_journal.py": 25,
    "tests/firmware/test_mqtt.py": 25,
}


def unit(nodeid: str) -> str:
    """The unit a test belongs to: its file, or the board tier."""
    path = nodeid.split("::", 1)[0]
    return BOARD if path.startswith(BOARD + "/") else path


def cost(nodeid: str) -> int:
    return LONG.get(unit(nodeid), 0)


def make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """--dist loadfile with the board tier as one unit; None for the other modes."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class TierScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return TierScheduling(config, log)
