# The commands of the MQTT contract: each op and its arguments. Part of the
# topic contract (h2p.topics builds its CMD_OPS and CMD_ARGS rows from these;
# docs and host tools read them there) but kept in a module of its own: the
# pile checks a command's arguments against it (h2p.sign) without loading
# the topic tables. Flat, for RAM: the pile loads this module for every
# command, and one tuple of all the arguments' fields costs ~64 B less per
# argument than a tuple each (a command flood at 96K needs those bytes).
CMD_NAMES = ('start', 'stop', 'set_limit', 'reset', 'shutdown', 'wake', 'resend_meta')

# Six fields per argument: op, name, type, required, lo, hi; in the order
# the docs list them (no constant for the six: one global more makes this
# module's globals table the next size up). type "num" is a JSON number checked against
# lo..hi; type "str" is a string whose length in bytes is checked against
# lo..hi. Descriptions: topics_doc.py.
CMD_ARGS_FLAT = (
    'start', 'auth', 'str', False, 1, 256,
    'start', 'limit_a', 'num', False, 0, 500,
    # Caps a sponsor can budget: the pile stops the session at either (the
    # energy on the billing meter, the time from the session's start).
    'start', 'cap_kwh', 'num', False, 0.1, 500,
    'start', 'cap_min', 'num', False, 1, 1440,
    'set_limit', 'amps', 'num', True, 0, 500,
)
