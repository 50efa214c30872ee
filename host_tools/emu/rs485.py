"""The RS-485 wire between the emulated board's UART and the simulator.

The board's UART0 hands us each byte the instant the firmware writes it
(`on_byte`); a wire takes 11 bit-times per character (the firmware's and the
simulator's count, h2p.modbus.char_time_us). The bridge keeps that wire's
time in *emulated* nanoseconds: a request ends when the line has been idle
for t3.5 after its last character; the frame then goes to the simulator's
Modbus RTU server (RTU over TCP on 127.0.0.1), and the reply is fed back one
character per character time, starting the device's turnaround after the
request's end, so the 32-byte RX FIFO fills as fast as on the real line and
no faster.

The exchange with the simulator blocks the emulator's thread for the ~1 ms
a loopback round trip takes: emulated time stands still meanwhile, so the
reply is on time to the nanosecond whatever the host's load.

The transceiver: bytes the firmware sends while DE (GPIO2) is low never
reach the line, and a reply arriving while DE is still high is not heard
(DE and /RE are tied on the board); both are counted in `stats`.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from h2p.modbus import char_time_us, gap_us

if TYPE_CHECKING:
    from rp2040py.rp2040 import RP2040

_NO_REPLY_S = 0.25  # wall time to wait for a reply that a silent device never sends


def reply_length(request: bytes, head: bytes) -> int | None:
    """Length of a Modbus RTU reply from its first 3 bytes; None if unknown."""
    if len(head) < 2:
        return None
    fc = head[1]
    if fc & 0x80:
        return 5
    if fc in (3, 4):
        return 5 + head[2] if len(head) >= 3 else None
    if fc in (5, 6, 15, 16):
        return 8
    return None


class Rs485Bridge:
    def __init__(self, mcu: RP2040, sim_port: int, *, uart: int = 0, de_pin: int | None = 2,
                 turnaround_s: float = 0.002, baud: int = 115200) -> None:
        self.mcu = mcu
        self.uart = mcu.uart[uart]
        self.clock = mcu.clock
        self.sim_port = sim_port
        self.de_pin = de_pin
        self.turnaround_ns = turnaround_s * 1e9
        self.fallback_baud = baud
        self._sock: socket.socket | None = None
        self._frame = bytearray()
        self._line_free = 0.0  # emulated ns when the last character sent is off the wire
        self._reply = b""
        self._req_frame = b""
        self._ri = 0
        self._idle = self.clock.create_alarm(self._on_idle)
        self._rx = self.clock.create_alarm(self._feed_next)
        self.stats = {"requests": 0, "replies": 0, "no_reply": 0, "tx_bytes": 0, "rx_bytes": 0,
                      "tx_without_de": 0, "rx_lost_de": 0, "rx_overrun": 0, "exchange_wall_s": 0.0}
        # Optional wire trace, for the bench: one tuple per exchange,
        # (request's first byte ns, reply's last byte ns or None, CPU cycles at both, unit, fc).
        self.trace: list[tuple[float, float | None, int, int | None, int, int]] | None = None
        self._req_t0 = 0.0
        self._req_c0 = 0
        self.uart.on_byte = self._on_byte

    # ---- timing ---------------------------------------------------------------------
    def baud(self) -> int:
        b = self.uart.baud_rate if self.uart.baud_divider else 0
        return b or self.fallback_baud

    def _char_ns(self) -> float:
        return char_time_us(self.baud()) * 1000.0

    def _de(self) -> bool:
        if self.de_pin is None:
            return True
        return bool(self.mcu.gpio[self.de_pin].output_value)

    # ---- board → line ---------------------------------------------------------------
    def _on_byte(self, value: int) -> None:
        if not self._de():
            self.stats["tx_without_de"] += 1
            return
        now = self.clock.nanos
        if not self._frame:
            self._req_t0, self._req_c0 = now, self.mcu.core.cycles
        self._line_free = max(now, self._line_free) + self._char_ns()
        self._frame.append(value)
        self.stats["tx_bytes"] += 1
        self._idle.schedule(self._line_free + gap_us(self.baud()) * 1000.0 - now)

    def _on_idle(self) -> None:
        frame = bytes(self._frame)
        self._frame.clear()
        if not frame:
            return
        self.stats["requests"] += 1
        reply = self._exchange(frame)
        if not reply:
            self.stats["no_reply"] += 1
            if self.trace is not None:
                self.trace.append((self._req_t0, None, self._req_c0, None, frame[0], frame[1] if len(frame) > 1 else 0))
            return
        self._req_frame = frame
        self.stats["replies"] += 1
        now = self.clock.nanos
        # The device starts answering its turnaround after the request's last bit.
        first = max(now, self._line_free + self.turnaround_ns) + self._char_ns()
        self._reply, self._ri = reply, 0
        self._rx.schedule(first - now)

    # ---- line → board ---------------------------------------------------------------
    def _feed_next(self) -> None:
        if self._ri >= len(self._reply):
            return
        b = self._reply[self._ri]
        self._ri += 1
        if self._de():
            self.stats["rx_lost_de"] += 1
        elif self.uart.rx_fifo.full:
            self.stats["rx_overrun"] += 1  # the firmware did not empty the 32-byte FIFO in time
        else:
            self.uart.feed_byte(b)
            self.stats["rx_bytes"] += 1
        if self._ri < len(self._reply):
            self._rx.schedule(self._char_ns())
        elif self.trace is not None:
            f = self._req_frame
            self.trace.append((self._req_t0, self.clock.nanos, self._req_c0, self.mcu.core.cycles, f[0], f[1]))

    # ---- the simulator -------------------------------------------------------------
    def _exchange(self, frame: bytes) -> bytes:
        t0 = time.monotonic()
        try:
            if self._sock is None:
                self._sock = socket.create_connection(("127.0.0.1", self.sim_port), timeout=5)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = self._sock
            s.sendall(frame)
            s.settimeout(_NO_REPLY_S)
            buf = b""
            want: int | None = None
            while want is None or len(buf) < want:
                try:
                    chunk = s.recv(512)
                except TimeoutError:
                    break
                if not chunk:
                    self._sock = None
                    break
                buf += chunk
                want = reply_length(frame, buf)
                s.settimeout(0.05)  # the rest of a reply follows at once
            return buf
        except OSError:
            if self._sock is not None:
                self._sock.close()
            self._sock = None
            return b""
        finally:
            self.stats["exchange_wall_s"] += time.monotonic() - t0

    def close(self) -> None:
        self.uart.on_byte = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
