"""The unix board's flash: the firmware's .mpy files in a ROMFS image mapped
outside the GC heap (host_tools/unix_flash.py), mounted at /rom by main.py,
bytecode run in place. What the heap then holds is what a board's RAM holds."""

import os
import shutil
import subprocess
import sys

import pytest

from host_tools import FIRMWARE, ROOT
from host_tools.build import mpy_cross, write_rom_image
from host_tools.pilerun import MICROPYTHON

LAUNCHER = os.path.join(ROOT, "host_tools", "unix_flash.py")
# A module of 20 long functions: mostly bytecode, few objects.
BIG = "".join(f"def f{i}(x):\n" + "".join(f"    x = (x * {i + k} + {k * 7}) % 1009 - {k}\n" for k in range(40))
              + "    return x\n" for i in range(20))
pytestmark = [pytest.mark.micropython]

PROBE = """
import gc, sys
import main
main._mount_flash()
gc.collect(); a = gc.mem_alloc()
import big
gc.collect()
print(big.__file__, gc.mem_alloc() - a, big.f7(3))
"""


def _run(args, cwd, env_extra=None):
    env = dict(os.environ, MICROPYPATH=".frozen:" + cwd)
    env.pop("H2P_ROM", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, LAUNCHER] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _board(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "big.py").write_text(BIG)
    subprocess.run([mpy_cross(), "-o", str(src / "big.mpy"), str(tmp_path / "big.py")], check=True)
    img = tmp_path / "rom.img"
    write_rom_image(str(src), str(img))
    board = tmp_path / "board"
    board.mkdir()
    shutil.copy(os.path.join(FIRMWARE, "main.py"), board)
    (board / "probe.py").write_text(PROBE)
    return img, board, src


def test_bytecode_runs_from_the_mapped_image_not_the_heap(tmp_path):
    img, board, src = _board(tmp_path)
    r = _run([str(img), "-X", "heapsize=256K", "probe.py"], str(board))
    assert r.returncode == 0, r.stderr
    path, rom_cost, val = r.stdout.split()
    ns = {}
    exec(BIG, ns)
    assert path == "/rom/big.mpy" and int(val) == ns["f7"](3)
    # The same module loaded into the heap the usual way, for comparison.
    shutil.copy(src / "big.mpy", board / "big.mpy")
    r2 = subprocess.run([MICROPYTHON, "-X", "heapsize=256K",
                         "-c", "import gc; gc.collect(); a = gc.mem_alloc(); import big; gc.collect(); "
                               "print(big.__file__, gc.mem_alloc() - a)"],
                        cwd=str(board), env=dict(os.environ, MICROPYPATH=".frozen:" + str(board)),
                        capture_output=True, text=True, timeout=60)
    ram_path, ram_cost = r2.stdout.split()
    assert ram_path == "big.mpy" or ram_path.endswith("/big.mpy")
    # In place: the bytecode (most of the file) costs no heap.
    assert int(rom_cost) < 0.25 * int(ram_cost), (rom_cost, ram_cost)
    print(f"\n20 long functions: {rom_cost} B of heap from the image, {ram_cost} B loaded into the heap")


def test_without_an_image_main_mounts_nothing(tmp_path):
    img, board, _src = _board(tmp_path)
    r = subprocess.run([MICROPYTHON, "-c",
                        "import main, sys; main._mount_flash(); print('/rom' in sys.path)"],
                       cwd=str(board), env=dict(os.environ, MICROPYPATH=".frozen:" + str(board)),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stdout + r.stderr


def test_bad_image_is_refused_with_a_clear_error(tmp_path):
    r = _run([str(tmp_path / "missing.img"), "-c", "print(1)"], str(tmp_path))
    assert r.returncode == 2 and "missing.img" in r.stderr, r.stderr
    (tmp_path / "empty.img").write_bytes(b"")
    r = _run([str(tmp_path / "empty.img"), "-c", "print(1)"], str(tmp_path))
    assert r.returncode == 2 and "empty ROM image" in r.stderr, r.stderr
    r = _run([], str(tmp_path))
    assert r.returncode == 2 and "usage" in r.stderr
