"""rp2040py's USB CDC host answers every armed OUT buffer at once, with an
empty packet when it has nothing to send; our fix (host_tools.emu.usb_fix)
holds the read until there are bytes, as a real host does. And the board's
clock, no longer stormed awake, is paced to at most real time
(host_tools.emu.pace).

Both run on a bare emulated RP2040 (no firmware, instant); the board tier
shows the rest (flash, boot, MQTT over the emulated USB and WiFi).
"""

from __future__ import annotations

from rp2040py.rp2040 import RP2040
from rp2040py.usb.cdc import USBCDC

from host_tools.emu import pace, usb_fix

DATA_OUT = 2


def _cdc(fixed: bool):
    mcu = RP2040()
    cdc = USBCDC(mcu.usb_ctrl)
    cdc._out_endpoint = DATA_OUT  # as enumeration would have found it
    answered: list[tuple[int, int, int]] = []  # (endpoint, size, bytes waiting) per answer
    real = mcu.usb_ctrl.on_endpoint_read

    def record(endpoint: int, size: int) -> None:
        answered.append((endpoint, size, cdc.tx_fifo.item_count))
        real(endpoint, size)

    mcu.usb_ctrl.on_endpoint_read = record
    if fixed:
        usb_fix.apply(cdc)
    return mcu, cdc, answered


def test_unfixed_host_answers_an_armed_buffer_with_an_empty_packet():
    mcu, cdc, answered = _cdc(fixed=False)
    mcu.usb_ctrl.on_endpoint_read(DATA_OUT, 64)
    assert answered == [(DATA_OUT, 64, 0)]  # the storm: nothing to say, said at once


def test_fixed_host_holds_the_read_until_it_has_bytes_and_sends_them_together():
    mcu, cdc, answered = _cdc(fixed=True)
    mcu.usb_ctrl.on_endpoint_read(DATA_OUT, 64)
    mcu.clock.tick(1e6)
    assert answered == []
    for b in b"ab\r":
        cdc.send_serial_byte(b)
    assert answered == []  # not before the write's last byte is in
    mcu.clock.tick(2e3)
    assert answered == [(DATA_OUT, 64, 3)]
    # With bytes already waiting, an armed buffer is answered at once.
    cdc.send_serial_byte(ord("x"))
    mcu.usb_ctrl.on_endpoint_read(DATA_OUT, 64)
    assert answered[-1] == (DATA_OUT, 64, 1)


def test_control_endpoint_is_never_held_and_a_reset_drops_a_held_read():
    mcu, cdc, answered = _cdc(fixed=True)
    mcu.usb_ctrl.on_endpoint_read(0, 8)
    assert answered == [(0, 8, 0)]
    mcu.usb_ctrl.on_endpoint_read(DATA_OUT, 64)
    mcu.usb_ctrl.on_reset()  # the chip dropped off the bus: that buffer is gone
    cdc._out_endpoint = DATA_OUT
    cdc.send_serial_byte(ord("a"))
    mcu.clock.tick(1e6)
    assert answered == [(0, 8, 0)]
    usb_fix.apply(cdc)  # idempotent: still one layer
    mcu.usb_ctrl.on_endpoint_read(DATA_OUT, 64)
    assert answered[-1] == (DATA_OUT, 64, 1)


class _Wall:
    """time.monotonic/time.sleep for pace, on a clock the test moves."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_pace_holds_a_board_that_runs_ahead_of_the_wall_and_never_hurries_one_behind(monkeypatch):
    wall = _Wall()
    monkeypatch.setattr(pace, "time", wall)
    mcu = RP2040()
    pace.apply(mcu)
    # Idle: 100 ms of board time in no wall time (the core slept, the clock jumped).
    mcu.clock.tick(100e6)
    assert abs(sum(wall.slept) - 0.1) < 1e-6  # the wall caught up: the board ran at real time
    # Busy: 10 ms of board time took 200 ms of wall time. No sleep; and the
    # 190 ms it is behind is not made up by racing afterwards.
    n = len(wall.slept)
    wall.t += 0.2
    mcu.clock.tick(10e6)
    assert len(wall.slept) == n
    mcu.clock.tick(50e6)
    assert abs(sum(wall.slept[n:]) - 0.05) < 1e-6
    pace.apply(mcu)  # idempotent: one pacer
    n = len(wall.slept)
    mcu.clock.tick(10e6)
    assert len(wall.slept) == n + 1
