"""h2p.cmdhandler: one ack per command, whatever its shape; a fixed command
memory that a flood cannot grow; the rate limit and safety commands; replays
after a reboot."""
import json
import tracemalloc
from array import array

import pytest

from h2p import cmdgate, cmdhandler, keys, signer, uplink
from h2p.cmdspec import CMD_NAMES
from h2p.topics_doc import CMD_REASONS, SAFETY_OPS

REASONS = [r[0] for r in CMD_REASONS]
CMD_BURST = cmdgate.CMD_BURST
CMD_INTERVAL_MS = cmdgate.CMD_INTERVAL_MS
REPLAY_SLOTS = cmdhandler._REPLAY_SLOTS

KEY = keys.cmd_key("fleet-secret", "P1")
NOW = 1800000000


def fresh(op="set_limit", args=None, now=NOW, ttl_s=60, **kw):
    return signer.sign_command(op, {"amps": 32} if args is None and op == "set_limit" else (args or {}),
                               KEY, now, ttl_s=ttl_s, pile="P1", **kw)


def raw(cmd):
    return json.dumps(cmd).encode()


class Target:
    def __init__(self):
        self.calls = []

    def start(self, auth, limit_a, cap_kwh, cap_min):
        self.calls.append(("start", auth, limit_a, cap_kwh, cap_min))
        return True, ""

    def stop(self):
        self.calls.append(("stop",))
        return True, ""

    def shutdown(self):
        self.calls.append(("shutdown",))
        return False, "pile is in fault"

    def set_limit(self, amps):
        self.calls.append(("set_limit", amps))
        return True, None

    def reset(self):
        raise RuntimeError("boom")


class Journal:
    def __init__(self):
        self.meta = {}

    def set_meta(self, k, v):
        self.meta[k] = v


def memory():
    return bytearray(cmdhandler._TABLE_BYTES), array("i", bytes(4 * cmdhandler._N_INTS))


class Pile:
    """The handler with its memory, as h2p.uplink keeps it."""

    def __init__(self, boot_s=0):
        self.t = Target()
        self.mem = memory()
        self.j = Journal()
        self.boot_s = boot_s

    def __call__(self, r, now=NOW, now_ms=0, retained=False, key=KEY):
        # the rate at the door (h2p.cmdgate), then the handler
        op = cmdgate.peek(r, b'"op"')
        if r is not None and not cmdgate.admit(self.mem[1], now_ms, op):
            a = {"id": cmdgate.peek(r, b'"id"'), "op": op, "ok": False, "reason": "busy"}
        else:
            a = cmdhandler.handle(r, now, "P1", key, (self.t,), self.mem, op, retained, self.j, self.boot_s)
        assert a["reason"] in REASONS, a
        return a


def test_uplink_allocates_what_the_handler_uses():
    assert uplink._CMD_TABLE == cmdhandler._TABLE_BYTES == REPLAY_SLOTS * 8
    assert cmdhandler._N_INTS == 3 + 2 * REPLAY_SLOTS
    # the uplink keeps its own integers after the handler's
    assert uplink._CMD_INTS > min(uplink._U_T0, uplink._U_BOOT, uplink._U_FLOOR) \
        >= cmdhandler._N_INTS


def test_accepted_and_carried_out():
    h = Pile()
    c = fresh("start", {"auth": "tok", "limit_a": 50, "cap_kwh": 2.5, "cap_min": 30})
    assert h(raw(c)) == {"id": c["id"], "op": "start", "ok": True, "reason": "ok"}
    assert h.t.calls == [("start", "tok", 50, 2.5, 30)]
    a = h(raw(fresh("set_limit", {"amps": 10})), now_ms=CMD_INTERVAL_MS)
    assert a["ok"] and a["reason"] == "ok" and h.t.calls[-1] == ("set_limit", 10)


def test_redelivery_repeats_the_first_ack_and_runs_once():
    h = Pile()
    c = fresh("start", {"auth": "tok"})
    h(raw(c))
    a2 = h(raw(c), NOW + 1)
    assert a2 == {"id": c["id"], "op": "start", "ok": True, "reason": "ok", "dup": True}
    assert len(h.t.calls) == 1
    # a refused command's redelivery repeats its refusal, not run again
    s = fresh("shutdown")
    assert h(raw(s))["reason"] == "refused"
    assert h(raw(s)) == {"id": s["id"], "op": "shutdown", "ok": False, "reason": "refused", "dup": True}
    assert h.t.calls.count(("shutdown",)) == 1


def test_target_refusals_and_errors_are_fixed_reasons_with_detail():
    h = Pile()
    a = h(raw(fresh("shutdown")))
    assert a["reason"] == "refused" and a["detail"] == "pile is in fault" and not a["ok"]
    a = h(raw(fresh("reset")))
    assert a["reason"] == "error" and a["detail"] == "RuntimeError" and not a["ok"]


def _mutated(f):
    c = fresh()
    f(c)
    return raw(c)


BAD = [
    (None, "too large", None),  # the client could not read it (over max_payload)
    (b"{" + b" " * 1100 + b"}", "too large", None),
    (b"[" * 500 + b"]" * 500, "too deep", None),
    (b'{"a": {"b": {"c": {"d": {"e": 1}}}}}', "too deep", None),
    (b"\x00junk", "not json", None),
    (b"[1, 2]", "not json", None),
    (b'"text"', "not json", None),
    (_mutated(lambda c: c.pop("sig")), "missing field", "sig"),
    (_mutated(lambda c: c.update(issued="1800000000")), "wrong types", "issued"),
    (_mutated(lambda c: c.update(op="explode")), "unknown op", None),
    (_mutated(lambda c: c["args"].update(amps=501)), "bad args", "amps out of range"),
    (_mutated(lambda c: c.update(pile="P2")), "wrong pile", None),
    (_mutated(lambda c: c.update(sig="0" * 64)), "bad signature", None),
    (_mutated(lambda c: c["args"].update(amps=33)), "bad signature", None),
    (raw(fresh(now=NOW - 120)), "expired", None),
    (raw(fresh(now=NOW + 120)), "issued in future", None),
]


@pytest.mark.parametrize("r,reason,detail", BAD)
def test_every_bad_command_gets_an_ack_with_a_fixed_reason(r, reason, detail):
    a = Pile()(r)
    assert a["ok"] is False and a["reason"] == reason, a
    assert a.get("detail") == detail
    if r is not None and reason not in ("too large", "too deep", "not json"):
        assert a["id"] == json.loads(r)["id"]  # the sender can match the ack


def test_clock_retained_and_key():
    h = Pile()
    c = raw(fresh())
    assert h(c, now=None)["reason"] == "clock not set"
    a = h(c, retained=True)
    assert a["reason"] == "retained" and a["id"] == json.loads(c)["id"]
    assert h(c, key="")["reason"] == "no key"
    assert h.t.calls == []
    assert h(c)["ok"]  # none of those used it up


def test_deep_nesting_is_refused_without_parsing():
    r = b"[" * 500 + b"]" * 500
    tracemalloc.start()
    a = Pile()(r)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert a["reason"] == "too deep"
    assert peak < 16_000, peak  # a parse would build 500 lists


def test_rate_limit_busy_but_safety_commands_get_through():
    h = Pile()
    acks = [h(raw(fresh(args={"amps": 10 + i})), now_ms=0) for i in range(CMD_BURST + 3)]
    assert [a["reason"] for a in acks] == ["ok"] * CMD_BURST + ["busy"] * 3
    assert len(h.t.calls) == CMD_BURST
    assert acks[-1]["id"] is not None
    # a stop is never "busy"
    assert h(raw(fresh("stop")), now_ms=0)["reason"] == "ok"
    # one more per interval, in pile milliseconds
    assert h(raw(fresh(args={"amps": 7})), now_ms=CMD_INTERVAL_MS - 1)["reason"] == "busy"
    assert h(raw(fresh(args={"amps": 7})), now_ms=CMD_INTERVAL_MS)["reason"] == "ok"


def test_a_flood_does_not_grow_the_memory():
    # 1000 valid commands, as fast as they come (the pile clock moves 1 ms
    # per command), then a stop: the stop is carried out; what the handler
    # keeps is the same two objects of the same size.
    h = Pile()
    cmds = [raw(fresh(args={"amps": i % 400}, cid="f%d" % i)) for i in range(1000)]
    stop = raw(fresh("stop"))
    tab, n = h.mem
    size = (len(tab), len(n))
    h(cmds[0])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    reasons = {}
    for i, c in enumerate(cmds[1:]):
        a = h(c, now_ms=i)
        reasons[a["reason"]] = reasons.get(a["reason"], 0) + 1
    a = None
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert h(stop, now_ms=1000) == {"id": json.loads(stop)["id"], "op": "stop", "ok": True, "reason": "ok"}
    assert h.t.calls[-1] == ("stop",)
    assert (len(tab), len(n)) == size and h.mem[0] is tab
    assert reasons["busy"] >= 990 and reasons["ok"] <= CMD_BURST + 1, reasons
    assert grown < 2048, grown


def test_a_full_replay_table_refuses_others_but_not_safety_commands():
    h = Pile()
    normal = REPLAY_SLOTS - cmdhandler._SAFETY_SLOTS
    t = 0
    for i in range(normal):  # spaced by the rate: all accepted, none expired
        assert h(raw(fresh(args={"amps": i}, ttl_s=300)), now_ms=t)["reason"] == "ok"
        t += CMD_INTERVAL_MS
    a = h(raw(fresh(args={"amps": 1}, ttl_s=300)), now_ms=t)
    assert a["reason"] == "busy" and a["detail"] == "replay table full"
    # stops signed a second apart (the pile's clock is 40 s on)
    stops = [fresh("stop", now=NOW + 1 + i, ttl_s=300) for i in range(REPLAY_SLOTS)]
    assert [h(raw(s), now=NOW + 40, now_ms=t)["reason"] for s in stops] == ["ok"] * REPLAY_SLOTS
    # the table is full: the entry closest to expiring made room, and
    # nothing that expires no later than it can come in any more
    a = h(raw(fresh("stop", now=NOW - 1, ttl_s=299)), now=NOW + 40, now_ms=t)
    assert a["reason"] == "busy" and a["detail"] == "replay table full"
    # once they expired (lifetime + skew) there is room again
    later = NOW + 1 + REPLAY_SLOTS + 300 + 31
    assert h(raw(fresh(now=later)), now=later, now_ms=t + 10 * CMD_INTERVAL_MS)["reason"] == "ok"


def test_no_replay_after_a_reboot():
    # Accepted before the reboot, sent again after it, byte for byte and
    # still within its lifetime: the new boot's memory is empty, the boot
    # time refuses it.
    before = Pile()
    c = raw(fresh("start", {"auth": "tok"}, now=NOW, ttl_s=300))
    assert before(c, now=NOW)["ok"]
    after = Pile(boot_s=NOW + 5)  # rebooted 5 s later
    a = after(c, now=NOW + 20)
    assert a["reason"] == "issued before boot" and after.t.calls == []
    assert after(raw(fresh("start", {"auth": "tok"}, now=NOW + 20)), now=NOW + 21)["ok"]


def test_a_command_from_ahead_of_the_clock_is_remembered_in_the_journal():
    # Issued 20 s ahead of the pile's clock (within the skew): a reboot 5 s
    # later would not make it "before the boot", so its time is kept.
    h = Pile()
    assert h(raw(fresh(now=NOW + 20)), now=NOW)["ok"]
    assert h.j.meta == {"cmd_floor": NOW + 20}
    h(raw(fresh(now=NOW, args={"amps": 5})), now=NOW + 1, now_ms=CMD_INTERVAL_MS)
    assert h.j.meta == {"cmd_floor": NOW + 20}  # on time: nothing written


class Everything:
    def __getattr__(self, op):
        return lambda *a: (True, "")


@pytest.mark.parametrize("op", CMD_NAMES)
def test_only_the_safety_ops_pass_a_spent_rate(op):
    h = Pile()
    h.t = Everything()
    for i in range(CMD_BURST):
        assert h(raw(fresh(args={"amps": i})))["reason"] == "ok"
    args = {"set_limit": {"amps": 3}}.get(op, {})
    a = h(raw(fresh(op, args)))
    assert a["reason"] == ("ok" if op in SAFETY_OPS else "busy"), a


def test_a_command_posing_as_a_stop_does_not_skip_the_rate():
    h = Pile()
    for i in range(CMD_BURST):
        h(raw(fresh(args={"amps": i})))
    c = fresh(args={"amps": 9})
    # an "op" the peek finds first, inside args: the parse finds set_limit
    r = ('{"args": {"op": "stop", "amps": 9}, ' + raw(c).decode()[1:]).encode()
    assert cmdgate.peek(r, b'"op"') == "stop"
    a = h(r)
    assert a["reason"] == "busy" and a["op"] == "set_limit", a
    assert h.t.calls == [("set_limit", i) for i in range(CMD_BURST)]


@pytest.mark.parametrize("r,want", [
    (b'{"op": "stop", "id": "a1"}', ("stop", "a1")),
    (b'{"id":"x","op":"set_limit"}', ("set_limit", "x")),
    (b'{"op": "st\\op"}', (None, None)),  # escapes: no guess
    (b'{"op": 5}', (None, None)),
    (b'{"op": "' + b"x" * 80 + b'"}', (None, None)),
    (b'{"op": "\xff\xfe"}'.decode("unicode_escape").encode("latin-1"), (None, None)),
    (None, (None, None)),
    (b"", (None, None)),
])
def test_peek_guesses_or_says_none(r, want):
    assert (cmdgate.peek(r, b'"op"'), cmdgate.peek(r, b'"id"')) == want
