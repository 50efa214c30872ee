from h2p.modbus import Master, ModbusError, char_time_us, crc16, gap_us
from tests.helpers.fakes import FakeClock, FakeLine, frame, run


def test_crc16_known_vector():
    # Read 2 holding registers from unit 1 at 0: CRC bytes C4 0B.
    req = bytes((1, 3, 0, 0, 0, 2))
    c = crc16(req, 6)
    assert (c & 0xFF, c >> 8) == (0xC4, 0x0B)


def test_wire_timing_figures():
    assert char_time_us(9600) == 1145
    assert gap_us(9600) == 4007  # 3.5 characters, 4.01 ms
    assert gap_us(115200) == 1750  # fixed above 19200


def _master(replies, **kw):
    clock = FakeClock()
    line = FakeLine(replies, clock)
    return Master(line, clock, **kw), line


def test_read_ok_and_request_bytes():
    m, line = _master([frame(4, 4, 4, 0x12, 0x34, 0xFF, 0xFE)])
    data = run(m.read(4, 4, 0x0010, 2))
    assert bytes(data) == bytes((0x12, 0x34, 0xFF, 0xFE))
    assert line.sent[0] == frame(4, 4, 0, 0x10, 0, 2)
    assert m.stats[0] == 1


def _fails(reply, kind, fc=3, count=1):
    m, line = _master([reply])
    try:
        run(m.read(1, fc, 0, count))
    except ModbusError as e:
        assert e.kind == kind, e.kind
        return m, line, e
    raise AssertionError("accepted a bad reply: %r" % (reply,))


def test_bad_crc_rejected_and_counted():
    good = bytearray(frame(1, 3, 2, 0, 5))
    good[-1] ^= 0xFF
    m, line, _ = _fails(bytes(good), "bad_crc")
    assert m.stats[2] == 1 and line.settled == 1


def test_wrong_unit_rejected():
    m, _, _ = _fails(frame(2, 3, 2, 0, 5), "wrong_unit")
    assert m.stats[3] == 1


def test_wrong_function_rejected():
    m, _, _ = _fails(frame(1, 4, 2, 0, 5), "wrong_function")
    assert m.stats[4] == 1


def test_wrong_length_rejected():
    # Byte count says 4 but 2 registers were not asked for.
    m, _, _ = _fails(frame(1, 3, 4, 0, 5, 0, 6), "wrong_length")


def test_short_reply_is_wrong_length():
    m, _, _ = _fails(frame(1, 3, 2, 0, 5)[:4], "wrong_length")


def test_exception_reply_raised_with_code():
    m, _, e = _fails(frame(1, 0x83, 2), "exception")
    assert e.code == 2 and m.stats[6] == 1


def test_silent_device_is_a_timeout_not_a_stall():
    m, _ = _master([b""], timeout_ms=50)
    try:
        run(m.read(9, 3, 0, 1))
    except ModbusError as e:
        assert e.kind == "timeout"
    else:
        raise AssertionError("no timeout")
    assert m.stats[1] == 1


def test_write_single_and_multiple():
    m, line = _master([frame(4, 6, 1, 0, 0, 1), frame(4, 16, 1, 0, 0, 3)])
    run(m.write(4, 0x100, [1], 1))
    assert line.sent[0] == frame(4, 6, 1, 0, 0, 1)
    run(m.write(4, 0x100, [1, 500, 2], 3))
    assert line.sent[1] == frame(4, 16, 1, 0, 0, 3, 6, 0, 1, 1, 0xF4, 0, 2)


def test_write_echo_for_other_address_rejected():
    m, _ = _master([frame(4, 6, 2, 0, 0, 1)])
    try:
        run(m.write(4, 0x100, [1], 1))
    except ModbusError as e:
        assert e.kind == "wrong_length"
        # counted once, as rejected (tests/fuzz found it counted "ok" too)
        assert m.stats[0] == 0 and m.stats[5] == 1, m.stats
        return
    raise AssertionError("accepted a write echo for another register")


def test_buffers_are_as_long_as_the_piles_longest_frame():
    # the pile's master holds frames as long as its longest read reply or
    # write (devices.frame_max), and every block it reads fits
    from h2p import config as C
    from h2p import devices as D

    devs = D.build(C.from_dict({"pile_id": "t"}))
    n = D.frame_max(devs)
    assert 8 <= n < 256
    for d in devs:
        assert 9 + 2 * len(d.want) <= n
        for b in d.blocks:
            assert 5 + 2 * b.count <= n
    m, _line = _master([], frame_max=n)
    assert len(m._tx) == len(m._rx) == n
