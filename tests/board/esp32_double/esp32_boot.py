# Boot the firmware as an ESP32 would, on the unix port:
#   cd BOARD_DIR && MICROPYPATH=<this dir>:.frozen micropython -X heapsize=96K esp32_boot.py
# (or through host_tools/unix_flash.py ROM_IMAGE ... for the code in "flash").
# machine/network come from this directory (the ESP32 double); sys.platform
# reads "esp32" so main.py selects board_esp32; then main.py runs unchanged,
# as __main__, as the board runs it after boot.py.
import sys
import time  # noqa: F401

import _esp32_sys
import _qstr_room
import machine  # noqa: F401 - the double first, then the room for names (_qstr_room.py)
import network  # noqa: F401

sys.modules["sys"] = _esp32_sys
_qstr_room.fill()
del _qstr_room
del sys
with open("main.py") as _f:
    _src = _f.read()
_g = {"__name__": "__main__", "__file__": "main.py"}
_code = compile(_src, "main.py", "exec")
_src = None
exec(_code, _g)
