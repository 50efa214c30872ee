"""Fuzz the config loader: h2p.config.load (h2p.schema.load_json, validate).

Any bytes in /config.json give either a config or a ConfigError whose one
line names the file and, for a bad key, the key's whole path; nothing
else is raised. A config that loads has every key of the schema with its
type and within its documented range or choices (checked here apart from
the schema's own check functions). The message stays short whatever the
file holds, and loading allocates in proportion to the file.
"""

import inspect
import json
import os
import re
import tempfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from h2p import config
from h2p.schema import REQUIRED, ConfigError
from tests.fuzz import kit

TARGET = "config"
EXAMPLES = 250
MSG_MAX = 1200  # characters: the longest "known:" list (limits) is ~560
PEAK_BASE = 48 * 1024
PEAK_PER_BYTE = 96

_DIR = tempfile.mkdtemp(prefix="h2p-fuzz-config-")
PATH = os.path.join(_DIR, "config.json")

# The forms a ConfigError takes: "<file>: <what>", <what> one of these.
_KEY = r"'[a-z0-9_.]+'"  # a key path of the schema
_ANY_KEY = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""  # any key, as repr() quotes it
FORMS = (
    r"cannot read \(.*\)",
    r"not valid JSON \(.*\)",
    r"not UTF-8 text \(.*\)",
    r"(top level|key %s) must be an object" % _KEY,
    r"unknown key %s \(known: [a-z0-9_, ]+\)" % _ANY_KEY,
    r"missing key %s \(\w+ expected\)" % _KEY,
    r"key %s is .*, expected (integer|number|string|true/false|list|object)" % _KEY,
    r"key %s is .*: .+" % _KEY,
)


def load(data):
    """THE call: bytes in /config.json -> (config, None) or (None, message)."""
    with open(PATH, "wb") as f:
        f.write(data)
    with kit.Peak() as p:
        try:
            out = config.load(PATH), None
        except ConfigError as e:
            out = None, str(e)
    bound = PEAK_BASE + PEAK_PER_BYTE * len(data)
    assert p.bytes <= bound, "%d bytes allocated for a %d-byte config (bound %d)" % (p.bytes, len(data), bound)
    return out


def check_message(msg):
    assert msg.startswith(PATH + ": "), msg
    what = msg[len(PATH) + 2:]
    assert "\n" not in msg and len(msg) <= MSG_MAX, "message of %d characters: %.200s" % (len(msg), msg)
    assert any(re.fullmatch(f, what, re.S) for f in FORMS), "unclear error: %r" % what


def _limits(check):
    # lo/hi of an rng() check, the choices of one_of(), else None
    if check is None or not hasattr(check, "__closure__") or not check.__closure__:
        return None
    return inspect.getclosurevars(check).nonlocals


def check_config(cfg, schema=config.SCHEMA, path=""):
    # independently of the schema's checks: types, ranges, choices
    assert set(cfg) == set(schema), (path, sorted(set(cfg) ^ set(schema)))
    for k, (kind, default, check, _doc) in schema.items():
        v = cfg[k]
        where = path + k
        if isinstance(kind, dict):
            check_config(v, kind, where + ".")
            continue
        if v is None and default is None:
            continue
        if kind is float:
            assert type(v) is float, (where, v)
        elif kind is int:
            assert type(v) is int, (where, v)
        else:
            assert isinstance(v, kind), (where, v)
        lim = _limits(check)
        if lim and "lo" in lim:
            assert lim["lo"] <= v <= lim["hi"], "%s = %r accepted, outside %s..%s" % (where, v, lim["lo"], lim["hi"])
        elif lim and "choices" in lim:
            assert v in lim["choices"], (where, v)
        elif check is not None:
            assert check(v) is None, (where, v)


def check_bytes(data):
    cfg, msg = load(data)
    if msg is None:
        check_config(cfg)
    else:
        check_message(msg)
    return cfg, msg


# ----------------------------------------------------------------- inputs
def _leaves(schema, path=()):
    for k, (kind, _d, _c, _doc) in schema.items():
        yield path + (k,)
        if isinstance(kind, dict):
            yield from _leaves(kind, path + (k,))


KEYPATHS = tuple(_leaves(config.SCHEMA))
BASE = {"pile_id": "p1", "mqtt": {"host": "127.0.0.1"}, "limits": {"charger_max_a": 125.0}}

ODD = ("\ud800", "\x00", '"', "\\", "\u00e9", "\U0001d11e")
texts = st.lists(st.characters() | st.sampled_from(ODD), max_size=30).map("".join)
numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.sampled_from(
    (0, 1, -1, 5, 247, 248, 500, 501, 0.5, 1e308, 9600, 115200, 65535, 65536)))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated(draw):
    """(JSON bytes, the key path changed): a valid config with one key set
    to any value, or removed, or an unknown key added."""
    cfg = json.loads(json.dumps(BASE))
    keypath = draw(st.sampled_from(KEYPATHS))
    how = draw(st.sampled_from(("set", "set", "drop", "unknown")))
    d = cfg
    for k in keypath[:-1]:
        d = d.setdefault(k, {})
    if how == "set":
        d[keypath[-1]] = draw(json_values)
    elif how == "drop":
        d.pop(keypath[-1], None)
    else:
        keypath = keypath[:-1] + (draw(texts.filter(lambda t: t not in config.SCHEMA)),)
        d[keypath[-1]] = draw(json_values)
    return json.dumps(cfg, allow_nan=True).encode(), ".".join(keypath)


raw_bytes = st.one_of(
    st.binary(max_size=1024),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated().map(lambda m: m[0]),
    # a valid file cut short or with one byte changed
    st.tuples(mutated(), st.integers(0, 400), st.integers(0, 255)).map(
        lambda t: bytearray(t[0][0])[: t[1]] + bytes((t[2],)) + t[0][0][t[1] + 1:]).map(bytes),
)


# ----------------------------------------------------------------- tests
@pytest.fixture(scope="module", autouse=True)
def _traced():
    with kit.started():
        yield


def test_checker_sees_what_it_must():
    with pytest.raises(AssertionError):
        check_config(dict(config.from_dict({"pile_id": "p1"}), stable_s=5))
    with pytest.raises(AssertionError):
        check_message("config.json: boom")
    cfg, msg = load(b'{"pile_id": "p1"}')
    assert msg is None and cfg["pile_id"] == "p1"


@pytest.mark.parametrize("data", kit.corpus_params(TARGET))
def test_corpus(data):
    kit.keep(TARGET, data, check_bytes)


@kit.budget(EXAMPLES)
@given(raw_bytes)
@example(b"\xff\xfe")
@example(b"[" * 5000)
def test_any_bytes(data):
    kit.keep(TARGET, data, check_bytes)


@kit.budget(EXAMPLES)
@given(mutated())
@example((b'{"pile_id": "p1", "limits": {"charger_max_a": NaN}}', "limits.charger_max_a"))
def test_bad_key_is_named(case):
    # one key changed: the config loads, or the error names that key's path
    data, keypath = case

    def check(d):
        cfg, msg = check_bytes(d)
        if msg is not None:
            # that key, or a key inside the value it was given
            assert repr(keypath)[:-1] in msg, (keypath, msg)

    kit.keep(TARGET, data, check)


def test_required_key_is_required():
    assert REQUIRED == config.SCHEMA["pile_id"][1]
    cfg, msg = load(b"{}")
    assert cfg is None and "missing key 'pile_id'" in msg
