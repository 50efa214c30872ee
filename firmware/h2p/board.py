# The board interface: everything the firmware (app, link, clock sync,
# crash handling) may ask of a board. The unix board (board_unix), the
# ESP32 and RP2040 boards (board_mcu + board_esp32 / board_rp2) and every
# test double implement all of it; tests/firmware/test_board_interface.py
# checks that each does, and mypy checks app.py against this class with the
# ports' stubs (tests/test_typecheck.py). Only board modules import
# machine or network: this one imports neither.
#
# Parts, each a small object the board builds:
#   clock  ms() ticks in ms (the control loop's time), wall_ms(), to_wall(ms),
#          async sleep_ms(ms), floor (shortest wall timeout worth waiting)
#   line   the RS-485 line: async open(), discard(), async settle(),
#          async send(buf, n), async recv_into(mv, timeout_ms) -> n
#   wdt    the hardware watchdog: feed(), timeout (ms)

# Link states wifi_status() reports, as plain strings (also what `meta`,
# STATUS and the LED show; h2p.link acts on them): "none" (the board has no
# WiFi), "down", "connecting", "up", "wifi auth" (wrong password: retried,
# but a technician must look), "no ap" (network not found), "fail".
#
# RAM: nothing here stays loaded after boot (main.py forgets the module);
# the boards import the two reset-cause functions when they need them.

from h2p.compat import const

_CAUSE_FILE = "data/reset_cause"


def note_reset_cause(cause):
    # Written just before a deliberate reset (or by a watchdog that is
    # about to end the process): the next boot reports it.
    import os

    try:
        os.mkdir("data")
    except OSError:
        pass  # exists
    try:
        with open(_CAUSE_FILE, "w") as f:
            f.write(cause)
    except OSError:
        pass  # a full or broken filesystem must not stop the reset


def take_reset_cause():
    # The cause noted before the last reset, once; "" if none was.
    import os

    try:
        with open(_CAUSE_FILE) as f:
            c = f.read().strip()
        os.remove(_CAUSE_FILE)
        return c
    except OSError:
        return ""


# The interface itself, for mypy only (a Protocol each board class is
# checked against, in board_*.py): at run time it would be classes in the
# heap that nothing uses. A const: MicroPython's compiler drops the block,
# so importing this module for the reset cause (a board's reset, after a
# crash, in a full heap) does not load the interface's code (~1.6 KB).
TYPE_CHECKING = const(0)  # mypy reads it as true: the block under it is for mypy only

if TYPE_CHECKING:
    from typing import Protocol

    class Clock(Protocol):
        floor: int

        def ms(self):
            # type: () -> int
            ...

        def wall_ms(self):
            # type: () -> int
            ...

        def to_wall(self, ms):
            # type: (int) -> int
            ...

        async def sleep_ms(self, ms):
            ...

    class Line(Protocol):
        async def open(self):
            ...

        def discard(self):
            ...

        async def settle(self):
            ...

        async def send(self, buf, n):
            ...

        async def recv_into(self, mv, timeout_ms):
            ...

    class Watchdog(Protocol):
        timeout: int

        def feed(self):
            ...

    class Board(Protocol):
        PLATFORM: str
        name: str
        reset_cause: str  # power_on, watchdog, soft, hard, crash, ...
        console: bool  # STATUS lines go to the console (USB REPL / stdout)
        has_wifi: bool
        has_led: bool  # a status LED (h2p.led drives it through led())
        fs_sync: bool  # journal writes synced to storage before they count (h2p.journal)

        # Read-only to the firmware (a property: each board has its own
        # Clock, Line and Watchdog classes that only need to fit these).
        @property
        def clock(self) -> Clock:
            ...

        @property
        def line(self) -> Line:
            ...

        @property
        def wdt(self) -> Watchdog:
            ...

        async def open(self):
            # Bring up the RS-485 line.
            ...

        def estop_pressed(self):
            # type: () -> bool
            ...

        def led(self, on):
            # type: (bool) -> None
            ...

        def unix_time(self):
            # type: () -> float | None
            # Seconds since 1970 (UTC), or None while the clock is not set.
            ...

        def set_time(self, unix_s):
            # type: (int) -> None
            # Set the clock (SNTP's answer): from now on unix_time() is not None.
            ...

        def wifi_connect(self, ssid, password):
            # type: (str, str) -> None
            # Start joining; returns at once, wifi_status() tells how it goes.
            ...

        def wifi_disconnect(self):
            # type: () -> None
            ...

        def wifi_status(self):
            # type: () -> str
            # One of the link state strings above.
            ...

        def reset(self, reason):
            # type: (str) -> None
            # A deliberate reset: the next boot's reset_cause is `reason`.
            # Does not return.
            ...

        def unique_id(self):
            # type: () -> str
            ...
