# SNTP (RFC 4330) over one UDP socket: the board's clock is set from the
# network so that signed commands can be checked for expiry and TLS
# certificate dates for validity. No ntptime module: not every port ships
# it, and it blocks the event loop while it waits for the answer.
#
# query() sends one client request and polls the non-blocking socket from
# the event loop; h2p.app's clock task keeps the clock set with it.
# A server given as a name is resolved by getaddrinfo, which blocks on
# MicroPython: configure an IP address where DNS may hang.
import socket
import struct

from h2p.compat import asyncio, const, ticks_diff, ticks_ms

_NTP_TO_UNIX = const(2208988800)  # 1900-01-01 to 1970-01-01, s
_PACKET = const(48)
_TIMEOUT_MS = const(2000)


def request():
    # LI 0, version 4, mode 3 (client); the rest zero.
    b = bytearray(_PACKET)
    b[0] = 0x23
    return b


def parse(buf, n):
    # -> unix seconds (float) from a server's reply, or raises ValueError
    # naming what was wrong: a reply must be a server's (mode 4), in sync
    # (stratum 1..15, leap indicator not 3) and carry a transmit time.
    if n < _PACKET:
        raise ValueError("sntp: short reply (%d bytes)" % n)
    mode = buf[0] & 7
    if mode != 4:
        raise ValueError("sntp: not a server reply (mode %d)" % mode)
    if buf[0] >> 6 == 3 or not 1 <= buf[1] <= 15:
        raise ValueError("sntp: server not synchronised (stratum %d)" % buf[1])
    secs, frac = struct.unpack_from("!II", buf, 40)
    if secs == 0:
        raise ValueError("sntp: no transmit time")
    return secs - _NTP_TO_UNIX + frac / 4294967296


async def query(server, port=123, timeout_ms=_TIMEOUT_MS):
    # -> unix seconds; raises OSError (network) or ValueError (bad reply).
    addr = socket.getaddrinfo(server, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.sendto(request(), addr)
        buf = bytearray(_PACKET)
        t0 = ticks_ms()
        while True:
            try:
                n = s.readinto(buf)
            except OSError:
                n = None  # EAGAIN: nothing yet
            if n:
                return parse(buf, n)
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                raise OSError("sntp: no answer from %s:%d in %d ms" % (server, port, timeout_ms))
            await asyncio.sleep_ms(20)
    finally:
        s.close()
