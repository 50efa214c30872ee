# Turns a raw command message into an ack dict. Verification is h2p.sign's;
# the effect is delegated to a target object with methods
#   start(auth, limit_a), stop(), set_limit(amps), reset(), shutdown(),
#   wake(), resend_meta()
# each returning (ok, reason). The ack is published on cmd/ack by the app:
#   {"id", "op", "ok", "reason"} (+ "dup": true when an already accepted
#   command arrives again, e.g. a QoS 1 redelivery: the first ack is repeated
#   and the command is NOT executed twice).
import json

from h2p import sign


class CommandHandler:
    def __init__(self, pile_id, key, target, cache_size=32, allow_unset_clock=False):
        self.pile_id = pile_id
        self.key = sign.key_bytes(key)
        self.target = target
        self.cache = sign.ReplayCache(cache_size)
        self.allow_unset_clock = allow_unset_clock
        self.accepted = 0
        self.rejected = 0

    def handle(self, raw, now_s):
        cmd, reason = sign.verify_command(
            raw, self.key, now_s, self.cache, self.pile_id, self.allow_unset_clock)
        if cmd is None:
            cid, op = _peek(raw)
            if reason == "replayed" and cid is not None:
                prev = self.cache.ack(cid)
                if prev is not None:
                    ack = dict(prev)
                    ack["dup"] = True
                    return ack
            self.rejected += 1
            return {"id": cid, "op": op, "ok": False, "reason": reason}
        ok, reason = self._run(cmd["op"], cmd["args"])
        if ok:
            self.accepted += 1
        else:
            self.rejected += 1
        ack = {"id": cmd["id"], "op": cmd["op"], "ok": bool(ok), "reason": reason or ("ok" if ok else "failed")}
        self.cache.set_ack(cmd["id"], ack)
        return dict(ack)

    def _run(self, op, a):
        t = self.target
        try:
            if op == "start":
                return t.start(a.get("auth"), a.get("limit_a"))
            if op == "set_limit":
                return t.set_limit(a["amps"])
            return getattr(t, op)()
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
