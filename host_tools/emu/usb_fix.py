"""Our fix for rp2040py's USB CDC host: it sends nothing when it has nothing.

rp2040py's `USBCDC` answers every OUT buffer the firmware arms at once, with
whatever its transmit FIFO holds - so with nothing to send it hands over an
empty packet 10 us later. TinyUSB takes the interrupt, re-arms the buffer,
and the next empty packet follows: an interrupt storm for as long as the
console is idle. Measured on the v1.23 Pico W image during `time.sleep(4)`
(session 13): a quarter of the samples in the USB interrupt, the rest in
the code it schedules, never once in WFE; a board second cost ~20 s of wall
time whether the firmware slept or spun.

A real host does not send an empty OUT packet because the device is ready:
the armed buffer stays armed until there are bytes to send. This models
that: an OUT read with an empty FIFO is held, and the first byte pushed
afterwards completes it (a moment later on the chip's clock, so the rest of
that write rides in the same packet). Everything else is rp2040py's.
Applied to a live device's CDC (`apply`), like uart_fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rp2040py.usb.cdc import USBCDC

_BATCH_NANOS = 1000  # simulated: a host write's bytes are pushed together, within one engine step


def apply(cdc: USBCDC) -> None:
    """Hold the CDC's data OUT reads while the host has nothing to send (idempotent)."""
    if getattr(cdc, "_h2p_held_reads", None) is not None:
        return
    usb: Any = cdc.usb
    answer = usb.on_endpoint_read  # rp2040py's: completes the read from cdc.tx_fifo
    held: dict[int, int] = {}  # endpoint -> size the firmware armed
    cdc._h2p_held_reads = held  # type: ignore[attr-defined]

    due = [False]  # the release alarm is scheduled (the native ClockAlarm hides its own flag)

    def release() -> None:
        due[0] = False
        for ep, size in list(held.items()):
            del held[ep]
            if ep == cdc._out_endpoint:  # still the data endpoint (no reset since)
                answer(ep, size)

    alarm = usb.rp2040.clock.create_alarm(release)

    def on_endpoint_read(endpoint: int, size: int) -> None:
        if endpoint and endpoint == cdc._out_endpoint and cdc.tx_fifo.item_count == 0:
            held[endpoint] = size
            return
        held.pop(endpoint, None)
        answer(endpoint, size)

    push = cdc.send_serial_byte

    def send_serial_byte(data: int) -> None:
        push(data)
        if held and not due[0]:
            due[0] = True
            alarm.schedule(_BATCH_NANOS)

    on_reset = usb.on_reset

    def reset() -> None:
        held.clear()
        alarm.cancel()
        due[0] = False
        if on_reset:
            on_reset()

    usb.on_endpoint_read = on_endpoint_read
    cdc.send_serial_byte = send_serial_byte  # type: ignore[method-assign]
    usb.on_reset = reset
