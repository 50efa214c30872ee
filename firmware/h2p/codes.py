# Small constants the firmware needs (register types, modes, pilot
# states, status bits). Kept apart from the register maps in registers.py so
# the board can drop those big tables once the drivers are built. Codes only
# the docs need (mode names, BMS alarm bits) are in docs_text. On the board
# this module is read at boot and dropped (h2p.app.boot): the build folds
# the codes into the modules that run (host_tools.constfold), which then do
# not import it (tests/tools/test_constfold.py).
from h2p.compat import const

U16 = const(0)
I16 = const(1)
U32 = const(2)  # two registers, high word first
F32 = const(3)  # IEEE-754 float32, high word first (Eastron style)

TYPE_NAMES = ("u16", "i16", "u32", "f32")
TYPE_WORDS = (1, 1, 2, 2)

# Reformer controller: burner, evaporator, reformer bed, premix pump, tank.
REF_MODE_OFF = const(0)
REF_MODE_PREHEAT = const(1)
REF_MODE_RUN = const(2)
REF_MODE_COOLDOWN = const(3)
# Reformer alarm word (ref_alarms): the controller's own diagnosis.
REF_ALM_FLAME = const(1)  # burner flame lost (flame sensor)
REF_ALM_PUMP = const(2)  # premix pump runs but no flow
REF_ALM_SENSOR = const(4)  # a thermocouple open or shorted
REF_ALM_PRESSURE = const(8)  # reformate over-pressure (relief valve)

# Pilot states of IEC 61851-1 as the charger controller reports them.
PILOT_A = const(0)  # +12 V, no EV
PILOT_B = const(1)  # +9 V, EV connected
PILOT_C = const(2)  # +6 V, EV asks for charge
PILOT_D = const(3)  # +3 V, charge with ventilation
PILOT_E = const(4)  # 0 V, short
PILOT_F = const(5)  # -12 V, EVSE unavailable
PILOT_NAMES = ("A", "B", "C", "D", "E", "F")

# Charger status bits.
CHG_AUX_CLOSED = const(1)  # contactor auxiliary contact reads closed
CHG_OUTPUT_ON = const(2)
CHG_LOCKED = const(4)
CHG_IMD_DONE = const(8)  # insulation measurement valid

# Safety I/O status bits.
SIO_TILT = const(1)
SIO_DOOR_OPEN = const(2)
SIO_ESTOP = const(4)  # hard-wired E-stop chain open (mirror of the relay)
SIO_WATER = const(8)

