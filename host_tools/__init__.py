"""h2pile host tools: the `h2pile` command for technicians, operators and developers."""

import os

# Register maps, state and topic names are defined once in firmware/h2p (the
# installed package `h2p`); the host tools import them from there. ROOT is the
# checkout: builds, boards/ and docs/ are found from it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
