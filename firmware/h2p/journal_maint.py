# The journal's rarely run work (h2p.journal): the scan and repair at
# open(), compaction, the recovery of the sessions a reset left open
# (SessionRecorder.recover, h2p.session), and the listings tests and host
# tools use.
#
# RAM: imported on demand and dropped after use (Journal._maint,
# SessionRecorder.recover); it runs at boot or when the file is nearly full,
# never per control step.
#
# Compaction walks the record headers only: a record is live if the RAM
# index points at it (open sessions' OPEN and latest CKPT, unacknowledged
# CLOSEs, latest META per key), or if its type is unknown to this firmware.
# Any other CLOSE and every ACK belong to acknowledged sessions: those are
# kept newest first while the file stays under 3/4 of max_bytes. They are
# dropped as a prefix of the file, so an ACK (always written after its
# CLOSE) is never dropped while its CLOSE is kept; an ACK may outlive its
# CLOSE until the next compaction, which is harmless on replay.
import os
import json
import struct

from h2p.compat import const
from h2p.journal import ACK, CLOSE, LOC_LEN, LOC_SHIFT, MAGIC, META, OPEN, JournalFull, crc32

_fsync = getattr(os, "fsync", None)  # CPython only; MicroPython flush() syncs

_HDR_LEN = const(10)
_SCAN = const(64)  # resync read size
_COPY = const(256)  # copy buffer of a rewrite

# what a rewrite does with a record
_KEEP = const(0)
_DROP = const(1)
_ACKED = const(2)  # part of an acknowledged session: kept while it fits


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    return path[:i] or "/"


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
        _rewrite(j, 0, None, garbage)  # keeps every acknowledged session
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
                    j._index((pos << LOC_SHIFT) | total, rtype, body.get("id"))
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
        i = chunk.find(MAGIC)
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
    if magic != MAGIC or n > max_body or pos + _HDR_LEN + n > size:
        return None
    body = f.read(n)
    if len(body) != n or crc32(body, crc32(h[2:6], 0)) != crc:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    return _HDR_LEN + n, rtype, obj


def _records(f, size, garbage):
    # (loc, type) of every record up to size, in file order, read from the
    # headers alone: the file holds valid records only, but for the garbage
    # runs open() found, which are skipped.
    pos = 0
    g = 0
    while pos < size:
        if g < len(garbage) and garbage[g][0] == pos:
            pos += garbage[g][1]
            g += 1
            continue
        f.seek(pos)
        h = f.read(6)  # magic, type, flags, body length
        total = _HDR_LEN + (h[4] | (h[5] << 8))
        yield (pos << LOC_SHIFT) | total, h[2]
        pos += total


def _live(j):
    # locs the RAM index points at, in file order
    live = []
    for o in j._open.values():
        live.append(o[0])
        if o[1] is not None:
            live.append(o[1])
    for loc in j.unacked.values():
        live.append(loc)
    for loc in j._meta.values():
        live.append(loc)
    live.sort()
    return live


def _kind(loc, rtype, live, forced):
    if loc == forced:
        return _DROP
    if loc in live or rtype < OPEN or rtype > META:
        return _KEEP  # indexed, or a type this firmware does not know
    if rtype == CLOSE or rtype == ACK:
        return _ACKED
    return _DROP  # a superseded OPEN, CKPT or META


# ------------------------------------------------------------ compaction
def compact(j, need=0, acked_sid=None):
    """Rewrite the file without superseded records and, oldest first,
    acknowledged sessions, until size + need fits under the low-water
    mark (3/4 of max_bytes). Raises JournalFull if even then size + need >
    max_bytes. acked_sid: a closed session acknowledged now (no room for
    its ACK record): its CLOSE is dropped for sure. Returns True if the
    file was rewritten."""
    forced = None
    if acked_sid is not None:
        forced = j.unacked.pop(acked_sid)
    live = _live(j)
    kept = 0  # bytes kept for sure
    acked = 0  # bytes of acknowledged sessions
    dropped = 0  # records dropped for sure
    with open(j.path, "rb") as f:
        for loc, rtype in _records(f, j.size, ()):
            k = _kind(loc, rtype, live, forced)
            if k == _KEEP:
                kept += loc & LOC_LEN
            elif k == _ACKED:
                acked += loc & LOC_LEN
            else:
                dropped += 1
    if kept + need > j.max_bytes:
        raise JournalFull(
            "journal full: %d bytes unacknowledged/open, %d needed, limit %d" % (kept, need, j.max_bytes)
        )
    # the oldest acknowledged bytes to drop so that the rest fits
    skip = acked - (j.max_bytes * 3 // 4 - kept - need)
    if skip <= 0:
        if not dropped:
            return False
        skip = 0
    _rewrite(j, skip, forced, ())
    j.compactions += 1
    return True


def _rewrite(j, skip, forced, garbage):
    # Copy the records to keep into path.tmp, then replace the file with it
    # and move the RAM index to the new offsets. skip: bytes of acknowledged
    # sessions to drop, oldest first (whole records).
    live = _live(j)
    moved = {}  # old loc -> new loc of every indexed record
    tmp = j.path + ".tmp"
    buf = bytearray(_COPY)
    mv = memoryview(buf)
    new = 0
    with open(j.path, "rb") as src:
        with open(tmp, "wb") as dst:
            for loc, rtype in _records(src, j.size, garbage):
                k = _kind(loc, rtype, live, forced)
                total = loc & LOC_LEN
                if k == _DROP:
                    continue
                if k == _ACKED and skip > 0:
                    skip -= total
                    continue
                src.seek(loc >> LOC_SHIFT)
                left = total
                while left:
                    got = src.readinto(mv[: min(left, _COPY)])
                    if not got:
                        raise OSError("journal shorter than its index")
                    dst.write(mv[:got])
                    left -= got
                if k == _KEEP and loc in live:
                    moved[loc] = (new << LOC_SHIFT) | total
                new += total
            dst.flush()
            if _fsync is not None:
                _fsync(dst.fileno())
    try:
        os.rename(tmp, j.path)
    except OSError:
        # FAT cannot rename over an existing file; open() finishes the
        # job if power is lost between these two calls.
        os.remove(j.path)
        os.rename(tmp, j.path)
    if _fsync is not None:  # make the rename durable (CPython/POSIX)
        try:
            fd = os.open(_dirname(j.path), os.O_RDONLY)
            try:
                _fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    j.size = new
    for o in j._open.values():
        o[0] = moved[o[0]]
        if o[1] is not None:
            o[1] = moved[o[1]]
    for index in (j.unacked, j._meta):
        for key in index:
            index[key] = moved[index[key]]


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
            for loc, rtype in _records(f, j.size, ()):
                if rtype == CLOSE or rtype == ACK:
                    f.seek((loc >> LOC_SHIFT) + _HDR_LEN)
                    sid = json.loads(f.read((loc & LOC_LEN) - _HDR_LEN)).get("id")
                    (closed if rtype == CLOSE else acked).add(sid)
    return sorted(closed & acked)


def stats(j):
    n = 0
    if j.size:
        with open(j.path, "rb") as f:
            for _ in _records(f, j.size, ()):
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
