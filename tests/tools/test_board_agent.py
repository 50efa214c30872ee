"""The board agent (host_tools/flash/board_agent.py) as flash sends it: no
comments or type hints, in chunks the board's raw REPL can buffer, and
running on MicroPython: the file operations and an interrupted switch-over
finished by a rerun, on the unix port in a scratch directory."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import zlib

from host_tools.flash import session
from host_tools.flash.layout import ENTRIES
from host_tools.pilerun import MICROPYTHON


def test_sent_code_is_stripped_and_chunked():
    for part in ("core", "rom"):
        chunks = session.agent_code(part)
        assert chunks
        for c in chunks:
            assert len(c) <= session.AGENT_CHUNK, (part, len(c))
            assert "#" not in c.replace("'#'", "") and "->" not in c and ": str" not in c, c
            compile(c, part, "exec")
    core = "\n".join(session.agent_code("core"))
    rom = "\n".join(session.agent_code("rom"))
    assert "def agent_finish_switch(src, keep, entries, have):" in core and "agent_rom" not in core
    assert "def agent_rom_write(offset, b64):" in rom and "def agent_exists" not in rom


SCRIPT = r"""
import os, json, binascii
os.chdir(%(dir)r)
%(agent)s
out = {}
agent_makedirs('a/b/c')
agent_put('a/b/c/f.bin', binascii.b2a_base64(b'hello ').decode(), 1, 0, 0)
agent_put('a/b/c/f.bin', %(z)r, 0, 1, 10)
agent_put('a/b/e.bin', '', 1, 1, 0)
out['inflates'] = agent_inflates()
agent_abort()
out['empty'] = len(open('a/b/e.bin', 'rb').read())
out['sha'] = agent_sha256('a/b/c/f.bin')
out['missing'] = agent_sha256('nope')
agent_copy('a/b/c/f.bin', 'a/g.bin')
out['walk'] = sorted(agent_walk('a', []))
out['isdir'] = [agent_isdir('a/b'), agent_isdir('a/g.bin'), agent_exists('a/g.bin'), agent_exists('x')]
out['free'] = len(agent_free())
agent_remove('a')
out['gone'] = agent_exists('a')
# A firmware in place, a new one staged in next/, a switch-over cut after its
# first step (.switch written, main.py moved to prev/): the rerun finishes it.
for name, text in (('main.py', 'old'), ('VERSION', '1'), ('next/main.py', 'new'), ('next/VERSION', '2')):
    agent_makedirs(name.rsplit('/', 1)[0]) if '/' in name else None
    f = open(name, 'w'); f.write(text); f.close()
agent_makedirs('prev')
f = open('.switch', 'w'); f.write('next prev main.py VERSION'); f.close()
os.rename('main.py', 'prev/main.py')
agent_finish_switch('next', 'prev', %(entries)r, ['main.py', 'VERSION'])
out['after'] = {n: open(n).read() for n in ('main.py', 'VERSION', 'prev/main.py', 'prev/VERSION')}
out['left'] = [agent_exists('next'), agent_exists('.switch')]
print(json.dumps(out))
"""


def test_agent_runs_on_micropython(tmp_path):
    agent = "\n".join(session.agent_code("core") + session.agent_code("rom"))
    script = tmp_path / "run.py"
    work = tmp_path / "fs"
    work.mkdir()
    c = zlib.compressobj(9, zlib.DEFLATED, -10)
    z = base64.b64encode(c.compress(b"agent") + c.flush()).decode()  # raw deflate, as write_files sends
    script.write_text(SCRIPT % {"dir": str(work), "agent": agent, "entries": ENTRIES, "z": z})
    r = subprocess.run([MICROPYTHON, str(script)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=""))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sha"] == hashlib.sha256(b"hello agent").hexdigest() and out["missing"] is None
    assert out["walk"] == ["a/b/c/f.bin", "a/b/e.bin", "a/g.bin"] and out["empty"] == 0 and out["inflates"]
    assert out["isdir"] == [True, False, True, False] and out["free"] == 3 and out["gone"] is False
    assert out["after"] == {"main.py": "new", "VERSION": "2", "prev/main.py": "old", "prev/VERSION": "1"}
    assert out["left"] == [False, False]
