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
