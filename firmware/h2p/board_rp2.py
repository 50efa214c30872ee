# Raspberry Pi Pico W (RP2040, MAX3485 on UART0): see board_mcu for the
# line, watchdog, E-stop, LED and WiFi. UART.txdone() is True once the
# transmitter is idle (FIFO and shift register empty).
import machine

from h2p.board_mcu import McuBoard
from h2p.compat import const

TYPE_CHECKING = const(0)  # mypy reads it as true: the block under it is for mypy only

PLATFORM = "rp2"

# The RP2040 tells power-on and watchdog apart; the rest reads as hard.
_CAUSES = (
    (machine.PWRON_RESET, "power_on"),
    (machine.WDT_RESET, "watchdog"),
)


def _tx_done(uart):
    # type: (machine.UART) -> bool
    return uart.txdone()


class Board(McuBoard):
    PLATFORM = PLATFORM

    def __init__(self, desc, baud=None):
        super().__init__(desc, _tx_done, _CAUSES, baud)


if TYPE_CHECKING:
    from h2p.board import Board as _Interface  # noqa: F401 - mypy: the interface

    def _is_a_board(b):
        # type: (Board) -> _Interface
        return b  # mypy: Board implements h2p.board.Board (tests/test_typecheck.py)
