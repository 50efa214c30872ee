"""host_tools.build: a board's `native` list (issue 16) compiles those modules
to machine code for that board's architecture, and nothing else; a module
with functions marked viper ("# @micropython.viper") is machine code on every
board whose architecture has a native emitter (the unix board's: x64), plain
bytecode where there is none, and plain Python in the source (a bare
`mpy-cross` compiles every firmware file)."""

import json
import os
import shutil

import pytest

from host_tools import FIRMWARE, ROOT, build

# .mpy header: b"M", version 6, then arch << 2 | sub-version; arch 0 = bytecode only
_ARCH_X64 = 2
_ARCH_ARMV6M = 4


def _viper_modules():
    d = os.path.join(FIRMWARE, "h2p")
    out = set()
    for name in os.listdir(d):
        if name.endswith(".py"):
            with open(os.path.join(d, name)) as f:
                if build.VIPER_MARK + "\n" in f.read():
                    out.add(name[:-3])
    return out


def _arch(path):
    with open(path, "rb") as f:
        head = f.read(3)
    assert head[:2] == b"M\x06", head
    return head[2] >> 2


def test_the_pico_w_gets_its_core_as_armv6m_machine_code(tmp_path):
    out = build.build("rp2_pico_w", str(tmp_path))
    with open(os.path.join(ROOT, "boards", "rp2_pico_w.json")) as f:
        native = set(json.load(f)["native"])
    assert {"interlocks", "supervisor", "readings"} <= native
    viper = _viper_modules()
    assert {"interlocks", "readings"} <= viper
    lib = os.path.join(out, "lib", "h2p")
    for name in os.listdir(lib):
        want = _ARCH_ARMV6M if name[:-4] in native | viper else 0
        assert _arch(os.path.join(lib, name)) == want, name
    # the unix board keeps bytecode (its heap is the tight budget) but for
    # the viper modules, which are its own machine code
    out = build.build("unix_sim", str(tmp_path))
    for name in os.listdir(os.path.join(out, "lib", "h2p")):
        want = _ARCH_X64 if name[:-4] in viper else 0
        assert _arch(os.path.join(out, "lib", "h2p", name)) == want, name


def test_a_native_name_that_is_no_shipped_module_is_refused_with_the_file_and_key(tmp_path, monkeypatch):
    boards = tmp_path / "boards"
    boards.mkdir()
    with open(os.path.join(ROOT, "boards", "rp2_pico_w.json")) as f:
        desc = json.load(f)
    desc["native"] = ["interlocks", "signer"]  # signer is host-only: never shipped
    (boards / "rp2_pico_w.json").write_text(json.dumps(desc))
    shutil.copy(os.path.join(ROOT, "boards", "unix_sim.json"), boards / "unix_sim.json")
    monkeypatch.setattr(build, "ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        build.build("rp2_pico_w", str(tmp_path / "out"))
    msg = str(e.value)
    assert "boards/rp2_pico_w.json" in msg and "'native'" in msg and "'signer'" in msg, msg


@pytest.mark.micropython
def test_a_host_without_a_native_emitter_gets_the_viper_modules_as_bytecode_that_works(tmp_path, monkeypatch):
    # An arm64 host (Apple silicon): its unix port compiles no viper. The
    # build keeps the marked functions plain, and the same bodies on plain
    # (signed) arrays pass the core suite on MicroPython.
    import subprocess

    from tests.core.runner import CPYTHON_ONLY
    from tests.helpers.fwbuild import MICROPYTHON

    monkeypatch.setattr(build, "unix_march", lambda: None)
    out = build.build("unix_sim", str(tmp_path))
    lib = os.path.join(out, "lib")
    for name in os.listdir(os.path.join(lib, "h2p")):
        assert _arch(os.path.join(lib, "h2p", name)) == 0, name
    core = os.path.join(ROOT, "tests", "core")
    env = dict(os.environ, MICROPYPATH=":".join((".frozen", lib, FIRMWARE, core, ROOT)))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=4M", "runner.py"], cwd=core,
                       env=env, capture_output=True, text=True, timeout=300)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    assert r.returncode == 0 and " 0 failed" in last, r.stdout[-3000:] + r.stderr[-3000:]
    files = [f for f in os.listdir(core) if f.startswith("test_") and f.endswith(".py")]
    assert last.endswith("(%d modules)" % (len(files) - len(CPYTHON_ONLY))), last


def test_the_source_is_plain_python_and_the_build_makes_it_viper(tmp_path):
    # A bare mpy-cross (no -march), as a technician might run it, compiles
    # every firmware file; with_viper gives the marked functions their
    # decorator and pointer casts, which need an architecture.
    import subprocess

    d = os.path.join(FIRMWARE, "h2p")
    for name in sorted(os.listdir(d)):
        if name.endswith(".py"):
            r = subprocess.run([build.mpy_cross(), "-o", str(tmp_path / "x.mpy"), os.path.join(d, name)],
                               capture_output=True, text=True)
            assert r.returncode == 0, (name, r.stderr)
    with open(os.path.join(d, "interlocks.py")) as f:
        made = build.with_viper(f.read())
    lines = [ln.strip() for ln in made.splitlines()]
    assert lines.count("@micropython.viper") == 2 and "rules = ptr16(_RULES)" in lines
    assert "raw = ptr32(rd.raw)" in lines and "seen = ptr8(rd.seen)" in lines
    (tmp_path / "interlocks.py").write_text(made)
    r = subprocess.run([build.mpy_cross(), "-o", str(tmp_path / "x.mpy"), str(tmp_path / "interlocks.py")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "invalid arch" in r.stderr  # viper needs one
