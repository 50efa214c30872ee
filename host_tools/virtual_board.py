"""A virtual board: the MicroPython unix port behind a pseudo-terminal, for
tests and demos of `h2pile flash / provision / verify` without hardware.

    python -m host_tools.virtual_board --dir BOARD_DIR --tty /tmp/vb0 [--flash-kb 512]

What a real board does and this one copies:
- a serial port (`--tty`, a symlink to a pty) with MicroPython's REPL and
  raw REPL on it, so mpremote and `h2pile flash` drive it as they would a
  board (with `resume`, or without: a soft reset is emulated);
- a flash filesystem: a littlefs image (BOARD_DIR/flash.img, `--flash-kb`
  big) mounted as the working directory, so a full filesystem fails with
  ENOSPC exactly as on a board and survives resets;
- resets: Ctrl-D at the friendly REPL (or the interpreter exiting, e.g.
  `machine.soft_reset()`/`sys.exit()`) restarts the interpreter, prints
  "MPY: soft reboot" and runs main.py like a booting board; Ctrl-D at an
  empty raw REPL soft-resets into the raw REPL without running main.py.
  The unix port itself exits on Ctrl-D instead, which is why this wrapper
  exists.
sys.platform reads 'linux' (the unix port); the firmware picks board_unix.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty

_KEEP = 64 * 1024
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

# Runs inside the board's interpreter at every start: mount the flash
# image as the filesystem, then (booting) run main.py as a board would.
BOOT = r'''
import os, sys
class _Flash:
    def __init__(self, path, n):
        self.n = n
        try:
            self.f = open(path, 'r+b')
        except OSError:
            self.f = open(path, 'w+b')
            b = b'\xff' * 4096
            for _ in range(n):
                self.f.write(b)
            self.f.flush()
    def readblocks(self, b, buf, off=0):
        self.f.seek(b * 4096 + off)
        self.f.readinto(buf)
    def writeblocks(self, b, buf, off=0):
        self.f.seek(b * 4096 + off)
        self.f.write(buf)
        self.f.flush()
    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return 4096
        if op == 6:
            return 0
def _mount():
    bd = _Flash(%(img)r, %(blocks)d)
    try:
        v = os.VfsLfs2(bd)
    except OSError:
        os.VfsLfs2.mkfs(bd)
        v = os.VfsLfs2(bd)
    os.mount(v, '/flash')
    os.chdir('/flash')
    sys.path[:] = ['', '.frozen', '/flash/lib']
_mount()
del _mount, _Flash
open(%(ready)r, 'w').close()  # mounted: the wrapper passes the host's input on from now
def _main():
    try:
        f = open('main.py')
    except OSError:
        return  # no firmware yet: straight to the REPL, as a board does
    src = f.read()
    f.close()
    try:
        exec(src, {'__name__': '__main__'})
    except SystemExit:
        pass
if %(boot)r:
    _main()
'''


# A ROMFS partition double (`--romfs-kb`), prepended to BOOT: the unix port
# has no vfs.rom_ioctl, so this gives it one that follows MicroPython's
# (extmod/vfs.h): partition 0 is BOARD_DIR/romfs.part, mapped read-only
# outside the heap by host_tools/unix_flash.py (H2P_ROM) as a board maps its
# flash; erasing sets 0xFF and programming can only clear bits, as on NOR
# flash, both through the file. Style 'memory' (stm32 and others) hands out
# a memoryview and writes with rom_ioctl(3/4/5); style 'block' (ESP32
# esp32.Partition, RP2040 rp2.Flash) hands out a block device, erased with
# ioctl(6, n) and programmed with 4-argument writeblocks (a Python object:
# unlike the real ones it has no buffer protocol). At boot a valid image is
# mounted at /rom and /rom, /rom/lib join sys.path, as MicroPython does.
ROMFS_DOUBLE = r'''
import os, sys, vfs, uctypes
class _RomPart:
    def __init__(self, path, spec):
        a, n = spec.split(':')
        self.path = path
        self.n = int(n)
        self.mv = memoryview(uctypes.bytearray_at(int(a), self.n))
    def program(self, off, buf, erase=False):
        if off < 0 or off + len(buf) > self.n:
            return -22
        with open(self.path, 'r+b') as f:
            f.seek(off)
            if erase:
                f.write(b'\xff' * len(buf))
            else:
                old = f.read(len(buf))
                f.seek(off)
                f.write(bytes(x & y for x, y in zip(old, buf)))
        return 0
    def readblocks(self, b, buf, off=0):
        o = b * 4096 + off
        buf[:] = self.mv[o:o + len(buf)]
    def writeblocks(self, b, buf, off=None):
        if off is None:
            self.ioctl(6, b)
            off = 0
        if self.program(b * 4096 + off, buf):
            raise OSError(22)
    def ioctl(self, op, arg):
        if op == 4:
            return self.n // 4096
        if op == 5:
            return 4096
        if op == 6:
            return self.program(arg * 4096, bytes(4096), True)
_rp0 = _RomPart(%(part)r, os.getenv('H2P_ROM'))
os.unsetenv('H2P_ROM')  # main.py's own H2P_ROM mount is for the launcher without a double
def _rom_ioctl(op, *a):
    if op == 1:
        return 1
    if not a or a[0] != 0:
        return -22
    if op == 2:
        return _rp0 if %(block)r else _rp0.mv
    if %(block)r:
        return -22
    if op == 3:
        off, n = (0, a[1]) if len(a) == 2 else (a[1], a[2])
        e = off // 4096 * 4096
        return _rp0.program(e, bytes(-(-(off + n - e) // 4096) * 4096), True) or 16
    if op == 4:
        return _rp0.program(a[1], a[2])
    if op == 5:
        return 0
    if op == 6:
        return 4096
    return -22
class _Vfs:
    pass
_v = _Vfs()
for _n in dir(vfs):
    if not _n.startswith('__'):
        setattr(_v, _n, getattr(vfs, _n))
_v.rom_ioctl = _rom_ioctl
sys.modules['vfs'] = _v
del _Vfs, _n
'''

ROMFS_MOUNT = r'''
try:
    vfs.mount(vfs.VfsRom(_rp0.mv), '/rom')
    sys.path.extend(['/rom', '/rom/lib'])
except OSError:
    pass  # no valid image in the partition: nothing at /rom
'''


def _raw(fd: int, isig: bool = False) -> None:
    a = termios.tcgetattr(fd)
    tty.setraw(fd)
    a = termios.tcgetattr(fd)
    if isig:
        # Ctrl-C while a program runs must raise KeyboardInterrupt.
        a[3] |= termios.ISIG
        a[6][termios.VINTR] = 3
    a[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, a)


class Wrapper:
    def __init__(self, board_dir: str, link: str, flash_kb: int = 512, heap: str = "256K", bus_port: int = 0,
                 romfs_kb: int = 0, romfs_style: str = "memory") -> None:
        self.dir = os.path.abspath(board_dir)
        self.romfs_kb = romfs_kb
        self.romfs_style = romfs_style
        self.part = os.path.join(self.dir, "romfs.part")
        self.link = link
        self.blocks = max(8, flash_kb // 4)
        self.heap = heap
        self.bus_port = bus_port  # the unix board's simulator port (H2P_BUS_PORT)
        self.raw = False  # host put the REPL in raw mode (Ctrl-A) last
        self.out = bytearray()
        self.drained = time.monotonic()
        self.child: subprocess.Popen[bytes] | None = None
        self.cfd = -1
        self.boot_file = os.path.join(self.dir, ".vb_boot_%d.py" % os.getpid())
        self.ready_file = os.path.join(self.dir, ".vb_ready_%d" % os.getpid())
        self.started = 0.0

    # ---- the host side: a pty the tools open like a board's USB serial ----
    def open_host(self) -> None:
        self.hfd, self.hslave = os.openpty()
        _raw(self.hslave)
        name = os.ttyname(self.hslave)
        try:
            os.unlink(self.link)
        except FileNotFoundError:
            pass
        os.symlink(name, self.link)
        os.set_blocking(self.hfd, False)

    def to_host(self, b: bytes) -> None:
        # Queue for the host; a board with nobody listening drops its
        # console output (only the newest _KEEP bytes are kept).
        self.out += b
        if len(self.out) > _KEEP:
            del self.out[:len(self.out) - _KEEP]
        self.flush_host()

    def flush_host(self) -> None:
        while self.out:
            try:
                n = os.write(self.hfd, self.out[:4096])
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EIO):
                    return
                raise
            del self.out[:n]
            self.drained = time.monotonic()

    # ---- the interpreter ---------------------------------------------------
    def start(self, boot: bool) -> None:
        # A board mounts its filesystem before its REPL reads a byte; here a
        # Ctrl-C from the host during the boot program would stop it before
        # the mount, and the REPL would run on the host's directory instead.
        # The host's input waits until the boot program has mounted (or 10 s).
        try:
            os.unlink(self.ready_file)
        except FileNotFoundError:
            pass
        self.started = time.monotonic()
        boot_prog = BOOT % {"img": os.path.join(self.dir, "flash.img"), "blocks": self.blocks,
                            "boot": boot, "ready": self.ready_file}
        cmd = [MICROPYTHON]
        if self.romfs_kb:
            # The partition is mapped by the launcher, outside the GC heap.
            cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "unix_flash.py"),
                   self.part]
            double = ROMFS_DOUBLE % {"part": self.part, "block": self.romfs_style == "block"}
            # Mounted after the filesystem, so /rom comes after lib in sys.path, as on a board.
            boot_prog = double + boot_prog.replace("_mount()\n", "_mount()\n" + ROMFS_MOUNT, 1)
        with open(self.boot_file, "w") as f:
            f.write(boot_prog)
        m, s = os.openpty()
        _raw(s, isig=True)
        env = dict(os.environ)
        env.pop("MICROPYPATH", None)
        env.pop("H2P_ROM", None)
        if self.bus_port:
            env["H2P_BUS_PORT"] = str(self.bus_port)
        self.child = subprocess.Popen(
            cmd + ["-X", "heapsize=" + self.heap, "-i", self.boot_file],
            stdin=s, stdout=s, stderr=s, cwd=self.dir, env=env, start_new_session=True,
            preexec_fn=lambda: _ctty(s))
        os.close(s)
        self.cfd = m

    def stop_child(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        if self.cfd >= 0:
            os.close(self.cfd)
            self.cfd = -1

    def reset(self) -> None:
        # Soft reset: restart the interpreter as a board restarts its VM.
        # Every reset and why (the interpreter's exit code, None when the host
        # asked for it) in BOARD_DIR/vb.log: a board that resets by itself
        # mid-session is the first thing to look for when a test flakes.
        rc = self.child.poll() if self.child else None
        with open(os.path.join(self.dir, "vb.log"), "a") as f:
            f.write("%.3f reset raw=%s rc=%s\n" % (time.time(), self.raw, rc))
        self.stop_child()
        if self.raw:
            self.to_host(b"soft reboot\r\n")
            self.start(boot=False)
            time.sleep(0.05)
            os.write(self.cfd, b"\x01")  # back into the raw REPL
        else:
            self.to_host(b"MPY: soft reboot\r\n")
            self.start(boot=True)

    def run(self) -> None:
        if self.romfs_kb and not os.path.exists(self.part):
            with open(self.part, "wb") as f:
                f.write(b"\xff" * (self.romfs_kb * 1024))  # erased flash
        self.open_host()
        self.start(boot=True)
        assert self.child is not None  # start() made it, as does every reset()
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        signal.signal(signal.SIGINT, lambda *a: stop.append(1))
        print("virtual board on %s (dir %s)" % (self.link, self.dir), flush=True)
        try:
            while not stop:
                try:
                    mounted = (os.path.exists(self.ready_file) or time.monotonic() - self.started > 10)
                    r, w, _ = select.select([self.hfd, self.cfd] if mounted else [self.cfd],
                                            [self.hfd] if self.out else [], [], 0.2 if mounted else 0.02)
                except InterruptedError:
                    continue
                if w:
                    self.flush_host()
                if self.out and time.monotonic() - self.drained > 1.0:
                    self.out.clear()  # nobody is reading: drop, do not stall the board
                    self.drained = time.monotonic()
                if not self.out:
                    self.drained = time.monotonic()
                if self.cfd in r and len(self.out) < _KEEP // 2:
                    try:
                        b = os.read(self.cfd, 4096)
                    except OSError:
                        b = b""
                    if b:
                        self.to_host(b)
                    else:
                        self.reset()  # the interpreter exited: reboot
                        continue
                if self.hfd in r:
                    try:
                        b = os.read(self.hfd, 4096)
                    except OSError:
                        b = b""
                    if b:
                        for c in b:
                            if c == 1:
                                self.raw = True
                            elif c == 2:
                                self.raw = False
                        try:
                            os.write(self.cfd, b)
                        except OSError:
                            pass
                    else:
                        time.sleep(0.05)  # host closed its end
                elif self.child.poll() is not None and self.cfd not in r and not self.out:
                    self.reset()
        finally:
            self.stop_child()
            for p in (self.link, self.boot_file, self.ready_file):
                try:
                    os.unlink(p)
                except OSError:
                    pass


def _ctty(fd: int) -> None:
    import fcntl

    try:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    except OSError:
        pass


class VirtualBoard:
    """Start/stop a virtual board in a subprocess (for tests and demos)."""

    def __init__(self, board_dir: str, link: str, flash_kb: int = 512, heap: str = "256K", bus_port: int = 0,
                 romfs_kb: int = 0, romfs_style: str = "memory") -> None:
        self.dir = board_dir
        self.romfs_kb = romfs_kb
        self.romfs_style = romfs_style
        self.link = link
        self.flash_kb = flash_kb
        self.heap = heap
        self.bus_port = bus_port
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def start(self) -> VirtualBoard:
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "host_tools.virtual_board", "--dir", self.dir, "--tty", self.link,
             "--flash-kb", str(self.flash_kb), "--heap", self.heap, "--bus-port", str(self.bus_port),
             "--romfs-kb", str(self.romfs_kb), "--romfs-style", self.romfs_style],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert self.proc.stdout is not None  # stdout=PIPE
        line = self.proc.stdout.readline()
        if "virtual board on" not in line:
            raise RuntimeError("virtual board did not start: " + line + self.proc.stdout.read())
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host_tools.virtual_board", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="board directory (holds flash.img)")
    ap.add_argument("--tty", required=True, help="path of the serial-port symlink to create")
    ap.add_argument("--flash-kb", type=int, default=512, help="filesystem size (littlefs image)")
    ap.add_argument("--heap", default="256K", help="MicroPython heap (the unix port is 64-bit: "
                    "objects are bigger than on a board)")
    ap.add_argument("--bus-port", type=int, default=0,
                    help="simulator TCP port for the unix board (H2P_BUS_PORT)")
    ap.add_argument("--romfs-kb", type=int, default=0,
                    help="a ROMFS partition of this size (a vfs.rom_ioctl double, BOARD_DIR/romfs.part)")
    ap.add_argument("--romfs-style", choices=("memory", "block"), default="memory",
                    help="what rom_ioctl(2, 0) hands out: a memoryview (stm32, ...) or a block "
                         "device (ESP32, RP2040)")
    a = ap.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    Wrapper(a.dir, a.tty, a.flash_kb, a.heap, a.bus_port, a.romfs_kb, a.romfs_style).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
