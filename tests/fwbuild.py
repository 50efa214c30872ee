"""Build the firmware once per test session (shared by the tests that run it)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def build_unix(out_root):
    sys.path.insert(0, ROOT)
    from host_tools.build import build

    return build("unix_sim", out_root)
