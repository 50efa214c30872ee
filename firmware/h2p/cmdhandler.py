# Turns a raw command message into its ack dict: never raises, never stays
# silent. Verification is h2p.sign's; the effect is delegated to target
# objects, which between them have methods
#   start(auth, limit_a, cap_kwh, cap_min), stop(), set_limit(amps), reset(), shutdown(),
#   wake(), resend_meta()
# each returning (ok, text); the first target that has the op's method
# runs it (on the pile: the supervisor, then the uplink for resend_meta).
# The ack is published on cmd/ack by the caller:
#   {"id", "op", "ok", "reason"} (+ "detail": free text, + "dup": true when
#   an already accepted command arrives again, e.g. a QoS 1 redelivery: its
#   first ok and reason are repeated and it is NOT executed twice).
# "reason" is always one of topics_doc.CMD_REASONS.
#
# What must survive from one command to the next is the command memory,
# made once by the caller (h2p.uplink, at boot) and fixed in size, so that
# a flood of commands cannot grow the heap (RAM: this module, h2p.sign and
# h2p.cmdspec are loaded for commands and dropped after them, hence
# functions): mem = (bytearray(_TABLE_BYTES), array("i", bytes(4 * _N_INTS))).
# - The replay table, _REPLAY_SLOTS slots, one per accepted command until
#   it expires: the first 8 bytes of its signature (a replay is byte for
#   byte the same signed command) in the bytearray; its expiry, and op and
#   outcome (0: free) in the integers.
# - _EXP_FLOOR: a command expiring at or before it (the latest expiry ever
#   pushed out of a full table) is refused "busy": it might have been in
#   there. (The first two integers are the command rate's: h2p.cmdgate,
#   which the caller asks before it calls handle().)
# Replays across reboots: the table does not survive one, so a command
# issued at or before boot_s is refused "issued before boot". The caller
# sets boot_s to this boot's wall time once the clock is set, or to the
# latest accepted command that was issued ahead of the pile's clock if that
# is later (after a quick reboot it would still look newer than the boot;
# this handler keeps it in the journal as meta "cmd_floor").
from binascii import unhexlify

from h2p import sign
from h2p.cmdgate import safety
from h2p.cmdspec import CMD_NAMES
from h2p.compat import const

# Accepted commands remembered until they expire. At the rate of
# h2p.cmdgate and `h2pile cmd`'s 30 s lifetime about 35 are alive at once.
_REPLAY_SLOTS = const(40)
_TABLE_BYTES = const(320)  # _REPLAY_SLOTS * 8
_EXP_FLOOR = const(2)
_EXP = const(3)  # _REPLAY_SLOTS expiries, then _REPLAY_SLOTS of op + 1 | outcome << 4
_N_INTS = const(83)  # 3 + 2 * _REPLAY_SLOTS
_SAFETY_SLOTS = const(8)  # slots kept for stop, shutdown, reset: other commands use the rest
# outcomes kept for a repeated ack: ok, refused, error (op not carried out)


def handle(raw, now_s, pile_id, key, targets, mem, peeked=None, retained=False,
           journal=None, boot_s=0, allow_unset_clock=False):
    # One command -> its ack. raw: the payload bytes, or None when it was
    # too large to be read. now_s: Unix time or None (clock not set).
    # peeked: the op h2p.cmdgate let in. key: the pile's command key; a
    # pile without one rejects every command. journal: where "cmd_floor"
    # is written (None: nowhere). boot_s: see above (0: none).
    cid = op = None
    try:
        if not key:
            return _ack(cid, op, 0, "no key")
        d, why = sign.parse(raw)
        if isinstance(d, dict):
            cid = d.get("id")
            op = d.get("op")
            if not (isinstance(cid, str) and len(cid) <= 64):
                cid = None
            if not (isinstance(op, str) and len(op) <= 16):
                op = None
        if retained:  # a retained cmd would run again at every reconnect
            return _ack(cid, op, 0, "retained")
        if why:
            return _ack(cid, op, 0, why)
        tab, n = mem
        safe = safety(op)
        if safety(peeked) and not safe:  # it skipped the rate on a false op
            return _ack(cid, op, 0, "busy")
        why = sign.check(d, key, now_s, pile_id, allow_unset_clock)
        if why:
            return _ack(cid, op, 0, why)
        issued = d["issued"]
        if issued <= boot_s:
            return _ack(cid, op, 0, "issued before boot")
        k = unhexlify(d["sig"])[:8]
        i = tab.find(k)
        while i >= 0 and (i & 7 or not n[_EXP + _REPLAY_SLOTS + (i >> 3)]):
            i = tab.find(k, i + 1)
        if i >= 0:
            f = n[_EXP + _REPLAY_SLOTS + (i >> 3)] >> 4
            a = _ack(cid, op, f == 0, "ok" if f == 0 else ("refused" if f == 1 else "error"))
            a["dup"] = True
            return a
        exp = d["expires"]
        i = -1 if exp <= n[_EXP_FLOOR] else _slot(n, now_s, safe)
        if i < 0:
            return _ack(cid, op, 0, "busy", "replay table full")
        tab[8 * i:8 * i + 8] = k
        n[_EXP + i] = exp
        n[_EXP + _REPLAY_SLOTS + i] = (CMD_NAMES.index(op) + 1) | 2 << 4  # "error" until it ran
        if journal is not None and now_s is not None and issued > now_s:
            # Issued ahead of our clock: after a quick reboot it would still
            # be newer than the boot, so its time is kept.
            journal.set_meta("cmd_floor", issued)
        ok, text = _run(targets, op, d["args"])
        f = 0 if ok else (2 if text.startswith("error: ") else 1)
        n[_EXP + _REPLAY_SLOTS + i] = (CMD_NAMES.index(op) + 1) | f << 4
        if f == 2:
            return _ack(cid, op, 0, "error", text[7:])
        return _ack(cid, op, ok, "ok" if ok else "refused", text)
    except MemoryError:
        return _ack(cid, op, 0, "no memory")
    except Exception as e:  # noqa: BLE001 - an ack, whatever went wrong
        return _ack(cid, op, 0, "error", type(e).__name__)


def _ack(cid, op, ok, why, detail=None):
    # why: a reason (topics_doc.CMD_REASONS), or sign's "<reason>: <detail>"
    i = why.find(": ")
    if i > 0:
        detail = why[i + 2:]
        why = why[:i]
    a = {"id": cid, "op": op, "ok": bool(ok), "reason": why}
    if detail:
        a["detail"] = detail
    return a


def _slot(n, now_s, safety):
    # A free slot for a new command, or -1: expired entries are free; other
    # commands leave _SAFETY_SLOTS for the safety ones; a safety command in a
    # full table pushes out the entry closest to expiring and raises
    # _EXP_FLOOR to its expiry.
    used = 0
    free = old = -1
    for i in range(_REPLAY_SLOTS):
        if n[_EXP + _REPLAY_SLOTS + i]:
            if now_s is not None and n[_EXP + i] + sign.SKEW_S < now_s:
                n[_EXP + _REPLAY_SLOTS + i] = 0
            else:
                used += 1
                if old < 0 or n[_EXP + i] < n[_EXP + old]:
                    old = i
                continue
        if free < 0:
            free = i
    if not safety and used >= _REPLAY_SLOTS - _SAFETY_SLOTS:
        return -1
    if free >= 0:
        return free
    if n[_EXP_FLOOR] < n[_EXP + old]:
        n[_EXP_FLOOR] = n[_EXP + old]
    return old


def _run(targets, op, a):
    # -> (ok, text); text "error: <exception>" if the op raised
    try:
        for t in targets:
            f = getattr(t, op, None)
            if f is not None:
                break
        else:
            raise AttributeError(op)
        if op == "start":
            r = f(a.get("auth"), a.get("limit_a"), a.get("cap_kwh"), a.get("cap_min"))
        elif op == "set_limit":
            r = f(a["amps"])
        else:
            r = f()
        return bool(r[0]), r[1] or ""
    except Exception as e:  # noqa: BLE001
        return False, "error: " + type(e).__name__
