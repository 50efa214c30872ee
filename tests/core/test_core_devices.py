from h2p import devices as D, codes as K
from h2p.config import from_dict
from h2p.readings import Readings, INDEX, UNKNOWN


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
