# The one place where MicroPython and CPython differ. Every other firmware
# module imports these names from here instead of guessing the platform.
import sys

MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # pragma: no cover - very old MicroPython
    import uasyncio as asyncio  # type: ignore

try:
    from time import ticks_ms, ticks_diff, ticks_add
except ImportError:  # CPython: same semantics without wrap-around
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


try:
    from hashlib import sha256
except ImportError:  # pragma: no cover
    from uhashlib import sha256  # type: ignore  # noqa: F401 - re-exported


if MICROPYTHON:
    # The native one: a wrapper coroutine would stay alive in every task
    # for as long as it sleeps.
    sleep_ms = asyncio.sleep_ms
else:

    async def sleep_ms(ms):  # asyncio.sleep_ms exists on MicroPython only
        await asyncio.sleep(ms / 1000)


def forget(*names):
    # Drop boot-only modules (config schema, register maps) once used: on a
    # board with a small heap their tables are worth the re-import cost.
    # The package keeps a reference too.
    import gc
    import h2p

    for n in names:
        sys.modules.pop(n, None)
        short = n.split(".")[-1]
        if short in h2p.__dict__:
            delattr(h2p, short)
    gc.collect()
