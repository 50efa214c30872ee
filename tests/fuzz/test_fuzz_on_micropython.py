"""The fuzz corpus replayed on the MicroPython unix port, where the firmware
runs: its json, str and hash differ from CPython's (a config.json that is no
UTF-8 raised UnicodeError at boot there, a journal record whose id is a list
raised TypeError). Every input of every target gets an outcome, no crash."""

import os
import subprocess

import pytest

from tests.fuzz import kit
from tests.helpers.fwbuild import MICROPYTHON, ROOT

pytestmark = pytest.mark.micropython

TARGETS = ("modbus", "cmdhandler", "config", "journal")


def test_corpus_on_micropython(tmp_path):
    env = dict(os.environ, MICROPYPATH=":".join((".frozen", os.path.join(ROOT, "firmware"))))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=1M", os.path.join(ROOT, "tests", "helpers", "mp_fuzz_corpus.py"),
                        str(kit.CORPUS), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "crashes 0", "\n".join(x for x in lines if " CRASH " in x)
    # every corpus file had its turn
    out = {}
    for x in lines[:-1]:
        target, name, outcome = x.split(" ", 2)
        out[target, name] = outcome
    for t in TARGETS:
        for name, _ in kit.corpus(t):
            assert (t, name) in out, (t, name)
    assert out[("config", "not-utf8.json")].startswith("not UTF-8 text"), out[("config", "not-utf8.json")]
    assert out[("modbus", "read-fc03-ok.bin")] == "ok" and out[("modbus", "bad-crc.bin")] == "bad_crc"
    assert out[("journal", "found-open-id-list.bin")] == "7 records, 0 torn, 1 garbage runs"
