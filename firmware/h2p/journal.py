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
import os
import json
import struct

from h2p.compat import const

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports built without binascii.crc32
    _crc32 = None

_fsync = getattr(os, "fsync", None)  # CPython only; MicroPython flush() syncs

MAGIC = b"\xfa\xce"
_HDR = "<2sBBHI"
_HDR_LEN = const(10)
_SCAN = const(64)  # resync read size

# Record types
OPEN = const(1)  # a charging session started: {"id": sid, ...}
CKPT = const(2)  # progress of an open session; the latest one wins
CLOSE = const(3)  # the final session record (the bill)
ACK = const(4)  # {"id": sid}: the ledger stored CLOSE sid; it may be dropped
META = const(5)  # {"id": key, "v": value}: the latest one per key wins

_TYPES = (OPEN, CKPT, CLOSE, ACK, META)


def crc32(data, crc=0):
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


def encode(rtype, body_bytes, flags=0):
    n = len(body_bytes)
    head = struct.pack("<BBH", rtype, flags, n)
    crc = crc32(body_bytes, crc32(head))
    return struct.pack(_HDR, MAGIC, rtype, flags, n, crc) + body_bytes


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    return path[:i] or "/"


class JournalFull(Exception):
    """The journal holds only data that may not be dropped; nothing was written."""


class Journal:
    def __init__(self, path, max_bytes=32768, checkpoint_interval_s=60, max_body=1024):
        self.path = path
        self.tmp = path + ".tmp"
        self.max_bytes = max_bytes
        self.low_bytes = max_bytes * 3 // 4  # compaction target (hysteresis)
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_body = max_body
        self.size = 0
        self.compactions = 0
        self.writes = 0
        self._ck_t = {}  # sid -> time of the last stored checkpoint (RAM only)
        self._reset()

    # The RAM index holds live records only, each as one small int
    # "loc" = offset << 16 | total length (sorts in file order).
    def _reset(self):
        self._n = 0  # valid records in the file
        self._open = {}  # sid -> [OPEN loc, latest CKPT loc or None]
        self._closed = {}  # sid -> CLOSE loc, not acknowledged
        self._acked = {}  # sid -> [CLOSE loc or None, ACK loc]
        self._meta = {}  # key -> loc of the latest META record
        self._unknown = []  # locs of record types this firmware does not know

    # ---------------------------------------------------------------- boot
    def open(self):
        """Recover after a reset. Returns a report dict:
        records, torn_bytes (dropped partial tail), garbage [(offset, nbytes)],
        repaired (file rewritten), size."""
        have = _exists(self.path)
        if _exists(self.tmp):
            if have:
                os.remove(self.tmp)  # a compaction that did not finish
            else:
                os.rename(self.tmp, self.path)  # unlink+rename was cut short
        torn, garbage = self._scan()
        repaired = False
        n = self._n
        if torn or garbage:
            self._rewrite(self._live(False))
            repaired = True
        return {
            "records": n,
            "torn_bytes": torn,
            "garbage": garbage,
            "repaired": repaired,
            "size": self.size,
        }

    def _scan(self):
        self._reset()
        size = _size(self.path)
        self.size = size
        if size == 0:
            return 0, []
        garbage = []
        bad_at = -1  # start of the current run of bad bytes
        pos = 0
        with open(self.path, "rb") as f:
            while pos < size:
                got = self._read_rec(f, pos, size)
                if got is not None:
                    if bad_at >= 0:
                        garbage.append((bad_at, pos - bad_at))
                        bad_at = -1
                    total, rtype, body = got
                    self._index(pos, total, rtype, body)
                    pos += total
                    continue
                if bad_at < 0:
                    bad_at = pos
                pos = self._resync(f, pos + 1)
        torn = 0
        if bad_at >= 0:
            torn = size - bad_at
            self.size = bad_at
        return torn, garbage

    def _resync(self, f, pos):
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

    def _read_rec(self, f, pos, size):
        # -> (total, type, body dict) if a valid record starts at pos, else None
        if size - pos < _HDR_LEN:
            return None
        f.seek(pos)
        h = f.read(_HDR_LEN)
        magic, rtype, flags, n, crc = struct.unpack(_HDR, h)
        if magic != MAGIC or n > self.max_body or pos + _HDR_LEN + n > size:
            return None
        body = f.read(n)
        if len(body) != n or crc32(body, crc32(h[2:6])) != crc:
            return None
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        return _HDR_LEN + n, rtype, obj

    def _index(self, off, total, rtype, body):
        sid = body.get("id")
        loc = (off << 16) | total
        self._n += 1
        if rtype == OPEN:
            if sid not in self._closed and sid not in self._acked:
                self._open[sid] = [loc, None]
        elif rtype == CKPT:
            o = self._open.get(sid)
            if o is not None:
                o[1] = loc
        elif rtype == CLOSE:
            self._open.pop(sid, None)
            if sid in self._acked:
                self._acked[sid][0] = loc
            else:
                self._closed[sid] = loc
        elif rtype == ACK:
            self._open.pop(sid, None)
            c = self._closed.pop(sid, None)
            a = self._acked.get(sid)
            if a is None:
                self._acked[sid] = [c, loc]
            else:
                a[1] = loc
        elif rtype == META:
            self._meta[sid] = loc
        else:
            self._unknown.append(loc)

    # -------------------------------------------------------------- writing
    def append(self, rtype, body, reserve=0):
        """Durably append one record. body: dict with an "id" key. reserve:
        bytes that must stay free after it (room to close a session).
        Raises JournalFull (nothing written) or ValueError (body too big)."""
        data = json.dumps(body).encode()
        if len(data) > self.max_body or len(data) > 65000:
            raise ValueError("journal record too large: %d > %d bytes" % (len(data), self.max_body))
        rec = encode(rtype, data)
        if self.size + len(rec) + reserve > self.max_bytes:
            self.compact(len(rec) + reserve)
        off = self.size
        with open(self.path, "ab") as f:
            f.write(rec)
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())
        self.size = off + len(rec)
        self.writes += 1
        self._index(off, len(rec), rtype, body)
        return off

    def open_session(self, body, now_s=None):
        """Start a session; refused (JournalFull) unless there is room left
        to close it. now_s starts the checkpoint interval."""
        self.append(OPEN, body, _HDR_LEN + self.max_body)
        if now_s is None:
            self._ck_t.pop(body["id"], None)
        else:
            self._ck_t[body["id"]] = now_s

    def checkpoint(self, body, now_s, force=False):
        """Store progress of an open session, at most one per checkpoint
        interval per session. Returns True if written, False if skipped."""
        sid = body["id"]
        if sid not in self._open:
            return False
        last = self._ck_t.get(sid)
        if not force and last is not None and now_s - last < self.checkpoint_interval_s:
            return False
        try:
            self.append(CKPT, body, _HDR_LEN + self.max_body)
        except JournalFull:
            return False  # keep the room reserved for the CLOSE record
        self._ck_t[sid] = now_s
        return True

    def close_session(self, body):
        self.append(CLOSE, body)
        self._ck_t.pop(body["id"], None)

    def ack(self, sid):
        """Mark a closed session as stored by the ledger. Returns False (and
        writes nothing) if it is unknown or already acknowledged."""
        if sid not in self._closed:
            return False
        try:
            self.append(ACK, {"id": sid})
        except JournalFull:
            # No room even for the ACK: drop the acknowledged CLOSE record
            # itself (atomic rewrite), which frees its space.
            self.compact(0, sid)
        return True

    def set_meta(self, key, value):
        self.append(META, {"id": key, "v": value})

    # ------------------------------------------------------------- reading
    def get_meta(self, key, default=None):
        off = self._meta.get(key)
        if off is None:
            return default
        return self._read(off).get("v", default)

    def _read(self, loc):
        return self._read_many([loc])[0]

    def _read_many(self, locs):
        out = []
        with open(self.path, "rb") as f:
            for loc in locs:
                off = loc >> 16
                got = self._read_rec(f, off, self.size)
                if got is None:
                    raise OSError("journal record at %d unreadable" % off)
                out.append(got[2])
        return out

    def open_sessions(self):
        """[(OPEN body, latest CKPT body or None)] for sessions not closed."""
        out = []
        for sid in self._open:
            o, c = self._open[sid]
            b = self._read_many([o] if c is None else [o, c])
            out.append((b[0], b[1] if c is not None else None))
        return out

    def unacked_ids(self):
        """Closed, unacknowledged session ids, oldest first."""
        items = sorted((off, sid) for sid, off in self._closed.items())
        return [sid for off, sid in items]

    def unacked(self):
        """Closed, unacknowledged session records (dicts), oldest first."""
        items = sorted(self._closed.values())
        return self._read_many(items)

    def get_closed(self, sid):
        off = self._closed.get(sid)
        if off is None:
            a = self._acked.get(sid)
            off = a[0] if a else None
        return None if off is None else self._read(off)

    def is_open(self, sid):
        return sid in self._open

    def is_closed(self, sid):
        return sid in self._closed or sid in self._acked

    def is_acked(self, sid):
        return sid in self._acked

    def stats(self):
        return {
            "size": self.size,
            "max_bytes": self.max_bytes,
            "records": self._n,
            "open": len(self._open),
            "unacked": len(self._closed),
            "acked": len(self._acked),
            "writes": self.writes,
            "compactions": self.compactions,
        }

    # ---------------------------------------------------------- compaction
    def _live(self, drop_acked, keep_acked=None):
        # locs of the records a rewrite keeps, in file order
        keep = []
        for o in self._open.values():
            keep.append(o[0])
            if o[1] is not None:
                keep.append(o[1])
        for loc in self._closed.values():
            keep.append(loc)
        for sid in self._acked:
            if not drop_acked or (keep_acked is not None and sid in keep_acked):
                for loc in self._acked[sid]:
                    if loc is not None:
                        keep.append(loc)
        for loc in self._meta.values():
            keep.append(loc)
        for loc in self._unknown:
            keep.append(loc)
        keep.sort()
        return keep

    def compact(self, need=0, acked_sid=None):
        """Rewrite the file without superseded records and, oldest first,
        acknowledged sessions, until size + need fits under the low-water
        mark. Raises JournalFull if even then size + need > max_bytes.
        acked_sid: a closed session acknowledged now, dropped for sure."""
        if acked_sid is not None:
            loc = self._closed.pop(acked_sid)
            self._acked[acked_sid] = [loc, None]
        base = self._live(True)  # without any acknowledged session
        total = 0
        for loc in base:
            total += loc & 0xFFFF
        # acknowledged sessions, newest first, kept while they fit
        acked = []
        for sid in self._acked:
            if sid != acked_sid:
                a = self._acked[sid]
                acked.append((a[0] if a[0] is not None else a[1], sid))
        acked.sort()
        keep_acked = {}
        i = len(acked) - 1
        while i >= 0:
            sid = acked[i][1]
            size = 0
            for loc in self._acked[sid]:
                if loc is not None:
                    size += loc & 0xFFFF
            if total + size + need > self.low_bytes:
                break  # this one and all older ones go
            total += size
            keep_acked[sid] = 1
            i -= 1
        if total + need > self.max_bytes:
            raise JournalFull(
                "journal full: %d bytes unacknowledged/open, %d needed, limit %d"
                % (total, need, self.max_bytes)
            )
        keep = self._live(True, keep_acked)
        if len(keep) == self._n:
            return False
        self._rewrite(keep)
        self.compactions += 1
        return True

    def _rewrite(self, keep):
        with open(self.path, "rb") as src:
            with open(self.tmp, "wb") as dst:
                for loc in keep:
                    src.seek(loc >> 16)
                    dst.write(src.read(loc & 0xFFFF))
                dst.flush()
                if _fsync is not None:
                    _fsync(dst.fileno())
        try:
            os.rename(self.tmp, self.path)
        except OSError:
            # FAT cannot rename over an existing file; open() finishes the
            # job if power is lost between these two calls.
            os.remove(self.path)
            os.rename(self.tmp, self.path)
        if _fsync is not None:  # make the rename durable (CPython/POSIX)
            try:
                fd = os.open(_dirname(self.path), os.O_RDONLY)
                try:
                    _fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
        self._scan()
