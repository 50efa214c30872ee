# Torn-tail and garbage checks of h2p.journal that run unchanged on
# MicroPython (unix port, VfsPosix) and CPython.
# Usage: micropython mp_journal_selftest.py DIR SEED
import os
import random
import sys

from h2p.journal import MAGIC, Journal, encode


def rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


def build(path, n):
    rm(path)
    rm(path + ".tmp")
    j = Journal(path, max_bytes=1 << 20, checkpoint_interval_s=0, max_body=512)
    j.open()
    offs = []
    for i in range(n):
        sid = "P-00001-%03d" % i
        offs.append(j.size)
        j.open_session({"id": sid, "n": i, "pad": "x" * (i * 7 % 50)}, None)
        j.close_session({"id": sid, "energy_wh": i * 1.5})
    offs.append(j.size)
    return offs


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def closed_ids(path):
    j = Journal(path, max_bytes=1 << 20, max_body=512)
    rep = j.open()
    return j, rep


def main():
    d = sys.argv[1]
    random.seed(int(sys.argv[2]))
    p = d + "/j.bin"
    n = 12
    build(p, n)
    good = read(p)
    j, rep = closed_ids(p)
    assert rep["records"] == 2 * n and not rep["garbage"] and rep["torn_bytes"] == 0, rep
    all_ids = j.unacked_ids()
    assert len(all_ids) == n
    # every truncation point inside the last record
    last = len(good) - len(encode(3, b'{"id": "P-00001-011", "energy_wh": 16.5}'))
    cuts = 0
    for cut in range(last, len(good)):
        write(p, good[:cut])
        j, rep = closed_ids(p)
        assert rep["torn_bytes"] == cut - last, (cut, rep)
        assert rep["garbage"] == [], rep
        assert j.unacked_ids() == all_ids[:-1], cut
        assert all_ids[-1] in j._open  # its OPEN record survived
        # the file was repaired on disk: clean on the next boot, same state
        j2, rep2 = closed_ids(p)
        assert rep2["torn_bytes"] == 0 and rep2["garbage"] == [] and not rep2["repaired"], rep2
        assert j2.unacked_ids() == all_ids[:-1] and all_ids[-1] in j2._open
        cuts += 1
    # garbage injected between records (and one record's bytes corrupted)
    gtotal = 0
    for trial in range(20):
        data = bytearray(good)
        random.randint(1, n - 1)  # drawn and unused: keeps the seeded sequence
        # record boundaries of the clean file, from the headers
        bounds = []
        pos = 0
        while pos < len(good):
            bounds.append(pos)
            pos += 10 + good[pos + 4] + 256 * good[pos + 5]
        at = bounds[random.randint(1, len(bounds) - 1)]
        glen = random.randint(1, 80)
        junk = bytearray(random.getrandbits(8) for _ in range(glen))
        if random.randint(0, 1) and glen > 12:  # a fake header in the junk
            junk[3:5] = MAGIC
        data[at:at] = junk
        write(p, bytes(data))
        j, rep = closed_ids(p)
        assert rep["garbage"] == [(at, glen)], (rep, at, glen)
        assert rep["torn_bytes"] == 0
        assert rep["records"] == 2 * n, rep
        assert j.unacked_ids() == all_ids
        gtotal += glen
    print("SELFTEST OK", cuts, "cuts", gtotal, "garbage bytes")


main()
