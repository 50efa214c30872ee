"""A session with a board over its USB serial REPL: mpremote's raw REPL,
entered without a soft reset (a running firmware is stopped with Ctrl-C and
its watchdog keeps being fed), with the board agent (board_agent.py) loaded,
and the few operations the flash tools build on: exec, eval, hash, read and
write files, free space, soft reset and read the console.

Every failure becomes a FlashError: one line saying what and where, and the
exit code of its kind (host_tools.exitcodes).
"""

from __future__ import annotations

import ast
import base64
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from typing import cast

from host_tools.exitcodes import BOARD_ERROR, NO_SPACE, UNREACHABLE, CliError

CONNECT_TIMEOUT = 5.0  # seconds for the board to show its raw REPL
SLOW_BOARD_S = 15.0  # longest silence of a connected board inside one exchange (raw-paste flow control)
_BANNER = b"raw REPL; CTRL-B to exit\r\n"  # what the board prints on entering the raw REPL
CHUNK = 1536  # bytes of file per exec (2 KB of base64)
_PUTS_PER_EXEC = 16  # pieces per exec (small files: their paths' text is in the exec too)
RAW_PIECE = 2048  # bytes of file per deflated piece: what the board inflates at once
_WBITS = 10  # the deflate window (1 KB on the board for each piece)
AGENT_CHUNK = 1000  # characters of agent code per exec (the raw REPL buffers and compiles each in the heap)
AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "board_agent.py")
# The line in board_agent.py where its ROMFS part begins.
AGENT_ROM_MARK = "# ==== ROMFS:"
# sys.platform -> board.json platform
PLATFORMS = {"esp32": "esp32", "rp2": "rp2", "linux": "unix", "darwin": "unix"}

ProgressFn = Callable[[int, str], None]


class FlashError(CliError):
    """A board tool's failure: the message is the one line shown."""

    def __init__(self, msg: str, code: int = BOARD_ERROR) -> None:
        super().__init__(msg, code)


def agent_code(part: str) -> list[str]:
    """The board agent's code for part "core" or "rom", as the execs that
    send it: comments, docstrings and type hints stripped (less to send and
    to buffer on the board), top-level statements grouped up to AGENT_CHUNK
    characters."""
    with open(AGENT, encoding="utf-8") as f:
        text = f.read()
    mark = next((i + 1 for i, line in enumerate(text.splitlines()) if line.startswith(AGENT_ROM_MARK)), None)
    if mark is None:
        raise RuntimeError(f"{AGENT}: no line starting {AGENT_ROM_MARK!r}")
    chunks: list[str] = []
    for node in ast.parse(text).body:
        if (node.lineno < mark) != (part == "core"):
            continue
        for fn in ast.walk(node):
            if isinstance(fn, ast.FunctionDef):
                # Type hints and docstrings are for the reader of board_agent.py.
                fn.returns = None
                for arg in fn.args.args:
                    arg.annotation = None
                body = fn.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    fn.body = body[1:] or [ast.Pass()]
        code = ast.unparse(node)
        if chunks and len(chunks[-1]) + len(code) < AGENT_CHUNK:
            chunks[-1] += "\n" + code
        else:
            chunks.append(code)
    return chunks


def board_err(text: str) -> str:
    """Last line of a MicroPython traceback."""
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "error"


def is_enospc(text: str) -> bool:
    return "ENOSPC" in text or "Errno 28" in text or re.search(r"OSError: 28\b", text) is not None


class Board:
    """A board's raw REPL over its serial port (mpremote's transport), with
    the agent's core loaded."""

    def __init__(self, port: str, baud: int = 115200, timeout: float | None = None) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        if not os.path.exists(port) and not port.startswith(("socket://", "rfc2217://")):
            raise FlashError(f"{port}: no such serial port (is the board plugged in? "
                             f"see `ls /dev/ttyUSB* /dev/ttyACM*`)", UNREACHABLE)
        try:
            # A read timeout, so a port with nothing behind it cannot hang us.
            self.t = SerialTransport(port, baudrate=baud, timeout=1)
        except (TransportError, OSError) as e:
            raise FlashError(f"{port}: cannot open the serial port ({e}; in use by another "
                             f"program, or no permission: add yourself to group dialout)", UNREACHABLE)
        self.timeout = timeout or CONNECT_TIMEOUT
        # What this session learnt about the board: platform, ROMFS partition.
        self.facts: dict[str, object] = {}
        self.agent_parts: set[str] = set()
        self._raw()

    def _raw(self) -> None:
        try:
            said = self._enter_raw_repl()
        except OSError as e:
            self.close()
            raise FlashError(f"{self.port}: the serial port failed while connecting ({e})", UNREACHABLE)
        if said is not None:
            self.close()
            tail = said[-60:].decode("utf-8", "replace").strip()
            raise FlashError(f"{self.port}: the board does not answer (no MicroPython REPL within "
                             f"{self.timeout:g} s: wrong port, wrong baud, or not running MicroPython)"
                             + (f"; it said: {tail!r}" if tail else "; it said nothing"), UNREACHABLE)
        # Connected: a longer read timeout from here on. mpremote's raw-paste
        # flow control reads the board's "send more" byte with the port's
        # timeout, and a board (an emulated one on a busy host) that took more
        # than 1 s to ask failed the session ("unexpected read during raw
        # paste: b''"). The connect above keeps 1 s: a dead port fails fast.
        self.t.serial.timeout = SLOW_BOARD_S
        # A firmware stopped with Ctrl-C still holds its heap until collected.
        self.exec("import gc\ngc.collect()")
        self.load_agent("core")

    def _enter_raw_repl(self) -> bytes | None:
        """Stop a running program (Ctrl-C) and enter the raw REPL (Ctrl-A),
        without a soft reset. None once in, with the prompt's ">" left for
        the first exchange (as mpremote leaves it); else what the board sent.

        A silent port fails after self.timeout. A board that is sending
        bytes is alive, only busy (a firmware shutting down, a VM starved of
        CPU): the deadline moves with each byte it sends, up to SLOW_BOARD_S
        in all. Ctrl-C/Ctrl-A go again only after a second of silence (a
        Ctrl-C that came before the program could take it is lost); a board
        that is talking is left to finish what the first Ctrl-C started."""
        ser = self.t.serial
        got = bytearray()
        start = last_byte = time.monotonic()
        ser.write(b"\r\x03\r\x01")
        kick, kicks = start, 1
        while not got.endswith(_BANNER):
            now = time.monotonic()
            if now - max(kick, last_byte) >= 1.0:
                ser.write(b"\r\x03\r\x01")
                kick, kicks = now, kicks + 1
            # One byte at a time: stop right after the banner. (On a QEMU-style
            # pty in_waiting is not to be trusted: read, with the port's 1 s timeout.)
            b = ser.read(1) if (self.t.is_pty or ser.in_waiting) else b""
            if b:
                got += b
                last_byte = now
                del got[:-200]  # only the tail is needed
            elif now - last_byte > self.timeout or now - start > max(self.timeout, SLOW_BOARD_S):
                return bytes(got)
            else:
                time.sleep(0.01)
        if kicks > 1:
            # Each Ctrl-A the board had not yet read prints one more banner:
            # let them all come, then ask for one banner, the one we keep.
            self._drain_quiet(0.3)
            ser.write(b"\x01")
            got.clear()
            while not got.endswith(_BANNER):
                if time.monotonic() - start > self.timeout + SLOW_BOARD_S:
                    return bytes(got)
                got += ser.read(1) or b""
        self.t.in_raw_repl = True
        return None

    def _drain_quiet(self, quiet_s: float) -> None:
        ser = self.t.serial
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if ser.in_waiting:
                ser.read(ser.in_waiting)
                last = time.monotonic()
            else:
                time.sleep(0.01)

    def load_agent(self, part: str) -> None:
        """Define the agent's part "core" or "rom" on the board (once a session)."""
        if part not in self.agent_parts:
            for code in agent_code(part):
                self.run(code, f"loading the board agent ({part})")
            self.agent_parts.add(part)

    def exec(self, code: str, timeout: float = 30) -> str:
        from mpremote.transport import TransportError, TransportExecError

        try:
            self.t.exec_raw_no_follow(code)
            out, err = self.t.follow(timeout)
        except TransportError as e:
            raise FlashError(f"{self.port}: the board stopped answering ({e})", UNREACHABLE)
        except OSError as e:
            raise FlashError(f"{self.port}: serial port error ({e})", UNREACHABLE)
        if err:
            raise TransportExecError(1, err.decode(errors="replace"))
        return out.decode(errors="replace")

    def eval(self, expr: str) -> object:
        from mpremote.transport import TransportExecError

        try:
            return ast.literal_eval(self.exec("print(repr(%s))" % expr).strip())
        except TransportExecError as e:
            raise FlashError(f"{self.port}: board error: {board_err(e.error_output)}", BOARD_ERROR)

    def run(self, code: str, what: str) -> str:
        """exec, with a board-side error turned into a FlashError about `what`."""
        from mpremote.transport import TransportExecError

        try:
            return self.exec(code)
        except TransportExecError as e:
            if is_enospc(e.error_output):
                raise FlashError(f"board filesystem full while {what}", NO_SPACE)
            raise FlashError(f"board error while {what}: {board_err(e.error_output)}", BOARD_ERROR)

    def close(self) -> None:
        try:
            self.t.close()
        except Exception:
            pass

    # ---- board facts ------------------------------------------------------
    def board_platform(self) -> str:
        if "platform" not in self.facts:
            p = str(self.eval("sys.platform"))
            self.facts["platform"] = PLATFORMS.get(p, p)
        return str(self.facts["platform"])

    def hashes(self, paths: list[str]) -> list[str | None]:
        out: list[str | None] = []
        for i in range(0, len(paths), 20):
            out += cast("list[str | None]", self.eval("[agent_sha256(p) for p in %r]" % (paths[i:i + 20],)))
        return out

    def exists(self, path: str) -> bool:
        return bool(self.eval("agent_exists(%r)" % path))

    def read_text(self, path: str) -> str | None:
        return cast("str | None", self.eval("(lambda: (agent_exists(%r) and open(%r).read()) or None)()"
                                            % (path, path)))

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, None if there is none; in chunks (a stopped
        firmware may still hold much of the heap)."""
        if not self.exists(path):
            return None
        self.run("_rf = open(%r, 'rb')" % path, f"opening {path}")
        data = b""
        try:
            while True:
                c = cast("bytes", self.eval("_rf.read(1024)"))
                if not c:
                    return data
                data += c
        finally:
            self.exec("_rf.close()\ndel _rf")

    def free(self) -> tuple[int, int, int]:
        """(block size, blocks, free blocks) of the board's filesystem."""
        bsize, blocks, free = cast("tuple[int, int, int]", self.eval("agent_free()"))
        return bsize, blocks, free

    def write_file(self, path: str, data: bytes, progress: ProgressFn | None = None) -> None:
        self.write_files([(path, data)], progress)

    def write_files(self, items: list[tuple[str, bytes]], progress: ProgressFn | None = None) -> None:
        """Write each (path, data), in order. Up to CHUNK bytes of the wire go in one exec: a
        large file in several, small files several to one (each exec is a round trip
        through the raw REPL: on the emulated Pico W, 49 files one at a time took 226
        execs). Where the board inflates, each piece of RAW_PIECE bytes goes as raw
        deflate (.mpy files: ~58 % of their size), so the raw paste's 128-byte windows,
        one acknowledgement each, carry less."""
        if "inflates" not in self.facts:
            self.facts["inflates"] = bool(self.eval("agent_inflates()"))
        z = _WBITS if self.facts["inflates"] else 0
        calls: list[tuple[str, str, int]] = []  # (the agent_put line, its path, its file bytes)
        size = 0
        for path, data in items:
            pieces = list(self._pieces(data, z))
            for k, (wire, zp, n) in enumerate(pieces):
                if calls and (size + len(wire) > CHUNK or len(calls) >= _PUTS_PER_EXEC):
                    self._put(calls, progress)
                    calls, size = [], 0
                calls.append(("agent_put(%r,%r,%d,%d,%d)" % (path, base64.b64encode(wire).decode(), k == 0,
                                                              k == len(pieces) - 1, zp), path, n))
                size += len(wire)
        if calls:
            self._put(calls, progress)

    @staticmethod
    def _pieces(data: bytes, z: int) -> Iterator[tuple[bytes, int, int]]:
        """(bytes on the wire, their deflate window bits or 0, file bytes) for each piece
        of data; at most CHUNK on the wire each, and one piece for an empty file."""
        if not data:
            yield b"", 0, 0
        step = RAW_PIECE if z else CHUNK
        for off in range(0, len(data), step):
            raw = data[off:off + step]
            if z:
                c = zlib.compressobj(9, zlib.DEFLATED, -z)
                packed = c.compress(raw) + c.flush()
                if len(packed) <= CHUNK and len(packed) < len(raw):
                    yield packed, z, len(raw)
                    continue
            for i in range(0, len(raw), CHUNK):  # as it is: it does not pack
                part = raw[i:i + CHUNK]
                yield part, 0, len(part)

    def _put(self, calls: list[tuple[str, str, int]], progress: ProgressFn | None) -> None:
        from mpremote.transport import TransportExecError

        try:
            self.exec("\n".join(c[0] for c in calls))
        except TransportExecError as e:
            try:
                self.exec("agent_abort()")
            except Exception:
                pass
            # The traceback's first frame is this exec's line that failed: one call a line.
            # (The agent's own frames are "<stdin>" too, from the exec that defined it.)
            m = re.search(r'File "<stdin>", line (\d+)', e.error_output)
            k = int(m.group(1)) - 1 if m and 0 < int(m.group(1)) <= len(calls) else 0
            path = calls[k][1]
            if is_enospc(e.error_output):
                raise FlashError(f"board filesystem full while writing {path}", NO_SPACE)
            raise FlashError(f"board error writing {path}: {board_err(e.error_output)}", BOARD_ERROR)
        if progress:
            for _line, path, n in calls:
                progress(n, path)

    # ---- reset and console -------------------------------------------------
    def soft_reset_and_read(self, seconds: float, stop: Callable[[str], bool] | None = None) -> list[str]:
        """Leave the raw REPL, soft-reset (boots main.py), return console lines
        until stop(line) says so or `seconds` pass."""
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
