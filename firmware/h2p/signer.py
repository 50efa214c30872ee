# Signing commands: the operator's side of h2p.sign, kept in its own module so
# the board (which only verifies) does not load it. Same code, one source:
# host tools import it on CPython, tests also run it on MicroPython.
from binascii import hexlify

from h2p.sign import MAX_TTL_S, canonical, check_args, hmac_hex, key_bytes


def _nonce():
    try:
        import os
        return hexlify(os.urandom(8)).decode()
    except Exception:  # pragma: no cover - ports without urandom
        import random
        return "%08x%08x" % (random.getrandbits(32), random.getrandbits(32))


def sign_command(op, args, key, now_s, ttl_s=60, pile="", cid=None, nonce=None):
    # Build a signed command dict (host side). Raises ValueError on bad
    # op/args so the caller can tell the user what was wrong.
    args = dict(args or {})
    r = check_args(op, args)
    if r:
        raise ValueError(r)
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError("ttl must be 1..%d s" % MAX_TTL_S)
    now_s = int(now_s)
    n = nonce or _nonce()
    cmd = {
        "id": cid or (op + "-" + str(now_s) + "-" + n[:6]),
        "op": op,
        "args": args,
        "pile": pile,
        "issued": now_s,
        "expires": now_s + int(ttl_s),
        "nonce": n,
    }
    cmd["sig"] = hmac_hex(key_bytes(key), canonical(cmd))
    return cmd
