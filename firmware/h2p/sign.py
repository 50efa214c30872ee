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
from h2p import topics

MAX_CMD_BYTES = 1024
MAX_TTL_S = 300  # expires - issued may not exceed this
SKEW_S = 30  # issued may be this far in the future of the pile's clock
CLOCK_MIN = 1700000000  # 2023-11-14: a clock before this was never set
_ID_MAX = 64

_IPAD = bytes(0x36 for _ in range(64))
_OPAD = bytes(0x5C for _ in range(64))


def hmac_sha256(key, msg):
    if len(key) > 64:
        key = sha256(key).digest()
    key = key + bytes(64 - len(key))
    ik = bytes(a ^ b for a, b in zip(key, _IPAD))
    ok = bytes(a ^ b for a, b in zip(key, _OPAD))
    h = sha256(ik)
    h.update(msg)
    h2 = sha256(ok)
    h2.update(h.digest())
    return h2.digest()


def hmac_hex(key, msg):
    return hexlify(hmac_sha256(key, msg)).decode()


def _eq(a, b):
    # Constant-time comparison of two str/bytes.
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= ord(a[i]) ^ ord(b[i]) if isinstance(a, str) else a[i] ^ b[i]
    return r == 0


def key_bytes(key):
    # Keys are 32 raw bytes; a 64-char hex string (as printed by
    # `h2pile keys`) is accepted too.
    if isinstance(key, str):
        return unhexlify(key)
    return bytes(key)


def _ns(parts, s):
    b = s.encode() if isinstance(s, str) else s
    parts.append(str(len(b)).encode())
    parts.append(b":")
    parts.append(b)
    parts.append(b",")


def _val(v):
    if isinstance(v, bool):
        return "b1" if v else "b0"
    if isinstance(v, (int, float)):
        return "n" + str(round(v * 1000))
    return "s" + v


def canonical(cmd):
    # bytes that are signed. cmd must already have the right types.
    parts = [b"h2pile-cmd/1:"]
    for k in ("pile", "id", "op", "issued", "expires", "nonce"):
        _ns(parts, str(cmd[k]))
    args = cmd["args"]
    for k in sorted(args):
        _ns(parts, k)
        _ns(parts, _val(args[k]))
    return b"".join(parts)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_args(op, args):
    # -> None if args fit the op's schema, else the reason string.
    spec = topics.CMD_BY_OP.get(op)
    if spec is None:
        return "unknown op"
    if not isinstance(args, dict):
        return "wrong types: args"
    known = {}
    for a in spec[1]:
        known[a[0]] = a
        if a[2] and a[0] not in args:
            return "bad args: missing " + a[0]
    for k in args:
        a = known.get(k)
        if a is None:
            return "bad args: unknown " + str(k)[:32]
        v = args[k]
        if a[1] == "num":
            if not _is_num(v):
                return "bad args: " + k + " not a number"
            if not a[3] <= v <= a[4]:
                return "bad args: " + k + " out of range"
        else:
            if not isinstance(v, str):
                return "bad args: " + k + " not a string"
            if not a[3] <= len(v.encode()) <= a[4]:
                return "bad args: " + k + " bad length"
    return None


def _check_fields(cmd):
    for k in ("id", "op", "args", "pile", "issued", "expires", "nonce", "sig"):
        if k not in cmd:
            return "missing " + k
    for k in ("id", "op", "pile", "nonce", "sig"):
        if not isinstance(cmd[k], str):
            return "wrong types: " + k
    for k in ("issued", "expires"):
        v = cmd[k]
        if not isinstance(v, int) or isinstance(v, bool):
            return "wrong types: " + k
    if not 0 < len(cmd["id"]) <= _ID_MAX:
        return "wrong types: id length"
    if not 8 <= len(cmd["nonce"]) <= 64:
        return "wrong types: nonce length"
    if len(cmd["sig"]) != 64:
        return "bad signature"
    return None


class ReplayCache:
    # Remembers (id, nonce, expires, ack) of accepted commands until they
    # have expired (plus the skew), so a command cannot be accepted twice.
    # Bounded: when full of unexpired entries new commands are rejected
    # ("replay cache full") rather than forgetting one that could be replayed.
    def __init__(self, size=32):
        self.size = size
        self._e = []  # [id, nonce, expires, ack]

    def prune(self, now_s):
        if now_s is None:
            return
        e = self._e
        i = 0
        while i < len(e):
            if e[i][2] + SKEW_S < now_s:
                e.pop(i)
            else:
                i += 1

    def seen(self, cid, nonce):
        for e in self._e:
            if e[0] == cid or e[1] == nonce:
                return True
        return False

    def full(self):
        return len(self._e) >= self.size

    def add(self, cid, nonce, expires):
        self._e.append([cid, nonce, expires, None])

    def set_ack(self, cid, ack):
        for e in self._e:
            if e[0] == cid:
                e[3] = ack

    def ack(self, cid):
        for e in self._e:
            if e[0] == cid:
                return e[3]
        return None

    def __len__(self):
        return len(self._e)


def verify_command(raw, key, now_s, replay_cache, pile_id=None,
                   allow_unset_clock=False, skew_s=SKEW_S):
    # -> (cmd dict, "ok") or (None, reason). Never raises on bad input.
    # On success the command is recorded in replay_cache.
    if raw is None or len(raw) > MAX_CMD_BYTES:
        return None, "too large"
    try:
        cmd = json.loads(raw)
    except Exception:
        return None, "not json"
    if not isinstance(cmd, dict):
        return None, "not json"
    r = _check_fields(cmd)
    if r:
        return None, r
    if cmd["op"] not in topics.CMD_BY_OP:
        return None, "unknown op"
    r = check_args(cmd["op"], cmd["args"])
    if r:
        return None, r
    if pile_id is not None and cmd["pile"] != pile_id:
        return None, "wrong pile"
    try:
        sig = hmac_hex(key_bytes(key), canonical(cmd))
    except Exception:
        return None, "bad signature"
    if not _eq(sig, cmd["sig"].lower()):
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
    replay_cache.prune(now_s)
    if replay_cache.seen(cmd["id"], cmd["nonce"]):
        return None, "replayed"
    if replay_cache.full():
        return None, "replay cache full"
    replay_cache.add(cmd["id"], cmd["nonce"], expires)
    return cmd, "ok"
