# Signed commands: HMAC-SHA256 (MicroPython has no hmac module), canonical
# encoding, verification with expiry and replay protection.
# One source for both sides: the pile verifies, host tools sign (CPython).
#
# A command on h2pile/v1/<pile>/cmd is a JSON object:
#   {"id": "...", "op": "set_limit", "args": {"amps": 32}, "pile": "P1",
#    "issued": 1790000000, "expires": 1790000060, "nonce": "9f..", "sig": "hex"}
# sig = HMAC-SHA256(key, canonical(cmd)). canonical() is not JSON: JSON
# number and key order differ between encoders and a 32-bit board parses
# floats in single precision. It is a list of length-prefixed fields, with
# numbers as integer thousandths (round(x * 1000)), so both sides agree.
#
# Time: now_s is Unix time in seconds. A pile whose clock was never set
# (no NTP, no RTC) passes now_s=None (or any value before CLOCK_MIN): every
# command is then rejected with reason "clock not set", unless the caller
# passes allow_unset_clock=True, in which case expiry is NOT checked and only
# the replay cache protects (a captured command can be replayed once it has
# left the cache). Accepting on a monotonic window after a first valid
# command is deliberately not offered: that first command may itself be old.
import json
from binascii import hexlify, unhexlify

from h2p.compat import sha256
from h2p.cmdspec import CMD_ARGS, CMD_NAMES

MAX_CMD_BYTES = 1024
MAX_TTL_S = 300  # expires - issued may not exceed this
SKEW_S = 30  # issued may be this far in the future of the pile's clock
CLOCK_MIN = 1700000000  # 2023-11-14: a clock before this was never set

# RAM: the pile imports this module only while it handles a command (see
# h2p.cmdhandler), so it is kept to few functions and no tables of its own.


def hmac_sha256(key, msg):
    # msg: bytes, or a function that is given the inner hash's update() and
    # feeds the message to it piece by piece (canonical(cmd, out)): on the
    # pile no copy of the whole message is made.
    if len(key) > 64:
        key = sha256(key).digest()
    key = key + bytes(64 - len(key))
    h = sha256(bytes(b ^ 0x36 for b in key))  # inner pad
    if callable(msg):
        msg(h.update)
    else:
        h.update(msg)
    h2 = sha256(bytes(b ^ 0x5C for b in key))  # outer pad
    h2.update(h.digest())
    return h2.digest()


def hmac_hex(key, msg):
    return hexlify(hmac_sha256(key, msg)).decode()


def key_bytes(key):
    # Keys are 32 raw bytes; a 64-char hex string (as printed by
    # `h2pile keys`) is accepted too.
    if isinstance(key, str):
        return unhexlify(key)
    return bytes(key)


def canonical(cmd, out=None):
    # The bytes that are signed; with out, each piece of them is passed to
    # out() instead and nothing is returned. cmd must already have the right
    # types. Each field is length-prefixed: b"<len>:<utf-8>,".
    parts = None
    if out is None:
        parts = []
        out = parts.append
    out(b"h2pile-cmd/1:")
    fields = [str(cmd[k]) for k in ("pile", "id", "op", "issued", "expires", "nonce")]
    args = cmd["args"]
    for k in sorted(args):
        v = args[k]
        fields.append(k)
        if isinstance(v, bool):
            fields.append("b1" if v else "b0")
        elif isinstance(v, (int, float)):
            fields.append("n" + str(round(v * 1000)))
        else:
            fields.append("s" + v)
    for f in fields:
        b = f.encode()
        out(str(len(b)).encode())
        out(b":")
        out(b)
        out(b",")
    if parts is not None:
        return b"".join(parts)


def check_args(op, args):
    # -> None if args fit the op's schema (h2p.cmdspec), else the reason.
    if op not in CMD_NAMES:
        return "unknown op"
    if not isinstance(args, dict):
        return "wrong types: args"
    for a in CMD_ARGS:
        if a[0] == op and a[3] and a[1] not in args:
            return "bad args: missing " + a[1]
    for k in args:
        for a in CMD_ARGS:
            if a[0] == op and a[1] == k:
                break
        else:
            return "bad args: unknown " + str(k)[:32]
        v = args[k]
        if a[2] == "num":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return "bad args: " + k + " not a number"
            if not a[4] <= v <= a[5]:
                return "bad args: " + k + " out of range"
        else:
            if not isinstance(v, str):
                return "bad args: " + k + " not a string"
            if not a[4] <= len(v.encode()) <= a[5]:
                return "bad args: " + k + " bad length"
    return None


def verify_command(raw, key, now_s, replay, pile_id=None,
                   allow_unset_clock=False, skew_s=SKEW_S, replay_size=32):
    # -> (cmd dict, "ok") or (None, reason). Never raises on bad input.
    #
    # replay: the replay cache, a list the caller keeps (on the pile between
    # commands, while this module is unloaded) of [id, nonce, expires, ack]
    # of the commands accepted and not yet expired (plus the skew), so that
    # none is accepted twice; ack is the caller's (h2p.cmdhandler). On
    # success the command is appended. Bounded: with replay_size unexpired
    # entries new commands are rejected ("replay cache full") rather than
    # forgetting one that could be replayed.
    if raw is None or len(raw) > MAX_CMD_BYTES:
        return None, "too large"
    try:
        cmd = json.loads(raw)
    except Exception:
        return None, "not json"
    if not isinstance(cmd, dict):
        return None, "not json"
    for k in ("id", "op", "args", "pile", "issued", "expires", "nonce", "sig"):
        if k not in cmd:
            return None, "missing " + k
    for k in ("id", "op", "pile", "nonce", "sig"):
        if not isinstance(cmd[k], str):
            return None, "wrong types: " + k
    for k in ("issued", "expires"):
        v = cmd[k]
        if not isinstance(v, int) or isinstance(v, bool):
            return None, "wrong types: " + k
    if not 0 < len(cmd["id"]) <= 64:
        return None, "wrong types: id length"
    if not 8 <= len(cmd["nonce"]) <= 64:
        return None, "wrong types: nonce length"
    if len(cmd["sig"]) != 64:
        return None, "bad signature"
    r = check_args(cmd["op"], cmd["args"])
    if r:
        return None, r
    if pile_id is not None and cmd["pile"] != pile_id:
        return None, "wrong pile"
    try:
        good = hmac_sha256(key_bytes(key), lambda out: canonical(cmd, out))
        sig = unhexlify(cmd["sig"])  # hex, either case
    except Exception:
        return None, "bad signature"
    if len(sig) != 32:
        return None, "bad signature"
    r = 0  # constant-time comparison
    for i in range(32):
        r |= good[i] ^ sig[i]
    if r:
        return None, "bad signature"
    issued = cmd["issued"]
    expires = cmd["expires"]
    if expires <= issued or expires - issued > MAX_TTL_S:
        return None, "bad expiry"
    if now_s is None or now_s < CLOCK_MIN:
        if not allow_unset_clock:
            return None, "clock not set"
        now_s = None
    else:
        if now_s > expires:
            return None, "expired"
        if issued > now_s + skew_s:
            return None, "issued in future"
    if now_s is not None:  # forget the expired
        i = 0
        while i < len(replay):
            if replay[i][2] + SKEW_S < now_s:
                replay.pop(i)
            else:
                i += 1
    for e in replay:
        if e[0] == cmd["id"] or e[1] == cmd["nonce"]:
            return None, "replayed"
    if len(replay) >= replay_size:
        return None, "replay cache full"
    replay.append([cmd["id"], cmd["nonce"], expires, None])
    return cmd, "ok"
