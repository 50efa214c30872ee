"""Fuzz the command path: h2p.cmdhandler.handle with h2p.sign.verify_command.

Any payload on the command topic (random bytes, any JSON, signed commands
with fields changed and re-signed so the deeper checks are reached, the
same command again) gets an ack: a dict with id, op, ok (a bool) and a
non-empty reason from the fixed set REASONS below; the ack is JSON as the
uplink publishes it; ok is True only for a command that ran. Nothing else
is raised, and what a payload allocates is bounded by its size (nothing
at all is parsed past MAX_CMD_BYTES).
"""

import ast
import inspect
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from h2p import cmdhandler, keys, sign, signer
from h2p.cmdspec import CMD_ARGS, CMD_NAMES
from tests.fuzz import kit

TARGET = "cmdhandler"
EXAMPLES = 350
PILE = "p1"
KEY = keys.cmd_key("fleet-secret", PILE)
NOW = 1800000000
PEAK_BASE = 24 * 1024  # bytes any payload may cost (CPython objects)...
PEAK_PER_BYTE = 64  # ... plus this per byte of payload parsed


# ------------------------------------------------------------------ reasons
# THE fixed set of ack reasons, in one place. Exact reasons, then prefixes
# (a prefix is followed by a key or argument name, bounded in length).
# From h2p.sign.verify_command/check_args, h2p.cmdhandler, and the targets
# below (on the pile: the supervisor's and the uplink's reasons).
REASONS = frozenset((
    # h2p.cmdhandler
    "no command key provisioned", "failed",
    # h2p.sign
    "ok", "too large", "not json", "bad signature", "unknown op", "wrong pile",
    "bad expiry", "clock not set", "expired", "issued in future", "replayed",
    "replay cache full",
    # the fake targets of this file
    "done", "refused here",
))
REASON_PREFIXES = ("missing ", "wrong types: ", "bad args: ", "error: ")
REASON_MAX = 80  # characters: an ack is small whatever the payload


def reason_known(r):
    return isinstance(r, str) and 0 < len(r) <= REASON_MAX and (
        r in REASONS or any(r.startswith(p) and len(r) > len(p) for p in REASON_PREFIXES))


# ------------------------------------------------------- the handler's call
# THE one place the handler is called: its replay cache argument is being
# reworked (a fixed preallocated structure), so only new_replay() and
# call() below know its shape.
def new_replay():
    return []


def call(raw, now_s, replay, key=KEY):
    return cmdhandler.handle(raw, now_s, PILE, key, TARGETS, replay)


class Target:
    # the supervisor's side: each op returns (ok, reason); "refuse" in the
    # auth makes start refuse, a limit of 499.5 makes set_limit raise
    def start(self, auth, limit_a):
        return (False, "refused here") if auth == "refuse" else (True, "done")

    def stop(self):
        return True, "done"

    def set_limit(self, amps):
        if amps == 499.5:
            raise RuntimeError("a target that fails")
        return True, None  # "ok" from the handler

    def reset(self):
        return False, None  # "failed" from the handler

    shutdown = wake = stop


class Uplink:
    def resend_meta(self):
        return True, "done"


TARGETS = (Target(), Uplink())


# ----------------------------------------------------------------- checks
def check_ack(ack, raw):
    assert isinstance(ack, dict), ack
    assert set(ack) in ({"id", "op", "ok", "reason"}, {"id", "op", "ok", "reason", "dup"}), ack
    assert ack["ok"] is True or ack["ok"] is False, ack
    assert reason_known(ack["reason"]), "reason %r not in the fixed set (tests/fuzz REASONS)" % (ack["reason"],)
    assert ack["id"] is None or (isinstance(ack["id"], str) and len(ack["id"]) <= 64), ack
    assert ack["op"] is None or ack["op"] in CMD_NAMES or (isinstance(ack["op"], str) and len(ack["op"]) <= 16), ack
    json.dumps(ack)  # the uplink publishes it
    if ack["ok"]:
        assert ack["reason"] in ("ok", "done"), ack


# Crashes found here in code this file may not fix (h2p.sign and
# h2p.cmdhandler are being reworked by their owner): (exception type, the
# function it is raised in) -> the corpus file that shows it. The search
# tolerates them, so that it keeps hunting for new ones; each has an
# xfail(strict=True) test below that replays its input with no tolerance:
# once fixed, that test passes, fails as strict, and its entry goes.
KNOWN = {
    ("UnicodeEncodeError", "check_args"): "found-surrogate-in-auth.json",
}
TOLERATED = set()


class Tolerated(Exception):
    pass


def _known(e):
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (type(e).__name__, tb.tb_frame.f_code.co_name) in KNOWN and \
        tb.tb_frame.f_code.co_filename.endswith(("sign.py", "cmdhandler.py"))


def handled(raw, now_s, replay, tolerate=True):
    """One payload through the handler, its ack checked, its allocation
    bounded. -> the ack. A known finding raises Tolerated."""
    with kit.Peak() as p:
        try:
            ack = call(raw, now_s, replay)
        except Exception as e:
            if tolerate and _known(e):
                TOLERATED.add(raw)
                raise Tolerated() from None
            raise
    parsed = len(raw) if len(raw) <= sign.MAX_CMD_BYTES else 0
    bound = PEAK_BASE + PEAK_PER_BYTE * parsed
    assert p.bytes <= bound, "%d bytes allocated for a %d-byte payload (bound %d)" % (p.bytes, len(raw), bound)
    check_ack(ack, raw)
    return ack


def check_payload(raw, now_s=NOW, tolerate=True):
    replay = new_replay()
    try:
        first = handled(raw, now_s, replay, tolerate)
    except Tolerated:
        return
    again = handled(raw, now_s, replay, tolerate)
    if first["ok"] or first["reason"] in ("done", "refused here", "failed") or first["reason"].startswith("error: "):
        # it ran: the same payload again is a duplicate, not run twice
        assert again == dict(first, dup=True), (first, again)
    elif first["reason"] not in ("replay cache full",):
        assert again == first, (first, again)


# ----------------------------------------------------------------- inputs
# text with what JSON decoders and encoders trip on: lone surrogates (a JSON
# "\ud800" escape), NUL, quotes, astral characters
ODD = ("\ud800", "\udfff", "\x00", '"', "\\", "\u00e9", "\U0001d11e", "\u2028")
texts = st.lists(st.characters() | st.sampled_from(ODD), max_size=40).map("".join)  # (st.text drops surrogates)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
    max_leaves=12,
)
FIELDS = ("id", "op", "args", "pile", "issued", "expires", "nonce", "sig")
nonces = st.text("0123456789abcdef", min_size=8, max_size=64)


@st.composite
def commands(draw):
    op = draw(st.sampled_from(CMD_NAMES))
    args = {}
    if op == "start":
        if draw(st.booleans()):
            args["auth"] = draw(st.sampled_from(("refuse", "rfid:04a1", "x" * 256)))
        if draw(st.booleans()):
            args["limit_a"] = draw(st.sampled_from((0, 16, 32.5, 500)))
    if op == "set_limit":
        args["amps"] = draw(st.sampled_from((0, 32, 499.5, 500)))
    issued = NOW + draw(st.integers(-400, 60))
    cmd = signer.sign_command(op, args, KEY, issued, ttl_s=draw(st.integers(1, 300)), pile=PILE,
                              cid=draw(st.sampled_from(("c1", "c2", None))), nonce=draw(nonces))
    how = draw(st.sampled_from(("valid", "field", "drop", "extra", "arg", "resign")))
    if how == "field":  # one field any JSON value, signature left as it was
        cmd[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif how == "drop":
        cmd.pop(draw(st.sampled_from(FIELDS)))
    elif how == "extra":
        cmd[draw(texts)] = draw(json_values)
    elif how in ("arg", "resign"):  # an argument any value, re-signed: the deep checks run
        spec = draw(st.sampled_from(CMD_ARGS + (("stop", "x", "num"),)))
        cmd["op"] = spec[0]
        cmd["args"] = {spec[1]: draw(texts if spec[2] == "str" else json_values)}
        if draw(st.booleans()):  # any type for any argument
            cmd["args"][spec[1]] = draw(json_values)
        if how == "resign" or draw(st.booleans()):
            try:
                cmd["sig"] = sign.hmac_hex(sign.key_bytes(KEY), sign.canonical(cmd))
            except Exception:
                pass  # canonical() is only defined for checked commands
    return json.dumps(cmd).encode()


payloads = st.one_of(
    st.binary(max_size=1100),
    json_values.map(lambda v: json.dumps(v).encode()),
    commands(),
)


# ----------------------------------------------------------------- tests
@pytest.fixture(scope="module", autouse=True)
def _traced():
    with kit.started():
        yield


def test_reasons_cover_sign_module():
    # Every reason sign.py returns as a literal or a literal prefix is in
    # the fixed set: a new reason there must be added to REASONS here.
    tree = ast.parse(inspect.getsource(sign))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
            r = node.value.elts[1]
            while isinstance(r, ast.BinOp):
                r = r.left
            if isinstance(r, ast.Constant) and isinstance(r.value, str):
                found.add(r.value)
    assert found, "no reasons found in h2p.sign"
    for r in found:
        assert r in REASONS or r.startswith(REASON_PREFIXES), "h2p.sign's reason %r is missing from REASONS" % r


def test_checker_rejects_what_it_must():
    assert not reason_known("") and not reason_known(None) and not reason_known("missing ")
    assert not reason_known("boom") and not reason_known("bad args: " + "x" * 80)
    assert reason_known("missing sig") and reason_known("ok")


def test_no_key_rejects_every_command():
    raw = json.dumps(signer.sign_command("stop", {}, KEY, NOW, pile=PILE, nonce="0" * 16)).encode()
    ack = call(raw, NOW, new_replay(), key="")
    check_ack(ack, raw)
    assert ack["ok"] is False


@pytest.mark.parametrize("data", kit.corpus_params(TARGET))
def test_corpus(data):
    kit.keep(TARGET, data, check_payload)


@kit.budget(EXAMPLES)
@given(payloads, st.sampled_from((NOW, None, 1000, NOW + 10**6)))
@example(b"[" * 1024, NOW)
@example(b"{}" + b" " * 2000, NOW)
def test_any_payload(raw, now_s):
    kit.keep(TARGET, raw, lambda d: check_payload(d, now_s))


@kit.budget(EXAMPLES // 7)
@given(st.lists(commands(), min_size=2, max_size=30))
def test_any_sequence(raws):
    # one replay cache across many commands: every ack checked, a command
    # accepted once is never run again
    replay = new_replay()
    ran = set()
    for raw in raws:
        try:
            ack = handled(raw, NOW, replay)
        except Tolerated:
            continue
        if ack["ok"] and not ack.get("dup"):
            assert ack["id"] not in ran, ack
            ran.add(ack["id"])


@pytest.mark.xfail(strict=True, raises=UnicodeEncodeError, reason=(
    "h2p.sign.check_args: a string argument holding a lone surrogate (JSON \"\\ud800\") raises "
    "UnicodeEncodeError from v.encode() on CPython, before any signature check (on MicroPython the "
    "string is kept as UTF-8 bytes: the same payload gets 'bad signature'); "
    "owner of h2p.sign to fix (found by this fuzzer)"))
def test_known_surrogate_in_auth():
    name = KNOWN[("UnicodeEncodeError", "check_args")]
    check_payload((kit.CORPUS / TARGET / name).read_bytes(), tolerate=False)
