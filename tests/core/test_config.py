from h2p.config import from_dict
from h2p.schema import ConfigError


def _err(d):
    try:
        from_dict(d, "config.json")
    except ConfigError as e:
        return str(e)
    raise AssertionError("accepted %r" % (d,))


def test_defaults_fill_everything_optional():
    c = from_dict({"pile_id": "p-1"})
    assert c["bus"]["baud"] == 115200 and c["units"]["meter"] == 5
    assert c["limits"]["stack_rated_a"] == 75.0


def test_missing_key_named():
    e = _err({})
    assert "config.json" in e and "pile_id" in e and "missing" in e


def test_unknown_key_named():
    e = _err({"pile_id": "p", "bus": {"baud": 9600, "baudrate": 1}})
    assert "bus.baudrate" in e and "unknown" in e


def test_wrong_type_named_with_expected():
    e = _err({"pile_id": "p", "bus": {"baud": "fast"}})
    assert "bus.baud" in e and "integer" in e


def test_out_of_range_named():
    e = _err({"pile_id": "p", "units": {"meter": 300}})
    assert "units.meter" in e and "between" in e


def test_bad_pile_id():
    e = _err({"pile_id": "Pile 1!"})
    assert "pile_id" in e


def test_bool_is_not_an_integer():
    e = _err({"pile_id": "p", "bus": {"retries": True}})
    assert "bus.retries" in e


def test_feed_lead_longer_than_the_flow_delay_line_is_refused():
    # The supervisor keeps 64 one-second flow samples: a longer lead would
    # read a wrong (wrapped) sample, so the config refuses it at boot.
    e = _err({"pile_id": "p", "limits": {"feed_lead_s": 120}})
    assert "limits.feed_lead_s" in e and "between" in e
    assert from_dict({"pile_id": "p", "limits": {"feed_lead_s": 60}})["limits"]["feed_lead_s"] == 60


KEY = "0123456789abcdefABCDEF" + "0" * 42  # 64 hex digits
# A minimal DER certificate as far as the config check looks: one SEQUENCE
# (long-form length, 0x82) whose length is the rest of the file.
DER = b"\x30\x82\x01\x00" + bytes(256)


def test_command_key_must_be_64_hex_digits_and_is_not_echoed():
    assert from_dict({"pile_id": "p", "mqtt": {"cmd_key": KEY}})["mqtt"]["cmd_key"] == KEY
    assert from_dict({"pile_id": "p"})["mqtt"]["cmd_key"] == ""  # none: every command refused
    for bad in ("secret-not-hex-" + "0" * 49, KEY[:-2], KEY + "00", "zz" * 32):
        e = _err({"pile_id": "p", "mqtt": {"cmd_key": bad}})
        assert "config.json" in e and "mqtt.cmd_key" in e and "64 hex digits" in e, e
        assert bad not in e, e  # a secret never goes to the console


def test_wifi_password_and_ssid_lengths():
    for ok in ("", "8chars!!", "x" * 63, "ab" * 32):
        assert from_dict({"pile_id": "p", "wifi": {"ssid": "depot", "password": ok}})["wifi"]["password"] == ok
    for bad in ("short", "x" * 65, "x" * 64):
        e = _err({"pile_id": "p", "wifi": {"ssid": "depot", "password": bad}})
        assert "wifi.password" in e and "8 to 63" in e and bad not in e, e
    e = _err({"pile_id": "p", "wifi": {"ssid": "s" * 33}})
    assert "wifi.ssid" in e and "32 bytes" in e, e


def test_password_of_the_wrong_type_is_named_not_shown():
    e = _err({"pile_id": "p", "mqtt": {"password": 12345678}})
    assert "mqtt.password" in e and "string" in e and "12345678" not in e, e


def _file_err(key, name, data):
    from h2p.config import check_file

    try:
        check_file(key, name, data)
    except ConfigError as e:
        return str(e)
    raise AssertionError("accepted %r" % (data,))


def test_ca_file_is_named_only_with_tls_and_a_host():
    from h2p.config import named_files

    assert named_files(from_dict({"pile_id": "p"})) == ()
    assert named_files(from_dict({"pile_id": "p", "mqtt": {"tls": True}})) == ()  # MQTT off
    assert named_files(from_dict({"pile_id": "p", "mqtt": {"host": "h", "port": 8883}})) == ()
    c = from_dict({"pile_id": "p", "mqtt": {"host": "h", "tls": True, "ca_file": "fleet.der"}})
    assert named_files(c) == (("mqtt.ca_file", "fleet.der"),)


def test_ca_file_checks_name_the_key_and_the_file():
    from h2p.config import check_file

    check_file("mqtt.ca_file", "ca.der", DER)  # plausible: accepted
    check_file("mqtt.ca_file", "ca.der", b"\x30\x03abc")  # short form length
    for data, why in ((None, "no such file"), (b"", "empty"),
                      (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "PEM"),
                      (DER[:-1], "not a DER certificate"), (DER + b"\n", "not a DER certificate"),
                      (b"\x31\x82\x01\x00" + bytes(256), "not a DER certificate"),
                      (b"\x30\x84", "not a DER certificate")):
        e = _file_err("mqtt.ca_file", "ca.der", data)
        assert e.startswith("config.json: key 'mqtt.ca_file' names 'ca.der': ") and why in e, e


def test_comm_timeout_default_and_bad_values():
    # 0 (the default) means twice data_age_ms, set in h2p.devices.build;
    # under 0.5 s the devices' watchdogs would trip between polls.
    assert from_dict({"pile_id": "p"})["bus"]["comm_timeout_ms"] == 0
    assert from_dict({"pile_id": "p", "bus": {"comm_timeout_ms": 500}})["bus"]["comm_timeout_ms"] == 500
    for bad in (1, 499, 600001, -5):
        e = _err({"pile_id": "p", "bus": {"comm_timeout_ms": bad}})
        assert "bus.comm_timeout_ms" in e and "500 to 600000" in e, e


def test_nan_is_out_of_range():
    # CPython's json accepts NaN, and NaN < lo and NaN > hi are both false:
    # a NaN limit passed the range check (found by tests/fuzz/test_fuzz_config.py)
    e = _err({"pile_id": "p", "limits": {"charger_max_a": float("nan")}})
    assert "limits.charger_max_a" in e and "between" in e


def test_section_not_an_object_named():
    e = _err({"pile_id": "p", "limits": [1]})
    assert "key 'limits' must be an object" in e, e


def test_unknown_key_with_a_newline_stays_one_line():
    e = _err({"pile_id": "p", "x\ny": 1})
    assert "\n" not in e and "unknown" in e, e
