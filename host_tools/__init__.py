"""h2pile host tools: the `h2pile` command for technicians, operators and developers."""

import os
import sys

# Register maps, state and topic names are defined once in firmware/h2p;
# the host tools import them from there.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)
