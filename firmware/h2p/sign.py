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
from binascii import unhexlify

from h2p.compat import sha256
from h2p import cmdspec

MAX_CMD_BYTES = 1024
MAX_TTL_S = 300  # expires - issued may not exceed this
SKEW_S = 30  # issued may be this far in the future of the pile's clock
CLOCK_MIN = 1700000000  # 2023-11-14: a clock before this was never set

# RAM: the pile imports this module only while it handles a command (see
# h2p.cmdhandler), so it is kept to few functions and no tables of its own,
# and to at most 17 globals (one more and their table is the next size up,
# a 368 B block that a fragmented heap may not have: seen at 96K);
# what only host tools use (hmac_hex, verify_command) is in h2p.signer.


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
    if op not in cmdspec.CMD_NAMES:
        return "unknown op"
    if not isinstance(args, dict):
        return "wrong types: args"
    a = cmdspec.CMD_ARGS_FLAT  # op, name, type, required, lo, hi; one argument after the other
    for i in range(0, len(a), 6):
        if a[i] == op and a[i + 3] and a[i + 1] not in args:
            return "bad args: missing " + a[i + 1]
    for k in args:
        for i in range(0, len(a), 6):
            if a[i] == op and a[i + 1] == k:
                break
        else:
            return "bad args: unknown " + str(k)[:32]
        v = args[k]
        if a[i + 2] == "num":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return "bad args: " + k + " not a number"
            if not a[i + 4] <= v <= a[i + 5]:
                return "bad args: " + k + " out of range"
        else:
            if not isinstance(v, str):
                return "bad args: " + k + " not a string"
            try:
                n = len(v.encode())
            except UnicodeError:  # CPython: a lone surrogate from "\ud800"
                return "bad args: " + k + " not a string"
            if not a[i + 4] <= n <= a[i + 5]:
                return "bad args: " + k + " bad length"
    return None


def parse(raw):
    # -> (cmd, None) or (what was parsed or None, reason): the caller may
    # still read a rejected command's id and op for its ack. The envelope's shape only: no
    # key needed. A command's JSON is flat but for args, so the nesting is
    # bounded before parsing (a deeply nested 1 KB body needs far more heap
    # to parse than the board has); bytes.count is C, the scan only runs
    # for the odd body with many brackets.
    if raw is None or len(raw) > MAX_CMD_BYTES:
        return None, "too large"
    try:
        if raw.count(b"{") + raw.count(b"[") > 4:
            # the deepest nesting of arrays/objects outside strings (inline:
            # RAM, a function more would grow the globals' table a size step)
            d = m = 0
            in_str = esc = False
            for b in raw:
                if in_str:
                    if esc:
                        esc = False
                    elif b == 0x5C:  # backslash
                        esc = True
                    elif b == 0x22:
                        in_str = False
                elif b == 0x22:
                    in_str = True
                elif b == 0x7B or b == 0x5B:
                    d += 1
                    if d > m:
                        m = d
                elif b == 0x7D or b == 0x5D:
                    d -= 1
            if m > 2:
                return None, "too deep"
        cmd = json.loads(raw)
    except MemoryError:
        return None, "no memory"
    except Exception:
        return None, "not json"
    if not isinstance(cmd, dict):
        return None, "not json"
    for k in ("id", "op", "args", "pile", "issued", "expires", "nonce", "sig"):
        if k not in cmd:
            return cmd, "missing field: " + k
    for k in ("id", "op", "pile", "nonce", "sig"):
        if not isinstance(cmd[k], str):
            return cmd, "wrong types: " + k
    for k in ("issued", "expires"):
        v = cmd[k]
        if not isinstance(v, int) or isinstance(v, bool):
            return cmd, "wrong types: " + k
    if not 0 < len(cmd["id"]) <= 64:
        return cmd, "wrong types: id length"
    if not 8 <= len(cmd["nonce"]) <= 64:
        return cmd, "wrong types: nonce length"
    if len(cmd["sig"]) != 64:
        return cmd, "bad signature"
    return cmd, None


def check(cmd, key, now_s, pile_id=None, allow_unset_clock=False, skew_s=SKEW_S):
    # -> None if the parsed cmd is well formed, signed with key, addressed
    # to pile_id and valid at now_s; else the reason ("no memory" when the
    # pile had none to check it with). Never raises.
    r = check_args(cmd["op"], cmd["args"])
    if r:
        return r
    if pile_id is not None and cmd["pile"] != pile_id:
        return "wrong pile"
    try:
        good = hmac_sha256(key_bytes(key), lambda out: canonical(cmd, out))
        sig = unhexlify(cmd["sig"])  # hex, either case
    except MemoryError:
        return "no memory"  # not the sender's fault: said as such (send it again)
    except Exception:
        return "bad signature"
    if len(sig) != 32:
        return "bad signature"
    r = 0  # constant-time comparison
    for i in range(32):
        r |= good[i] ^ sig[i]
    if r:
        return "bad signature"
    issued = cmd["issued"]
    expires = cmd["expires"]
    if expires <= issued or expires - issued > MAX_TTL_S:
        return "bad expiry"
    if now_s is None or now_s < CLOCK_MIN:
        if not allow_unset_clock:
            return "clock not set"
    else:
        if now_s > expires:
            return "expired"
        if issued > now_s + skew_s:
            return "issued in future"
    return None
