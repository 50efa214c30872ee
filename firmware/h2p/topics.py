# The MQTT topic contract, defined once. Firmware, host tools, broker ACLs and
# docs/mqtt.md (host_tools/gendocs_mqtt.py) are all generated from this data.
#
# Every topic lives under  h2pile/v1/<pile_id>/<name>.
# Every message the pile publishes is a JSON object carrying "seq" (per-boot
# sequence number, 1.., 0 only in the last will) and "boot" (boot counter);
# see h2p.uplink (the pile) and h2p.publisher (tools, tests).

VERSION = "v1"
PREFIX = "h2pile/" + VERSION + "/"

# Directions: "pub" = pile publishes, "sub" = pile subscribes (operator publishes).
# (name, qos, retain, direction). What each one carries: topics_doc.py.
TOPICS = (
    ('status', 1, True, 'pub'),
    ('meta', 1, True, 'pub'),
    ('state', 1, True, 'pub'),
    ('tele', 0, False, 'pub'),
    ('evt', 1, False, 'pub'),
    ('cmd', 1, False, 'sub'),
    ('cmd/ack', 1, False, 'pub'),
    ('bill', 1, False, 'pub'),
    ('bill/ack', 1, False, 'sub'),
)

# Indexes into a TOPICS row.
T_NAME = 0
T_QOS = 1
T_RETAIN = 2
T_DIR = 3

_BY_NAME = {}
for _t in TOPICS:
    _BY_NAME[_t[0]] = _t

PILE_ID_MAX = 32
_PILE_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def valid_pile_id(pile_id):
    # Letters, digits, '_' and '-': no MQTT wildcards, no '/', no '$'.
    if not isinstance(pile_id, str) or not 0 < len(pile_id) <= PILE_ID_MAX:
        return False
    for ch in pile_id:
        if ch not in _PILE_ID_CHARS:
            return False
    return True


def spec(name):
    # The TOPICS row of a sub-topic; KeyError for unknown names.
    return _BY_NAME[name]


def topic(pile_id, name):
    if not valid_pile_id(pile_id):
        raise ValueError("bad pile id: %r" % (pile_id,))
    if name not in _BY_NAME:
        raise ValueError("unknown topic: %r" % (name,))
    return PREFIX + pile_id + "/" + name


def qos(name):
    return _BY_NAME[name][T_QOS]


def retain(name):
    return _BY_NAME[name][T_RETAIN]


def parse(full_topic):
    # "h2pile/v1/P1/cmd/ack" -> ("P1", "cmd/ack"); None if not ours.
    if not full_topic.startswith(PREFIX):
        return None
    rest = full_topic[len(PREFIX):]
    i = rest.find("/")
    if i <= 0:
        return None
    pile_id = rest[:i]
    name = rest[i + 1:]
    if name not in _BY_NAME or not valid_pile_id(pile_id):
        return None
    return (pile_id, name)


# ---- commands --------------------------------------------------------------
# The ops and their arguments are defined in h2p.cmdspec (the pile verifies
# commands without loading this module). Here as rows (op, args), an
# argument being (name, type, required, lo, hi): CMD_OPS, and CMD_BY_OP
# (op -> row); CMD_ARGS: the rows (op, name, type, required, lo, hi) of
# h2p.cmdspec's flat CMD_ARGS_FLAT; CMD_NAMES is h2p.cmdspec's.
#
# These are made when first read (host tools, docs), by the module's
# __getattr__ (PEP 562; MicroPython has it too): RAM: the pile reads this
# module only while setting up its uplink and needs none of them, so it
# does not load h2p.cmdspec then nor build the rows.
A_NAME = 0
A_TYPE = 1
A_REQ = 2
A_LO = 3
A_HI = 4


def __getattr__(name):
    if name not in ("CMD_OPS", "CMD_BY_OP", "CMD_ARGS", "CMD_NAMES"):
        raise AttributeError(name)
    from h2p.cmdspec import CMD_ARGS_FLAT, CMD_NAMES

    CMD_ARGS = tuple(CMD_ARGS_FLAT[i:i + 6] for i in range(0, len(CMD_ARGS_FLAT), 6))  # six fields a row
    ops = tuple((op, tuple(a[1:] for a in CMD_ARGS if a[0] == op)) for op in CMD_NAMES)
    by_op = {}
    for c in ops:
        by_op[c[0]] = c
    g = globals()  # made once: later reads find them here
    g["CMD_OPS"] = ops
    g["CMD_BY_OP"] = by_op
    g["CMD_ARGS"] = CMD_ARGS
    g["CMD_NAMES"] = CMD_NAMES
    return g[name]

# ---- telemetry ---------------------------------------------------------------
# field -> deadband: a change smaller than this does not by itself cause a
# tele message (units and meanings: topics_doc.TELE_FIELDS).
TELE_DEADBAND = {
    'p_kw': 0.2,
    'v_out': 2.0,
    'i_out': 1.0,
    'e_kwh': 0.05,
    'ev_soc': 1.0,
    'bat_soc': 0.5,
    'bat_kw': 0.2,
    'fc_kw': 0.1,
    'fc_t': 1.0,
    'ref_t': 2.0,
    'premix_l': 0.2,
    'h2_lel': 1.0,
    'limit_a': 1.0,
    'deliver_kwh': 0.5,
}
TELE_MAX_INTERVAL_S = 60
