from h2p import crc


def test_crc_table_is_the_polynomial():
    # The table is a literal (it stays in flash); it must be CRC-16/MODBUS.
    assert len(crc._CRC_LO) == 256 and len(crc._CRC_HI) == 256
    for k in range(256):
        c = k
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        assert crc._CRC_LO[k] | crc._CRC_HI[k] << 8 == c, k


def test_crc_of_the_check_string_and_of_a_frame_prefix():
    # CRC-16/MODBUS of "123456789" is 0x4B37 (the catalogue's check value);
    # n bytes of a longer buffer: only those count
    assert crc.crc16(b"123456789", 9) == 0x4B37
    assert crc.crc16(b"123456789xyz", 9) == 0x4B37
    assert crc.crc16(b"", 0) == 0xFFFF


def test_the_master_uses_this_crc():
    from h2p import modbus

    assert modbus.crc16 is crc.crc16
