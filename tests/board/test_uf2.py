"""Which image the emulated board boots: a missing or wrong UF2 is one line, never a hang.

No emulator here: these run in milliseconds, with or without an image."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.emu import uf2

ROOT = Path(__file__).resolve().parents[2]


def _uf2(path: Path, payload: bytes, family: int = uf2.RP2040_FAMILY) -> Path:
    blocks = [payload[i:i + 256] for i in range(0, len(payload), 256)] or [b""]
    out = bytearray()
    for n, chunk in enumerate(blocks):
        head = struct.pack("<8I", uf2.UF2_MAGIC[0], uf2.UF2_MAGIC[1], uf2.FLAG_FAMILY, 0x10000000 + 256 * n,
                           256, n, len(blocks), family)
        out += head + chunk.ljust(476, b"\0") + struct.pack("<I", uf2.UF2_MAGIC[2])
    path.write_bytes(bytes(out))
    return path


def _text(path: Path) -> Path:
    path.write_bytes(b"hello")
    return path


def test_a_pico_w_image_passes(tmp_path):
    p = _uf2(tmp_path / "w.uf2", b"MicroPython v1.23.0; Raspberry Pi Pico W with RP2040" * 10)
    assert uf2.resolve(p) == p


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.uf2", "cannot read"),
    (lambda d: _text(d / "x.uf2"), "not a UF2 file"),
    (lambda d: _uf2(d / "pico.uf2", b"MicroPython v1.23.0; Raspberry Pi Pico with RP2040" * 10),
     "not MicroPython for the Pico W"),
    (lambda d: _uf2(d / "esp.uf2", b"Raspberry Pi Pico W" * 10, family=0x1C5F21B0), "not an RP2040 image"),
])
def test_a_wrong_image_is_one_line(tmp_path, make, words):
    with pytest.raises(uf2.NoImage) as e:
        uf2.resolve(make(tmp_path))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_env_var_and_cli_check(tmp_path, monkeypatch):
    bad = _uf2(tmp_path / "pico.uf2", b"Raspberry Pi Pico with RP2040" * 10)
    monkeypatch.setenv("H2P_UF2", str(bad))
    with pytest.raises(uf2.NoImage, match="H2P_UF2"):
        uf2.resolve()
    r = subprocess.run([sys.executable, "-m", "host_tools.picow", "--check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "H2P_UF2": str(bad)})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "not MicroPython for the Pico W" in r.stderr
