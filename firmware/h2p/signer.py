# Signing commands: the operator's side of h2p.sign, kept in its own module so
# the board (which only verifies) does not load it. Same code, one source:
# host tools import it on CPython, tests also run it on MicroPython.
from binascii import hexlify

from h2p.sign import CLOCK_MIN, MAX_TTL_S, SKEW_S, canonical, check, check_args, hmac_sha256, key_bytes, parse


def hmac_hex(key, msg):
    return hexlify(hmac_sha256(key, msg)).decode()


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


def verify_command(raw, key, now_s, replay, pile_id=None,
                   allow_unset_clock=False, skew_s=SKEW_S, replay_size=32):
    # -> (cmd dict, "ok") or (None, reason). Never raises. The checks of
    # the pile (h2p.sign parse and check) with a replay cache that is a
    # plain list, for host tools and tests; the pile itself keeps a fixed
    # table (h2p.cmdhandler).
    #
    # replay: a list the caller keeps of [id, nonce, expires] of the
    # commands accepted and not yet expired (plus the skew), so that none
    # is accepted twice. On success the command is appended. Bounded: with
    # replay_size unexpired entries new commands are rejected ("busy")
    # rather than forgetting one that could be replayed.
    cmd, r = parse(raw)
    if r:
        return None, r
    r = check(cmd, key, now_s, pile_id, allow_unset_clock, skew_s)
    if r:
        return None, r
    if now_s is not None and now_s >= CLOCK_MIN:  # forget the expired
        replay[:] = [e for e in replay if e[2] + SKEW_S >= now_s]
    for e in replay:
        if e[0] == cmd["id"] or e[1] == cmd["nonce"]:
            return None, "replayed"
    if len(replay) >= replay_size:
        return None, "busy"
    replay.append([cmd["id"], cmd["nonce"], cmd["expires"]])
    return cmd, "ok"
