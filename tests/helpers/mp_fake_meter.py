# The fake energy meter of the MicroPython child programs (mp_crash_child.py,
# mp_pile_billing.py): a float in DIR/meter that outlives a SIGKILL.


def read_meter(d):
    try:
        with open(d + "/meter", "rb") as f:
            return float(f.read())
    except (OSError, ValueError):
        return 0.0


def write_meter(d, v):
    # one write() of a fixed width: a SIGKILL cannot tear it
    s = ("%.6f" % v).encode()
    s = b" " * (24 - len(s)) + s
    try:
        f = open(d + "/meter", "r+b")
    except OSError:
        f = open(d + "/meter", "wb")
    f.write(s)
    f.close()
