"""The firmware's place on a board's filesystem and the switch-over.

A firmware is the entries ENTRIES at the top of the filesystem (everything
else, such as config.json, ca.der and data/, belongs to the pile and is never
touched) plus, on a board with a ROMFS partition, the ROM image there. A new
one is staged in /next/; the switch-over moves the live entries to /prev/
(kept for `--rollback`) and /next/'s into place, by renames the board runs
itself (board_agent.agent_finish_switch). A `.switch` mark written first
lists what the staging held, so a switch-over an interruption left half
done is finished the next time a tool connects (finish_switch).
"""

from __future__ import annotations

from host_tools.flash import romfs
from host_tools.flash.session import Board

ENTRIES = ("main.py", "board.json", "VERSION", "SHA256SUMS", "lib/h2p")
STAGE = "next"
PREV = "prev"
SWITCH_MARK = ".switch"
# In SHA256SUMS on the board: the firmware's code is the ROM image in the
# partition, not lib/h2p on the filesystem.
ROM_ENTRY = "rom.img"


def parse_sums(text: str) -> dict[str, str]:
    """SHA256SUMS text -> {relative path: sha256}."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            h, p = line.split(None, 1)
            sums[p.strip()] = h
    return sums


def sums_text(sums: dict[str, str]) -> bytes:
    return "".join(f"{sums[f]}  {f}\n" for f in sorted(sums)).encode()


def fw_hashes(b: Board, base: str, files: list[str]) -> list[str | None]:
    """Hashes of a firmware's entries as SHA256SUMS lists them: files on the
    filesystem under base/, and ROM_ENTRY, the image in the partition."""
    fs = [f for f in files if f != ROM_ENTRY]
    got = dict(zip(fs, b.hashes([base + "/" + f if base else f for f in fs])))
    if ROM_ENTRY in files:
        got[ROM_ENTRY] = romfs.sha(b)
    return [got[f] for f in files]


def finish_switch(b: Board) -> bool:
    """Complete a switch-over an interruption left half done; True if there was one."""
    mark = b.read_text(SWITCH_MARK)
    if mark is None:
        return False
    words = mark.split()
    src, keep = (words + [STAGE, PREV])[:2]
    # A mark without the list of entries is from an older h2pile: all of them.
    have = words[2:] or list(ENTRIES)
    b.run("agent_finish_switch(%r, %r, %r, %r)" % (src, keep, ENTRIES, have),
          "finishing an interrupted switch-over")
    return True


def switch(b: Board, src: str, keep: str, have: list[str]) -> None:
    """Put the firmware in src/ in place (it holds the entries `have`), the
    running one into keep/. Entries src lacks leave with the old one."""
    # The whole switch-over runs on the board in one exec: a few renames.
    b.run("agent_remove(%r)\nagent_makedirs(%r)\nf=open(%r,'w')\nf.write(%r)\nf.close()\n"
          "agent_finish_switch(%r, %r, %r, %r)"
          % (keep, keep, SWITCH_MARK, " ".join([src, keep] + list(have)), src, keep, ENTRIES, list(have)),
          "switching to the new firmware")
