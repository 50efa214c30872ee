"""Tiers and shared fixtures. tests/README.md maps each module to its tests.

Markers (pyproject.toml) come from the directory a test lives in, plus what the
test needs: `micropython` (the unix port runs firmware code), `broker` (a real
mosquitto), `system` (the whole pile against the simulator), `board` (a board
or its double), `slow` (real time, tens of seconds), `fuzz` (tests/fuzz:
generated input for a fixed budget).
"""

import os

import pytest

from tests.helpers import postgres
from tests.helpers.fwbuild import build_shared

_HERE = os.path.dirname(os.path.abspath(__file__))
_TIER = {"system": "system", "scenarios": "system", "board": "board", "fuzz": "fuzz"}


# The files that take longest, longest first (wall seconds of one file on a
# worker of `make test`, 2026-12-07, 2 cores with other work on them; see
# tests/README.md, "Wall time"). `make test` hands files to its workers in
# collection order (--dist loadfile --no-loadscope-reorder): started first,
# the long ones run beside each other while the short ones fill the gaps,
# instead of one long file starting last and running alone at the end.
# A file missing here runs after these, in the usual order; the figures need
# only be right in their order of magnitude.
LONG_FILES = {
    "board/test_pile.py": 385,
    "scenarios/test_scenarios.py": 170,
    "system/test_sessions_e2e.py": 145,
    "board/test_crash.py": 105,
    "board/test_net.py": 100,
    "system/test_session_integration.py": 80,
    "tools/test_flash_romfs.py": 55,
    "system/test_rates_realtime.py": 35,
    "tools/test_flash.py": 30,
    "system/test_watchdog.py": 30,
    "system/test_gateway_ocpp.py": 30,
    "system/test_cmd_replay.py": 25,
    "firmware/test_journal.py": 25,
    "firmware/test_mqtt.py": 25,
}


def _cost(item):
    rel = os.path.relpath(str(item.fspath), _HERE).replace(os.sep, "/")
    return LONG_FILES.get(rel, 0)


def pytest_collection_modifyitems(items):
    # Stable: a file's tests keep their order, and files of equal cost theirs.
    items.sort(key=lambda it: -_cost(it))


def pytest_itemcollected(item):
    # The tier from the directory. (`make test` spreads files over two xdist
    # workers with --dist loadfile: a file's tests share its fixtures, a
    # booted board or a running pile, and run in file order.)
    rel = os.path.relpath(str(item.fspath), _HERE)
    tier = rel.split(os.sep)[0]
    if tier in _TIER:
        item.add_marker(getattr(pytest.mark, _TIER[tier]))


@pytest.fixture(scope="session")
def fw_build():
    """The firmware compiled for the unix board, once per run (shared by workers)."""
    return build_shared("unix_sim")


@pytest.fixture(scope="session")
def fw_lib(fw_build):
    return os.path.join(fw_build, "lib")



@pytest.fixture(scope="session")
def pg_cluster():
    """This worker's private PostgreSQL (tests/helpers/postgres.py), started
    by the first test that needs it; skipped where PostgreSQL is not
    installed, a failure instead with H2PILE_REQUIRE_PG=1 (CI)."""
    try:
        cluster = postgres.Cluster()
    except postgres.Unavailable as e:
        if postgres.required():
            pytest.fail("%s, and %s=1 requires it" % (e, postgres.REQUIRE_ENV), pytrace=False)
        pytest.skip(str(e))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh database in the worker's cluster, dropped after the test."""
    url = pg_cluster.create_db()
    yield url
    pg_cluster.drop_db(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """The ledger's --db, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "ledger.db")
    return request.getfixturevalue("pg_url")
