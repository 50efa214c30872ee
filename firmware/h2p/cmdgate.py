# The command path's front door, resident in the pile (h2p.uplink): the
# command rate, decided on the raw bytes before anything is parsed or the
# command modules (h2p.cmdhandler, h2p.sign) are loaded, so that a flood
# costs the pile no more than reading it and one small ack per message.
#
# The rate: commands other than stop, shutdown and reset
# (topics_doc.SAFETY_OPS) are let in at a burst of CMD_BURST, then one per
# CMD_INTERVAL_MS of the pile clock (a GCRA); beyond it the ack says "busy".
# Its state is the first two integers of the command memory (h2p.cmdhandler
# keeps the rest).
#
# peek() reads a string field without parsing: a guess, good for every
# command a signer writes. h2p.cmdhandler, which parses, refuses a command
# whose op was peeked as a safety op but is not one (it skipped the rate).
from h2p.compat import const, ticks_add, ticks_diff

CMD_BURST = const(5)
CMD_INTERVAL_MS = const(1000)
_NEXT = const(0)  # the next allowed time (ticks ms)
_NEXT_SET = const(1)


def peek(raw, key):
    # The string value after the first key (b'"op"') in raw, or None.
    if raw is None:
        return None
    i = raw.find(key)
    if i < 0:
        return None
    i = raw.find(b'"', i + len(key))
    j = raw.find(b'"', i + 1) if i >= 0 else -1
    if j < 0 or j - i > 65 or raw.find(b"\\", i, j) >= 0:
        return None
    try:
        return raw[i + 1:j].decode()
    except Exception:  # noqa: BLE001 - not UTF-8: no guess
        return None


def safety(op):
    return op == "stop" or op == "shutdown" or op == "reset"


def admit(n, now_ms, op):
    # May a command with this op come in now? Counts it if so. n: the
    # command memory's integers.
    if safety(op):
        return True
    if n[_NEXT_SET] and ticks_diff(n[_NEXT], now_ms) > 0:
        if ticks_diff(n[_NEXT], now_ms) > (CMD_BURST - 1) * CMD_INTERVAL_MS:
            return False
    else:
        n[_NEXT] = now_ms
        n[_NEXT_SET] = 1
    n[_NEXT] = ticks_add(n[_NEXT], CMD_INTERVAL_MS)
    return True
