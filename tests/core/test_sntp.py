# h2p.sntp: the request, and every reply the board must not trust.
# Runs on CPython (pytest) and MicroPython (tests/core/runner.py).
import struct

from h2p import sntp


def _reply(secs, frac=0, li_vn_mode=0x24, stratum=2):
    b = bytearray(48)
    b[0] = li_vn_mode
    b[1] = stratum
    struct.pack_into("!II", b, 40, secs, frac)
    return b


def _raises(buf, n, word):
    try:
        sntp.parse(buf, n)
    except ValueError as e:
        assert word in str(e), e
        return
    raise AssertionError("accepted: " + word)


def test_request_is_a_v4_client_packet():
    r = sntp.request()
    assert len(r) == 48 and r[0] == 0x23 and not any(r[1:])


def test_parse_gives_unix_seconds():
    t = 1796515200  # 2026-12-06 00:00:00 UTC
    got = sntp.parse(_reply(t + 2208988800, 1 << 31), 48)
    assert abs(got - (t + 0.5)) < 1e-3, got


def test_bad_replies_are_refused_with_the_reason():
    t = 1796515200 + 2208988800
    _raises(_reply(t), 40, "short")
    _raises(_reply(t, li_vn_mode=0x23), 48, "mode 3")  # a client's packet echoed
    _raises(_reply(t, stratum=0), 48, "not synchronised")  # kiss-of-death
    _raises(_reply(t, stratum=16), 48, "not synchronised")
    _raises(_reply(t, li_vn_mode=0xE4), 48, "not synchronised")  # leap indicator 3: alarm
    _raises(_reply(0), 48, "no transmit time")
