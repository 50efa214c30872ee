"""`h2pile flash`: copy a checked build to a board through /next/, check
every file's sha256 on the board, then switch over; and `--rollback`.

A flash is safe to interrupt: the running firmware is not touched until the
staged copy is checked, and the switch-over is a few renames the next
connection finishes if it was cut (layout.py). Where the board has a ROMFS
partition the code goes there as rom.img (romfs.py), written after the staged
files are checked, header last, and checked before the switch-over; being the
only copy of a ROM firmware's code, a write cut off there leaves the board on
the .mpy files in /prev/lib if any (main.py falls back to them), see
docs/field.md.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TextIO

from host_tools.exitcodes import MISMATCH, NO_SPACE, USAGE, WRONG_BOARD
from host_tools.flash import romfs
from host_tools.flash.hostbuild import load_build
from host_tools.flash.layout import (
    ENTRIES,
    PREV,
    ROM_ENTRY,
    STAGE,
    finish_switch,
    fw_hashes,
    parse_sums,
    sums_text,
    switch,
)
from host_tools.flash.progress import Progress
from host_tools.flash.session import Board, FlashError


def flash(port: str, board: str | None, build_dir: str | None = None, baud: int = 115200,
          space_check: bool = True, out: TextIO | None = None) -> dict:
    """Copy a build to the board through /next/, check it, switch over.
    On a board with a ROMFS partition the code goes into the partition as
    the build's rom.img (run in place) and only main.py, board.json, VERSION
    and SHA256SUMS onto the filesystem; elsewhere the .mpy files go to lib/.
    Returns {"sent": [...], "reused": [...], "version": ..., "code": "rom"|"mpy"}."""
    out = out or sys.stdout
    bdir, desc, sums = load_build(board, build_dir, out)
    b = Board(port, baud)
    try:
        plat = b.board_platform()
        if plat != desc["platform"]:
            raise FlashError(f"{port}: this is a {plat!r} board but the build {desc['name']!r} is for "
                             f"{desc['platform']!r} boards: refusing (pick the right --board)", WRONG_BOARD)
        if finish_switch(b):
            print("finished a switch-over an interruption had left half done", file=out)
        rom = romfs.info(b)
        img = None
        # What goes on the board's filesystem, by path in the firmware.
        payload = {}
        for f in sums:
            if f != "SHA256SUMS":
                with open(os.path.join(bdir, f), "rb") as fh:
                    payload[f] = fh.read()
        if rom is None:
            with open(os.path.join(bdir, "SHA256SUMS"), "rb") as fh:
                payload["SHA256SUMS"] = fh.read()
        else:
            img = romfs.image(bdir, desc["name"])
            if len(img) > rom["size"]:
                raise FlashError(
                    f"{port}: the ROM image ({len(img)} bytes) does not fit the board's ROMFS partition "
                    f"({rom['size']} bytes): nothing written, the previous firmware stays (a MicroPython "
                    f"build with a bigger ROMFS partition, or a smaller firmware)", NO_SPACE)
            # The code is the image: lib/ stays off the filesystem, and the
            # board's SHA256SUMS lists the image in place of the .mpy files.
            payload = {f: d for f, d in payload.items() if not f.startswith("lib/")}
            sums = {f: sums[f] for f in payload}
            sums[ROM_ENTRY] = hashlib.sha256(img).hexdigest()
            payload["SHA256SUMS"] = sums_text(sums)
            sums["SHA256SUMS"] = hashlib.sha256(payload["SHA256SUMS"]).hexdigest()
            print(f"{port}: ROMFS partition of {rom['size'] // 1024} KB ({rom['kind']}): the code goes "
                  f"there as a ROM image of {len(img) / 1024:.1f} KB, run in place", file=out)
        files = sorted(sums)
        lfs = sorted(payload)  # the entries of `files` that are files on the filesystem
        live = dict(zip(files, fw_hashes(b, "", files)))
        # A ROM firmware needs lib/h2p gone: it would shadow /rom (sys.path has /lib first).
        lib_live = b.exists("lib/h2p")
        if all(live[f] == sums[f] for f in files) and not (img is not None and lib_live):
            b.run("agent_remove(%r)" % STAGE, "removing a stale staging directory")
            print(f"{port}: the board already runs this build ({len(files)} files, all hashes "
                  f"match): nothing to copy", file=out)
            return {"sent": [], "reused": files, "unchanged": True, "code": "rom" if img else "mpy"}
        # A leftover staging directory from an interrupted flash goes first.
        b.run("agent_remove(%r)" % STAGE, "removing a stale staging directory")
        bsize, blocks, free_blocks = b.free()
        # littlefs keeps small files inline in their directory's metadata:
        # whole blocks of data plus a little for the directories.
        need = sum(-(-len(payload[f]) // bsize) for f in lfs) + 4
        if space_check and need > free_blocks:
            raise FlashError(
                f"{port}: board filesystem too full for a safe update: the new firmware needs about "
                f"{need * bsize // 1024} KB next to the running one, {free_blocks * bsize // 1024} KB "
                f"free of {blocks * bsize // 1024} KB (delete data or use a board with more flash)", NO_SPACE)
        had_fw = live.get("main.py") is not None
        send = [f for f in lfs if live[f] != sums[f]]
        reuse = [f for f in lfs if live[f] == sums[f]]
        dirs = sorted({STAGE + "/" + os.path.dirname(f) for f in lfs if "/" in f} | {STAGE})
        try:
            b.run("".join("agent_makedirs(%r)\n" % d for d in dirs), "creating the staging directory")
            if reuse:
                b.run("".join("agent_copy(%r, %r)\n" % (f, STAGE + "/" + f) for f in reuse),
                      "copying unchanged files on the board")
            prog = Progress(sum(len(payload[f]) for f in send), "flash", out)
            b.write_files([(STAGE + "/" + f, payload[f]) for f in send], prog.add)
            prog.end()
        except FlashError as e:
            # Give the space back; the running firmware was never touched.
            try:
                b.run("agent_remove(%r)" % STAGE, "removing the staging directory")
            except FlashError:
                pass
            raise FlashError(f"{e}: not switched, the previous firmware stays", e.code)
        got = b.hashes([STAGE + "/" + f for f in lfs])
        bad = [f for f, h in zip(lfs, got) if h != sums[f]]
        if bad:
            b.run("agent_remove(%r)" % STAGE, "removing the staging directory")
            raise FlashError(f"{port}: sha256 on the board does not match the build for {bad[0]}"
                             f"{' and %d more' % (len(bad) - 1) if len(bad) > 1 else ''}: "
                             f"not switched, the previous firmware stays", MISMATCH)
        if img is not None and live[ROM_ENTRY] != sums[ROM_ENTRY]:
            # The only step that touches code the board may be running: the
            # staged files are checked, so the switch-over follows at once.
            prog = Progress(len(img), "rom", out)
            romfs.write(b, img, prog.add)
            prog.end()
            if romfs.sha(b) != sums[ROM_ENTRY]:
                b.run("agent_remove(%r)" % STAGE, "removing the staging directory")
                raise FlashError(
                    f"{port}: sha256 of the ROMFS partition does not match the build's rom.img: not "
                    f"switched; " + ("the previous firmware stays (its code is the .mpy files in lib/)"
                                      if lib_live else "the previous firmware's code was the ROM image: "
                                      "flash again (until then main.py runs the .mpy files in prev/lib, "
                                      "if any)"), MISMATCH)
        switch(b, STAGE, PREV, [e for e in ENTRIES if any(f == e or f.startswith(e + "/") for f in lfs)])
        got = fw_hashes(b, "", files)
        if got != [sums[f] for f in files]:
            raise FlashError(f"{port}: after the switch-over the files on the board do not match "
                             f"the build: run `h2pile flash --rollback`", MISMATCH)
        version = payload["VERSION"].decode().strip()
        where = (f"code in the ROMFS partition ({len(img)} bytes, sha256 checked on the board)"
                 if img is not None else "code as .mpy files in lib/")
        print(f"{port}: flashed {desc['name']} {version}: {len(send)} files sent, {len(reuse)} "
              f"unchanged, all {len(files)} sha256 checked on the board; {where}"
              f"{'; previous firmware kept in /%s/' % PREV if had_fw else ''} (reset the board or "
              f"run `h2pile verify` to start it)", file=out)
        return {"sent": send, "reused": reuse, "version": version, "code": "rom" if img else "mpy"}
    finally:
        b.close()


def rollback(port: str, baud: int = 115200, out: TextIO | None = None) -> None:
    """Switch back to the firmware in /prev/ (the one the last flash replaced)."""
    out = out or sys.stdout
    b = Board(port, baud)
    try:
        finish_switch(b)
        text = b.read_text(PREV + "/SHA256SUMS")
        if text is None:
            raise FlashError(f"{port}: no previous firmware in /{PREV}/ to roll back to", USAGE)
        sums = parse_sums(text)
        files = sorted(sums)
        got = fw_hashes(b, PREV, files)
        bad = [f for f, h in zip(files, got) if h != sums[f]]
        if bad == [ROM_ENTRY]:
            raise FlashError(f"{port}: the previous firmware in /{PREV}/ ran from the ROM image, and the "
                             f"ROMFS partition now holds other code: not rolled back (flash that "
                             f"firmware's build instead)", MISMATCH)
        if bad:
            raise FlashError(f"{port}: the previous firmware in /{PREV}/ is damaged ({bad[0]} does "
                             f"not match its SHA256SUMS): not rolled back", MISMATCH)
        have = [e for e in ENTRIES if b.exists(PREV + "/" + e)]
        b.run("agent_remove(%r)\nos.rename(%r, %r)" % (STAGE, PREV, STAGE), "preparing the rollback")
        switch(b, STAGE, PREV, have)
        version = (b.read_text("VERSION") or "?").strip()
        print(f"{port}: rolled back to {version}; the firmware it replaced is in /{PREV}/", file=out)
    finally:
        b.close()
