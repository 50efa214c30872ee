# `sys` as the firmware sees it on an ESP32: the unix port's sys with
# platform "esp32" (main.py picks board_esp32 by sys.platform). Installed in
# sys.modules by esp32_boot.py before main.py runs; everything else is the
# real sys (same path list, stdout, modules).
import sys as _real
from sys import *  # noqa: F401,F403

platform = "esp32"


def __getattr__(name):
    return getattr(_real, name)
