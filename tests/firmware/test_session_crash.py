"""Crash test: a MicroPython process runs charging sessions against a fake
meter and is SIGKILLed at random moments, again and again. After every
restart the open session must be closed with the energy counted so far and
no session may appear twice (tests/helpers/mp_crash_child.py is the "firmware").

H2P_CRASH_KILLS=300 runs a longer version (default 15 kills per mode)."""
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.micropython]


ROOT = Path(__file__).resolve().parents[2]
MP = ROOT / ".venv" / "bin" / "micropython"
ENV = dict(os.environ, MICROPYPATH=".frozen:firmware")
RATE = 10.0  # Wh/s, as in mp_crash_child.py
KILLS = int(os.environ.get("H2P_CRASH_KILLS", "15"))


def start(d, seed, meter_at_boot, ckpt_s, drain=False):
    args = [str(MP), "-X", "heapsize=96K", "tests/helpers/mp_crash_child.py", str(d), str(seed),
            "1" if meter_at_boot else "0", str(ckpt_s)] + (["drain"] if drain else [])
    p = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    recovered, boot = [], None
    while True:
        line = p.stdout.readline()
        assert line, "child died: " + p.stderr.read()
        if line.startswith("RECOVERED "):
            recovered.append(json.loads(line[10:]))
        elif line.startswith("BOOT "):
            boot = line.split()
        elif line.startswith("READY"):
            return p, recovered, boot


def meter(d):
    return float((d / "meter").read_text()) if (d / "meter").exists() else 0.0


def run(d, meter_at_boot, ckpt_s, seed):
    rnd = random.Random(seed)
    errs, m_kill, tmp_seen, max_boot = [], None, 0, 0
    for k in range(KILLS + 1):
        p, recovered, boot = start(d, seed * 1000 + k, meter_at_boot, ckpt_s)
        max_boot = int(boot[1])
        tmp_seen += boot[-1] == "tmp=1"
        assert max_boot == k + 1  # the boot counter survived every kill
        for r in recovered:
            assert r["reason"] == "power_loss" and "recovered" in r["flags"]
            errs.append((m_kill - r["meter0"]) - r["energy_wh"])
        assert len(recovered) <= 1
        if k == KILLS:
            p.kill()
            p.wait()
            break
        time.sleep(rnd.uniform(0.05, 0.5))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        m_kill = meter(d)
    # drain: a clean run until every bill is acknowledged
    p, recovered, _ = start(d, 99, meter_at_boot, ckpt_s, drain=True)
    for r in recovered:
        errs.append((m_kill - r["meter0"]) - r["energy_wh"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        assert line, "drain run died: " + p.stderr.read()
        if line.startswith("DRAINED"):
            break
    p.wait(timeout=10)
    # every payload ever published, grouped by session id
    by_id = {}
    for line in (d / "pub.log").read_text().splitlines():
        r = json.loads(line)
        by_id.setdefault(r["id"], []).append(r)
    for sid, recs in by_id.items():
        assert all(x == recs[0] for x in recs), "session %s published with different content" % sid
    total = sum(recs[0]["energy_wh"] for recs in by_id.values())
    dups = sum(len(v) - 1 for v in by_id.values())
    return errs, total, meter(d), len(by_id), dups, tmp_seen


@pytest.mark.parametrize("meter_at_boot", [False, True], ids=["checkpoint_only", "meter_at_boot"])
def test_sigkill_sessions(tmp_path, meter_at_boot):
    ckpt_s = 0.25
    errs, total, m_final, n, dups, tmp_seen = run(tmp_path, meter_at_boot, ckpt_s, seed=5 + meter_at_boot)
    assert len(errs) >= KILLS // 2, "too few kills hit an open session"
    bound = RATE * (ckpt_s + 0.1) + 0.1  # one checkpoint interval + one step
    if meter_at_boot:
        assert max(abs(e) for e in errs) <= 0.06, errs
        assert abs(total - m_final) <= 0.06 * n
    else:
        assert min(errs) >= -0.06 and max(errs) <= bound, errs
        # energy conservation: the meter only advances inside sessions
        assert -0.06 * n <= m_final - total <= sum(max(e, 0) for e in errs) + 0.06 * n
    print("\n%s: kills=%d sessions=%d duplicates_published=%d recovered=%d err_wh max=%.2f mean=%.2f "
          "bound=%.2f meter=%.1f billed=%.1f tmp_left=%d" % (
              "meter_at_boot" if meter_at_boot else "checkpoint_only", KILLS, n, dups, len(errs),
              max(errs), sum(errs) / len(errs), bound, m_final, total, tmp_seen))
