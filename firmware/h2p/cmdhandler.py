# Turns a raw command message into an ack dict. Verification is h2p.sign's;
# the effect is delegated to target objects, which between them have methods
#   start(auth, limit_a), stop(), set_limit(amps), reset(), shutdown(),
#   wake(), resend_meta()
# each returning (ok, reason); the first target that has the op's method
# runs it (on the pile: the supervisor, then the uplink for resend_meta).
# The ack is published on cmd/ack by the app:
#   {"id", "op", "ok", "reason"} (+ "dup": true when an already accepted
#   command arrives again, e.g. a QoS 1 redelivery: the first ack is repeated
#   and the command is NOT executed twice).
#
# On the pile this module (with h2p.sign and h2p.cmdspec) is imported when a
# command arrives and dropped again after it (h2p.uplink): commands are rare
# and verification is the biggest code of the MQTT side. What must survive
# from one command to the next is only the replay cache's entries, a plain
# list the caller keeps and passes as `replay`; hence functions, not a
# handler object.
import json

from h2p import sign


def handle(raw, now_s, pile_id, key, targets, replay, allow_unset_clock=False):
    # One command -> its ack. targets: a tuple of objects (see above).
    # replay: the replay cache's entries, a list the caller keeps from one
    # command to the next (h2p.sign.verify_command). key: the pile's command
    # key; a pile without one rejects every command.
    if not key:
        return {"id": None, "op": None, "ok": False, "reason": "no command key provisioned"}
    cmd, reason = sign.verify_command(raw, key, now_s, replay, pile_id, allow_unset_clock)
    if cmd is None:
        cid, op = _peek(raw)
        if reason == "replayed" and cid is not None:
            for e in replay:  # [id, nonce, expires, ack]
                if e[0] == cid and e[3] is not None:
                    ack = dict(e[3])  # the first ack again
                    ack["dup"] = True
                    return ack
        return {"id": cid, "op": op, "ok": False, "reason": reason}
    ok, reason = _run(targets, cmd["op"], cmd["args"])
    ack = {"id": cmd["id"], "op": cmd["op"], "ok": bool(ok), "reason": reason or ("ok" if ok else "failed")}
    replay[-1][3] = ack  # verify_command appended its entry
    return dict(ack)


def _run(targets, op, a):
    try:
        for t in targets:
            f = getattr(t, op, None)
            if f is not None:
                break
        else:
            raise AttributeError(op)
        if op == "start":
            return f(a.get("auth"), a.get("limit_a"))
        if op == "set_limit":
            return f(a["amps"])
        return f()
    except Exception as e:
        return False, "error: " + type(e).__name__


def _peek(raw):
    # best effort (id, op) of a rejected command, for the ack
    try:
        d = json.loads(raw)
        cid = d.get("id")
        op = d.get("op")
        return (cid if isinstance(cid, str) and len(cid) <= 64 else None,
                op if isinstance(op, str) and len(op) <= 16 else None)
    except Exception:
        return None, None
