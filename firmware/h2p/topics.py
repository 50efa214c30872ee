# The MQTT topic contract, defined once. Firmware, host tools, broker ACLs and
# docs/mqtt.md (host_tools/gendocs_mqtt.py) are all generated from this data.
#
# Every topic lives under  h2pile/v1/<pile_id>/<name>.
# Every message the pile publishes is a JSON object carrying "seq" (per-boot
# sequence number, 1.., 0 only in the last will) and "boot" (boot counter);
# see h2p.publisher.

VERSION = "v1"
PREFIX = "h2pile/" + VERSION + "/"

# Directions: "pub" = pile publishes, "sub" = pile subscribes (operator publishes).
# (name, qos, retain, direction, description)
TOPICS = (
    ("status", 1, True, "pub",
     "Liveness. {\"online\": true} on every connect; the broker publishes the "
     "last will {\"online\": false, \"seq\": 0} when the link dies."),
    ("meta", 1, True, "pub",
     "Identity: firmware version, board, config hash, capabilities. Sent on "
     "every connect and on the resend_meta command."),
    ("state", 1, True, "pub",
     "State machine state, active faults and the claim that limits the "
     "output current. Sent on every change and on connect."),
    ("tele", 0, False, "pub",
     "Telemetry, sent when a field moves by more than its deadband or at "
     "the latest every TELE_MAX_INTERVAL_S. QoS 0: a lost sample is "
     "replaced by the next."),
    ("evt", 1, False, "pub",
     "Events: faults raised/cleared, session start/stop, warnings."),
    ("cmd", 1, False, "sub",
     "Signed commands (see h2p.sign). Never retained: a retained command "
     "would be replayed to the pile on every reconnect."),
    ("cmd/ack", 1, False, "pub",
     "One acknowledgement per received command: {id, op, ok, reason}."),
    ("bill", 1, False, "pub",
     "Billing record of a finished session. The pile keeps it in flash and "
     "re-sends it until a bill/ack with the same id arrives."),
    ("bill/ack", 1, False, "sub",
     "Back office confirms a billing record: {\"id\": ...}."),
)

# Indexes into a TOPICS row.
T_NAME = 0
T_QOS = 1
T_RETAIN = 2
T_DIR = 3
T_DOC = 4

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
# Argument: (name, type, required, lo, hi, description). type "num" is a JSON
# number checked against lo..hi; type "str" is a string whose length in bytes
# is checked against lo..hi.
A_NAME = 0
A_TYPE = 1
A_REQ = 2
A_LO = 3
A_HI = 4
A_DOC = 5

# (op, description, args)
CMD_OPS = (
    ("start", "Start (or authorise) a charging session.", (
        ("auth", "str", False, 1, 256,
         "sponsor/entitlement token from the app back end"),
        ("limit_a", "num", False, 0, 500, "output current limit for this session, A"),
    )),
    ("stop", "Stop the session: ramp the current down, then open the contactor.", ()),
    ("set_limit", "Set the output current limit.", (
        ("amps", "num", True, 0, 500, "output current limit, A"),
    )),
    ("reset", "Acknowledge and clear latched faults that are no longer present.", ()),
    ("shutdown", "Controlled shutdown of reformer and fuel cell (15-30 min).", ()),
    ("wake", "Leave standby: start warming up for a session.", ()),
    ("resend_meta", "Publish meta, state and status again.", ()),
)

CMD_BY_OP = {}
for _c in CMD_OPS:
    CMD_BY_OP[_c[0]] = _c

# Command envelope (see h2p.sign): field -> (type, description)
CMD_FIELDS = (
    ("id", "str", "unique command id chosen by the sender (1..64 chars)"),
    ("op", "str", "one of the ops below"),
    ("args", "obj", "arguments object (may be empty)"),
    ("pile", "str", "target pile id (signed; must match the pile)"),
    ("issued", "int", "Unix time the command was signed, s"),
    ("expires", "int", "Unix time after which the pile rejects it, s"),
    ("nonce", "str", "random hex, 8..64 chars"),
    ("sig", "str", "hex HMAC-SHA256 over the canonical encoding, per-pile command key"),
)

# ---- payload fields ---------------------------------------------------------
# Telemetry: (field, unit, deadband, description). A change smaller than the
# deadband does not by itself cause a tele message.
TELE_FIELDS = (
    ("p_kw", "kW", 0.2, "charger output power"),
    ("v_out", "V", 2.0, "charger output voltage"),
    ("i_out", "A", 1.0, "charger output current"),
    ("e_kwh", "kWh", 0.05, "energy delivered in this session (billing meter)"),
    ("ev_soc", "%", 1.0, "EV state of charge"),
    ("bat_soc", "%", 0.5, "buffer battery state of charge"),
    ("bat_kw", "kW", 0.2, "buffer battery power, + = discharging"),
    ("fc_kw", "kW", 0.1, "fuel-cell net power"),
    ("fc_t", "degC", 1.0, "stack temperature"),
    ("ref_t", "degC", 2.0, "reformer bed temperature"),
    ("premix_l", "L", 0.2, "premix in the tank"),
    ("fuel_l_kwh", "L/kWh", 0.02, "premix use per kWh (rolling)"),
    ("h2_lel", "%LEL", 1.0, "hydrogen concentration in the enclosure"),
    ("limit_a", "A", 1.0, "output current limit in force"),
)
TELE_MAX_INTERVAL_S = 60

TELE_DEADBAND = {}
for _f in TELE_FIELDS:
    TELE_DEADBAND[_f[0]] = _f[2]

# Fields of the other pile payloads (field, type, description).
STATUS_FIELDS = (
    ("online", "bool", "true while connected; false in the last will"),
)
META_FIELDS = (
    ("fw", "str", "firmware version"),
    ("board", "str", "board profile"),
    ("cfg", "str", "configuration hash"),
)
STATE_FIELDS = (
    ("state", "str", "state machine state"),
    ("faults", "list", "active fault codes"),
    ("limit_by", "str", "what limits the output current now (bms, fc, ev, cmd, thermal...)"),
    ("limit_a", "num", "the current limit in force, A"),
)
ACK_FIELDS = (
    ("id", "str", "command id (null if the command could not be parsed)"),
    ("op", "str", "command op (null if unknown)"),
    ("ok", "bool", "true if accepted and carried out"),
    ("reason", "str", "'ok' or why it was rejected"),
    ("dup", "bool", "present and true if this repeats the ack of an already seen command"),
)
STAMP_FIELDS = (
    ("seq", "int", "per-boot sequence number of the message (the will uses 0)"),
    ("boot", "int", "boot counter"),
)
