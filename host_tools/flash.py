"""`h2pile flash | provision | verify`: put the firmware on a board, give it
its identity, and check that it boots.

    h2pile flash --port /dev/ttyUSB0 --board esp32_generic
    h2pile flash --port /dev/ttyUSB0 --rollback
    h2pile provision --port /dev/ttyUSB0 --pile-id p-0042 --fleet-secret-file fleet.key \\
        --wifi 'site:pass' --broker mqtt.example.net:8883 --tls --ca fleet-ca.pem
    h2pile verify --port /dev/ttyUSB0

The board is driven over its USB serial REPL (mpremote's raw REPL, without a
soft reset, so a running firmware is stopped with Ctrl-C and its watchdog
keeps being fed). A flash is safe to interrupt: the new firmware is copied
into /next/ and every file's sha256 is checked on the board before the
switch-over, which moves the running firmware to /prev/ (kept for
`--rollback`) and /next/ into place. An interrupted switch-over is finished
the next time the tool connects. Any problem ends with one line on stderr
and a non-zero exit; the board keeps the firmware it had.

Where the board has a ROMFS partition (MicroPython 1.25+, vfs.rom_ioctl),
the code goes there as the build's rom.img and runs in place; only main.py,
board.json, VERSION and SHA256SUMS go through /next/. The partition is
written after the staged files are checked, header last, and its sha256 is
checked before the switch-over; being the only copy of a ROM firmware's
code, a write cut off there leaves the board on the .mpy files in /prev/lib
if any (main.py falls back to them), see docs/field.md.

Exit codes: 2 bad input (arguments, build, config), 3 port or board not
answering, 4 wrong kind of board, 5 board filesystem full or ROM image
bigger than the ROMFS partition, 6 hash mismatch, 7 board-side error,
1 the firmware did not boot cleanly (verify).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time

from host_tools import ROOT

# Firmware entries on the board's filesystem (everything else, such as
# config.json, ca.der and data/, belongs to the pile and is never touched).
ENTRIES = ("main.py", "board.json", "VERSION", "SHA256SUMS", "lib/h2p")
STAGE = "next"
PREV = "prev"
SWITCH_MARK = ".switch"
CONNECT_TIMEOUT = 5.0  # seconds for the board to show its raw REPL
CHUNK = 1536  # bytes of file per exec (2 KB of base64)
ROM_CHUNK = 1024  # bytes of ROM image per exec: a multiple of every port's flash write size (RP2040: 256)
# In SHA256SUMS on the board: the firmware's code is the ROM image in the
# partition, not lib/h2p on the filesystem.
ROM_ENTRY = "rom.img"
# sys.platform -> board.json platform
PLATFORMS = {"esp32": "esp32", "rp2": "rp2", "linux": "unix", "darwin": "unix"}


class FlashError(Exception):
    def __init__(self, msg, code=7):
        super().__init__(msg)
        self.code = code


# Defined once per session in the board's raw REPL (globals persist).
_HELPERS = r'''
import os, sys, hashlib, binascii
# The watchdog the stopped firmware started (machine.WDT on a board, a
# thread on the unix board), fed directly: the firmware's own feed_hw()
# would run its bytecode, which on a ROMFS board is in the partition a
# flash erases.
_W = getattr(sys.modules.get('h2p.board_mcu') or sys.modules.get('h2p.board_unix'), '_hw_wdt', None)
def _k():
    if _W:
        _W.feed()
def _ex(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
def _isd(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False
def _h(p):
    _k()
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _hs(ps):
    print(repr([_h(p) for p in ps]))

def _rm(p):
    _k()
    if _isd(p):
        for n in os.listdir(p):
            _rm(p + '/' + n)
        os.rmdir(p)
    elif _ex(p):
        os.remove(p)
def _mk(p):
    q = ''
    for part in p.split('/'):
        q = q + '/' + part if q else part
        if not _ex(q):
            os.mkdir(q)
def _cp(a, b):
    _k()
    b1 = bytearray(512)
    with open(a, 'rb') as fa, open(b, 'wb') as fb:
        while True:
            n = fa.readinto(b1)
            if not n:
                break
            fb.write(memoryview(b1)[:n])

def _free():
    s = os.statvfs('.')
    return (s[0], s[2], s[3])
def _op(p):
    global _f
    _f = open(p, 'wb')
def _wr(s):
    _k()
    _f.write(binascii.a2b_base64(s))
def _cl():
    _f.close()

def _walk(p, out):
    for n in os.listdir(p):
        q = p + '/' + n if p else n
        if _isd(q):
            _walk(q, out)
        else:
            out.append(q)
    return out
def _keep(e, keep):
    d = keep + '/' + e
    _mk(d.rsplit('/', 1)[0])
    if _ex(d):
        _rm(e)
    else:
        os.rename(e, d)
def _fin(src, keep, es, have):
    # have: the entries src held when the switch began (the .switch mark
    # says so), so a rerun after an interruption knows what is still to do.
    for e in es:
        if e in have:
            if _ex(src + '/' + e):
                if _ex(e):
                    _keep(e, keep)
                if '/' in e:
                    _mk(e.rsplit('/', 1)[0])
                os.rename(src + '/' + e, e)
        elif _ex(e):
            # Not part of the new firmware (lib/h2p when its code is the ROM
            # image): it goes with the old one, or it would shadow /rom.
            _keep(e, keep)
    _rm(src)
    os.remove('.switch')
'''


# ROMFS partition 0, defined when `flash` asks (MicroPython 1.25+). Two kinds
# of port: vfs.rom_ioctl(2, 0) gives a block device (ESP32 esp32.Partition,
# RP2040 rp2.Flash: erase with ioctl(6, block), program with 4-argument
# writeblocks) or a memoryview of the flash (stm32, samd, mimxrt: erase with
# rom_ioctl(3), program with rom_ioctl(4), then rom_ioctl(5)).
_ROM_HELPERS = r"""
try:
    import vfs
except ImportError:
    vfs = None
def _rq():
    # (size, erase block, kind) of partition 0, or None: no ROMFS here.
    global _rd, _rk, _rb
    if vfs is None or not hasattr(vfs, 'rom_ioctl') or vfs.rom_ioctl(1) <= 0:
        return None
    _rd = vfs.rom_ioctl(2, 0)
    if isinstance(_rd, int):
        return None
    _rk = hasattr(_rd, 'ioctl')
    if _rk:
        _rb = _rd.ioctl(5, 0)
        return (_rd.ioctl(4, 0) * _rb, _rb, 'block device')
    _rb = vfs.rom_ioctl(6, 0)
    return (len(_rd), _rb, 'memory')
def _rr(o, m):
    # Read len(m) bytes at offset o into m.
    if _rk:
        _rd.readblocks(o // _rb, m, o % _rb)
    else:
        m[:] = _rd[o:o + len(m)]
def _rl():
    # Length of the image in the partition, from its header (magic, then
    # the payload length as a big-endian base-128 number); 0: no image.
    b = bytearray(8)
    _rr(0, b)
    if b[:3] != b'\xd2\xcd\x31':
        return 0
    n = 0
    i = 3
    while i < 8:
        n = (n << 7) | (b[i] & 0x7f)
        if not b[i] & 0x80:
            return i + 1 + n
        i += 1
    return 0
def _rs(n):
    h = hashlib.sha256()
    b = bytearray(1024)
    o = 0
    while o < n:
        _k()
        m = memoryview(b)[:min(1024, n - o)]
        _rr(o, m)
        h.update(m)
        o += len(m)
    return binascii.hexlify(h.digest()).decode()
def _rsh():
    n = _rl()
    return _rs(n) if n else None
def _rck(r, what):
    if isinstance(r, int) and r < 0:
        raise OSError(-r, what)
    return r
def _rp(n):
    # Prepare n bytes for writing: unmount /rom and forget the modules run
    # from it (their bytecode is about to go), then erase, feeding the
    # watchdog per block; _rg: the write size a chunk is padded to.
    global _rg, _W
    if hasattr(_W, 'stop'):
        # The unix board's watchdog is firmware code on a thread of its own:
        # stopped before its code is erased (a machine.WDT has no stop).
        _W.stop()
        _W = None
        import time
        time.sleep_ms(300)
    try:
        vfs.umount('/rom')
    except OSError:
        pass
    for m in [m for m in sys.modules if m == 'h2p' or m.startswith('h2p.')]:
        del sys.modules[m]
    if _rk:
        for i in range((n + _rb - 1) // _rb):
            _k()
            _rd.ioctl(6, i)
        _rg = 256
    elif 0 < _rb < len(_rd):
        for o in range(0, n, _rb):
            _k()
            _rg = _rck(vfs.rom_ioctl(3, 0, o, _rb), 'erase')
    else:
        _k()
        _rg = _rck(vfs.rom_ioctl(3, 0, n), 'erase')
def _rw(o, s):
    _k()
    b = binascii.a2b_base64(s)
    if len(b) % _rg:
        b += bytes(_rg - len(b) % _rg)
    if _rk:
        _rd.writeblocks(o // _rb, b, o % _rb)
    else:
        _rck(vfs.rom_ioctl(4, 0, o, b), 'write')
def _rz():
    if not _rk:
        _rck(vfs.rom_ioctl(5, 0), 'finish')
"""


def _board_err(text: str) -> str:
    """Last line of a MicroPython traceback."""
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "error"


def _is_enospc(text: str) -> bool:
    return "ENOSPC" in text or "Errno 28" in text or re.search(r"OSError: 28\b", text) is not None


class Board:
    """A board's raw REPL over its serial port (mpremote's transport)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float | None = None):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        if not os.path.exists(port) and not port.startswith(("socket://", "rfc2217://")):
            raise FlashError(f"{port}: no such serial port (is the board plugged in? "
                             f"see `ls /dev/ttyUSB* /dev/ttyACM*`)", 3)
        try:
            # A read timeout, so a port with nothing behind it cannot hang us.
            self.t = SerialTransport(port, baudrate=baud, timeout=1)
        except (TransportError, OSError) as e:
            raise FlashError(f"{port}: cannot open the serial port ({e}; in use by another "
                             f"program, or no permission: add yourself to group dialout)", 3)
        self.timeout = timeout or CONNECT_TIMEOUT
        self.platform = None
        self._raw()

    def _raw(self):
        from mpremote.transport import TransportError

        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                self.t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
        except (TransportError, OSError) as e:
            self.close()
            raise FlashError(f"{self.port}: the board does not answer (no MicroPython REPL within "
                             f"{self.timeout:g} s: wrong port, wrong baud, or not running MicroPython) "
                             f"[{e}]", 3)
        # A firmware stopped with Ctrl-C still holds its heap until collected.
        self.exec("import gc\ngc.collect()")
        for part in _HELPERS.split("\n\n"):
            self.exec(part)

    def exec(self, code: str, timeout: float = 30) -> str:
        from mpremote.transport import TransportError, TransportExecError

        try:
            self.t.exec_raw_no_follow(code)
            out, err = self.t.follow(timeout)
        except TransportError as e:
            raise FlashError(f"{self.port}: the board stopped answering ({e})", 3)
        except OSError as e:
            raise FlashError(f"{self.port}: serial port error ({e})", 3)
        if err:
            raise TransportExecError(1, err.decode(errors="replace"))
        return out.decode(errors="replace")

    def eval(self, expr: str):
        import ast

        from mpremote.transport import TransportExecError

        try:
            return ast.literal_eval(self.exec("print(repr(%s))" % expr).strip())
        except TransportExecError as e:
            raise FlashError(f"{self.port}: board error: {_board_err(e.error_output)}", 7)

    def close(self):
        try:
            self.t.close()
        except Exception:
            pass

    # ---- board facts ------------------------------------------------------
    def board_platform(self) -> str:
        if self.platform is None:
            p = self.eval("sys.platform")
            self.platform = PLATFORMS.get(p, p)
        return self.platform

    def hashes(self, paths: list[str]) -> list[str | None]:
        out = []
        for i in range(0, len(paths), 20):
            out += self.eval("[_h(p) for p in %r]" % (paths[i:i + 20],))
        return out

    def read_text(self, path: str) -> str | None:
        return self.eval("(lambda: (_ex(%r) and open(%r).read()) or None)()" % (path, path))

    def free(self) -> tuple[int, int, int]:
        return tuple(self.eval("_free()"))  # type: ignore[return-value]

    def write_file(self, path: str, data: bytes, progress=None):
        from mpremote.transport import TransportExecError

        try:
            self.exec("_op(%r)" % path)
            for i in range(0, len(data), CHUNK):
                chunk = data[i:i + CHUNK]
                self.exec("_wr(%r)" % base64.b64encode(chunk).decode())
                if progress:
                    progress(len(chunk), path)
            self.exec("_cl()")
        except TransportExecError as e:
            try:
                self.exec("_cl()")
            except Exception:
                pass
            if _is_enospc(e.error_output):
                raise FlashError(f"board filesystem full while writing {path}", 5)
            raise FlashError(f"board error writing {path}: {_board_err(e.error_output)}", 7)

    def run(self, code: str, what: str):
        from mpremote.transport import TransportExecError

        try:
            return self.exec(code)
        except TransportExecError as e:
            if _is_enospc(e.error_output):
                raise FlashError(f"board filesystem full while {what}", 5)
            raise FlashError(f"board error while {what}: {_board_err(e.error_output)}", 7)

    def finish_switch(self) -> bool:
        """Complete a switch-over an interruption left half done."""
        mark = self.read_text(SWITCH_MARK)
        if mark is None:
            return False
        words = mark.split()
        src, keep = (words + [STAGE, PREV])[:2]
        # A mark without the list of entries is from an older h2pile: all of them.
        have = words[2:] or list(ENTRIES)
        self.run("_fin(%r, %r, %r, %r)" % (src, keep, ENTRIES, have), "finishing an interrupted switch-over")
        return True

    def switch(self, src: str, keep: str, have: list[str]):
        """Put the firmware in src/ in place (it holds the entries `have`),
        the running one into keep/. Entries src lacks leave with the old one."""
        # The whole switch-over runs on the board in one exec: a few renames.
        self.run("_rm(%r)\n_mk(%r)\nf=open(%r,'w')\nf.write(%r)\nf.close()\n_fin(%r, %r, %r, %r)"
                 % (keep, keep, SWITCH_MARK, " ".join([src, keep] + list(have)), src, keep, ENTRIES,
                    list(have)), "switching to the new firmware")

    # ---- the ROMFS partition (code in flash, run in place) -------------------
    def rom_info(self) -> dict | None:
        """ROMFS partition 0: {"size", "block", "kind"}, or None when the board
        has none (MicroPython before 1.25, or a build without the partition)."""
        if not hasattr(self, "_rom"):
            self.run(_ROM_HELPERS, "looking for a ROMFS partition")
            q = self.eval("_rq()")
            self._rom = None if q is None else {"size": q[0], "block": q[1], "kind": q[2]}
        return self._rom

    def rom_sha(self) -> str | None:
        """sha256 of the ROMFS image in partition 0 (its length is in its
        header), None when the partition holds no image."""
        if self.rom_info() is None:
            return None
        return self.eval("_rsh()")

    def fw_hashes(self, base: str, files: list[str]) -> list[str | None]:
        """Hashes of a firmware's entries as SHA256SUMS lists them: files on
        the filesystem under base/, and ROM_ENTRY, the image in the partition."""
        fs = [f for f in files if f != ROM_ENTRY]
        got = dict(zip(fs, self.hashes([base + "/" + f if base else f for f in fs])))
        if ROM_ENTRY in files:
            got[ROM_ENTRY] = self.rom_sha()
        return [got[f] for f in files]

    def write_rom(self, img: bytes, progress=None):
        """Erase and program ROMFS partition 0 with img. The header chunk goes
        last: cut off anywhere before that, the partition holds no valid
        image (MicroPython mounts nothing at /rom), never a partial one."""
        from mpremote.transport import TransportExecError

        try:
            self.exec("_rp(%d)" % len(img), timeout=120)
            offsets = list(range(ROM_CHUNK, len(img), ROM_CHUNK)) + [0]
            for o in offsets:
                chunk = img[o:o + ROM_CHUNK]
                self.exec("_rw(%d, %r)" % (o, base64.b64encode(chunk).decode()))
                if progress:
                    progress(len(chunk), "ROMFS partition")
            self.exec("_rz()")
        except TransportExecError as e:
            raise FlashError(f"{self.port}: board error writing the ROMFS partition: "
                             f"{_board_err(e.error_output)}", 7)

    # ---- reset and console -------------------------------------------------
    def soft_reset_and_read(self, seconds: float, stop=None) -> list[str]:
        """Leave the raw REPL, soft-reset (boots main.py), return console lines."""
        s = self.t.serial
        self.t.exit_raw_repl()
        time.sleep(0.1)
        s.reset_input_buffer() if hasattr(s, "reset_input_buffer") else None
        s.write(b"\x04")  # Ctrl-D at the friendly REPL: soft reset, runs main.py
        lines: list[str] = []
        buf = b""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n = s.in_waiting
            b = s.read(n or 1) if n else b""
            if not b:
                time.sleep(0.02)
                continue
            buf += b
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                t = line.decode(errors="replace").rstrip("\r")
                lines.append(t)
                if stop and stop(t):
                    return lines
        if buf.strip():
            lines.append(buf.decode(errors="replace").strip())
        return lines


# ---- the build on the host ----------------------------------------------------
def load_build(board: str | None, build_dir: str | None) -> tuple[str, dict, dict]:
    """(build dir, board.json, {relpath: sha256}) of a checked build."""
    from host_tools.build import build

    if build_dir is None:
        if not board:
            raise FlashError("give --board BOARD (one of: %s) or --build DIR" % ", ".join(board_names()), 2)
        if board not in board_names():
            raise FlashError("unknown board %r (known: %s)" % (board, ", ".join(board_names())), 2)
        build_dir = os.path.join(ROOT, "build", board)
        if not os.path.exists(os.path.join(build_dir, "SHA256SUMS")):
            print(f"no build in {build_dir}: building it")
            try:
                build(board)
            except SystemExit as e:
                raise FlashError(f"build failed: {e}", 2)
    sums_path = os.path.join(build_dir, "SHA256SUMS")
    try:
        with open(sums_path) as f:
            sums = {}
            for line in f:
                if line.strip():
                    h, p = line.split(None, 1)
                    sums[p.strip()] = h
        with open(os.path.join(build_dir, "board.json")) as f:
            desc = json.load(f)
    except (OSError, ValueError) as e:
        raise FlashError(f"{build_dir}: not a firmware build ({e}); run `make firmware BOARD=...`", 2)
    with open(sums_path, "rb") as f:
        # The list goes on the board too: `verify` checks the files against it.
        sums["SHA256SUMS"] = hashlib.sha256(f.read()).hexdigest()
    if board and desc.get("name") != board:
        raise FlashError(f"{build_dir} is a build for {desc.get('name')!r}, not {board!r}", 2)
    for rel, h in sums.items():
        try:
            with open(os.path.join(build_dir, rel), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            got = None
        if got != h:
            raise FlashError(f"{build_dir}/{rel}: does not match SHA256SUMS (the build is damaged: "
                             f"rebuild with `make firmware BOARD={desc.get('name')}`)", 6)
    return build_dir, desc, sums


def board_names() -> list[str]:
    return sorted(n[:-5] for n in os.listdir(os.path.join(ROOT, "boards")) if n.endswith(".json"))


class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, one line per
    10 % otherwise (logs, CI, pipes)."""

    def __init__(self, total: int, label: str, out=None, width: int = 30):
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.out = out or sys.stdout
        self.width = width
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.last_step = -1
        self.t0 = time.monotonic()

    def add(self, n: int, what: str = ""):
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        fill = self.width * pct // 100
        line = "%s [%s%s] %3d%% %6.1f/%.1f KB %s" % (
            self.label, "#" * fill, "." * (self.width - fill), pct, self.done / 1024,
            self.total / 1024, what)
        if self.tty:
            self.out.write("\r" + line[:120].ljust(120))
            self.out.flush()
        elif pct // 10 != self.last_step:
            self.last_step = pct // 10
            self.out.write(line + "\n")
            self.out.flush()

    def end(self):
        if self.tty:
            self.out.write("\n")
        dt = time.monotonic() - self.t0
        self.out.write("%s: %.1f KB in %.1f s\n" % (self.label, self.done / 1024, dt))
        self.out.flush()


def rom_image(bdir: str, name: str) -> bytes:
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
                         f"`make firmware BOARD={name}`", 2)
    with contextlib.redirect_stdout(io.StringIO()):  # make_romfs lists every file
        want = make_romfs(os.path.join(bdir, "lib"), mpy_cross=False)
    if img != want:
        raise FlashError(f"{path}: is not the ROMFS image of {bdir}/lib (the build is damaged: "
                         f"rebuild with `make firmware BOARD={name}`)", 6)
    return img


def _sums_text(sums: dict) -> bytes:
    return "".join(f"{sums[f]}  {f}\n" for f in sorted(sums)).encode()


# ---- flash ----------------------------------------------------------------------
def flash(port: str, board: str | None, build_dir: str | None = None, baud: int = 115200,
          space_check: bool = True, out=None) -> dict:
    """Copy a build to the board through /next/, check it, switch over.
    On a board with a ROMFS partition the code goes into the partition as
    the build's rom.img (run in place) and only main.py, board.json, VERSION
    and SHA256SUMS onto the filesystem; elsewhere the .mpy files go to lib/.
    Returns {"sent": [...], "reused": [...], "version": ..., "code": "rom"|"mpy"}."""
    out = out or sys.stdout
    bdir, desc, sums = load_build(board, build_dir)
    b = Board(port, baud)
    try:
        plat = b.board_platform()
        if plat != desc["platform"]:
            raise FlashError(f"{port}: this is a {plat!r} board but the build {desc['name']!r} is for "
                             f"{desc['platform']!r} boards: refusing (pick the right --board)", 4)
        if b.finish_switch():
            print("finished a switch-over an interruption had left half done", file=out)
        rom = b.rom_info()
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
            img = rom_image(bdir, desc["name"])
            if len(img) > rom["size"]:
                raise FlashError(
                    f"{port}: the ROM image ({len(img)} bytes) does not fit the board's ROMFS partition "
                    f"({rom['size']} bytes): nothing written, the previous firmware stays (a MicroPython "
                    f"build with a bigger ROMFS partition, or a smaller firmware)", 5)
            # The code is the image: lib/ stays off the filesystem, and the
            # board's SHA256SUMS lists the image in place of the .mpy files.
            payload = {f: d for f, d in payload.items() if not f.startswith("lib/")}
            sums = {f: sums[f] for f in payload}
            sums[ROM_ENTRY] = hashlib.sha256(img).hexdigest()
            payload["SHA256SUMS"] = _sums_text(sums)
            sums["SHA256SUMS"] = hashlib.sha256(payload["SHA256SUMS"]).hexdigest()
            print(f"{port}: ROMFS partition of {rom['size'] // 1024} KB ({rom['kind']}): the code goes "
                  f"there as a ROM image of {len(img) / 1024:.1f} KB, run in place", file=out)
        files = sorted(sums)
        lfs = sorted(payload)  # the entries of `files` that are files on the filesystem
        live = dict(zip(files, b.fw_hashes("", files)))
        # A ROM firmware needs lib/h2p gone: it would shadow /rom (sys.path has /lib first).
        lib_live = b.eval("_ex('lib/h2p')")
        if all(live[f] == sums[f] for f in files) and not (img is not None and lib_live):
            b.run("_rm(%r)" % STAGE, "removing a stale staging directory")
            print(f"{port}: the board already runs this build ({len(files)} files, all hashes "
                  f"match): nothing to copy", file=out)
            return {"sent": [], "reused": files, "unchanged": True, "code": "rom" if img else "mpy"}
        # A leftover staging directory from an interrupted flash goes first.
        b.run("_rm(%r)" % STAGE, "removing a stale staging directory")
        bsize, blocks, free_blocks = b.free()
        # littlefs keeps small files inline in their directory's metadata:
        # whole blocks of data plus a little for the directories.
        need = sum(-(-len(payload[f]) // bsize) for f in lfs) + 4
        if space_check and need > free_blocks:
            raise FlashError(
                f"{port}: board filesystem too full for a safe update: the new firmware needs about "
                f"{need * bsize // 1024} KB next to the running one, {free_blocks * bsize // 1024} KB "
                f"free of {blocks * bsize // 1024} KB (delete data or use a board with more flash)", 5)
        had_fw = live.get("main.py") is not None
        send = [f for f in lfs if live[f] != sums[f]]
        reuse = [f for f in lfs if live[f] == sums[f]]
        dirs = sorted({STAGE + "/" + os.path.dirname(f) for f in lfs if "/" in f} | {STAGE})
        try:
            b.run("".join("_mk(%r)\n" % d for d in dirs), "creating the staging directory")
            if reuse:
                b.run("".join("_cp(%r, %r)\n" % (f, STAGE + "/" + f) for f in reuse),
                      "copying unchanged files on the board")
            prog = Progress(sum(len(payload[f]) for f in send), "flash", out)
            for f in send:
                b.write_file(STAGE + "/" + f, payload[f], prog.add)
            prog.end()
        except FlashError as e:
            # Give the space back; the running firmware was never touched.
            try:
                b.run("_rm(%r)" % STAGE, "removing the staging directory")
            except FlashError:
                pass
            raise FlashError(f"{e}: not switched, the previous firmware stays", e.code)
        got = b.hashes([STAGE + "/" + f for f in lfs])
        bad = [f for f, h in zip(lfs, got) if h != sums[f]]
        if bad:
            b.run("_rm(%r)" % STAGE, "removing the staging directory")
            raise FlashError(f"{port}: sha256 on the board does not match the build for {bad[0]}"
                             f"{' and %d more' % (len(bad) - 1) if len(bad) > 1 else ''}: "
                             f"not switched, the previous firmware stays", 6)
        if img is not None and live[ROM_ENTRY] != sums[ROM_ENTRY]:
            # The only step that touches code the board may be running: the
            # staged files are checked, so the switch-over follows at once.
            prog = Progress(len(img), "rom", out)
            b.write_rom(img, prog.add)
            prog.end()
            if b.rom_sha() != sums[ROM_ENTRY]:
                b.run("_rm(%r)" % STAGE, "removing the staging directory")
                raise FlashError(
                    f"{port}: sha256 of the ROMFS partition does not match the build's rom.img: not "
                    f"switched; " + ("the previous firmware stays (its code is the .mpy files in lib/)"
                                      if lib_live else "the previous firmware's code was the ROM image: "
                                      "flash again (until then main.py runs the .mpy files in prev/lib, "
                                      "if any)"), 6)
        b.switch(STAGE, PREV, [e for e in ENTRIES if any(f == e or f.startswith(e + "/") for f in lfs)])
        got = b.fw_hashes("", files)
        if got != [sums[f] for f in files]:
            raise FlashError(f"{port}: after the switch-over the files on the board do not match "
                             f"the build: run `h2pile flash --rollback`", 6)
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


def rollback(port: str, baud: int = 115200, out=None) -> None:
    out = out or sys.stdout
    b = Board(port, baud)
    try:
        b.finish_switch()
        text = b.read_text(PREV + "/SHA256SUMS")
        if text is None:
            raise FlashError(f"{port}: no previous firmware in /{PREV}/ to roll back to", 2)
        sums = {}
        for line in text.splitlines():
            if line.strip():
                h, p = line.split(None, 1)
                sums[p.strip()] = h
        files = sorted(sums)
        got = b.fw_hashes(PREV, files)
        bad = [f for f, h in zip(files, got) if h != sums[f]]
        if bad == [ROM_ENTRY]:
            raise FlashError(f"{port}: the previous firmware in /{PREV}/ ran from the ROM image, and the "
                             f"ROMFS partition now holds other code: not rolled back (flash that "
                             f"firmware's build instead)", 6)
        if bad:
            raise FlashError(f"{port}: the previous firmware in /{PREV}/ is damaged ({bad[0]} does "
                             f"not match its SHA256SUMS): not rolled back", 6)
        have = [e for e in ENTRIES if b.eval("_ex(%r)" % (PREV + "/" + e))]
        b.run("_rm(%r)\nos.rename(%r, %r)" % (STAGE, PREV, STAGE), "preparing the rollback")
        b.switch(STAGE, PREV, have)
        version = (b.read_text("VERSION") or "?").strip()
        print(f"{port}: rolled back to {version}; the firmware it replaced is in /{PREV}/", file=out)
    finally:
        b.close()


# ---- provision --------------------------------------------------------------------
def make_config(base: dict, pile_id: str, secret: str, wifi: str | None, broker: str | None,
                tls: bool, ca_name: str | None, has_wifi: bool, ntp: str | None = None) -> tuple[dict, dict]:
    """The pile's config.json, validated like the firmware validates it."""
    from h2p import config, keys
    from h2p.schema import ConfigError

    try:
        password = keys.mqtt_password(secret, pile_id)
        cmd_key = keys.cmd_key(secret, pile_id)
    except ValueError as e:
        raise FlashError(str(e), 2)
    cfg = json.loads(json.dumps(base))
    cfg["pile_id"] = pile_id
    m = cfg.setdefault("mqtt", {})
    if not isinstance(m, dict):
        raise FlashError("config: 'mqtt' must be an object", 2)
    if broker:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            raise FlashError(f"--broker {broker!r}: expected HOST:PORT, e.g. mqtt.example.net:8883", 2)
        m["host"], m["port"] = host, int(port)
        m["server_hostname"] = host
    m["user"] = pile_id
    m["password"] = password
    m["cmd_key"] = cmd_key
    if tls:
        m["tls"] = True
        m["ca_file"] = ca_name or m.get("ca_file", "ca.der")
    if wifi is not None:
        ssid, sep, pw = wifi.partition(":")
        if not sep or not ssid:
            raise FlashError("--wifi: expected SSID:PASSWORD", 2)
        if not has_wifi:
            raise FlashError("--wifi given but this board has no WiFi (board.json has_wifi false)", 2)
        cfg["wifi"] = dict(cfg.get("wifi") or {}, ssid=ssid, password=pw)
    if ntp is not None:
        n = cfg.setdefault("ntp", {})
        if not isinstance(n, dict):
            raise FlashError("config: 'ntp' must be an object", 2)
        host, _, port = ntp.rpartition(":") if ":" in ntp else (ntp, "", "")
        if not host or (port and not port.isdigit()):
            raise FlashError(f"--ntp {ntp!r}: expected HOST or HOST:PORT, e.g. 192.168.1.1 or pool.ntp.org", 2)
        n["server"] = host
        if port:
            n["port"] = int(port)
    try:
        full = config.from_dict(cfg, "config.json")
    except ConfigError as e:
        raise FlashError(str(e), 2)
    return cfg, full


def _ca_der(path: str) -> bytes:
    import ssl

    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise FlashError(f"--ca {path}: cannot read ({e.strerror})", 2)
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return ssl.PEM_cert_to_DER_cert(data.decode())
        except ValueError as e:
            raise FlashError(f"--ca {path}: not a PEM certificate ({e})", 2)
    if not data.startswith(b"\x30"):
        raise FlashError(f"--ca {path}: neither a PEM nor a DER certificate", 2)
    return data


def provision(port: str, pile_id: str, secret: str, wifi: str | None = None,
              broker: str | None = None, tls: bool = False, ca: str | None = None,
              base_config: str | None = None, fresh: bool = False, baud: int = 115200,
              out=None, ntp: str | None = None) -> dict:
    out = out or sys.stdout
    from h2p.schema import ident

    # Everything that can be checked without the board is checked first.
    msg = ident(pile_id) if isinstance(pile_id, str) else "must be a string"
    if msg:
        raise FlashError(f"bad pile id {pile_id!r}: {msg}", 2)
    if tls and not ca:
        raise FlashError("--tls needs --ca FILE (the fleet CA certificate, PEM or DER)", 2)
    ca_der = _ca_der(ca) if ca else None
    base: dict = {}
    if base_config:
        try:
            base = json.load(open(base_config))
        except (OSError, ValueError) as e:
            raise FlashError(f"--config {base_config}: {e}", 2)
    # Validate once without the board to fail before connecting.
    make_config(base, pile_id, secret, wifi, broker, tls, "ca.der" if ca else None, True, ntp)
    b = Board(port, baud)
    try:
        b.finish_switch()
        desc_text = b.read_text("board.json")
        if desc_text is None:
            raise FlashError(f"{port}: no firmware on the board (no board.json): run `h2pile flash` first", 2)
        try:
            desc = json.loads(desc_text)
        except ValueError:
            raise FlashError(f"{port}: board.json on the board is not valid JSON: reflash", 2)
        if not base_config and not fresh:
            old = b.read_text("config.json")
            if old:
                try:
                    base = json.loads(old)
                except ValueError:
                    base = {}
                if not isinstance(base, dict):
                    base = {}
        cfg, full = make_config(base, pile_id, secret, wifi, broker, tls, "ca.der" if ca else None,
                                bool(desc.get("has_wifi")), ntp)
        data = (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode()
        files = [("config.json", data)]
        if ca_der:
            files.append((full["mqtt"]["ca_file"], ca_der))
        for name, blob in files:
            # Write beside, check, then rename over: a cut-off write never
            # leaves a half config that stops the pile at the next boot.
            tmp = name + ".new"
            b.write_file(tmp, blob)
            if b.hashes([tmp])[0] != hashlib.sha256(blob).hexdigest():
                b.run("_rm(%r)" % tmp, "cleaning up")
                raise FlashError(f"{port}: {name} read back from the board does not match: not installed", 6)
            b.run("_rm(%r)\nif _ex(%r): os.rename(%r, %r)\nos.rename(%r, %r)"
                  % (name + ".prev", name, name, name + ".prev", tmp, name), f"installing {name}")
        # The journal and counters live here; the firmware expects it.
        b.run("_mk(%r)" % full["data_dir"], "creating the data directory")
        m = full["mqtt"]
        print(f"{port}: provisioned pile {pile_id}: config.json written and checked "
              f"(mqtt {m['host'] or 'off'}{':%d' % m['port'] if m['host'] else ''}"
              f"{' tls' if m['tls'] else ''}, user {m['user']}, derived password and command key"
              f"{', wifi ' + full['wifi']['ssid'] if full['wifi']['ssid'] else ''}); "
              f"the fleet secret stays on this computer", file=out)
        return cfg
    finally:
        b.close()


# ---- verify -------------------------------------------------------------------------
def verify(port: str, timeout: float = 20.0, baud: int = 115200, out=None) -> int:
    out = out or sys.stdout
    from h2p import config
    from h2p.schema import ConfigError

    b = Board(port, baud)
    problems: list[str] = []
    try:
        if b.finish_switch():
            print("finished a switch-over an interruption had left half done", file=out)
        plat = b.board_platform()
        version = (b.read_text("VERSION") or "").strip()
        sums_text = b.read_text("SHA256SUMS")
        print(f"board:    {port} ({plat})", file=out)
        if not sums_text:
            raise FlashError(f"{port}: no h2pile firmware on the board (no SHA256SUMS): run `h2pile flash`", 2)
        sums = {}
        for line in sums_text.splitlines():
            if line.strip():
                h, p = line.split(None, 1)
                sums[p.strip()] = h
        files = sorted(sums)
        bad = [f for f, h in zip(files, b.fw_hashes("", files)) if h != sums[f]]
        in_rom = ROM_ENTRY in sums
        print(f"firmware: {version or '?'} ({len(files)} files{', code: the ROM image' if in_rom else ''}, "
              f"{'all sha256 ok' if not bad else 'DAMAGED: ' + ', '.join(bad[:3])})", file=out)
        if bad:
            problems.append("firmware files damaged: reflash")
        has_prev = b.eval("_ex(%r)" % (PREV + "/SHA256SUMS"))
        bsize, blocks, free = b.free()
        print(f"storage:  {free * bsize // 1024} KB free of {blocks * bsize // 1024} KB"
              f"{'; previous firmware kept for rollback' if has_prev else ''}", file=out)
        text = b.read_text("config.json")
        if text is None:
            print("config:   none (run `h2pile provision`)", file=out)
            problems.append("not provisioned")
        else:
            try:
                c = config.from_dict(json.loads(text), "config.json")
                m = c["mqtt"]
                print(f"config:   pile {c['pile_id']}, bus {c['bus']['baud']} baud, meter "
                      f"{c['meter_profile']}, mqtt {m['host'] or 'off'}"
                      f"{':%d' % m['port'] if m['host'] else ''}{' tls' if m['tls'] else ''}"
                      f"{', wifi ' + c['wifi']['ssid'] if c['wifi']['ssid'] else ''}", file=out)
            except (ValueError, ConfigError) as e:
                print(f"config:   INVALID: {e}", file=out)
        # Reset and watch the firmware's own boot report.
        done = re.compile(r"^(CONFIG ERROR|UNSUPPORTED|LOG event \S+ selftest (pass|fail)|\w*(Error|Exception|Interrupt)\b)")
        lines = b.soft_reset_and_read(timeout, lambda t: bool(done.match(t)))
        boot = None
        for t in lines:
            if t.startswith("BOOT "):
                try:
                    boot = json.loads(t[5:])
                except ValueError:
                    pass
        cfg_err = [t for t in lines if t.startswith(("CONFIG ERROR", "NO ROM IMAGE", "UNSUPPORTED"))]
        selftest = [t for t in lines if re.match(r"^LOG event \S+ selftest ", t)]
        trace = [i for i, t in enumerate(lines) if t.startswith("Traceback")]
        if boot:
            print(f"boot:     h2pile {boot.get('version')} on {boot.get('board')}, pile "
                  f"{boot.get('pile')}, reset cause {boot.get('reset')}, heap free "
                  f"{boot.get('heap_free', 0) // 1024} KB (used {boot.get('heap_used', 0) // 1024} KB)",
                  file=out)
            # Where the bytecode runs from decides which heap figure applies
            # (docs/field.md, "Which board runs code from where").
            code = boot.get("code")
            print("code:     " + {"rom": "ROM image in flash (runs in place)",
                                  "ram": ".mpy files loaded into the heap"}.get(code, "? (%r)" % (code,))
                  + f", MicroPython {boot.get('mpy', '?')}", file=out)
            if in_rom and code != "rom":
                problems.append("the ROM image is on the board but the code did not run from it")
        for t in cfg_err:
            print("boot:     " + t, file=out)
            problems.append(t)
        if trace:
            # The traceback's last line says what failed.
            tail = [t for t in lines[trace[0]:] if t.strip()][-1]
            print("boot:     crashed: " + tail, file=out)
            problems.append("crashed: " + tail)
        if selftest:
            parts = selftest[-1].split()
            res = parts[4] if len(parts) > 4 else "?"
            print("selftest: " + res + (" (" + " ".join(parts[5:]) + ")" if res == "fail" and parts[5:] else ""),
                  file=out)
            if res != "pass":
                problems.append("self-test failed")
        elif boot and not cfg_err and not trace:
            last = [t for t in lines if t and not t.startswith(("STATUS ", "BOOT ", "LOG boot"))]
            print(f"selftest: not finished within {timeout:g} s (waiting for the bus devices"
                  f"{'; last: ' + last[-1][:100] if last else ''})", file=out)
        if not boot and not cfg_err and not trace:
            shown = [t for t in lines if t.strip()][-3:]
            problems.append("no BOOT line within %g s" % timeout)
            print(f"boot:     no BOOT line within {timeout:g} s; console said: "
                  f"{' | '.join(shown) if shown else 'nothing'}", file=out)
    finally:
        b.close()
    if problems:
        print(f"{port}: NOT OK: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{port}: OK", file=out)
    return 0


# ---- CLI ------------------------------------------------------------------------------
def _fail(cmd: str, e: FlashError) -> int:
    print(f"h2pile {cmd}: error: {e}", file=sys.stderr)
    return e.code


def _flash_cmd(a) -> int:
    try:
        if a.rollback:
            rollback(a.port, a.baud)
        else:
            flash(a.port, a.board, a.build, a.baud, space_check=not a.skip_space_check)
        return 0
    except FlashError as e:
        return _fail("flash", e)


def _provision_cmd(a) -> int:
    from host_tools.keys import fleet_secret_from

    try:
        try:
            secret = fleet_secret_from(a)
        except ValueError as e:
            raise FlashError(str(e), 2)
        provision(a.port, a.pile_id, secret, a.wifi, a.broker, a.tls, a.ca, a.config, a.fresh, a.baud,
                  ntp=a.ntp)
        return 0
    except FlashError as e:
        return _fail("provision", e)


def _verify_cmd(a) -> int:
    try:
        return verify(a.port, a.timeout, a.baud)
    except FlashError as e:
        return _fail("verify", e)


def add_parser(sub):
    from host_tools.keys import add_secret_args

    p = sub.add_parser("flash", help="copy the firmware to a board (checked, safe to interrupt)",
                       description="Copy build/BOARD/ to the board through /next/, check every "
                                   "file's sha256 on the board, then switch over (the old firmware "
                                   "goes to /prev/).")
    p.add_argument("--port", required=True, help="the board's USB serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--board", help="board name (boards/NAME.json): " + ", ".join(board_names()))
    p.add_argument("--build", help="build directory (default build/BOARD, built if missing)")
    p.add_argument("--baud", type=int, default=115200, help="REPL baud (USB-serial bridges)")
    p.add_argument("--rollback", action="store_true", help="switch back to the firmware in /prev/")
    p.add_argument("--skip-space-check", action="store_true", help="(testing) skip the free-space estimate")
    p.set_defaults(func=_flash_cmd)

    p = sub.add_parser("provision", help="write a pile's config.json and derived keys to a board")
    p.add_argument("--port", required=True)
    p.add_argument("--pile-id", required=True, help="pile id: a-z, 0-9, '-', '_'")
    add_secret_args(p)
    p.add_argument("--wifi", metavar="SSID:PASS", help="WiFi network and password")
    p.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker")
    p.add_argument("--ntp", metavar="HOST[:PORT]",
                   help="SNTP server the board sets its clock from (default pool.ntp.org; an IP avoids DNS)")
    p.add_argument("--tls", action="store_true", help="MQTT over TLS (needs --ca)")
    p.add_argument("--ca", metavar="FILE", help="fleet CA certificate (PEM or DER), stored as ca.der")
    p.add_argument("--config", metavar="FILE", help="base config.json (site settings) to start from")
    p.add_argument("--fresh", action="store_true", help="start from defaults, not the board's config")
    p.add_argument("--baud", type=int, default=115200)
    p.set_defaults(func=_provision_cmd)

    p = sub.add_parser("verify", help="reset a board and report what its firmware says")
    p.add_argument("--port", required=True)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to watch the boot")
    p.add_argument("--baud", type=int, default=115200)
    p.set_defaults(func=_verify_cmd)
