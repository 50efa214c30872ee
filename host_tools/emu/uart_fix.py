"""Our fix for rp2040py 0.3.6's UART transmit interrupt (the PL011 model).

`RPUART.check_interrupts` ORs UARTTXINTR into the raw status on *every*
check, so once MicroPython's `machine.UART(...)` unmasks the transmit
interrupt (UARTIMSC.TXIM) the line stays asserted: the CPU re-enters the
UART handler forever and the constructor never returns. On the real PL011
the transmit interrupt is an event: it is raised when the transmit FIFO
drains past its level (here, the emulator sends a byte the instant UARTDR
is written, so: when a byte is written) and stays raised only until the
firmware clears it with UARTICR. This subclass models exactly that and
nothing else; everything else is rp2040py's. Applied to a live chip by
swapping the class of its two UART objects (`apply`), so the peripheral
map the MCU built keeps pointing at the same objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rp2040py.peripherals.uart import RPUART, UARTDR, UARTTXINTR

if TYPE_CHECKING:
    from rp2040py.rp2040 import RP2040


class EventTxUART(RPUART):
    """RPUART with the transmit interrupt raised per byte written, cleared by UARTICR."""

    def check_interrupts(self) -> None:
        # Not re-forcing UARTTXINTR here is the whole fix.
        self.rp2040.set_interrupt(self.irq, bool(self._interrupt_status & self._interrupt_mask))

    def write_uint32(self, offset: int, value: int) -> None:
        super().write_uint32(offset, value)
        if offset == UARTDR:
            # The byte has left (the model has no transmit FIFO): that is the
            # transmit event. It stays pending until the firmware writes UARTICR.
            self._interrupt_status |= UARTTXINTR
            self.check_interrupts()


def apply(mcu: RP2040) -> None:
    """Give both UARTs of `mcu` the fixed transmit interrupt (idempotent)."""
    for u in mcu.uart:
        if type(u) is RPUART:
            u.__class__ = EventTxUART
