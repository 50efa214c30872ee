"""rp2040py 0.3.6's UART re-asserts its transmit interrupt forever; our fix (host_tools.emu.uart_fix).

The register-level tests run on a bare emulated RP2040 (no firmware, instant);
the board test shows what the defect broke: `machine.UART(0, 115200)` returns,
and bytes pass both ways.
"""

from __future__ import annotations

from rp2040py.peripherals.uart import RPUART, UARTDR, UARTICR, UARTIMIS, UARTIMSC, UARTTXINTR
from rp2040py.rp2040 import RP2040

from host_tools.emu import uart_fix

UART0 = 0x40034000


def _chip(fixed: bool) -> RP2040:
    mcu = RP2040()
    if fixed:
        uart_fix.apply(mcu)
    return mcu


def _tx_pending(mcu: RP2040) -> bool:
    return bool(mcu.read_uint32(UART0 + UARTIMIS) & UARTTXINTR)


def test_fixed_tx_interrupt_is_raised_by_a_byte_and_cleared_by_icr():
    mcu = _chip(fixed=True)
    assert type(mcu.uart[0]) is uart_fix.EventTxUART
    mcu.write_uint32(UART0 + UARTIMSC, UARTTXINTR)  # what machine.UART() does
    assert not _tx_pending(mcu), "enabling the interrupt must not raise it"
    mcu.write_uint32(UART0 + UARTDR, 0x55)
    assert _tx_pending(mcu), "a byte written is a transmit event"
    mcu.write_uint32(UART0 + UARTICR, UARTTXINTR)
    assert not _tx_pending(mcu), "UARTICR clears it"
    mcu.read_uint32(UART0 + UARTDR)  # any later check leaves it cleared
    assert not _tx_pending(mcu)


def test_unfixed_model_holds_tx_interrupt_forever():
    # The defect itself, in rp2040py's own class: if this starts failing,
    # rp2040py fixed it upstream and uart_fix can go.
    mcu = _chip(fixed=False)
    assert type(mcu.uart[0]) is RPUART
    mcu.write_uint32(UART0 + UARTIMSC, UARTTXINTR)
    mcu.write_uint32(UART0 + UARTICR, UARTTXINTR)
    assert _tx_pending(mcu)


def test_apply_is_idempotent_and_keeps_the_peripheral_objects():
    mcu = _chip(fixed=False)
    before = list(mcu.uart)
    uart_fix.apply(mcu)
    uart_fix.apply(mcu)
    assert [id(u) for u in mcu.uart] == [id(u) for u in before]
    assert all(type(u) is uart_fix.EventTxUART for u in mcu.uart)


def test_machine_uart_returns_and_moves_bytes_on_the_board(repl_rig):
    rig, repl = repl_rig
    board = rig.board
    sent: list[int] = []
    u0 = board.mcu.uart[0]
    board.call(lambda: setattr(u0, "on_byte", sent.append))
    e0 = board.emu_s()
    out = repl.exec("import machine\nu = machine.UART(0, 115200, tx=machine.Pin(0), rx=machine.Pin(1))\n"
                    "u.write(b'h2p')\nprint('made', u.txdone())", timeout=120)
    assert out.strip() == "made True"
    assert board.emu_s() - e0 < 5, "the constructor must not spin in the UART handler"
    assert bytes(sent) == b"h2p"

    def feed() -> None:
        for b in b"pile":
            u0.feed_byte(b)

    board.call(feed)
    assert repl.exec("import time\ntime.sleep_ms(20)\nprint(u.read())").strip() == "b'pile'"
    board.call(lambda: setattr(u0, "on_byte", None))
