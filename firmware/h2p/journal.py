# Crash-safe append-only journal on the board's filesystem.
#
# One file of records; each record is a 10-byte header + a JSON body:
#   magic b"\xfa\xce" | type u8 | flags u8 | body length u16 LE | CRC32 u32 LE
# The CRC covers type, flags, length and body. 0xFA never occurs in UTF-8
# text, so the magic cannot appear inside a JSON body.
#
# At open() the file is scanned: a torn tail (a partial last record after a
# power loss) is dropped, garbage in the middle is reported (offset, length)
# and skipped by resynchronising on the magic; every record with a good CRC
# is kept. If anything was dropped the file is rewritten clean (temp file,
# flush/fsync, rename). Compaction uses the same rewrite; unacknowledged
# data is never dropped (JournalFull is raised instead). See docs/journal.md.
#
# RAM: this module holds what runs while the pile charges (append, the
# checkpoint rate limit, acks, reading one record back). Compaction lives
# in h2p.journal_compact; the scan and repair at open(), the recovery and
# the listings tests and host tools use in h2p.journal_maint: each imported
# when needed and dropped after.
import os
import json
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports built without binascii.crc32
    _crc32 = None

MAGIC = b"\xfa\xce"
# The header is 10 bytes (the "10"s below). RAM: no const() import here: one
# global more would grow this module's globals table past 17 slots.

# A record's place in the file, in RAM, is one int "loc" = offset <<
# LOC_SHIFT | total length. 11 bits of length (a record is at most 10 + 2037
# bytes) leave 19 bits of offset under 2**30, MicroPython's small-int limit
# on a 32-bit board: up to a 512 KB journal (the config's journal_kb limit)
# a loc is never a heap object.
LOC_SHIFT = 11
LOC_LEN = 0x7FF

# Record types
OPEN = 1  # a charging session started: {"id": sid, ...}
CKPT = 2  # progress of an open session; the latest one wins
CLOSE = 3  # the final session record (the bill)
ACK = 4  # {"id": sid}: the ledger stored CLOSE sid; it may be dropped
META = 5  # {"id": key, "v": value}: the latest one per key wins


def crc32(data, crc):
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    # table-less CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320)
    crc = crc ^ 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xEDB88320
            else:
                crc >>= 1
    return crc ^ 0xFFFFFFFF


# RAM: no default arguments in this module's internal functions (a
# function object with defaults takes twice the heap).
def header(rtype, body_bytes, flags):
    # the 10-byte record header for this body
    n = len(body_bytes)
    crc = crc32(body_bytes, crc32(struct.pack("<BBH", rtype, flags, n), 0))
    return struct.pack("<2sBBHI", MAGIC, rtype, flags, n, crc)


def encode(rtype, body_bytes):
    return header(rtype, body_bytes, 0) + body_bytes


class JournalFull(Exception):
    """The journal holds only data that may not be dropped; nothing was written."""


class Journal:
    # Also (served from h2p.journal_maint by __getattr__, for tests and host
    # tools): stats(), open_sessions() -> [(OPEN body, latest CKPT body or
    # None)], _acked (ids of acknowledged sessions still in the file).

    def __init__(self, path, max_bytes=32768, checkpoint_interval_s=60, max_body=1024, sync=True):
        if max_body > LOC_LEN - 10:
            raise ValueError("journal max_body %d > %d bytes (a record's length has 11 bits)"
                             % (max_body, LOC_LEN - 10))
        self.path = path
        self.max_bytes = max_bytes
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_body = max_body
        # Each append synced to storage before it counts (the board's
        # fs_sync, h2p.board): littlefs commits, CPython and the unix port
        # fsync. Without, what a killed process wrote is still there (the
        # kernel has it); only the host's own power loss could lose it.
        self.sync = sync
        self.size = 0
        self.compactions = 0
        self.writes = 0
        # The RAM index holds the live records the pile needs, each as one
        # int "loc" (LOC_SHIFT above; locs sort in file order).
        # RAM: acknowledged sessions are not indexed (a full journal holds
        # dozens of them); compaction finds them in the file.
        self._open = {}  # sid -> [OPEN loc, latest CKPT loc or None, time of that CKPT or None]
        self.unacked = {}  # sid -> CLOSE loc, not acknowledged (Billing sends these)
        self._meta = {}  # key -> loc of the latest META record

    def __getattr__(self, name):
        # stats, open_sessions, _acked: see the class comment.
        from h2p import journal_maint

        return journal_maint.listing(self, name)

    def _maint(self, name, *args):
        # RAM: the rarely run work is imported for the call and dropped
        # after: compaction from h2p.journal_compact (it may run while the
        # pile charges, so that module is small), the scan/repair at open
        # and the recovery from h2p.journal_maint (boot). Never per step.
        from h2p.compat import forget

        if name == "compact":
            from h2p import journal_compact

            fn = journal_compact.compact
        else:
            from h2p import journal_maint

            fn = getattr(journal_maint, name)
        try:
            return fn(self, *args)
        finally:
            fn = journal_compact = journal_maint = None  # type: ignore[assignment]
            # (names built here: a literal this long stays in the heap)
            forget(__name__ + "_maint", __name__ + "_compact")

    def open(self):
        """Recover after a reset. Returns a report dict:
        records, torn_bytes (dropped partial tail), garbage [(offset, nbytes)],
        repaired (file rewritten), size."""
        return self._maint("load")

    def _index(self, loc, rtype, sid):
        if rtype == OPEN:
            if sid not in self.unacked:
                self._open[sid] = [loc, None, None]
        elif rtype == CKPT:
            o = self._open.get(sid)
            if o is not None:
                o[1] = loc
        elif rtype == META:
            self._meta[sid] = loc
        elif rtype == CLOSE:
            self._open.pop(sid, None)
            self.unacked[sid] = loc
        elif rtype == ACK:
            self._open.pop(sid, None)
            self.unacked.pop(sid, None)

    # -------------------------------------------------------------- writing
    def append(self, rtype, body, reserve):
        """Durably append one record. body: dict with an "id" key. reserve:
        bytes that must stay free after it (room to close a session).
        Raises JournalFull (nothing written) or ValueError (body too big)."""
        data = json.dumps(body).encode()
        n = len(data)
        if n > self.max_body:
            raise ValueError("journal record too large: %d > %d bytes" % (n, self.max_body))
        total = 10 + n
        if self.size + total + reserve > self.max_bytes:
            self._maint("compact", total + reserve)
        off = self.size
        with open(self.path, "ab") as f:
            # RAM: header and body written apart, not joined into a copy
            f.write(header(rtype, data, 0))
            f.write(data)
            if self.sync:
                f.flush()  # MicroPython: littlefs commits, the unix port fsyncs
                fsync = getattr(os, "fsync", None)  # CPython
                if fsync is not None:
                    fsync(f.fileno())
        self.size = off + total
        self.writes += 1
        self._index((off << LOC_SHIFT) | total, rtype, body.get("id"))
        return off

    def open_session(self, body, now_s):
        """Start a session; refused (JournalFull) unless there is room left
        to close it. now_s starts the checkpoint interval (None: the first
        checkpoint may come at once)."""
        self.append(OPEN, body, 10 + self.max_body)
        o = self._open.get(body["id"])
        if o is not None:
            o[2] = now_s

    def due(self, sid, now_s):
        """True if sid is open and a checkpoint may be stored at now_s: at
        most one per checkpoint interval per session."""
        o = self._open.get(sid)
        return o is not None and (o[2] is None or now_s - o[2] >= self.checkpoint_interval_s)

    def checkpoint(self, body, now_s, force):
        """Store progress of an open session, at most one per checkpoint
        interval per session (force: whenever open). Returns True if
        written, False if skipped."""
        sid = body["id"]
        if sid not in self._open or not (force or self.due(sid, now_s)):
            return False
        try:
            self.append(CKPT, body, 10 + self.max_body)
        except JournalFull:
            return False  # keep the room reserved for the CLOSE record
        self._open[sid][2] = now_s
        return True

    def close_session(self, body):
        self.append(CLOSE, body, 0)

    def ack(self, sid):
        """Mark a closed session as stored by the ledger. Returns False (and
        writes nothing) if it is unknown or already acknowledged."""
        if sid not in self.unacked:
            return False
        try:
            self.append(ACK, {"id": sid}, 0)
        except JournalFull:
            # No room even for the ACK: drop the acknowledged CLOSE record
            # itself (atomic rewrite), which frees its space.
            self._maint("compact", 0, sid)
        return True

    def set_meta(self, key, value):
        self.append(META, {"id": key, "v": value}, 0)

    # ------------------------------------------------------------- reading
    def get_meta(self, key, default):
        loc = self._meta.get(key)
        if loc is None:
            return default
        return json.loads(self.record(loc)).get("v", default)

    def record(self, loc):
        """The body (JSON bytes, as stored) of the record at loc. A bill is
        published as these bytes: no dict is built for it."""
        off = loc >> LOC_SHIFT
        with open(self.path, "rb") as f:
            f.seek(off)
            h = f.read(10)
            body = f.read((loc & LOC_LEN) - 10)
        if len(h) != 10 or h != header(h[2], body, h[3]):
            raise OSError("journal record at %d unreadable" % off)
        return body

    def unacked_ids(self):
        """Closed, unacknowledged session ids, oldest first."""
        u = self.unacked
        return sorted(u, key=u.get)
