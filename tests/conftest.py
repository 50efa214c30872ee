"""Tiers and shared fixtures. tests/README.md maps each module to its tests.

Markers (pyproject.toml) come from the directory a test lives in, plus what the
test needs: `micropython` (the unix port runs firmware code), `broker` (a real
mosquitto), `system` (the whole pile against the simulator), `board` (a board
or its double), `slow` (real time, tens of seconds), `fuzz` (tests/fuzz:
generated input for a fixed budget).
"""

import os

import pytest

from tests.helpers.fwbuild import build_shared

_HERE = os.path.dirname(os.path.abspath(__file__))
_TIER = {"system": "system", "scenarios": "system", "board": "board", "fuzz": "fuzz"}


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

