"""h2pile bus scan/read/write against the simulator served on a serial
pseudo-terminal (a socat pty pair stands in for the USB-RS-485 adapter and
the pile's line)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from host_tools import ROOT, cli

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    d = tmp_path_factory.mktemp("bus")
    sim_end, bus_end = str(d / "sim"), str(d / "bus")
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={bus_end}"])
    for _ in range(50):
        if os.path.exists(sim_end) and os.path.exists(bus_end):
            break
        time.sleep(0.05)
    sim = subprocess.Popen([sys.executable, "-m", "sim", "--serial", sim_end, "--control-port", "0",
                            "--turnaround-ms", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    first = sim.stdout.readline()
    assert "serving on " + sim_end in first, first
    yield bus_end
    sim.terminate()
    sim.wait(5)
    socat.terminate()
    socat.wait(5)


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_scan_finds_the_six_devices(line, capsys):
    t0 = time.monotonic()
    assert run("bus", "scan", "--port", line, "--range", "1-12") == 0
    dt = time.monotonic() - t0
    out = capsys.readouterr().out
    found = [int(x.split()[1]) for x in out.splitlines() if x.startswith("unit ")]
    assert found == [1, 2, 3, 4, 5, 6]
    assert "charger controller" in out and "6 unit(s) answered in 1..12" in out
    assert dt < 5  # 6 silent units at a short timeout each
    # A range with nobody in it: says so, non-zero.
    assert run("bus", "scan", "--port", line, "--range", "20-22") == 1
    assert "0 unit(s) answered" in capsys.readouterr().out


def test_read_decodes_by_name(line, capsys):
    assert run("bus", "read", "--port", line, "--device", "bms") == 0
    out = capsys.readouterr().out
    rows = {x.split()[0]: x.split() for x in out.splitlines() if x.startswith("  ")}
    from h2p import registers as R

    assert set(rows) == {f[0] for f in R.DEVICES["bms"]["readings"]}
    soc = float(rows["bat_soc"][-1])
    assert 0 < soc <= 100
    # The meter through its profile (float32, FC04 for the SDM630).
    assert run("bus", "read", "--port", line, "--unit", "5") == 0
    out = capsys.readouterr().out
    assert "[sdm630]" in out and "met_wh" in out and "FC04" in out


def test_write_needs_yes_then_reads_back(line, capsys):
    assert run("bus", "write", "--port", line, "chg_limit_a=17.5") == 1
    assert "not written" in capsys.readouterr().out
    assert run("bus", "read", "--port", line, "--device", "charger") == 0
    assert "chg_limit_a      command 0x0101 FC03  17.5" not in capsys.readouterr().out
    assert run("bus", "write", "--port", line, "chg_limit_a=17.5", "--yes") == 0
    assert "read back 17.5" in capsys.readouterr().out
    assert run("bus", "read", "--port", line, "--device", "charger") == 0
    assert "chg_limit_a      command 0x0101 FC03  17.5" in capsys.readouterr().out


def test_bad_input_one_line(line, tmp_path, capsys):
    # 3: the port cannot be opened; 2: bad input (host_tools/exitcodes.py)
    cases = [
        (["bus", "scan", "--port", tmp_path / "ttyNOPE"], 3, "cannot open the serial port"),
        (["bus", "read", "--port", line, "--device", "toaster"], 2, "--device 'toaster'"),
        (["bus", "write", "--port", line, "bat_soc=5", "--yes"], 2, "is a reading"),
        (["bus", "write", "--port", line, "nonsense=5", "--yes"], 2, "unknown command register"),
        (["bus", "write", "--port", line, "chg_limit_a=lots", "--yes"], 2, "must be a number"),
        (["bus", "write", "--port", line, "chg_limit_a=99999", "--yes"], 2, "out of range"),
        (["bus", "scan", "--port", line, "--range", "0-300"], 2, "1..247"),
    ]
    for argv, code, what in cases:
        assert run(*argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0], (argv, err)
