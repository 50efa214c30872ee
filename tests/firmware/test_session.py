"""h2p.session.SessionRecorder: energy accounting, ids, recovery."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from h2p.journal import Journal
from h2p.session import SessionRecorder

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython]


EPOCH = 1_780_000_000


def boot(path, wall=None, interval=60, max_bytes=32768, **kw):
    j = Journal(str(path), max_bytes=max_bytes, checkpoint_interval_s=interval)
    j.open()
    closed = []
    r = SessionRecorder(j, "P7", wall=wall, on_close=closed.append, **kw)
    r.boot()
    return j, r, closed


def test_energy_premix_peak_soc_and_fields(tmp_path):
    j, r, closed = boot(tmp_path / "j", wall=lambda: EPOCH)
    sid = r.start(10, "sponsor:acme:42", meter_wh=5000.0, premix_l=100.0, ev_soc=None)
    assert sid == "P7-00001-001" == r.active
    for t in range(11, 71):
        r.step(t, meter_wh=5000.0 + (t - 10) * 5, premix_l=100.0 + (t - 10) * 0.001,
               power_w=18000 if t != 40 else 22000, ev_soc=20 + (t - 10) // 10)
    rec = r.stop(71, "ev_stop", meter_wh=5305.0, premix_l=100.0605, ev_soc=27)
    assert closed == [rec] and r.active is None
    assert rec["energy_wh"] == 305.0
    assert rec["premix_l"] == pytest.approx(0.0605, abs=6e-4)  # rounded to mL
    assert rec["peak_w"] == 22000 and rec["soc0"] == 20 and rec["soc1"] == 27
    assert rec["start"] == EPOCH and rec["stop"] == EPOCH
    assert rec["id"] == rec["idem"] == sid and rec["pile"] == "P7" and rec["token"] == "sponsor:acme:42"
    assert rec["reason"] == "ev_stop" and rec["flags"] == [] and rec["dur_s"] == 61
    assert [json.loads(j.record(j.unacked[s])) for s in j.unacked_ids()] == [rec]


def test_boot_relative_stamps_without_clock(tmp_path):
    j, r, _ = boot(tmp_path / "j", wall=lambda: None)
    r.start(12.7, "t", meter_wh=0)
    rec = r.stop(99.2, "user", meter_wh=1)
    assert rec["start"] == "boot:1+12" and rec["stop"] == "boot:1+99"
    j2, r2, _ = boot(tmp_path / "j", wall=lambda: 1000)  # clock "set" to 1970: not set
    r2.start(3, "t")
    assert r2.stop(4, "user")["start"] == "boot:2+3"


def test_ids_unique_and_stable_across_reboots(tmp_path):
    seen = set()
    for b in range(1, 6):
        j, r, _ = boot(tmp_path / "j", max_bytes=4096)
        assert r.boot_no == b
        for k in range(3):
            sid = r.start(k, "t", meter_wh=0)
            assert sid == "P7-%05d-%03d" % (b, k + 1) and sid not in seen
            seen.add(sid)
            r.stop(k + 0.5, "user", meter_wh=0)
            j.ack(sid)
    assert len(seen) == 15
    # <pile>-<boot counter, 5 digits>-<sequence in this boot, 3 digits>
    j = Journal(str(tmp_path / "k"))
    j.open()
    j.set_meta("boot", 2)
    r = SessionRecorder(j, "P-7")
    assert r.boot() == 3 and r.start(0, "t") == "P-7-00003-001"
    r.stop(1, "user")
    assert r.start(2, "t") == r.active == "P-7-00003-002"


def test_meter_backwards_missing_and_jumps(tmp_path):
    j, r, _ = boot(tmp_path / "j", max_power_w=50000)
    r.start(0, "t", meter_wh=1000.0)
    r.step(10, meter_wh=1100.0)  # +100
    r.step(20, meter_wh=None)  # meter not answering
    r.step(30, meter_wh=1300.0)  # +200 over 20 s: plausible, counted
    r.step(40, meter_wh=50.0)  # meter replaced/reset: never subtract
    r.step(50, meter_wh=150.0)  # +100 from the new baseline
    r.step(51, meter_wh=9e9)  # a garbage reading: skipped
    r.step(60, meter_wh=250.0)  # +100
    rec = r.stop(61, "user", meter_wh=260.0)  # +10
    assert rec["energy_wh"] == 510.0
    assert set(rec["flags"]) == {"meter_gap", "meter_backwards", "meter_jump"}


def test_no_meter_at_all_uses_power_integral(tmp_path):
    j, r, _ = boot(tmp_path / "j")
    r.start(0, "t", meter_wh=None)
    for t in range(1, 361):
        r.step(t, meter_wh=None, power_w=10000)
    rec = r.stop(361, "user", power_w=10000)
    assert rec["energy_wh"] == pytest.approx(10000 * 361 / 3600, abs=0.2)
    assert "energy_from_power" in rec["flags"]


def test_checkpoints_rate_limited_by_step(tmp_path):
    j, r, _ = boot(tmp_path / "j", interval=60)
    r.start(0, "t", meter_wh=0)
    w0 = j.writes
    wrote = [t for t in range(1, 601) if r.step(t, meter_wh=t * 10.0)]
    assert wrote == [60, 120, 180, 240, 300, 360, 420, 480, 540, 600]
    assert j.writes - w0 == 10


@pytest.mark.parametrize("meter_now, expect, flag", [
    (None, 1200.0, None),  # no meter at boot: last checkpoint (t=120)
    (11290.0, 1290.0, "meter_at_boot"),  # meter advanced 90 Wh after it
    (11200.0 + 5000, 1200.0, "meter_mismatch_at_boot"),  # not plausible in 70 s
    (11000.0, 1200.0, "meter_mismatch_at_boot"),  # went backwards
])
def test_recover_after_power_loss(tmp_path, meter_now, expect, flag):
    j, r, _ = boot(tmp_path / "j", interval=60, max_power_w=40000, wall=lambda: None)
    sid = r.start(0, "sponsor:x:1", meter_wh=10000.0, premix_l=5.0, ev_soc=10)
    for t in range(1, 150):
        r.step(t, meter_wh=10000.0 + t * 10, premix_l=5.0 + t * 0.001, power_w=36000, ev_soc=11)
    # power lost at t=149: the last checkpoint was at t=120 (1200 Wh)
    j2, r2, closed = boot(tmp_path / "j", interval=60, max_power_w=40000, wall=lambda: None)
    recs = r2.recover(1.0, meter_wh=meter_now, reason="power_loss")
    assert closed == recs and len(recs) == 1
    rec = recs[0]
    assert rec["id"] == sid and rec["reason"] == "power_loss"
    assert rec["energy_wh"] == expect and rec["stop"] == "boot:1+120" and rec["start"] == "boot:1+0"
    assert rec["peak_w"] == 36000 and rec["soc0"] == 10 and rec["soc1"] == 11 and rec["token"] == "sponsor:x:1"
    assert rec["premix_l"] == pytest.approx(0.12, abs=1e-3)
    assert "recovered" in rec["flags"] and (flag is None or flag in rec["flags"])
    assert not j2.open_sessions() and j2.unacked_ids() == [sid]
    # a second boot does not close it again
    j3, r3, closed3 = boot(tmp_path / "j")
    assert r3.recover(0, meter_wh=meter_now) == [] and closed3 == []
    assert r3.boot_no == 3 and r3.start(0, "t") == "P7-00003-001"


def test_recover_before_first_checkpoint(tmp_path):
    j, r, _ = boot(tmp_path / "j")
    sid = r.start(0, "t", meter_wh=500.0)
    r.step(5, meter_wh=550.0)
    _, r2, _ = boot(tmp_path / "j")
    rec = r2.recover(0, meter_wh=560.0, reason="reboot")[0]
    assert rec["id"] == sid and rec["energy_wh"] == 60.0 and rec["reason"] == "reboot"


def test_a_baseline_that_came_after_the_start_is_journaled_at_once(tmp_path):
    # The app opens the record before the start meter value is read (it
    # comes on the next slow read; no energy flows before it). A reset
    # within the checkpoint interval after that must still bill the energy
    # from that baseline to the meter at boot, not 0 Wh.
    j, r, _ = boot(tmp_path / "j", interval=60, wall=lambda: None)
    sid = r.start(0, "t", meter_wh=None)
    assert r.step(1, meter_wh=None) is False  # no meter yet: nothing to journal
    assert r.step(2, meter_wh=8000.0) is True  # the baseline: journaled now
    assert [r.step(t, meter_wh=8000.0 + (t - 2) * 4) for t in range(3, 12)] == [False] * 9
    _, r2, _ = boot(tmp_path / "j", wall=lambda: None)
    rec = r2.recover(0, meter_wh=8076.0, reason="power_loss")[0]
    assert rec["id"] == sid and rec["meter0"] == 8000.0 and rec["energy_wh"] == 76.0
    assert "meter_at_boot" in rec["flags"]


def test_a_capped_session_s_bill_shows_its_caps_also_when_recovered(tmp_path):
    j, r, _ = boot(tmp_path / "j")
    r.start(0, "sponsor:acme:1", meter_wh=0.0, cap=(2.5, None))
    rec = r.stop(10, "energy_cap", meter_wh=2498.0)
    assert (rec["reason"], rec["cap_kwh"], rec["cap_min"]) == ("energy_cap", 2.5, None)
    r.start(20, "sponsor:acme:2", meter_wh=2498.0, cap=(None, 45))
    r.step(25, meter_wh=2600.0)
    _, r2, _ = boot(tmp_path / "j")  # a reset mid-session: closed at boot, from the journal
    rec = r2.recover(0, meter_wh=2600.0, reason="reboot")[0]
    assert (rec["reason"], rec["cap_kwh"], rec["cap_min"], rec["energy_wh"]) == ("reboot", None, 45, 102.0)
    r2.start(0, "t")
    assert "cap_kwh" not in r2.stop(1, "user")  # no caps: none in the bill


def test_start_refused_when_journal_full(tmp_path):
    j, r, _ = boot(tmp_path / "j", max_bytes=3000)
    n = 0
    while True:
        sid = r.start(n, "sponsor:a:b", meter_wh=0)
        if sid is None:
            break
        r.stop(n + 1, "user", meter_wh=1)
        n += 1
        assert n < 100
    assert n >= 3 and "journal full" in r.last_error
    j.ack("P7-00001-001")
    assert r.start(100, "t") == "P7-00001-%03d" % (n + 1)


def test_session_module_on_micropython(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "from h2p.journal import Journal\n"
        "from h2p.session import SessionRecorder\n"
        "j = Journal(%r, checkpoint_interval_s=60); j.open()\n"
        "r = SessionRecorder(j, 'P7'); r.boot()\n"
        "r.start(0, 'sponsor:a:1', meter_wh=100.0, premix_l=1.0, ev_soc=5)\n"
        "for t in range(1, 200): r.step(t, 100.0 + t, 1.0 + t / 1000, 3600, 6)\n"
        "j2 = Journal(%r, checkpoint_interval_s=60); j2.open()\n"
        "r2 = SessionRecorder(j2, 'P7'); r2.boot()\n"
        "rec = r2.recover(0, meter_wh=None)[0]\n"
        "print(rec['id'], rec['energy_wh'], rec['premix_l'], r2.boot_no)\n" % (
            str(tmp_path / "j"), str(tmp_path / "j")))
    out = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-X", "heapsize=96K", str(script)], cwd=ROOT,
                         env=dict(os.environ, MICROPYPATH=".frozen:firmware"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["P7-00001-001", "180.0", "0.18", "2"]
