# Supervisor state names, used everywhere: topics, logs, the live view, docs.
# The index is what goes on the wire in compact telemetry; the name is what
# people read.
from h2p.compat import const

OFF = const(0)
SELFTEST = const(1)
PREHEAT = const(2)
REFORMING = const(3)
STACK_START = const(4)
READY = const(5)
CHARGING = const(6)
STOPPING = const(7)
COOLDOWN = const(8)
FAULT = const(9)
ESTOP = const(10)
MAINTENANCE = const(11)  # crashed too often in a row: no control, reachable (h2p.crash)

NAMES = (
    "off",
    "selftest",
    "preheat",
    "reforming",
    "stack_start",
    "ready",
    "charging",
    "stopping",
    "cooldown",
    "fault",
    "estop",
    "maintenance",
)
