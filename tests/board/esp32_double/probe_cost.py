# Heap the double itself takes (machine + network, imported from the ROM
# image as the firmware imports them): on an ESP32 these modules are C in
# flash and cost no heap (nor qstr pool room: _qstr_room.py), so the test
# adds this to the firmware's 96K.
#   cd BOARD_DIR && unix_flash.py rom_esp32.img -X heapsize=96K probe_cost.py
import gc
import sys
from os import getenv

import uctypes
import vfs

addr, size = getenv("H2P_ROM").split(":")
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(addr), int(size))), "/rom")
sys.path.insert(0, "/rom")
gc.collect()
m0 = gc.mem_alloc()
import time  # noqa: E402

import _qstr_room  # noqa: E402
import machine  # noqa: E402
import network  # noqa: E402,F401 - its import is what is measured

_qstr_room.fill()  # as esp32_boot.py does: the names' room is the double's cost

gc.collect()
print("DOUBLE_HEAP", gc.mem_alloc() - m0, machine.__file__, time.__file__)
