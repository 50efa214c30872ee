"""Fuzz the journal's scan and repair at open (h2p.journal_maint.load).

A journal file as a power loss or failing flash may leave it: valid records
cut short, a run of bytes changed, garbage inserted, records whose CRC is
right but whose body is no record this firmware wrote, or nothing but
garbage. Journal.open() never raises; every record the damage did not
touch is kept (the pile's index after open equals that of a clean file of
those records alone); the repaired file opens clean a second time, with the
same index; and the scan's allocation does not grow with the garbage.
"""

import json
import os
import shutil
import tempfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from h2p import journal as J
from h2p.journal import MAGIC, Journal, encode
from tests.fuzz import kit

TARGET = "journal"
EXAMPLES = 200
SIDS = ("s1", "s2", "s3")
KEYS = ("k1", "k2")
UNKNOWN = (0, 6, 200)  # record types this firmware does not know: kept, not indexed
PEAK_BASE = 32 * 1024
PEAK_PER_BYTE = 8  # the index grows with the records (CPython dict entries), not with garbage
# ... plus one body parsed at a time: JSON nested 400 deep in a 1 KB body
# is 44 KB of CPython lists (found by `make fuzz`; on the board a list is
# 16 B + its items)
PEAK_PER_BODY_BYTE = 64
GARBAGE_PEAK_MAX = 32 * 1024  # a file of garbage alone, whatever its size


def peak_bound(size):
    return PEAK_BASE + PEAK_PER_BYTE * size + PEAK_PER_BODY_BYTE * min(size, 1024)

_DIR = tempfile.mkdtemp(prefix="h2p-fuzz-journal-")


@pytest.fixture(scope="module", autouse=True)
def _fast_and_traced():
    # Durability is tests/firmware/test_journal.py's; here fsync only costs
    # time. The scan's modules stay loaded (on the pile they are imported
    # for each open and dropped after: tests/firmware and bench measure
    # that), so the peak measured is the scan's own.
    from h2p import compat

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", lambda fd: None)
    mp.setattr(compat, "forget", lambda *names: None)
    with kit.started():
        opened(encode(J.OPEN, b'{"id": "warm-up"}') + b"\x00")  # imports, and the repair's
        yield
    mp.undo()
    shutil.rmtree(_DIR, ignore_errors=True)


# ------------------------------------------------------------ the scanner
def opened(image, name="j.bin"):
    """THE call: image as the journal file, Journal.open(). -> (journal,
    report, bytes allocated at the peak)."""
    path = os.path.join(_DIR, name)
    for p in (path, path + ".tmp"):
        if os.path.exists(p):
            os.remove(p)
    with open(path, "wb") as f:
        f.write(image)
    j = Journal(path, max_bytes=1 << 20, checkpoint_interval_s=60)
    with kit.Peak() as p:
        report = j.open()
    return j, report, p.bytes


def state(j):
    """What the pile knows after open(), by content (offsets differ after
    a repair): open sessions with their latest checkpoint, unacknowledged
    bills, the latest META values, the acknowledged ids in the file, and
    the records of unknown types (kept as they are)."""
    opens = sorted((json.dumps(o, sort_keys=True), json.dumps(c, sort_keys=True))
                   for o, c in j.open_sessions() if o.get("id") in SIDS)
    unacked = {s: bytes(j.record(j.unacked[s])) for s in j.unacked if s in SIDS}
    meta = {k: j.get_meta(k, None) for k in KEYS}
    unknown = []
    with open(j.path, "rb") as f:
        data = f.read()
    assert len(data) == j.size, (len(data), j.size)
    pos = 0
    while pos < len(data):
        assert data[pos:pos + 2] == MAGIC, "the file after open() holds something that is no record at %d" % pos
        total = 10 + (data[pos + 4] | data[pos + 5] << 8)
        if data[pos + 2] in UNKNOWN:
            unknown.append(data[pos:pos + total])
        pos += total
    return opens, unacked, meta, sorted(j._acked, key=str), unknown


def clean(j):
    o, u, m, a, unk = state(j)
    return o, u, m, [x for x in a if x in SIDS], unk


def check(image, survivors):
    """Open the damaged image; it must give the state a clean file of the
    survivors (the undamaged records, in order) gives."""
    j, report, peak = opened(image)
    assert peak <= peak_bound(len(image)), "open() allocated %d bytes for a %d-byte file" % (peak, len(image))
    assert report["size"] == j.size and report["records"] >= len(survivors) - 0, report
    got = clean(j)
    want_j, want_report, _ = opened(b"".join(survivors), "model.bin")
    assert not want_report["repaired"], want_report
    assert got == clean(want_j), (report, got, clean(want_j))
    # the repaired file is clean: opened again, nothing to repair, same state
    j2 = Journal(j.path, max_bytes=1 << 20, checkpoint_interval_s=60)
    again = j2.open()
    assert not again["repaired"] and again["torn_bytes"] == 0 and again["garbage"] == [], again
    assert clean(j2) == got
    return report


# ----------------------------------------------------------------- inputs
@st.composite
def records(draw):
    rtype = draw(st.sampled_from((J.OPEN, J.CKPT, J.CLOSE, J.ACK, J.META) + UNKNOWN))
    n = draw(st.integers(0, 10**6))
    if rtype == J.META:
        body = {"id": draw(st.sampled_from(KEYS)), "v": n}
    else:
        body = {"id": draw(st.sampled_from(SIDS)), "e": n / 8}
        if draw(st.booleans()):
            body["pad"] = "x" * draw(st.integers(0, 300))
    return encode(rtype, json.dumps(body).encode())


def _bad_body(draw):
    # bodies with a right CRC that this firmware never writes
    kind = draw(st.sampled_from(("bytes", "json", "id", "deep", "utf8")))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                         st.lists(st.integers(), max_size=5)))).encode()
    if kind == "id":
        return json.dumps({"id": draw(st.sampled_from(([1], {"a": 1}, [], {}, None, 1.5, True, 7)))}).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 500))
        return b'{"id": "forged", "v": ' + b"[" * depth + b"]" * depth + b"}"
    return b'{"id": "\xff\xfe"}'


@st.composite
def forged(draw):
    # known types only: a record of an unknown type is kept whatever its body
    rtype = draw(st.sampled_from((J.OPEN, J.CKPT, J.CLOSE, J.ACK, J.META)))
    return encode(rtype, _bad_body(draw))


@st.composite
def damaged(draw):
    """(image, survivors): good records, then one kind of damage."""
    recs = draw(st.lists(records(), max_size=12))
    image = b"".join(recs)
    offs = []
    pos = 0
    for r in recs:
        offs.append((pos, pos + len(r)))
        pos += len(r)
    how = draw(st.sampled_from(("none", "cut", "flip", "insert", "forged")))
    if how == "none" or not image:
        return image, recs
    if how == "cut":  # a torn tail
        at = draw(st.integers(0, len(image) - 1))
        return image[:at], [r for r, (a, b) in zip(recs, offs) if b <= at]
    if how == "flip":  # a run of bytes changed (each by a non-zero xor)
        a = draw(st.integers(0, len(image) - 1))
        b = draw(st.integers(a + 1, min(len(image), a + 64)))
        masks = draw(st.binary(min_size=b - a, max_size=b - a).map(lambda m: bytes(x or 1 for x in m)))
        bad = bytes(x ^ y for x, y in zip(image[a:b], masks))
        return image[:a] + bad + image[b:], [r for r, (s, e) in zip(recs, offs) if e <= a or s >= b]
    i = draw(st.integers(0, len(recs)))  # at a record boundary
    junk = draw(st.binary(min_size=1, max_size=100)) if how == "insert" else forged_rec(draw)
    return b"".join(recs[:i]) + junk + b"".join(recs[i:]), recs


def forged_rec(draw):
    return draw(forged())


def _corpus_case(data):
    # corpus file: the image; the survivors are found by opening it (the
    # corpus replays for "no crash, clean reopen, bounded")
    return data


# ----------------------------------------------------------------- tests
def test_checker_sees_what_it_must():
    # a model that loses a record is caught
    r1 = encode(J.OPEN, b'{"id": "s1"}')
    r2 = encode(J.CLOSE, b'{"id": "s2", "e": 1}')
    check(r1 + r2, [r1, r2])
    with pytest.raises(AssertionError):
        check(r1 + r2, [r1])


@pytest.mark.parametrize("data", kit.corpus_params(TARGET))
def test_corpus(data):
    def run(image):
        j, report, peak = opened(image)
        assert peak <= peak_bound(len(image)), peak
        clean(j)
        j2 = Journal(j.path, max_bytes=1 << 20, checkpoint_interval_s=60)
        again = j2.open()
        assert not again["repaired"] and clean(j2) == clean(j), again

    kit.keep(TARGET, data, run)


@kit.budget(EXAMPLES)
@given(damaged())
@example((encode(J.OPEN, b'{"id": ["s1"]}'), []))
@example((encode(J.META, b'{"id": "k1", "v": ' + b"[" * 1000 + b"]" * 1000 + b"}"), []))
def test_damage_loses_only_what_it_touched(case):
    image, survivors = case
    kit.keep(TARGET, image, lambda d: check(d, survivors))


@kit.budget(EXAMPLES // 3)
@given(st.binary(max_size=2048))
def test_any_bytes(image):
    def run(d):
        j, report, peak = opened(d)
        assert peak <= peak_bound(len(d)), peak
        clean(j)

    kit.keep(TARGET, image, run)


def test_garbage_costs_no_memory():
    # 256 KB of garbage (no magic in it) around one record: the scan reads in
    # small chunks, so what it allocates does not grow with the file
    rec = encode(J.OPEN, b'{"id": "s1"}')
    junk = bytes((i * 7 + 1) % 250 for i in range(128 * 1024))
    assert MAGIC not in junk
    j, report, peak = opened(junk + rec + junk)
    assert peak <= GARBAGE_PEAK_MAX, "open() allocated %d bytes for 256 KB of garbage" % peak
    assert report["records"] == 1 and report["garbage"] == [(0, len(junk))], report
    assert report["torn_bytes"] == len(junk) and [o["id"] for o, _ in j.open_sessions()] == ["s1"]
