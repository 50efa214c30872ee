"""docs/mqtt.md from firmware/h2p/topics.py (the contract) and topics_doc.py
(what it means): one of the generators of `h2pile docs` (host_tools/docs.py).

    h2pile docs --print mqtt.md     print it
    h2pile docs --write             rewrite it (with every other generated doc)
"""

from __future__ import annotations

from collections.abc import Sequence

from h2p import cmdgate, cmdhandler, sign, topics, topics_doc
from host_tools.docs import HEADER, md_table


def _fields(title: str, fields: Sequence[Sequence[object]]) -> list[str]:
    return ["", "### " + title, ""] + md_table(("field", "type", "meaning"), fields)


def _roles() -> list[str]:
    # From the table the broker ACL is generated from (h2pile broker-config).
    from host_tools.broker_config import OWN, ROLES

    L = ["", "## Who may publish what", "",
         "`h2pile broker-config` gives every broker account one role, and the ACL it writes lets "
         "a role reach only these topics (`%s` = the pile's own id; `+` = any pile; the table is "
         "`ROLES` in `host_tools/broker_config.py`). The broker acknowledges a publish outside "
         "them and drops it, and delivers no message outside them. `bill/ack` comes only from "
         "the ledger: a pile deletes a bill from its flash once it is acknowledged." % OWN, ""]
    rows = []
    for role, (who, rules) in ROLES.items():
        pub = ", ".join("`%s`" % f for a, f in rules if a == "write") or "-"
        read = ", ".join("`%s`" % f for a, f in rules if a == "read") or "-"
        rows.append(("`%s`" % role, who, pub, read))
    return L + md_table(("role", "account", "publishes", "reads"), rows)


def render() -> str:
    L = ["# MQTT contract (generated)", "",
         HEADER % "firmware/h2p/topics.py", "",
         "All topics live under `%s<pile_id>/`. A pile id is 1-%d letters, digits, "
         "`_` or `-`. The pile logs in with user name = pile id." % (topics.PREFIX, topics.PILE_ID_MAX),
         "", "## Topics", ""]
    rows = []
    for t in topics.TOPICS:
        rows.append(("`%s`" % t[topics.T_NAME],
                     "pile -> broker" if t[topics.T_DIR] == "pub" else "broker -> pile",
                     t[topics.T_QOS], "yes" if t[topics.T_RETAIN] else "no", topics_doc.TOPIC_DOC[t[0]]))
    L += md_table(("topic", "direction", "QoS", "retained", "content"), rows)
    L += _roles()
    L += ["", "## Every pile message", "",
          "JSON object. Every message the pile publishes carries:"]
    L += _fields("stamp", topics_doc.STAMP_FIELDS)
    L += _fields("status", topics_doc.STATUS_FIELDS)
    L += _fields("meta", topics_doc.META_FIELDS)
    L += _fields("state", topics_doc.STATE_FIELDS)
    L += ["", "### tele", "",
          "A tele message is sent when a field moves by more than its deadband, and "
          "at least every %d s." % topics.TELE_MAX_INTERVAL_S, ""]
    L += md_table(("field", "unit", "deadband", "meaning"), topics_doc.TELE_FIELDS)
    L += _fields("evt", topics_doc.EVT_FIELDS)
    L += _fields("cmd/ack", topics_doc.ACK_FIELDS)
    L += ["", "## Commands", "",
          "A command is a JSON object on `cmd`, at most %d bytes, signed with the "
          "pile's command key (`h2pile keys`):" % sign.MAX_CMD_BYTES, ""]
    L += md_table(("field", "type", "meaning"), topics_doc.CMD_FIELDS)
    L += ["",
          "`sig` = hex HMAC-SHA256 over a canonical encoding (see `firmware/h2p/sign.py`): "
          "`h2pile-cmd/1:` followed by length-prefixed fields `LEN:VALUE,` for pile, id, op, "
          "issued, expires, nonce, then each argument name and value in sorted name order; "
          "strings as `s<text>`, booleans `b1`/`b0`, numbers `n<round(x*1000)>`.",
          "",
          "The pile answers every command that reaches it on `cmd/ack`, whatever its size "
          "or shape, with one of the reasons below. It rejects a command that is not JSON, "
          "too large, has missing fields or wrong types, an unknown op, bad arguments, another "
          "pile's id, a bad signature, `expires - issued` over %d s, `now > expires`, "
          "`issued > now + %d s` (clock skew), or arrives while the pile's clock was never "
          "set (`clock not set`)." % (sign.MAX_TTL_S, sign.SKEW_S),
          ""]
    L += md_table(("reason", "meaning"), [("`%s`" % r, d) for r, d in topics_doc.CMD_REASONS])
    L += ["", "### Guarantees", "",
          "- **Bounded.** The pile's command memory is allocated once at boot and never grows: "
          "a replay table of %d accepted commands and a rate limiter. Commands other than %s "
          "are accepted at up to %d in a burst, then one per %d ms of the pile's clock; beyond "
          "that the ack says `busy`. %s are never refused for the rate, and %d slots of the "
          "replay table are kept for them."
          % (cmdhandler._REPLAY_SLOTS, _ops(topics_doc.SAFETY_OPS), cmdgate.CMD_BURST,
             cmdgate.CMD_INTERVAL_MS, _ops(topics_doc.SAFETY_OPS).capitalize(),
             cmdhandler._SAFETY_SLOTS),
          "- **Never run twice.** A command is remembered by its signature until it expires "
          "(plus the skew): a repeated delivery (a QoS 1 redelivery, a replay) is not run again; "
          "its first ok and reason are repeated with `dup: true`. A full table refuses new "
          "commands (`busy`, detail `replay table full`) rather than forgetting one; a safety "
          "command in a full table pushes out the entry closest to expiring, and from then on "
          "no command expiring at or before that one is accepted.",
          "- **Across reboots.** The replay table lives in RAM, so the pile refuses every "
          "command issued at or before its boot (`issued before boot`): once the clock is set "
          "it works out the boot's Unix time from its uptime. A command issued ahead of the "
          "pile's clock (within the skew) could still look newer than a quick reboot, so when "
          "such a command is accepted its `issued` is kept in the journal (meta `cmd_floor`, "
          "one small record) and the floor after a reboot is the later of the two. Chosen "
          "over writing every accepted command to flash: no flash wear in normal operation, "
          "and the cost is that a command signed while the pile was rebooting must be signed "
          "again.",
          "- **Retained.** A command delivered with the retain flag is refused (`retained`): "
          "it would otherwise run again at every reconnect. Clear it with an empty retained "
          "message.",
          ""]
    for c in topics.CMD_OPS:
        L += ["### `%s`" % c[0], "", topics_doc.CMD_DOC[c[0]], ""]
        if c[0] == "start":
            L += [_CAPS, ""]
        if c[1]:
            rows = []
            for a in c[1]:
                rng = ("%s..%s" % (a[topics.A_LO], a[topics.A_HI])) if a[topics.A_TYPE] == "num" \
                    else ("%s..%s bytes" % (a[topics.A_LO], a[topics.A_HI]))
                rows.append(("`%s`" % a[0], a[1], "yes" if a[2] else "no", rng,
                             topics_doc.ARG_DOC[(c[0], a[0])]))
            L += md_table(("arg", "type", "required", "range", "meaning"), rows)
        else:
            L.append("No arguments.")
        L.append("")
    L += _reasons()
    return "\n".join(L)


# What a start command's caps do (h2p.app, h2p.session).
_CAPS = ("A start command may carry a sponsor's terms for the session it starts: `auth` (bills as "
         "`sponsor:<name>:<reference>`, the ledger settles per name), `cap_kwh` and `cap_min`. The pile "
         "holds the session to them itself: the energy is measured on the billing meter's energy register, "
         "the one the bill is made from, and the current is tapered over the last seconds (from the meter's "
         "voltage and power), so the bill ends a few Wh under the cap and never more than one poll cycle's "
         "energy over it (a meter that gives no voltage: the first energy reading past the cap stops it); "
         "the time is "
         "measured on the pile's clock from the session's start. The session then stops with reason "
         "`energy_cap` or `time_cap`; the bill of a session with caps carries `cap_kwh` and `cap_min` (null "
         "for one not given). The "
         "caps apply to the sessions this command starts (with `auto_charge`, the next ones too, like "
         "`auth`); a later start command sets new terms.")


def _reasons() -> list[str]:
    return (["## Why a session ended", "",
             "The bill's `reason` (`h2p.session.REASONS`; `h2pile ledger ingest` refuses a bill with "
             "any other). The `session_stop` event's `b` is the supervisor's own cause, which the bill's "
             "flags keep as `cause:<what>` where the reason is less precise (`fault`):", ""]
            + md_table(("reason", "meaning"), [("`%s`" % r, d) for r, d in topics_doc.STOP_REASONS]) + [""])


def _ops(ops: tuple[str, ...]) -> str:
    return ", ".join("`%s`" % o for o in ops[:-1]) + " and `%s`" % ops[-1]
