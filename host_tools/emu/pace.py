"""The emulated board's clock never runs ahead of the wall.

rp2040py jumps a sleeping core's clock to its next alarm. With the console
no longer storming the CPU (usb_fix), a board waiting on its host would
live seconds of board time in milliseconds of wall time, and time out on
the broker, the simulator or the flash tool before they could answer: real
peers run on the wall. So every 10 ms of board time this checks the two
clocks and, when the board is ahead, makes the emulator wait (the engine
thread sleeps). When the board is behind (it was busy: emulation is slower
than the chip), it is not hurried to catch up; the reference moves instead.
The board thus runs at most at real time, as the real one does.
"""

from __future__ import annotations

import time
from typing import Any

_TICK_NANOS = 10_000_000  # board time between checks


def apply(mcu: Any) -> None:
    """Pace `mcu`'s clock to at most real time (idempotent)."""
    if getattr(mcu, "_h2p_paced", False):
        return
    clock = mcu.clock
    ref = [time.monotonic(), clock.nanos / 1e9]  # wall s, board s

    def tick() -> None:
        wall, board = time.monotonic(), clock.nanos / 1e9
        ahead = (board - ref[1]) - (wall - ref[0])
        if ahead > 0:
            time.sleep(ahead)
        else:
            ref[0], ref[1] = wall, board
        alarm.schedule(_TICK_NANOS)

    alarm = clock.create_alarm(tick)
    alarm.schedule(_TICK_NANOS)
    mcu._h2p_paced = True
