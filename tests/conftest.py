"""Tiers and shared fixtures. tests/README.md maps each module to its tests.

Markers (pyproject.toml) come from the directory a test lives in, plus what the
test needs: `micropython` (the unix port runs firmware code), `broker` (a real
mosquitto), `system` (the whole pile against the simulator), `board` (a board
or its double), `slow` (real time, tens of seconds), `fuzz` (tests/fuzz:
generated input for a fixed budget).
"""

import os

import pytest

from tests.helpers import postgres, schedule
from tests.helpers.fwbuild import build_shared

_HERE = os.path.dirname(os.path.abspath(__file__))
_TIER = {"system": "system", "scenarios": "system", "board": "board", "fuzz": "fuzz"}


def pytest_collection_modifyitems(items):
    # Longest units first (tests/helpers/schedule.py); stable: a file's tests
    # keep their order, and units of equal cost theirs.
    items.sort(key=lambda it: -schedule.cost(it.nodeid))


def pytest_xdist_make_scheduler(config, log):
    # `make test`'s --dist loadfile, with the board tier as one unit.
    return schedule.make_scheduler(config, log)


def pytest_itemcollected(item):
    # The tier from the directory.
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
