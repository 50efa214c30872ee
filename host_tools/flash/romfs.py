"""The ROMFS partition: where a board has one (MicroPython 1.25+,
vfs.rom_ioctl), the firmware's code goes there as the build's rom.img and
runs in place. This module checks the image against the build, finds the
partition, hashes what it holds and writes a new image, header last; the
board side is the ROMFS part of board_agent.py.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
from typing import cast

from host_tools.exitcodes import BOARD_ERROR, MISMATCH, USAGE
from host_tools.flash.session import Board, FlashError, ProgressFn, board_err

ROM_CHUNK = 1024  # bytes of ROM image per exec: a multiple of every port's flash write size (RP2040: 256)


def info(b: Board) -> dict | None:
    """ROMFS partition 0: {"size", "block", "kind"}, or None when the board
    has none (MicroPython before 1.25, or a build without the partition)."""
    if "rom" not in b.facts:
        b.load_agent("rom")
        q = cast("tuple[int, int, str] | None", b.eval("agent_rom_query()"))
        b.facts["rom"] = None if q is None else {"size": q[0], "block": q[1], "kind": q[2]}
    return cast("dict | None", b.facts["rom"])


def sha(b: Board) -> str | None:
    """sha256 of the ROMFS image in partition 0 (its length is in its
    header), None when the partition holds no image or there is none."""
    if info(b) is None:
        return None
    return cast("str | None", b.eval("agent_rom_image_sha256()"))


def write(b: Board, img: bytes, progress: ProgressFn | None = None) -> None:
    """Erase and program ROMFS partition 0 with img. The header chunk goes
    last: cut off anywhere before that, the partition holds no valid image
    (MicroPython mounts nothing at /rom), never a partial one."""
    from mpremote.transport import TransportExecError

    try:
        b.exec("agent_rom_prepare(%d)" % len(img), timeout=120)
        offsets = list(range(ROM_CHUNK, len(img), ROM_CHUNK)) + [0]
        for o in offsets:
            chunk = img[o:o + ROM_CHUNK]
            b.exec("agent_rom_write(%d, %r)" % (o, base64.b64encode(chunk).decode()))
            if progress:
                progress(len(chunk), "ROMFS partition")
        b.exec("agent_rom_finish()")
    except TransportExecError as e:
        raise FlashError(f"{b.port}: board error writing the ROMFS partition: "
                         f"{board_err(e.error_output)}", BOARD_ERROR)


def image(bdir: str, name: str) -> bytes:
    """The build's rom.img, checked: it must be the ROMFS image of the build's
    lib/, whose files load_build checked against SHA256SUMS (SHA256SUMS lists
    what goes on the filesystem, so it does not name rom.img itself)."""
    from mpremote.romfs import make_romfs

    path = os.path.join(bdir, "rom.img")
    try:
        with open(path, "rb") as f:
            img = f.read()
    except OSError:
        raise FlashError(f"{path}: missing (a build from before ROM images): rebuild with "
                         f"`make firmware BOARD={name}`", USAGE)
    with contextlib.redirect_stdout(io.StringIO()):  # make_romfs lists every file
        want = make_romfs(os.path.join(bdir, "lib"), mpy_cross=False)
    if img != want:
        raise FlashError(f"{path}: is not the ROMFS image of {bdir}/lib (the build is damaged: "
                         f"rebuild with `make firmware BOARD={name}`)", MISMATCH)
    return img
