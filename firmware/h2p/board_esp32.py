# ESP32 (e.g. ESP32-WROOM-32 with a MAX3485 on UART2): see board_mcu for
# the line, watchdog, E-stop, LED and WiFi. UART.flush() returns once the
# last byte has left the transmitter, so DE can drop right after it.
import machine

from h2p.board_mcu import McuBoard
from h2p.compat import const

TYPE_CHECKING = const(0)  # mypy reads it as true: the block under it is for mypy only

PLATFORM = "esp32"

_CAUSES = (
    (machine.PWRON_RESET, "power_on"),
    (machine.HARD_RESET, "hard"),
    (machine.WDT_RESET, "watchdog"),
    (machine.DEEPSLEEP_RESET, "deepsleep"),
    (machine.SOFT_RESET, "soft"),
)


# ESP-IDF reports a wrong WPA2 key more often as a handshake timeout than as
# STAT_WRONG_PASSWORD (202): 204 (HANDSHAKE_TIMEOUT) and 15 (the 4-way
# handshake's timeout) count as "wifi auth" too.
_AUTH_CODES = (204, 15)


def _tx_done(uart):
    # type: (machine.UART) -> bool
    uart.flush()  # blocks until sent: by now at most a character is left
    return True


class Board(McuBoard):
    PLATFORM = PLATFORM

    def __init__(self, desc, baud=None):
        super().__init__(desc, _tx_done, _CAUSES, baud, _AUTH_CODES)

    def _sta_setup(self, w):
        # The port retries a requested join by itself, forever by default,
        # and says only "connecting" meanwhile. h2p.link retries (with its
        # backoff); two tries here let the reason (e.g. a wrong key) show.
        w.config(reconnects=2)


if TYPE_CHECKING:
    from h2p.board import Board as _Interface  # noqa: F401 - mypy: the interface

    def _is_a_board(b):
        # type: (Board) -> _Interface
        return b  # mypy: Board implements h2p.board.Board (tests/test_typecheck.py)
