"""h2pile simulator: the pile's devices on a Modbus RTU line, with physics."""

import os
import sys

# The register maps, thresholds and state names live in firmware/h2p: one
# source of truth, imported here rather than copied.
_FW = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware")
if _FW not in sys.path:
    sys.path.insert(0, _FW)
