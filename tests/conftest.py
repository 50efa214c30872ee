"""Tiers and shared fixtures. tests/README.md maps each module to its tests.

Markers (pyproject.toml) come from the directory a test lives in, plus what the
test needs: `micropython` (the unix port runs firmware code), `broker` (a real
mosquitto), `system` (the whole pile against the simulator), `board` (a board
or its double), `slow` (real time, tens of seconds).
"""

import os

import pytest

from tests.helpers.fwbuild import build_shared

_TIER = {"system": "system", "scenarios": "system", "board": "board"}


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for it in items:
        tier = os.path.relpath(str(it.fspath), here).split(os.sep)[0]
        if tier in _TIER:
            it.add_marker(getattr(pytest.mark, _TIER[tier]))


@pytest.fixture(scope="session")
def fw_build():
    """The firmware compiled for the unix board, once per run (shared by workers)."""
    return build_shared("unix_sim")


@pytest.fixture(scope="session")
def fw_lib(fw_build):
    return os.path.join(fw_build, "lib")
