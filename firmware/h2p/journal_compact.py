# The journal's compaction (h2p.journal), and the rewrite that the repair
# at open() (h2p.journal_maint) shares with it.
#
# RAM: this is the part of the journal's rarely run work that may run while
# the pile charges (an append that does not fit: a checkpoint, a bill's ack,
# the close), when the heap is at its fullest and most fragmented. It is
# imported for the call and dropped after (Journal._maint), so it is kept
# small: few functions and few globals (a module's globals table grows in
# steps of 17, 23, 29, 37 slots; each step is one block of 16 B a slot, and
# at 30 globals that block was 592 B, more than a fragmented heap had in
# one piece). The scan at open(), the recovery and the listings are in
# h2p.journal_maint (boot, tests, host tools).
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

from h2p.compat import const
from h2p import journal as J

_HDR_LEN = const(10)
_COPY = const(256)  # copy buffer of a rewrite

# what a rewrite does with a record
_KEEP = const(0)
_DROP = const(1)
_ACKED = const(2)  # part of an acknowledged session: kept while it fits


def records(f, size, garbage):
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
        yield (pos << J.LOC_SHIFT) | total, h[2]
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
    if loc in live or rtype < J.OPEN or rtype > J.META:
        return _KEEP  # indexed, or a type this firmware does not know
    if rtype == J.CLOSE or rtype == J.ACK:
        return _ACKED
    return _DROP  # a superseded OPEN, CKPT or META


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
        for loc, rtype in records(f, j.size, ()):
            k = _kind(loc, rtype, live, forced)
            if k == _KEEP:
                kept += loc & J.LOC_LEN
            elif k == _ACKED:
                acked += loc & J.LOC_LEN
            else:
                dropped += 1
    if kept + need > j.max_bytes:
        raise J.JournalFull(
            "journal full: %d bytes unacknowledged/open, %d needed, limit %d" % (kept, need, j.max_bytes)
        )
    # the oldest acknowledged bytes to drop so that the rest fits
    skip = acked - (j.max_bytes * 3 // 4 - kept - need)
    if skip <= 0:
        if not dropped:
            return False
        skip = 0
    rewrite(j, skip, forced, ())
    j.compactions += 1
    return True


def rewrite(j, skip, forced, garbage):
    # Copy the records to keep into path.tmp, then replace the file with it
    # and move the RAM index to the new offsets. skip: bytes of acknowledged
    # sessions to drop, oldest first (whole records).
    live = _live(j)
    moved = {}  # old loc -> new loc of every indexed record
    tmp = j.path + ".tmp"
    mv = memoryview(bytearray(_COPY))
    shift = J.LOC_SHIFT
    new = 0
    # CPython only (MicroPython's flush() syncs); none without j.sync
    fsync = getattr(os, "fsync", None) if j.sync else None
    with open(j.path, "rb") as src:
        with open(tmp, "wb") as dst:
            for loc, rtype in records(src, j.size, garbage):
                k = _kind(loc, rtype, live, forced)
                total = loc & J.LOC_LEN
                if k == _DROP:
                    continue
                if k == _ACKED and skip > 0:
                    skip -= total
                    continue
                src.seek(loc >> shift)
                left = total
                while left:
                    got = src.readinto(mv[: min(left, _COPY)])
                    if not got:
                        raise OSError("journal shorter than its index")
                    dst.write(mv[:got])
                    left -= got
                if k == _KEEP and loc in live:
                    moved[loc] = (new << shift) | total
                new += total
            if j.sync:
                dst.flush()
            if fsync is not None:
                fsync(dst.fileno())
    try:
        os.rename(tmp, j.path)
    except OSError:
        # FAT cannot rename over an existing file; open() finishes the
        # job if power is lost between these two calls.
        os.remove(j.path)
        os.rename(tmp, j.path)
    if fsync is not None:  # make the rename durable (CPython/POSIX)
        i = j.path.rfind("/")
        try:
            fd = os.open("." if i < 0 else j.path[:i] or "/", os.O_RDONLY)
            try:
                fsync(fd)
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
