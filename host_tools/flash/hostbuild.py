"""The firmware build on this computer, as `flash` takes it: build/BOARD/
(built if missing) or a given directory, every file checked against its
SHA256SUMS before anything is sent to a board."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import TextIO

from host_tools import ROOT
from host_tools.exitcodes import MISMATCH, USAGE
from host_tools.flash.layout import parse_sums
from host_tools.flash.session import FlashError


def board_names() -> list[str]:
    """The boards there is a description for (boards/NAME.json)."""
    return sorted(n[:-5] for n in os.listdir(os.path.join(ROOT, "boards")) if n.endswith(".json"))


def load_build(board: str | None, build_dir: str | None, out: TextIO | None = None) -> tuple[str, dict, dict]:
    """(build dir, board.json, {relpath: sha256}) of a checked build."""
    from host_tools.build import build

    if build_dir is None:
        if not board:
            raise FlashError("give --board BOARD (one of: %s) or --build DIR" % ", ".join(board_names()),
                             USAGE)
        if board not in board_names():
            raise FlashError("--board %r: unknown board (known: %s)" % (board, ", ".join(board_names())),
                             USAGE)
        build_dir = os.path.join(ROOT, "build", board)
        if not os.path.exists(os.path.join(build_dir, "SHA256SUMS")):
            print(f"no build in {build_dir}: building it", file=out or sys.stdout)
            try:
                build(board)
            except SystemExit as e:
                raise FlashError(f"build failed: {e}", USAGE)
    sums_path = os.path.join(build_dir, "SHA256SUMS")
    try:
        with open(sums_path) as f:
            sums = parse_sums(f.read())
        with open(os.path.join(build_dir, "board.json")) as f:
            desc = json.load(f)
    except (OSError, ValueError) as e:
        raise FlashError(f"{build_dir}: not a firmware build ({e}); run `make firmware BOARD=...`", USAGE)
    with open(sums_path, "rb") as f:
        # The list goes on the board too: `verify` checks the files against it.
        sums["SHA256SUMS"] = hashlib.sha256(f.read()).hexdigest()
    if board and desc.get("name") != board:
        raise FlashError(f"{build_dir} is a build for {desc.get('name')!r}, not {board!r}", USAGE)
    for rel, h in sums.items():
        try:
            with open(os.path.join(build_dir, rel), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            got = None
        if got != h:
            raise FlashError(f"{build_dir}/{rel}: does not match SHA256SUMS (the build is damaged: "
                             f"rebuild with `make firmware BOARD={desc.get('name')}`)", MISMATCH)
    return build_dir, desc, sums
