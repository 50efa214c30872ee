"""The Pico W's littlefs region as a file, built and read on the host (littlefs-python).

Block size 4096, 212 blocks (MicroPython v1.23's rp2 layout, flash offset
1,228,800), on-disk version 2.0 when made here (MicroPython
v1.23 mounts it, and leaves 2.1 once it has written to it). `install` puts a
firmware build (what `h2pile flash` would copy) and a config.json on it, for
the tests that do not exercise the flashing itself; `read` gets a file back
(the journal, a crash record) from an image the board saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from host_tools.emu.board import PICO_W_FS

DISK_VERSION_2_0 = 0x00020000


def _lfs(buffer: bytes | None = None) -> Any:
    """A fresh formatted filesystem (buffer None), or `buffer` mounted as it is. Reading never
    formats: a board that has written its flash leaves on-disk version 2.1, which a mount
    forced to 2.0 refuses, and littlefs-python would then format the image away."""
    from littlefs import LittleFS, UserContext

    size = PICO_W_FS.fs_blocksize * PICO_W_FS.fs_blockcount
    geometry = {"block_size": PICO_W_FS.fs_blocksize, "block_count": PICO_W_FS.fs_blockcount, "prog_size": 256}
    if buffer is None:
        # Formatted as 2.0, which every MicroPython since 1.19 mounts.
        return LittleFS(context=UserContext(buffsize=size), disk_version=DISK_VERSION_2_0, **geometry)
    if len(buffer) != size:
        raise ValueError(f"a Pico W littlefs image is {size} bytes, not {len(buffer)}")
    fs = LittleFS(context=UserContext(buffer=bytearray(buffer)), mount=False, **geometry)
    fs.mount()
    return fs


def _mkdirs(fs: Any, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        try:
            fs.mkdir(d)
        except FileExistsError:
            pass


def install(out: str | os.PathLike[str], build_dir: str | os.PathLike[str], config: dict[str, Any] | None,
            extra: dict[str, bytes] | None = None) -> Path:
    """A fresh image holding the build's files (as `h2pile flash` lays them out), config.json
    and `data/`."""
    fs = _lfs()
    root = Path(build_dir)
    sums = (root / "SHA256SUMS").read_text().split("\n")
    files = [line.split(None, 1)[1].strip() for line in sums if line.strip()] + ["SHA256SUMS"]
    for rel in files:
        if "/" in rel:
            _mkdirs(fs, rel.rsplit("/", 1)[0])
        with fs.open(rel, "wb") as f:
            f.write((root / rel).read_bytes())
    blobs = dict(extra or {})
    if config is not None:
        blobs["config.json"] = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
        if config.get("data_dir", "data") not in blobs:
            _mkdirs(fs, config.get("data_dir", "data"))
    for name, data in blobs.items():
        if "/" in name:
            _mkdirs(fs, name.rsplit("/", 1)[0])
        with fs.open(name, "wb") as f:
            f.write(data)
    fs.unmount()
    p = Path(out)
    p.write_bytes(bytes(fs.context.buffer))
    return p


def read(image: str | os.PathLike[str], path: str) -> bytes | None:
    """A file from a saved image; None if absent."""
    fs = _lfs(Path(image).read_bytes())
    try:
        with fs.open(path, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError:
        return None
    finally:
        fs.unmount()


def listdir(image: str | os.PathLike[str], path: str = "/") -> list[str]:
    fs = _lfs(Path(image).read_bytes())
    try:
        return sorted(fs.listdir(path))
    finally:
        fs.unmount()
