import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "firmware"), os.path.join(ROOT, "tests", "core")):
    if p not in sys.path:
        sys.path.insert(0, p)

import pytest


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory):
    """The firmware compiled for the unix board, once per test session."""
    from fwbuild import build_unix

    return build_unix(str(tmp_path_factory.mktemp("fw")))


@pytest.fixture(scope="session")
def fw_lib(fw_build):
    return os.path.join(fw_build, "lib")
