# `time` as on an ESP32: the wall clock is the chip's RTC, which reads
# 2000-01-01 00:00:00 after power-on until something sets it
# (machine.RTC().datetime(...), as SNTP code does). time() is whole seconds
# since 1970 (the esp32 port's epoch since MicroPython 1.22). Everything else
# (ticks_ms, sleep_ms, gmtime of a given time, ...) is the unix port's own.
# The RTC's offset from the host clock lives here, set by machine.RTC.
# Inside a time.py, `time` is this module: the built-in is `utime`.
import utime as _t
from utime import *  # noqa: F401,F403

_POWER_ON = 946684800  # 2000-01-01 in seconds since 1970
_offset = _POWER_ON - _t.time()  # the RTC "power-on" moment is the import


def _now():
    return _t.time() + _offset


def set_rtc(unix_s):
    # For machine.RTC only (the name is not on any port's time module, but
    # the firmware never sees it: it uses machine.RTC).
    global _offset
    _offset = unix_s - _t.time()


def time():
    return int(_now())


def time_ns():
    return int(_now() * 1000000000)


def gmtime(secs=None):
    return _t.gmtime(int(_now()) if secs is None else secs)


def localtime(secs=None):
    return _t.gmtime(int(_now()) if secs is None else secs)  # the ESP32 has no time zone
