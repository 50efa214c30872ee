"""h2p.journal: crash-safe append-only journal (CPython + MicroPython)."""
import binascii
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from h2p import journal as J
from h2p.journal import ACK, CKPT, CLOSE, MAGIC, META, OPEN, Journal, JournalFull
from host_tools.pilerun import HEAP  # the unix board's heap budget (boards/unix_sim.json)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython]


MP = ROOT / ".venv" / "bin" / "micropython"
MPENV = dict(os.environ, MICROPYPATH=".frozen:firmware")


def run_mp(*args, heap=HEAP, timeout=60):
    r = subprocess.run([str(MP), "-X", "heapsize=" + heap, *map(str, args)], cwd=ROOT, env=MPENV,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def mk(tmp_path, **kw):
    kw.setdefault("max_bytes", 1 << 20)
    kw.setdefault("checkpoint_interval_s", 60)
    j = Journal(str(tmp_path / "j.bin"), **kw)
    j.open()
    return j


def reopen(j, **kw):
    j2 = Journal(j.path, max_bytes=j.max_bytes, checkpoint_interval_s=j.checkpoint_interval_s,
                 max_body=j.max_body)
    return j2, j2.open()


def unacked_records(j):
    # the closed, unacknowledged records, oldest first
    return [json.loads(j.record(j.unacked[sid])) for sid in j.unacked_ids()]


def session(j, sid, e=1.0):
    j.open_session({"id": sid}, None)
    j.close_session({"id": sid, "energy_wh": e})


def test_crc32_fallback_matches_binascii(monkeypatch):
    data = bytes(range(256)) * 3
    monkeypatch.setattr(J, "_crc32", None)
    assert J.crc32(data, 0) == binascii.crc32(data)
    assert J.crc32(b"lo", J.crc32(b"hel", 0)) == binascii.crc32(b"hello")


def test_roundtrip_and_replay(tmp_path):
    j = mk(tmp_path)
    j.set_meta("boot", 1)
    session(j, "A", 10.0)
    j.open_session({"id": "B"}, None)
    assert j.checkpoint({"id": "B", "e": 1}, 0, False)
    assert j.checkpoint({"id": "B", "e": 2}, 61, False)
    j.set_meta("boot", 2)
    j2, rep = reopen(j)
    assert rep == {"records": 7, "torn_bytes": 0, "garbage": [], "repaired": False, "size": j.size}
    assert j2.get_meta("boot", None) == 2
    assert unacked_records(j2) == [{"id": "A", "energy_wh": 10.0}]
    # the latest checkpoint supersedes the earlier one on replay
    assert j2.open_sessions() == [({"id": "B"}, {"id": "B", "e": 2})]


def test_checkpoint_rate_limit(tmp_path):
    j = mk(tmp_path, checkpoint_interval_s=60)
    j.open_session({"id": "S"}, 0)
    w0 = j.writes
    written = [t for t in range(0, 600, 5) if j.checkpoint({"id": "S", "t": t}, t, False)]
    assert written == [60, 120, 180, 240, 300, 360, 420, 480, 540]
    assert j.writes - w0 == 9
    assert j.checkpoint({"id": "S"}, 541, True)
    assert not j.checkpoint({"id": "nope"}, 1000, False)  # not an open session


def test_torn_tail_and_garbage_cpython(tmp_path):
    out = subprocess.run([sys.executable, "tests/helpers/mp_journal_selftest.py", str(tmp_path), "7"], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH="firmware"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "SELFTEST OK" in out.stdout


def test_torn_tail_and_garbage_micropython(tmp_path):
    assert "SELFTEST OK" in run_mp("tests/helpers/mp_journal_selftest.py", tmp_path, 11)


# Three seeds in the fast tier, all twelve in `make test` (a campaign: ~1.5 s each).
@pytest.mark.parametrize("seed", [s if s <= 3 else pytest.param(s, marks=pytest.mark.slow) for s in range(1, 13)])
def test_littlefs_power_loss_micropython(seed):
    out = run_mp("tests/helpers/mp_journal_lfs.py", seed, 150, heap="48M")
    f = out.split()
    assert f[0] == "RESULT" and int(f[1]) == 150, out
    assert int(f[14]) == 0, out  # no snapshot recovered to a wrong state


def test_compaction_drops_oldest_acked_keeps_unacked(tmp_path):
    j = mk(tmp_path, max_bytes=3000, max_body=256)
    for i in range(100):
        sid = "S%03d" % i
        session(j, sid, i)
        if i % 4:  # every 4th stays unacknowledged... until the end
            assert j.ack(sid)
        if i % 4 == 0 and i >= 8:
            assert j.ack("S%03d" % (i - 8))
    assert j.compactions > 0 and j.size <= 3000
    j2, rep = reopen(j)
    assert j2.unacked_ids() == ["S092", "S096"]
    # the acked sessions still in the file are the newest ones: every
    # dropped one is older than every kept one
    kept = [int(s[1:]) for s in j2._acked]
    dropped = [i for i in range(100) if i not in kept and i not in (92, 96)]
    assert kept and dropped and max(dropped) < min(kept)


@pytest.mark.parametrize("sync", [True, False])
def test_appends_and_compactions_sync_only_on_a_board_that_needs_it(tmp_path, monkeypatch, sync):
    # A board whose "flash" is a host file (board_unix, fs_sync False) gets
    # no fsync: a killed process loses nothing the kernel has, and an fsync
    # on a loaded host stopped the control loop for 200-400 ms. Same records
    # either way.
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    j = mk(tmp_path, max_bytes=2000, max_body=256, sync=sync)
    for i in range(30):
        session(j, "S%03d" % i, i)
        assert j.ack("S%03d" % i)
    assert j.compactions > 0
    assert bool(synced) is sync and (not sync or len(synced) >= j.writes)
    j2, rep = reopen(j)
    assert rep["torn_bytes"] == 0 and not rep["garbage"] and j2.unacked_ids() == []
    assert sorted(j2._acked) == sorted(j._acked)


def test_full_of_unacked_raises_and_keeps_everything(tmp_path):
    j = mk(tmp_path, max_bytes=2048, max_body=256)
    n = 0
    with pytest.raises(JournalFull):
        for i in range(1000):
            sid = "U%03d" % i
            j.open_session({"id": sid, "pad": "y" * 40}, None)
            j.close_session({"id": sid, "pad": "z" * 40})
            n += 1
    assert n > 5
    j2, _ = reopen(j)
    assert j2.unacked_ids() == ["U%03d" % i for i in range(n)]
    # a session can always be closed once open: room was reserved
    with pytest.raises(JournalFull):
        j.open_session({"id": "X", "pad": "y" * 40}, None)
    # acks still work when there is no room even for an ACK record
    for i in range(n):
        assert j.ack("U%03d" % i)
    assert j.unacked_ids() == []
    j.open_session({"id": "X"}, None)
    j3, _ = reopen(j)
    assert j3.unacked_ids() == [] and "X" in j3._open


def test_checkpoint_refused_rather_than_eating_close_reserve(tmp_path):
    j = mk(tmp_path, max_bytes=2048, max_body=256, checkpoint_interval_s=0)
    j.open_session({"id": "S"}, None)
    for i in range(4):
        session(j, "F%d" % i)
    ok = [j.checkpoint({"id": "S", "e": i, "pad": "p" * 150}, i, False) for i in range(50)]
    assert all(ok)  # superseded checkpoints are compacted away
    for i in range(4, 40):
        try:
            session(j, "F%d" % i)
        except JournalFull:
            break
    j.close_session({"id": "S", "energy_wh": 5})  # must not raise
    assert "S" in j.unacked_ids()


def test_leftover_tmp_files(tmp_path):
    j = mk(tmp_path)
    session(j, "A")
    # a compaction that died while writing the temp file: discard it
    tmp = j.path + ".tmp"
    Path(tmp).write_bytes(b"half-written")
    j2, _ = reopen(j)
    assert not os.path.exists(tmp) and j2.unacked_ids() == ["A"]
    # FAT-style replace cut between unlink and rename: the temp file is complete
    os.rename(j.path, tmp)
    j3, _ = reopen(j)
    assert not os.path.exists(tmp) and j3.unacked_ids() == ["A"]


def test_unknown_record_type_is_kept(tmp_path):
    j = mk(tmp_path, max_bytes=1200, max_body=256)
    j.append(9, {"id": "future"}, 0)
    for i in range(30):
        session(j, "S%d" % i)
        j.ack("S%d" % i)
    assert j.compactions > 0
    data = Path(j.path).read_bytes()
    assert J.encode(9, b'{"id": "future"}') in data


@pytest.mark.slow  # a campaign (~17 s of CPU): make test, not test-fast
def test_random_ops_against_model(tmp_path):
    """Random appends, acks, reopens and byte-level damage at the end."""
    rnd = random.Random(3)
    j = mk(tmp_path, max_bytes=4096, max_body=256, checkpoint_interval_s=0)
    unacked, acked, opened = [], set(), {}
    compactions = 0
    for step in range(1500):
        r = rnd.random()
        try:
            if r < 0.3 and len(opened) < 2:
                sid = "S%d" % step
                j.open_session({"id": sid}, None)
                opened[sid] = None
            elif r < 0.55 and opened:
                sid = rnd.choice(sorted(opened))
                if j.checkpoint({"id": sid, "e": step}, step, False):
                    opened[sid] = step
            elif r < 0.75 and opened:
                sid = rnd.choice(sorted(opened))
                j.close_session({"id": sid, "e": opened.pop(sid)})
                unacked.append(sid)
            elif r < 0.95 and unacked:
                sid = unacked.pop(rnd.randrange(len(unacked)))
                assert j.ack(sid)
                assert not j.ack(sid)
                acked.add(sid)
            else:
                compactions += j.compactions
                j, rep = reopen(j)
                assert rep["garbage"] == [] and rep["torn_bytes"] == 0
        except JournalFull:
            assert len(unacked) > 3
            sid = unacked.pop(0)
            j.ack(sid)
        assert sorted(j.unacked_ids()) == sorted(unacked)
        got = {op["id"]: (ck["e"] if ck else None) for op, ck in j.open_sessions()}
        assert got == opened
    assert compactions + j.compactions > 10


def test_body_too_large(tmp_path):
    j = mk(tmp_path, max_body=64)
    with pytest.raises(ValueError, match="too large"):
        j.append(OPEN, {"id": "x" * 100}, 0)
    assert j.size == 0


def test_record_types_are_distinct():
    assert len({OPEN, CKPT, CLOSE, ACK, META}) == 5 and MAGIC[0] == 0xFA


def test_record_locations_stay_small_ints_on_a_32_bit_board(tmp_path):
    # A loc (offset << LOC_SHIFT | length) must stay below 2**30, the
    # small-int limit of a 32-bit MicroPython, for the largest journal the
    # config allows; else every index entry would be a heap object there.
    from h2p import config
    from h2p.journal import LOC_LEN, LOC_SHIFT
    from h2p.schema import ConfigError

    kb = config.from_dict({"pile_id": "p", "journal_kb": 512})["journal_kb"]
    with pytest.raises(ConfigError):
        config.from_dict({"pile_id": "p", "journal_kb": kb + 1})
    assert ((kb * 1024 - 1) << LOC_SHIFT | LOC_LEN) < 2 ** 30
    # a record length that the loc cannot hold is refused when the journal is made
    with pytest.raises(ValueError, match="max_body"):
        Journal(str(tmp_path / "j.bin"), max_body=LOC_LEN)
    j = Journal(str(tmp_path / "j.bin"), max_body=LOC_LEN - 10)
    j.open()
    j.set_meta("k", "x" * (LOC_LEN - 40))  # the longest record still round-trips
    assert j.get_meta("k", None) == "x" * (LOC_LEN - 40)


def test_record_whose_id_is_no_key_is_garbage(tmp_path):
    # A record with a right CRC whose "id" is a list or an object was indexed
    # and raised TypeError (unhashable) at open: found by
    # tests/fuzz/test_fuzz_journal.py. It is garbage now; the rest is kept.
    p = tmp_path / "j.bin"
    good = J.encode(OPEN, b'{"id": "s1"}')
    bad = J.encode(OPEN, b'{"id": ["s1"]}') + J.encode(META, b'{"id": {"k": 1}, "v": 2}')
    p.write_bytes(good + bad + J.encode(OPEN, b'{"id": "s2"}'))
    j = Journal(str(p), max_bytes=1 << 20)
    r = j.open()
    assert r["records"] == 2 and r["garbage"] == [(len(good), len(bad))] and r["repaired"], r
    assert sorted(o["id"] for o, _ in j.open_sessions()) == ["s1", "s2"]
