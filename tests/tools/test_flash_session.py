"""host_tools.flash.session: connecting to a board. A silent port fails after
CONNECT_TIMEOUT; a board that is talking (a firmware still shutting down
after Ctrl-C, a VM short of CPU) is waited for, and the session then works.
The board here is the MicroPython unix port behind a pty, running a program
that takes longer than the connect timeout to stop."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time

import pytest

from host_tools.flash import session
from host_tools.flash.session import Board, FlashError
from host_tools.virtual_board import MICROPYTHON, _ctty, _raw

pytestmark = [pytest.mark.micropython]

# Stops 2.5 s after Ctrl-C, saying so every 0.1 s, then the REPL comes.
SLOW_STOP = """
import time
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    for i in range(25):
        print("closing contactor", i)
        time.sleep(0.1)
"""

# Swallows the first Ctrl-C without a word (it came too early, say); stops at the second.
DEAF_ONCE = """
import time
n = 0
while n < 2:
    try:
        time.sleep(0.05)
    except KeyboardInterrupt:
        n += 1
"""


@pytest.fixture
def slow_board(tmp_path, request):
    """The serial port name of a board running SLOW_STOP. As in
    host_tools.virtual_board, MicroPython runs on a pty of its own (whose
    line discipline turns Ctrl-C into SIGINT) and a relay copies bytes
    between it and the pty the host opens."""
    prog = tmp_path / "firmware.py"
    prog.write_text(getattr(request, "param", SLOW_STOP))
    bm, bs = os.openpty()
    _raw(bs, isig=True)
    child = subprocess.Popen([MICROPYTHON, "-i", str(prog)], stdin=bs, stdout=bs, stderr=bs,
                             start_new_session=True, preexec_fn=lambda: _ctty(bs))
    os.close(bs)
    hm, hs = os.openpty()
    _raw(hs)
    stop = threading.Event()

    def relay():
        while not stop.is_set():
            r, _, _ = select.select([bm, hm], [], [], 0.05)
            for src, dst in ((bm, hm), (hm, bm)):
                if src in r:
                    try:
                        os.write(dst, os.read(src, 4096))
                    except OSError:
                        return

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    time.sleep(0.5)  # the program is running
    yield os.ttyname(hs)
    stop.set()
    t.join()
    child.kill()
    child.wait()
    for fd in (bm, hm, hs):
        os.close(fd)


def test_busy_board_is_waited_for(slow_board, monkeypatch):
    # (1.5 s: shorter than the stop, longer than a gap between its lines on a busy host)
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", 1.5)
    t0 = time.monotonic()
    b = Board(slow_board)
    took = time.monotonic() - t0
    try:
        # The session works: the prompt was left for the first exchange.
        assert b.eval("6 * 7") == 42
    finally:
        b.close()
    assert took > 2.0, took  # it really waited past the connect timeout


@pytest.mark.parametrize("slow_board", [DEAF_ONCE], indirect=True)
def test_lost_ctrl_c_is_sent_again(slow_board, monkeypatch):
    # Silent for a second after the first Ctrl-C: it goes again. The board
    # then prints one banner per Ctrl-A it had queued; the session still
    # starts in step with the prompt.
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", 3.0)
    b = Board(slow_board)
    try:
        assert b.eval("6 * 7") == 42
        assert b.eval("'x' * 3") == "xxx"
        # In step: a stale banner read as the raw-paste reply would have
        # sent mpremote down its fallback (plain raw REPL) for good.
        assert b.t.use_raw_paste
    finally:
        b.close()


def test_silent_port_fails_fast_and_says_so(monkeypatch):
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", 1.0)
    m, s = os.openpty()
    try:
        t0 = time.monotonic()
        with pytest.raises(FlashError) as e:
            Board(os.ttyname(s))
        assert time.monotonic() - t0 < 3
        assert "no MicroPython REPL within 1 s" in str(e.value) and "it said nothing" in str(e.value)
    finally:
        os.close(m)
        os.close(s)


QUIET = "import time\nwhile True:\n    time.sleep(0.05)\n"


@pytest.mark.parametrize("slow_board", [QUIET], indirect=True)
def test_files_go_several_to_an_exec_and_a_failure_names_its_file(slow_board, tmp_path):
    b = Board(slow_board)
    try:
        b.run("import os\nos.chdir(%r)" % str(tmp_path), "chdir")
        d = "fs"
        b.run("agent_makedirs(%r)" % d, "mkdir")
        # Random bytes (sent as they are) and text (deflated: the board inflates it).
        files = [("%s/s%02d.bin" % (d, i), os.urandom(37 * i)) for i in range(30)]
        files += [("%s/big.bin" % d, os.urandom(3 * session.CHUNK + 5)), ("%s/empty.bin" % d, b"")]
        files += [("%s/text%d.py" % (d, i), b"".join(b"reading_%d = %d\n" % (k, k * i) for k in range(900)))
                  for i in range(2)]
        execs = []
        real = b.exec
        b.exec = lambda code, timeout=30: (execs.append(code), real(code, timeout))[1]  # type: ignore[method-assign]
        b.write_files(files)
        total = sum(len(x) for _p, x in files)
        assert len(execs) < len(files), (len(execs), total)  # not one or more a file
        assert any(",10)" in x for x in execs) and any(",0)" in x for x in execs)  # deflated and as is
        assert sum(len(x) for x in execs) < total * 4 // 3  # less than the base64 of it all
        for path, data in files:
            assert b.read_bytes(path) == data, path
        # The fourth file's directory is not there: its name in the error, the files before it written.
        bad = [("%s/t%d.bin" % (d, i), b"x%d" % i) for i in range(3)] + [("%s/no/such.bin" % d, b"y")]
        bad.append(("%s/t9.bin" % d, b"z"))
        with pytest.raises(FlashError) as e:
            b.write_files(bad)
        assert "writing %s/no/such.bin" % d in str(e.value), str(e.value)
        assert b.read_bytes("%s/t2.bin" % d) == b"x2"
        assert b.eval("6 * 7") == 42  # the session goes on
    finally:
        b.close()
