"""The session record as the ledger accepts it: validation (every rejection
with its reason), the canonical text duplicates are compared by, and the
sponsor a record bills. No I/O: host_tools.ledger_db stores what passes."""

from __future__ import annotations

import json
import re

from h2p import topics
from h2p.session import REASONS

NO_SPONSOR = "-"
ENVELOPE_KEYS = ("seq", "boot")  # per-message stamps, not part of the record

# the start command's caps, as a bill carries them: their ranges are the command's (h2p.cmdspec)
_CAP_RANGE = {a[1]: (a[4], a[5]) for a in topics.CMD_ARGS if a[0] == "start" and a[1] in ("cap_kwh", "cap_min")}
_STAMP_RE = re.compile(r"^boot:\d{1,10}\+\d{1,12}$")
_EPOCH_MIN = 1_600_000_000
_EPOCH_MAX = 4_102_444_800  # 2100-01-01


def sponsor_of(token: object) -> str:
    """'sponsor:<name>:<ref>' -> name; anything else -> '-'."""
    if isinstance(token, str) and token.startswith("sponsor:"):
        parts = token.split(":", 2)
        if len(parts) == 3 and parts[1]:
            return parts[1]
    return NO_SPONSOR


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _check_num(rec: dict, key: str, lo: float, hi: float, required: bool = True) -> str | None:
    v = rec.get(key)
    if v is None:
        if required:
            return "missing %s" % key
        return None
    if not _num(v):
        return "%s must be a number, got %r" % (key, v)
    if not lo <= v <= hi:
        return "%s=%r out of range %s..%s" % (key, v, lo, hi)
    return None


def _check_stamp(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    if isinstance(v, bool):
        return "%s must be epoch seconds or 'boot:N+S', got %r" % (key, v)
    if isinstance(v, int):
        if not _EPOCH_MIN <= v <= _EPOCH_MAX:
            return "%s=%r is not a plausible epoch time" % (key, v)
        return None
    if isinstance(v, str) and _STAMP_RE.match(v):
        return None
    return "%s must be epoch seconds or 'boot:N+S', got %r" % (key, v)


def _plain_text(s: str) -> bool:
    # The token goes into a TEXT column of its own: PostgreSQL refuses NUL,
    # and a lone surrogate (JSON "\ud800") is not encodable at all.
    return not any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in s)


def validate(topic_pile: str, rec: object) -> str | None:
    """Return None if rec is a valid v1 session record from topic_pile,
    else the reason it is not."""
    if not isinstance(rec, dict):
        return "record is not a JSON object"
    if rec.get("v") != 1:
        return "unsupported schema version v=%r (expected 1)" % (rec.get("v"),)
    pile = rec.get("pile")
    if pile != topic_pile:
        return "pile %r does not match the topic's pile %r" % (pile, topic_pile)
    sid = rec.get("id")
    if not isinstance(sid, str) or not re.match(r"^%s-\d{5,10}-\d{3,6}$" % re.escape(pile), sid):
        return "id %r is not '<pile>-<boot>-<seq>'" % (sid,)
    if "idem" in rec and rec["idem"] != sid:
        return "idempotency id %r differs from id %r" % (rec["idem"], sid)
    for key in ("start", "stop"):
        err = _check_stamp(rec, key)
        if err:
            return err
    if isinstance(rec["start"], int) and isinstance(rec["stop"], int) and rec["stop"] < rec["start"]:
        return "stop %d is before start %d" % (rec["stop"], rec["start"])
    for key, lo, hi, req in (
        ("energy_wh", 0, 1_000_000, True),
        ("premix_l", 0, 1_000, True),
        ("peak_w", 0, 1_000_000, False),
        ("soc0", 0, 100, False),
        ("soc1", 0, 100, False),
        ("dur_s", 0, 10 * 86400, False),
        ("meter0", -1e12, 1e12, False),
        ("meter1", -1e12, 1e12, False),
    ):
        err = _check_num(rec, key, lo, hi, req)
        if err:
            return err
    for key in ("cap_kwh", "cap_min"):
        err = _check_num(rec, key, *_CAP_RANGE[key], required=False)
        if err:
            return err
    if rec.get("reason") not in REASONS:
        return "reason %r not one of %s" % (rec.get("reason"), ", ".join(REASONS))
    tok = rec.get("token")
    if tok is not None and (not isinstance(tok, str) or len(tok) > 256):
        return "token must be a string of at most 256 characters"
    if tok is not None and not _plain_text(tok):
        return "token %r has control characters or unpaired surrogates" % (tok,)
    fl = rec.get("flags", [])
    if not isinstance(fl, list) or not all(isinstance(f, str) for f in fl):
        return "flags must be a list of strings"
    return None


def canonical(rec: dict) -> str:
    """The record without its envelope, as compact sorted JSON: two copies of
    one bill are the same bill exactly when these texts are equal."""
    body = {k: v for k, v in rec.items() if k not in ENVELOPE_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
