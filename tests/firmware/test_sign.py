"""h2p.sign / h2p.keys on CPython, and the same vectors on MicroPython (h2p.cmdhandler:
test_cmdhandler.py)."""
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from h2p import keys, sign, signer
from tests.helpers.mqtt_broker import run_mpy

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython]


KEY = keys.cmd_key("fleet-secret", "P1")
NOW = 1800000000


def raw(cmd):
    return json.dumps(cmd).encode()


def fresh(op="set_limit", args=None, now=NOW, **kw):
    return signer.sign_command(op, {"amps": 32} if args is None and op == "set_limit" else (args or {}),
                             KEY, now, pile="P1", **kw)


def verify(cmd_or_raw, now=NOW, cache=None, pile="P1", **kw):
    r = cmd_or_raw if isinstance(cmd_or_raw, bytes) else raw(cmd_or_raw)
    return signer.verify_command(r, KEY, now, cache if cache is not None else [], pile, **kw)


def test_hmac_matches_stdlib():
    for k in (b"", b"k", b"x" * 64, b"y" * 65, bytes(range(200))):
        for m in (b"", b"abc", b"z" * 1000):
            assert sign.hmac_sha256(k, m) == hmac.new(k, m, hashlib.sha256).digest()


def test_keys_are_per_pile_and_purpose():
    assert keys.cmd_key("s", "P1") != keys.cmd_key("s", "P2")
    assert keys.cmd_key("s", "P1") != keys.mqtt_password("s", "P1")
    assert keys.cmd_key("s", "P1") == hmac.new(b"s", b"cmd:P1", hashlib.sha256).hexdigest()
    with pytest.raises(ValueError):
        keys.cmd_key("s", "bad/id")
    with pytest.raises(ValueError):
        keys.cmd_key("", "P1")


def test_accept_then_replay():
    cache = []  # the replay cache: the caller keeps the list
    c = fresh()
    cmd, why = verify(c, cache=cache)
    assert why == "ok" and cmd["args"]["amps"] == 32
    assert verify(c, cache=cache) == (None, "replayed")
    # same nonce, new id, re-signed: still a replay
    c2 = fresh(nonce=c["nonce"], cid="other")
    assert verify(c2, cache=cache) == (None, "replayed")


@pytest.mark.parametrize("mutate,reason", [
    (lambda c: c.update(sig="0" * 64), "bad signature"),
    (lambda c: c["args"].update(amps=33), "bad signature"),
    (lambda c: c.update(op="stop", args={}), "bad signature"),
    (lambda c: c.update(pile="P2"), "wrong pile"),
    (lambda c: c.pop("nonce"), "missing field: nonce"),
    (lambda c: c.pop("sig"), "missing field: sig"),
    (lambda c: c.pop("expires"), "missing field: expires"),
    (lambda c: c.update(issued="1800000000"), "wrong types: issued"),
    (lambda c: c.update(id=5), "wrong types: id"),
    (lambda c: c.update(op="explode"), "unknown op"),
    (lambda c: c["args"].update(amps="32"), "bad args: amps not a number"),
    (lambda c: c["args"].update(amps=501), "bad args: amps out of range"),
    (lambda c: c["args"].update(amps=True), "bad args: amps not a number"),
    (lambda c: c["args"].update(volts=1), "bad args: unknown volts"),
    (lambda c: c.update(args={}), "bad args: missing amps"),
])
def test_rejections(mutate, reason):
    c = fresh()
    mutate(c)
    assert verify(c) == (None, reason)


def test_garbage_and_size():
    assert verify(b"\xff\xfe garbage") == (None, "not json")
    assert verify(b"[1,2]") == (None, "not json")
    assert verify(b"x" * 2000) == (None, "too large")
    assert verify(b'{"id": "a"}') == (None, "missing field: op")


def test_time_window():
    c = fresh(ttl_s=60)
    assert verify(c, now=NOW + 60)[1] == "ok"
    assert verify(c, now=NOW + 61) == (None, "expired")
    assert verify(c, now=NOW - sign.SKEW_S)[1] == "ok"  # pile clock behind, within skew
    assert verify(c, now=NOW - sign.SKEW_S - 1) == (None, "issued in future")
    assert verify(c, now=None) == (None, "clock not set")
    assert verify(c, now=1000) == (None, "clock not set")  # RTC at 1970 after power loss
    assert verify(c, now=None, allow_unset_clock=True)[1] == "ok"


def test_long_ttl_rejected_even_if_signed():
    c = fresh()
    c["expires"] = c["issued"] + sign.MAX_TTL_S + 1
    c["sig"] = signer.hmac_hex(sign.key_bytes(KEY), sign.canonical(c))
    assert verify(c) == (None, "bad expiry")


def test_replay_cache_bounded_and_expires():
    cache = []
    for i in range(3):
        assert verify(fresh(cid="c%d" % i), cache=cache, replay_size=3)[1] == "ok"
    assert verify(fresh(cid="c9"), cache=cache, replay_size=3) == (None, "busy")
    # after expiry (+ skew) the entries are pruned and new commands pass
    later = NOW + 60 + sign.SKEW_S + 1
    assert verify(fresh(cid="c10", now=later), now=later, cache=cache, replay_size=3)[1] == "ok"
    assert len(cache) == 1


def test_float_args_canonical():
    c = fresh(args={"amps": 12.345})
    assert verify(c)[1] == "ok"
    # a float parsed in single precision on a board still verifies
    import struct
    c2 = dict(c, args={"amps": struct.unpack("f", struct.pack("f", 12.345))[0]})
    assert verify(c2)[1] == "ok"


def test_sign_command_rejects_bad_input():
    with pytest.raises(ValueError):
        signer.sign_command("set_limit", {"amps": 900}, KEY, NOW)
    with pytest.raises(ValueError):
        signer.sign_command("nope", {}, KEY, NOW)
    with pytest.raises(ValueError):
        signer.sign_command("stop", {}, KEY, NOW, ttl_s=10000)


MPY_SCRIPT = r"""
import sys, json
from h2p import sign, signer, keys
vec = json.loads(open(sys.argv[1]).read())
out = {"key": keys.cmd_key("fleet-secret", "P1"), "mqtt": keys.mqtt_password("fleet-secret", "P1")}
res = []
for v in vec["verify"]:
    cmd, why = signer.verify_command(v["raw"].encode(), out["key"], v["now"], [], "P1")
    res.append(why)
out["verify"] = res
sigs = []
for s in vec["sign"]:
    c = signer.sign_command(s["op"], s["args"], out["key"], s["now"], pile="P1", cid=s["id"], nonce=s["nonce"])
    sigs.append(c["sig"])
out["sign"] = sigs
cache = []
r1 = signer.verify_command(vec["verify"][0]["raw"].encode(), out["key"], vec["verify"][0]["now"], cache, "P1")[1]
r2 = signer.verify_command(vec["verify"][0]["raw"].encode(), out["key"], vec["verify"][0]["now"], cache, "P1")[1]
out["replay"] = [r1, r2]
print(json.dumps(out))
"""


def test_same_results_on_micropython(tmp_path):
    cases = [fresh(), fresh(args={"amps": 12.345}), fresh("start", {"auth": "t\u00f6k\"en", "limit_a": 0.5})]
    t1 = fresh()
    t1["args"]["amps"] = 31
    cases.append(t1)
    verify_vec = [{"raw": json.dumps(c), "now": NOW} for c in cases]
    verify_vec += [{"raw": json.dumps(cases[0]), "now": NOW + 100},
                   {"raw": json.dumps(cases[0]), "now": None},
                   {"raw": "not json", "now": NOW},
                   {"raw": json.dumps(dict(cases[0], pile="P2")), "now": NOW}]
    sign_vec = [{"op": c["op"], "args": c["args"], "now": c["issued"], "id": c["id"], "nonce": c["nonce"]}
                for c in cases[:3]]
    (tmp_path / "vec.json").write_text(json.dumps({"verify": verify_vec, "sign": sign_vec}))
    (tmp_path / "s.py").write_text(MPY_SCRIPT)
    rc, out, err = run_mpy(tmp_path / "s.py", tmp_path / "vec.json")
    assert rc == 0, err
    mp = json.loads(out)
    cp_verify = [signer.verify_command(v["raw"].encode(), KEY, v["now"], [], "P1")[1]
                 for v in verify_vec]
    assert cp_verify == ["ok", "ok", "ok", "bad signature", "expired", "clock not set", "not json", "wrong pile"]
    assert mp["verify"] == cp_verify
    assert mp["key"] == KEY and mp["mqtt"] == keys.mqtt_password("fleet-secret", "P1")
    assert mp["sign"] == [c["sig"] for c in cases[:3]]
    assert mp["replay"] == ["ok", "replayed"]


def test_no_memory_to_check_a_signature_is_said_as_such_not_as_a_bad_signature(monkeypatch):
    # A pile short of RAM must not blame the sender: "no memory" (send it
    # again), which the uplink retries for a safety op; never "bad signature".
    cmd, why = sign.parse(raw(fresh()))
    assert why is None or why == "ok", why

    def no_ram(*_a):
        raise MemoryError("memory allocation failed, allocating 272 bytes")

    monkeypatch.setattr(sign, "hmac_sha256", no_ram)
    assert sign.check(cmd, KEY, NOW, "P1") == "no memory"


@pytest.mark.parametrize("args,reason", [
    ({"cap_kwh": -1}, "bad args: cap_kwh out of range"),
    ({"cap_kwh": 0}, "bad args: cap_kwh out of range"),
    ({"cap_kwh": float("nan")}, "bad args: cap_kwh out of range"),
    ({"cap_kwh": float("inf")}, "bad args: cap_kwh out of range"),
    ({"cap_kwh": 501}, "bad args: cap_kwh out of range"),  # no EV takes more from a pile
    ({"cap_kwh": "5"}, "bad args: cap_kwh not a number"),
    ({"cap_kwh": True}, "bad args: cap_kwh not a number"),
    ({"cap_min": -5}, "bad args: cap_min out of range"),
    ({"cap_min": 0.5}, "bad args: cap_min out of range"),
    ({"cap_min": float("nan")}, "bad args: cap_min out of range"),
    ({"cap_min": 1441}, "bad args: cap_min out of range"),  # more than a day
    ({"cap_kwh": 0.1, "cap_min": 1}, None),
    ({"cap_kwh": 500, "cap_min": 1440, "auth": "sponsor:acme:1", "limit_a": 32}, None),
])
def test_session_caps_are_checked_with_the_argument_named(args, reason):
    # A sponsor's cap that is negative, NaN, zero or absurd never reaches the pile's session.
    assert sign.check_args("start", args) == reason
