from h2p import codes as K
from h2p import devices as D
from h2p.config import from_dict
from h2p.readings import INDEX, UNKNOWN, Readings


def test_decode_types():
    buf = bytes((0xFF, 0xFE, 0x00, 0x10, 0x00, 0x01, 0x00, 0x02))
    assert D.decode(buf, 0, K.I16) == -2
    assert D.decode(buf, 0, K.U16) == 0xFFFE
    assert D.decode(buf, 2, K.U32) == 0x00010002
    f = D.decode(bytes((0x43, 0x48, 0x00, 0x00)), 0, K.F32)
    assert f == 200.0


def test_blocks_cover_all_readings_in_few_reads():
    devs = D.build(from_dict({"pile_id": "p"}))
    names = {d.name: d for d in devs}
    for n in ("charger", "safety", "fuelcell", "reformer", "bms"):
        assert len(names[n].blocks) == 1  # one block read per device
    assert len(names["meter"].blocks) == 2  # V..P every cycle, energy slow
    assert [b.fast for b in names["meter"].blocks] == [True, False]


def test_implausible_and_nan_values_are_unknown():
    devs = D.build(from_dict({"pile_id": "p"}))
    meter = [d for d in devs if d.name == "meter"][0]
    rd = Readings(1000)
    blk = meter.blocks[0]
    buf = bytearray(2 * blk.count)
    buf[0:4] = bytes((0x7F, 0xC0, 0, 0))  # NaN volts
    meter.store(blk, buf, rd, 10)
    assert rd.get(INDEX["met_v"], 10) == UNKNOWN
    assert rd.get(INDEX["met_a"], 10) == 0
    saf = [d for d in devs if d.name == "safety"][0]
    b = saf.blocks[0]
    buf = bytearray(2 * b.count)
    buf[2:4] = bytes((0x27, 0x10))  # 1000.0 % LEL: a broken sensor
    saf.store(b, buf, rd, 10)
    assert rd.get(INDEX["sio_h2_lel"], 10) == UNKNOWN


def test_stale_reading_is_unknown():
    rd = Readings(1000)
    i = INDEX["bat_soc"]
    rd.put(i, 500, 0)
    assert rd.get(i, 1000) == 500
    assert rd.get(i, 1001) == UNKNOWN


def test_integer_blocks_never_scale():
    # Integer registers are stored as read: no factor, no float on that path.
    devs = D.build(from_dict({"pile_id": "p"}))
    for d in devs:
        for b in d.blocks:
            if d.name == "meter":
                assert b.ratios is not None and len(b.ratios) == 2 * len(b.fields)
            else:
                assert b.ratios is None
                assert all(f[3] == 1 and f[2] != K.F32 for f in b.fields)


def test_command_names_follow_the_register_map():
    devs = D.build(from_dict({"pile_id": "p"}))
    ch = [d for d in devs if d.name == "charger"][0]
    names = [c[0] for c in ch.commands]
    assert len(ch.want) == len(ch.sent) == len(names) and names.index("chg_lock") == 3
    assert ch.cmd_base == ch.commands[0][1]
    # the register words are consecutive from cmd_base (one write of them all)
    assert [c[1] for c in ch.commands] == list(range(ch.cmd_base, ch.cmd_base + len(names)))


def _wd_index(dev):
    for i, c in enumerate(dev.commands):
        if c[0].endswith("_comm_timeout"):
            return i
    return None


def test_comm_timeout_goes_out_with_the_first_commands():
    # Every controlled device gets its comm watchdog's timeout (0.1 s units)
    # in the block of commands the pile writes first; nothing else has one.
    for cfg, raw in (({"pile_id": "p"}, 50),  # 0: twice data_age_ms (2500)
                     ({"pile_id": "p", "bus": {"data_age_ms": 8000}}, 160),
                     ({"pile_id": "p", "bus": {"comm_timeout_ms": 3000}}, 30)):
        devs = {d.name: d for d in D.build(from_dict(cfg))}
        for name in ("charger", "fuelcell", "reformer"):
            d = devs[name]
            i = _wd_index(d)
            assert i is not None and d.want[i] == raw and d.wd_ms == raw * 100, (name, cfg)
            assert d.dirty()  # not sent yet: the first flush writes it
        for name in ("safety", "bms", "meter"):
            assert devs[name].wd_ms == 0 and _wd_index(devs[name]) is None


def test_commands_are_sent_again_after_a_gap_the_device_may_have_gone_safe_in():
    # A device whose watchdog may have run out (a read after a gap of half
    # its timeout or more) has reset its commands: the pile writes them all.
    devs = {d.name: d for d in D.build(from_dict({"pile_id": "p", "bus": {"comm_timeout_ms": 4000}}))}
    ch = devs["charger"]
    rd = Readings(2500)
    blk = ch.blocks[0]
    buf = bytearray(2 * blk.count)
    ch.store(blk, buf, rd, 1000)
    for i in range(len(ch.want)):
        ch.sent[i] = ch.want[i]  # as after a flush
    ch.store(blk, buf, rd, 2900)  # 1.9 s later: fed, nothing to resend
    assert not ch.dirty()
    ch.store(blk, buf, rd, 4901)  # 2.001 s gap
    assert ch.dirty() and list(ch.sent) == [-1] * len(ch.sent)


def test_integer_scaling_matches_the_float_product():
    # Device.store scales float32 meter values in integers (no float object
    # per read); the result must be what int(value * factor) gives.
    import struct

    from h2p import codes as K
    from h2p.devices import scaled

    seed = 12345
    for n in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        bits = (seed << 1 | n & 1) & 0xFFFFFFFF
        if n % 3 == 0:  # values in the meter's range, not only random bit soup
            bits = struct.unpack(">I", struct.pack(">f", (seed % 2000001 - 1000000) / 37.0))[0]
        x = struct.unpack(">f", struct.pack(">I", bits))[0]
        for num, den in ((10, 1), (1, 1), (10000, 1), (1, 10), (1, 100)):
            got = scaled(bits, K.F32, num, den)
            if x != x or x in (float("inf"), float("-inf")):
                assert got is None, (bits, num, den)
                continue
            want = x * num / den if den != 1 else x * num
            if abs(want) > 2e9:
                continue  # outside any plausible range; rejected anyway
            assert got == int(want), (bits, x, num, den, got, int(want))
    assert scaled(-123, K.I16, 1, 10) == -12 and scaled(123, K.U16, 10, 1) == 1230


def test_meter_reads_allocate_no_float_objects():
    # The sdm630 blocks (float32) take the integer path: ratios, not floats.
    from h2p import config
    from h2p import devices as D

    cfg = config.from_dict({"pile_id": "p"})
    meter = [d for d in D.build(cfg) if d.name == "meter"][0]
    assert all(b.ratios is not None for b in meter.blocks)


def test_a_scale_that_is_no_simple_fraction_is_refused_at_build():
    # The store has no float path: a register map whose wire scale is not
    # n/1 .. n/10000 of the stored unit is an error at boot, with its field.
    from h2p import codes as K
    from h2p import devices as D

    try:
        D._blocks_from([("bat_v", 0, K.U16, 1 / 30)], 4, {})
    except ValueError as e:
        assert "bat_v" in str(e)
    else:
        raise AssertionError("a scale of 1/3 of the stored unit was accepted")
    b = D._blocks_from([("bat_v", 0, K.U16, 1.0)], 4, {})[0]  # 1 V on the wire, 0.1 V stored
    assert list(b.ratios) == [10, 1] and b.fields[0][3] == 10


def _readings_state(rd):
    return list(rd.raw), list(rd.ts), list(rd.seen), list(rd.dirty[:min(rd.nd, len(rd.dirty))]), rd.nd


def test_a_block_of_16_bit_registers_is_stored_as_the_field_by_field_path_stores_it():
    # The hot blocks are decoded as machine code on the boards (_put_words);
    # the field-by-field path (decode, range check, Readings.put) is the
    # reference: random replies, negative I16 values, values outside their
    # plausible range, and the interlocks' note of what was put overflowing.
    import random

    random.seed(16)
    devs = D.build(from_dict({"pile_id": "p"}))
    blocks = [(d, b) for d in devs for b in d.blocks if b.words16]
    assert {d.name for d, b in blocks} == {"charger", "safety", "fuelcell", "reformer", "bms"}
    fast, slow = Readings(1000), Readings(1000)
    for n in range(300):
        d, b = blocks[random.randrange(len(blocks))]
        buf = bytearray(2 * b.count)
        for j in range(len(buf)):
            buf[j] = random.choice((0, 0xFF, 0x80, 0x7F, random.randrange(256)))
        if n % 7 == 0:  # the interlocks looked: the note starts again
            fast.nd = slow.nd = 0
        now = 100 + n
        d.store(b, memoryview(buf), fast, now)
        b.words16 = False
        try:
            d.store(b, buf, slow, now)
        finally:
            b.words16 = True
        assert _readings_state(fast) == _readings_state(slow), (d.name, n)
    assert any(x == UNKNOWN for x in fast.raw) and any(x < 0 and x != UNKNOWN for x in fast.raw)
    assert fast.nd > len(fast.dirty)  # the overflow was met


def test_a_block_with_a_scaled_or_32_bit_field_takes_the_field_by_field_path():
    devs = D.build(from_dict({"pile_id": "p"}))
    meter = [d for d in devs if d.name == "meter"][0]
    assert not any(b.words16 for b in meter.blocks)
    p = D.array("i", [INDEX["met_wh"], 0, K.U32, 0, 100])
    assert not D.Block(4, 0, 2, p, None).words16
