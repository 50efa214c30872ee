# MicroPython: the journal on littlefs (VfsLfs2) over a RAM block device
# that behaves like flash (erase to 0xFF, program). Power loss is simulated
# by copying the device at random block writes, some with the write torn
# (only a prefix of the block programmed). Every copy is mounted and the
# journal reopened: its state must be the state after the last completed
# operation, or after the one in progress - never anything else.
# Usage: micropython -X heapsize=64M mp_journal_lfs.py SEED NSNAP
import os
import random
import sys

from h2p.journal import Journal, JournalFull

BS = 512
NB = 128


class Dev:
    def __init__(self, data=None):
        self.data = data if data is not None else bytearray(b"\xff" * (BS * NB))
        self.hook = None
        self.nwrites = 0

    def readblocks(self, blk, buf, off=0):
        a = blk * BS + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, blk, buf, off=None):
        if off is None:
            for i in range(len(buf) // BS):
                self.ioctl(6, blk + i)
            off = 0
        a = blk * BS + off
        self.nwrites += 1
        if self.hook is not None:
            self.hook(a, buf)
        self.data[a : a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return NB
        if op == 5:
            return BS
        if op == 6:
            a = arg * BS
            self.data[a : a + BS] = b"\xff" * BS
        return 0


def summary(j):
    opens = []
    for op, ck in j.open_sessions():
        opens.append((op["id"], ck["e"] if ck else None))
    opens.sort()
    return (tuple(j.unacked_ids()), tuple(opens), j.get_meta("boot", None))


def main():
    seed = int(sys.argv[1])
    nsnap = int(sys.argv[2])
    random.seed(seed)
    dev = Dev()
    os.VfsLfs2.mkfs(dev)
    os.mount(os.VfsLfs2(dev), "/flash")
    j = Journal("/flash/j", max_bytes=2048, checkpoint_interval_s=0, max_body=256)
    j.open()
    done = [0]  # completed operations
    states = [summary(j)]
    snaps = []
    next_snap = [random.randint(1, 4)]

    def hook(a, buf):
        if len(snaps) >= nsnap:
            return
        next_snap[0] -= 1
        if next_snap[0] > 0:
            return
        next_snap[0] = random.randint(1, 6)
        s = bytearray(dev.data)
        if random.randint(0, 1):  # torn program: a prefix of the write lands
            k = random.randint(0, len(buf))
            s[a : a + k] = buf[:k]
        snaps.append((s, done[0]))

    dev.hook = hook
    boot = 0
    seq = 0
    unacked = []
    full = 0
    while len(snaps) < nsnap:
        r = random.randint(0, 9)
        try:
            if r == 0:
                boot += 1
                j.set_meta("boot", boot)
            else:
                seq += 1
                sid = "P-%05d-%03d" % (boot, seq)
                j.open_session({"id": sid, "t0": 0}, None)
                done[0] += 1
                states.append(summary(j))
                for k in range(random.randint(0, 4)):
                    j.checkpoint({"id": sid, "e": k * 1.5}, k, False)
                    done[0] += 1
                    states.append(summary(j))
                j.close_session({"id": sid, "energy_wh": 12.5})
                unacked.append(sid)
                if len(unacked) > 2 or random.randint(0, 1):
                    done[0] += 1
                    states.append(summary(j))
                    j.ack(unacked.pop(0))
        except JournalFull:
            full += 1
            if unacked:
                j.ack(unacked.pop(0))
        done[0] += 1
        states.append(summary(j))
    dev.hook = None
    live = summary(j)
    os.umount("/flash")
    bad = 0
    torn_seen = 0
    for s, c in snaps:
        d = Dev(s)
        os.mount(os.VfsLfs2(d), "/snap")
        j2 = Journal("/snap/j", max_bytes=2048, checkpoint_interval_s=0, max_body=256)
        rep = j2.open()
        torn_seen += rep["torn_bytes"] > 0
        got = summary(j2)
        ok = got == states[c] or (c + 1 < len(states) and got == states[c + 1])
        if not ok:
            bad += 1
            print("MISMATCH at op", c, got, states[c], states[c + 1] if c + 1 < len(states) else None)
        os.umount("/snap")
    print("RESULT", len(snaps), "snapshots", done[0], "ops", dev.nwrites, "block writes",
          j.compactions, "compactions", full, "full", torn_seen, "torn", bad, "bad", live)


main()
