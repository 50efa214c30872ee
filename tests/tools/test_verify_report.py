"""`h2pile verify` tells the truth: it lists which checks ran and fails
when the self-test did not run or did not finish (it reported OK before).

A scripted board stands in for the serial one: it answers verify's
questions (files, hashes, config) and plays a given boot console; the end
to end run against a virtual board is in test_flash.py."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from host_tools.exitcodes import FAILED, OK
from host_tools.flash import verify as verify_mod

FILES = {"main.py": b"import h2p.app\n", "lib/h2p/app.mpy": b"M\x06app"}
SUMS = "".join("%s  %s\n" % (hashlib.sha256(d).hexdigest(), n) for n, d in sorted(FILES.items()))
CONFIG = json.dumps({"pile_id": "p-7"})
BOOT = "BOOT " + json.dumps({"version": "1.0", "board": "unix", "pile": "p-7", "reset": "soft",
                             "heap_free": 40000, "heap_used": 50000, "code": "ram", "mpy": "1.25.0"})


class ScriptedBoard:
    """The Board methods verify uses; `console` is what the firmware prints
    after the soft reset."""

    console: list[str] = []
    files: dict[str, bytes] = {}

    def __init__(self, port, baud=115200):
        self.closed = False

    def board_platform(self):
        return "linux"

    def read_text(self, path):
        d = self.files.get(path)
        return None if d is None else d.decode()

    def exists(self, path):
        return path in self.files

    def hashes(self, paths):
        return [hashlib.sha256(self.files[p]).hexdigest() if p in self.files else None for p in paths]

    def free(self):
        return 4096, 256, 128

    def soft_reset_and_read(self, seconds, stop=None):
        out = []
        for t in self.console:
            out.append(t)
            if stop and stop(t):
                break
        return out

    def close(self):
        self.closed = True


def run_verify(monkeypatch, console, config=CONFIG, damaged=False):
    files = dict(FILES, SHA256SUMS=SUMS.encode())
    if config is not None:
        files["config.json"] = config.encode()
    if damaged:
        files["main.py"] = b"tampered"
    monkeypatch.setattr(ScriptedBoard, "files", files)
    monkeypatch.setattr(ScriptedBoard, "console", console)
    monkeypatch.setattr(verify_mod, "Board", ScriptedBoard)
    out = io.StringIO()
    rc = verify_mod.verify("/dev/fake", timeout=3, out=out)
    return rc, out.getvalue()


def checks_line(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("checks:")]
    assert len(lines) == 1, text
    return lines[0]


def test_all_checks_ran_and_passed(monkeypatch):
    rc, out = run_verify(monkeypatch, [BOOT, "LOG event 1200 selftest pass "])
    assert rc == OK, out
    assert checks_line(out) == "checks:   firmware files ok, config ok, boot ok, self-test pass"
    assert out.rstrip().endswith("/dev/fake: OK (4 checks ran and passed)")


def test_selftest_never_finished_is_not_ok(monkeypatch, capsys):
    # Booted, then waited for the bus devices until verify's timeout: the
    # old verify printed "not finished" and still said OK (exit 0).
    rc, out = run_verify(monkeypatch, [BOOT, "LOG boot h2pile 1.0", "LOG bus timeout unit 4"])
    assert rc == FAILED, out
    assert "self-test NOT RUN" in checks_line(out)
    assert "selftest: NOT RUN: not finished within 3 s" in out and "LOG bus timeout unit 4" in out
    assert ": OK" not in out
    err = capsys.readouterr().err
    assert "NOT OK" in err and "the self-test did not finish within 3 s" in err


@pytest.mark.parametrize("console, boot, why", [
    (["CONFIG ERROR config.json: key 'bus.baud': out of range"], "CONFIG ERROR", "CONFIG ERROR"),
    ([BOOT, "Traceback (most recent call last):", '  File "h2p/app.py", line 3', "MemoryError: alloc"],
     "CRASHED", "crashed: MemoryError"),
    (["MicroPython v1.25.0", ">>> "], "NO BOOT LINE", "no BOOT line"),
])
def test_selftest_did_not_run_after_a_boot_failure(monkeypatch, capsys, console, boot, why):
    rc, out = run_verify(monkeypatch, console)
    assert rc == FAILED
    line = checks_line(out)
    assert "boot %s" % boot in line and line.endswith("self-test NOT RUN"), line
    err = capsys.readouterr().err
    assert why in err and "the self-test did not run" in err


def test_selftest_fail_and_each_failed_check_named(monkeypatch, capsys):
    rc, out = run_verify(monkeypatch, [BOOT, "LOG event 900 selftest fail h2_lel,fc_temp"],
                         config='{"pile_id": "bad/id"}', damaged=True)
    assert rc == FAILED
    assert checks_line(out) == "checks:   firmware files DAMAGED, config INVALID, boot ok, self-test FAIL"
    assert "selftest: fail (h2_lel,fc_temp)" in out
    err = capsys.readouterr().err
    # an invalid config.json was printed, not counted: now it fails verify too
    assert "firmware files damaged" in err and "config.json invalid" in err and "self-test failed" in err


def test_no_config(monkeypatch, capsys):
    rc, out = run_verify(monkeypatch, [BOOT, "LOG event 1 selftest pass"], config=None)
    assert rc == FAILED
    assert "config NONE" in checks_line(out) and "not provisioned" in capsys.readouterr().err
