import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_configure(config):
    # Registered here, not in pyproject (shared file): `pytest -m board`
    # runs the tests that boot the firmware on a board or a board double.
    config.addinivalue_line("markers", "board: boots the firmware on a (double of a) board")


@pytest.fixture(scope="session")
def esp32_build(tmp_path_factory):
    """build/esp32_generic + the ESP32 double as one ROM image, once per session."""
    from esp32_run import build_esp32

    return build_esp32(str(tmp_path_factory.mktemp("fw-esp32")))
