"""Which MicroPython image the emulated Pico W boots, and whether it is one.

`--uf2 PATH`, else `$H2P_UF2`, else the newest `RPI_PICO_W-*.uf2` in
`<repo>/../shared/mcu/`. A missing file or one that is not a Pico W image
gives `NoImage` with one line saying so (the tests skip with that line); it
never reaches the emulator, where a wrong image would just hang.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from host_tools import ROOT

UF2_MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
FLAG_FAMILY = 0x00002000
RP2040_FAMILY = 0xE48BFF56
# MicroPython's board name, in every Pico W build's banner ("... on Raspberry Pi Pico W with RP2040").
BOARD_STRING = b"Raspberry Pi Pico W"
SHARED_MCU = Path(ROOT).parent / "shared" / "mcu"


class NoImage(Exception):
    """No usable Pico W image; str(e) is the one line to show."""


def default_uf2() -> Path | None:
    if not SHARED_MCU.is_dir():
        return None
    found = sorted(SHARED_MCU.glob("RPI_PICO_W-*.uf2"), key=lambda p: p.name)
    # Names carry the build date (RPI_PICO_W-20240602-v1.23.0.uf2): the last sorts newest.
    return found[-1] if found else None


def resolve(path: str | os.PathLike | None = None) -> Path:
    """The UF2 to boot, checked; raises NoImage with one line otherwise."""
    src = "--uf2"
    if path is None and os.environ.get("H2P_UF2"):
        path, src = os.environ["H2P_UF2"], "H2P_UF2"
    if path is None:
        p = default_uf2()
        if p is None:
            raise NoImage(f"no Pico W MicroPython image: give --uf2 PATH or H2P_UF2 (the official "
                          f"RPI_PICO_W-*.uf2 from micropython.org), none in {SHARED_MCU}")
        path, src = p, "default"
    p = Path(path)
    check(p, src)
    return p


def check(p: Path, src: str = "uf2") -> None:
    try:
        data = p.read_bytes()
    except OSError as e:
        raise NoImage(f"{src} {p}: cannot read ({e.strerror})") from None
    if len(data) < 512 or len(data) % 512:
        raise NoImage(f"{src} {p}: not a UF2 file (size {len(data)} is not a whole number of 512-byte blocks)")
    payload = bytearray()
    for off in range(0, len(data), 512):
        m0, m1, flags, _addr, size, _no, _n, family = struct.unpack_from("<8I", data, off)
        (m2,) = struct.unpack_from("<I", data, off + 508)
        if (m0, m1, m2) != UF2_MAGIC:
            raise NoImage(f"{src} {p}: not a UF2 file (bad magic in block {off // 512})")
        if not flags & FLAG_FAMILY or family != RP2040_FAMILY:
            raise NoImage(f"{src} {p}: not an RP2040 image (UF2 family 0x{family:08x}, "
                          f"RP2040 is 0x{RP2040_FAMILY:08x})")
        payload += data[off + 32:off + 32 + min(size, 476)]
    if BOARD_STRING not in payload:
        raise NoImage(f"{src} {p}: an RP2040 image but not MicroPython for the Pico W "
                      f"(no {BOARD_STRING.decode()!r} board string; a plain Pico image has no WiFi)")
