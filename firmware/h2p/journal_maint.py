# The journal's rarely run work at boot (h2p.journal): the scan and repair
# at open(), the recovery of the sessions a reset left open
# (SessionRecorder.recover, h2p.session), and the listings tests and host
# tools use. Compaction, which may run while the pile charges, is apart in
# h2p.journal_compact (small, as a module loaded at the heap's fullest must
# be); the repair here rewrites the file with its rewrite().
#
# RAM: imported on demand and dropped after use (Journal._maint,
# SessionRecorder.recover); it runs at boot, never per control step.
import os
import json
import struct

from h2p.compat import const
from h2p import journal as J
from h2p.journal_compact import records, rewrite

_HDR_LEN = const(10)
_SCAN = const(64)  # resync read size


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ open
def load(j):
    # Journal.open()
    have = _exists(j.path)
    tmp = j.path + ".tmp"
    if _exists(tmp):
        if have:
            os.remove(tmp)  # a compaction that did not finish
        else:
            os.rename(tmp, j.path)  # unlink+rename was cut short
    torn, garbage, n = _scan(j)
    repaired = False
    if torn or garbage:
        rewrite(j, 0, None, garbage)  # keeps every acknowledged session
        repaired = True
    return {
        "records": n,
        "torn_bytes": torn,
        "garbage": garbage,
        "repaired": repaired,
        "size": j.size,
    }


def _scan(j):
    # Rebuild the RAM index from the file. -> (torn bytes, garbage, records)
    j._open.clear()
    j.unacked.clear()
    j._meta.clear()
    try:
        size = os.stat(j.path)[6]
    except OSError:
        size = 0
    j.size = size
    garbage = []
    n = 0
    bad_at = -1  # start of the current run of bad bytes
    pos = 0
    if size:
        with open(j.path, "rb") as f:
            while pos < size:
                got = _read_rec(f, pos, size, j.max_body)
                if got is not None:
                    if bad_at >= 0:
                        garbage.append((bad_at, pos - bad_at))
                        bad_at = -1
                    total, rtype, body = got
                    j._index((pos << J.LOC_SHIFT) | total, rtype, body.get("id"))
                    n += 1
                    pos += total
                    continue
                if bad_at < 0:
                    bad_at = pos
                pos = _resync(f, pos + 1)
    torn = 0
    if bad_at >= 0:
        torn = size - bad_at
        j.size = bad_at
    return torn, garbage, n


def _resync(f, pos):
    # offset of the next magic at or after pos, or EOF
    while True:
        f.seek(pos)
        chunk = f.read(_SCAN)
        i = chunk.find(J.MAGIC)
        if i >= 0:
            return pos + i
        if len(chunk) < _SCAN:
            return pos + len(chunk)
        pos += _SCAN - 1  # the magic may straddle two chunks


def _read_rec(f, pos, size, max_body):
    # -> (total, type, body dict) if a valid record starts at pos, else None
    if size - pos < _HDR_LEN:
        return None
    f.seek(pos)
    h = f.read(_HDR_LEN)
    magic, rtype, flags, n, crc = struct.unpack("<2sBBHI", h)
    if magic != J.MAGIC or n > max_body or pos + _HDR_LEN + n > size:
        return None
    body = f.read(n)
    if len(body) != n or J.crc32(body, J.crc32(h[2:6], 0)) != crc:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    sid = obj.get("id")
    if isinstance(sid, list) or isinstance(sid, dict):
        return None  # no record this firmware wrote (an id is a key of the index)
    return _HDR_LEN + n, rtype, obj


# ------------------------------------------------------ session recovery
def recover(j, rec, now, meter_wh, premix_l, reason):
    # rec: the SessionRecorder over journal j. Closes each open session with
    # the energy of its last checkpoint, plus the meter advance since that
    # checkpoint when the meter is readable now and the advance is plausible.
    out = []
    limit_s = j.checkpoint_interval_s + 10
    for op, ck in open_sessions(j):
        st, stop_stamp = _state_from(op, ck)
        flags = st["flags"]
        flags.append("recovered")
        m = st["m"]
        if meter_wh is not None and m is not None:
            d = meter_wh - m
            if 0 <= d <= rec.max_power_w * limit_s / 3600 + 1:
                st["e"] += d
                st["m"] = meter_wh
                flags.append("meter_at_boot")
            else:
                flags.append("meter_mismatch_at_boot")
        pm = st["pm"]
        if premix_l is not None and pm is not None:
            d = premix_l - pm
            if 0 <= d <= 1:
                st["p"] += d
        r = rec._record(st, stop_stamp, reason)
        j.close_session(r)
        out.append(r)
        if rec.on_close is not None:
            rec.on_close(r)
    return out


def _state_from(op, ck):
    # The state of a session as its OPEN and latest CKPT records left it
    # (the keys SessionRecorder._record reads), and the time of that
    # checkpoint (the stop time of the recovered session).
    st = {
        "id": op["id"],
        "start": op.get("start"),
        "token": op.get("token"),
        "soc0": op.get("soc0"),
        "soc1": op.get("soc0"),
        "m0": op.get("meter0"),
        "m": op.get("meter0"),
        "pm": op.get("premix0"),
        "e": 0.0,
        "ep": 0.0,
        "p": 0.0,
        "pk": 0,
        "dur": 0,
        "flags": [],
        "cap": op.get("cap"),
    }
    ts = op.get("start")
    if ck is not None:
        st["e"] = ck.get("e", 0.0)
        st["ep"] = ck.get("ep", 0.0)
        st["p"] = ck.get("p", 0.0)
        st["pk"] = ck.get("pk", 0)
        st["m"] = ck.get("m")
        if ck.get("m0") is not None:
            st["m0"] = ck.get("m0")
        st["pm"] = ck.get("pm")
        st["soc1"] = ck.get("soc1")
        ts = ck.get("ts")
        st["dur"] = ck.get("dur", 0)
        st["flags"] = list(ck.get("fl", []))
        # ("seen", a meter reading came, is "m0" is not None: the recorder
        # sets both together)
    return st, ts


# -------------------------------------------------------------- listings
def listing(j, name):
    # Journal.__getattr__: what only tests and host tools ask for.
    if name == "stats":
        return lambda: stats(j)
    if name == "open_sessions":
        return lambda: open_sessions(j)
    if name == "_acked":
        return acked_ids(j)
    raise AttributeError(name)


def open_sessions(j):
    """[(OPEN body, latest CKPT body or None)] for sessions not closed."""
    out = []
    for o in j._open.values():
        ck = None if o[1] is None else json.loads(j.record(o[1]))
        out.append((json.loads(j.record(o[0])), ck))
    return out


def acked_ids(j):
    """Ids of the acknowledged sessions (CLOSE and ACK) in the file, sorted."""
    closed, acked = set(), set()
    if j.size:
        with open(j.path, "rb") as f:
            for loc, rtype in records(f, j.size, ()):
                if rtype == J.CLOSE or rtype == J.ACK:
                    f.seek((loc >> J.LOC_SHIFT) + _HDR_LEN)
                    sid = json.loads(f.read((loc & J.LOC_LEN) - _HDR_LEN)).get("id")
                    (closed if rtype == J.CLOSE else acked).add(sid)
    return sorted(closed & acked)


def stats(j):
    n = 0
    if j.size:
        with open(j.path, "rb") as f:
            for _ in records(f, j.size, ()):
                n += 1
    return {
        "size": j.size,
        "max_bytes": j.max_bytes,
        "records": n,
        "open": len(j._open),
        "unacked": len(j.unacked),
        "acked": len(acked_ids(j)),
        "writes": j.writes,
        "compactions": j.compactions,
    }
