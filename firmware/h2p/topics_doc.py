# Descriptions of the MQTT contract for people (docs/mqtt.md, `h2pile cmd
# --help`). Kept apart from topics.py so the board does not carry them: the
# board never imports this module. The data itself is in topics.py.
from h2p.topics import TELE_DEADBAND

TOPIC_DOC = {
    'status': 'Liveness. {"online": true} on every connect; the broker publishes the last will {"online": false, "seq": 0} when the link dies.',
    'meta': 'Identity and health: firmware version, board, reset cause, link, last crash, capabilities. Sent on every connect and on the resend_meta command.',
    'state': 'State machine state, active faults and the claim that limits the output current. Sent on every change and on connect.',
    'tele': 'Telemetry, sent when a field moves by more than its deadband or at the latest every TELE_MAX_INTERVAL_S. QoS 0: a lost sample is replaced by the next.',
    'evt': 'Events: faults raised/cleared, session start/stop, warnings.',
    'cmd': 'Signed commands (see h2p.sign). Never retained: a retained command would be replayed to the pile on every reconnect.',
    'cmd/ack': 'One acknowledgement per received command, whatever its size or shape: {id, op, ok, reason} (+ detail, dup).',
    'bill': 'Billing record of a finished session. The pile keeps it in flash and re-sends it until a bill/ack with the same id arrives.',
    'bill/ack': 'Back office confirms a billing record: {"id": ...}.',
}

CMD_DOC = {
    'start': 'Start (or authorise) a charging session.',
    'stop': 'Stop the session: ramp the current down, then open the contactor.',
    'set_limit': 'Set the output current limit.',
    'reset': 'Acknowledge and clear latched faults that are no longer present.',
    'shutdown': 'Controlled shutdown of reformer and fuel cell (15-30 min).',
    'wake': 'Leave standby: start warming up for a session.',
    'resend_meta': 'Publish meta, state and status again.',
}

# (op, arg) -> description
ARG_DOC = {
    ('start', 'auth'): 'sponsor/entitlement token from the app back end',
    ('start', 'limit_a'): 'output current limit for this session, A',
    ('start', 'cap_kwh'): 'energy cap, kWh on the billing meter: the session stops with reason energy_cap '
                          '(a sponsor\'s budget per session)',
    ('start', 'cap_min'): 'time cap, minutes from the session\'s start: the session stops with reason time_cap',
    ('set_limit', 'amps'): 'output current limit, A',
}

# Command envelope (see h2p.sign): (field, type, description)
CMD_FIELDS = (
    ('id', 'str', 'unique command id chosen by the sender (1..64 chars)'),
    ('op', 'str', 'one of the ops below'),
    ('args', 'obj', 'arguments object (may be empty)'),
    ('pile', 'str', 'target pile id (signed; must match the pile)'),
    ('issued', 'int', 'Unix time the command was signed, s'),
    ('expires', 'int', 'Unix time after which the pile rejects it, s'),
    ('nonce', 'str', 'random hex, 8..64 chars'),
    ('sig', 'str', 'hex HMAC-SHA256 over the canonical encoding, per-pile command key'),
)

# Telemetry: (field, unit, deadband, description); deadbands from topics.py.
# Only what h2p.uplink sends (tests/firmware/test_mqtt_fields.py compares).
_TELE = (
    ('p_kw', 'kW', 'charger output power'),
    ('v_out', 'V', 'charger output voltage'),
    ('i_out', 'A', 'charger output current'),
    ('e_kwh', 'kWh', 'energy delivered in this session (billing meter)'),
    ('ev_soc', '%', 'EV state of charge'),
    ('bat_soc', '%', 'buffer battery state of charge'),
    ('bat_kw', 'kW', 'buffer battery power, + = discharging'),
    ('fc_kw', 'kW', 'fuel-cell net power'),
    ('fc_t', 'degC', 'stack temperature'),
    ('ref_t', 'degC', 'reformer bed temperature'),
    ('premix_l', 'L', 'premix in the tank'),
    ('h2_lel', '%LEL', 'hydrogen concentration in the enclosure'),
    ('limit_a', 'A', 'output current limit in force'),
    ('deliver_kwh', 'kWh', 'energy the pile can still deliver to EVs (for dispatch; as on `state`), null while unknown'),
)
TELE_FIELDS = tuple((f, u, TELE_DEADBAND[f], d) for f, u, d in _TELE) + (
    ('state', '', '—', 'state machine state, as on `state` (a change of state goes out on `state`)'),
)

STATUS_FIELDS = (
    ('online', 'bool', 'true while connected; false in the last will'),
)
META_FIELDS = (
    ('fw', 'str', 'firmware version'),
    ('board', 'str', 'board profile'),
    ('reset', 'str', 'why the board last started: power_on, watchdog, soft, hard, crash, maintenance_reset, ...'),
    ('link', 'str', 'network link: up, none (no WiFi on this board), or how the last WiFi join failed (wifi auth, no ap, timeout, fail)'),
    ('link_drops', 'int', 'WiFi links lost since boot (0 on boards without WiFi)'),
    ('link_joins', 'int', 'WiFi join attempts since boot'),
    ('last_crash', 'obj', 'the crash before this boot, or null: {n (in a row), task, error, where, boot}'),
    ('maintenance', 'bool', 'true while the pile stays in maintenance after repeated crashes'),
    ('caps', 'list', 'capabilities: charge, signed_cmd, bill'),
    ('units', 'obj', 'units of the tele fields'),
)
STATE_FIELDS = (
    ('state', 'str', 'state machine state'),
    ('faults', 'list', 'active fault codes'),
    ('limit_by', 'str', 'what limits the output current now (bms, fc, ev, cmd, thermal...)'),
    ('limit_a', 'num', 'the current limit in force, A'),
    ('stack_limit_by', 'str', 'what limits the fuel-cell stack current now: interlock, fuel, bms (the battery\'s charge limit), ramp, stack_temp, energy (the energy manager), demand'),
    ('deliver_kwh', 'num', 'energy the pile can still deliver to EVs, kWh: premix above the reserve at this pile\'s measured premix per kWh, less a warm-up when the stack is cold, plus the battery above its floor; null while unknown. Sent again when it moves by 5 kWh (tele has it to 0.5 kWh) (docs/energy.md)'),
)
EVT_FIELDS = (
    ('kind', 'str', 'faults, selftest, session_start, session_stop or idle_shutdown'),
    ('a', 'str/int', 'faults: the rows in force, comma-separated, or "none"; selftest: pass or fail; '
                     'session_start, session_stop: the session number in this boot; idle_shutdown: ""'),
    ('b', 'str/int', 'faults: the state; selftest: the rows that failed it; session_start: the auth '
                     'token; session_stop: the reason; idle_shutdown: ""'),
)
ACK_FIELDS = (
    ('id', 'str', 'command id (null if the command could not be parsed)'),
    ('op', 'str', 'command op (null if unknown)'),
    ('ok', 'bool', 'true if accepted and carried out'),
    ('reason', 'str', "one of the reasons below: 'ok' or why it was rejected"),
    ('detail', 'str', 'present when there is more to say: which field, which argument, the state that refused'),
    ('dup', 'bool', 'present and true if this repeats the ack of an already seen command'),
)

# Commands that make the pile safer (or clear a safety stop): never refused
# for the command rate, and given room in a full replay table
# (h2p.cmdhandler tests each op against this list).
SAFETY_OPS = ('stop', 'shutdown', 'reset')

# Every cmd/ack "reason" the pile sends (h2p.cmdhandler, h2p.sign): a fixed
# list, so that a back office can act on it. (reason, meaning)
CMD_REASONS = (
    ('ok', 'accepted and carried out'),
    ('refused', 'valid, but the pile will not do it now (detail: why, e.g. the state it is in)'),
    ('error', 'valid, but carrying it out failed (detail: the exception)'),
    ('busy', 'over the command rate (see below), or the replay table is full (detail); '
             'stop, shutdown and reset are never refused for the rate'),
    ('retained', 'delivered with the retain flag: a retained command would run at every reconnect'),
    ('too large', 'over the size limit (the pile did not read it)'),
    ('too deep', 'JSON nested deeper than a command is'),
    ('not json', 'not a JSON object'),
    ('missing field', 'a field of the envelope is missing (detail: which)'),
    ('wrong types', 'a field of the envelope has the wrong type or length (detail: which)'),
    ('unknown op', 'not one of the ops below'),
    ('bad args', 'an argument is missing, unknown, of the wrong type or out of range (detail)'),
    ('wrong pile', 'signed for another pile'),
    ('bad signature', 'the signature does not match the command and this pile\'s key'),
    ('bad expiry', 'expires is not after issued, or the lifetime is over the limit'),
    ('expired', 'the pile\'s clock is past expires'),
    ('issued in future', 'issued is further ahead of the pile\'s clock than the allowed skew'),
    ('issued before boot', 'issued before the pile last booted: re-sign it'),
    ('clock not set', 'the pile\'s clock was never set (no SNTP answer yet)'),
    ('no key', 'the pile has no command key provisioned'),
    ('no memory', 'the pile could not handle it for lack of RAM; send it again'),
)
# Why a session ended: the bill's "reason" (h2p.session.REASONS;
# tests/firmware/test_mqtt_fields.py compares).
STOP_REASONS = (
    ('ev_stop', 'the EV ended the charge (pilot C -> B)'),
    ('unplug', 'the EV was unplugged'),
    ('user', 'a stop command, or the button'),
    ('auth', 'the authorisation ended or its limit was reached'),
    ('fault', 'an interlock, or a step of the charging sequence that failed, stopped it (flag cause:<what> names it)'),
    ('estop', 'the E-stop chain opened'),
    ('power_loss', 'closed at the next boot from its last checkpoint (the pile lost power)'),
    ('reboot', 'closed at the next boot after a software or watchdog reset'),
    ('shutdown', 'a shutdown command'),
    ('energy_cap', 'the start command\'s cap_kwh reached on the billing meter: the current is tapered '
                   'over the last seconds so the bill ends a few Wh under the cap, never more than one '
                   'poll cycle\'s energy over it'),
    ('time_cap', 'the start command\'s cap_min reached, on the pile\'s clock from the session\'s start'),
)

STAMP_FIELDS = (
    ('seq', 'int', 'per-boot sequence number of the message (the will uses 0)'),
    ('boot', 'int', 'boot counter'),
)
