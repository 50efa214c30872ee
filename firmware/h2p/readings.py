# Every value the firmware knows about the pile, with its age. Values are
# kept as integers in fixed units (the register's own scale: 0.1 degC,
# 0.1 A, ...) so the control core compares and adds without allocating.
# A value that is stale, missing or out of range reads as UNKNOWN, and every
# consumer treats UNKNOWN as the unsafe side.
from array import array

from h2p.compat import const, ticks_diff

UNKNOWN = const(-0x3FFFFFFF)


def _names_scales():
    # Read once from the register maps (which the board may unload later).
    from h2p import registers as R

    names = R.reading_names()
    scales = {}
    for dev in R.DEVICE_ORDER:
        for f in R.DEVICES[dev]["readings"]:
            scales[f[0]] = f[3]
    # Meter values are float32 on the wire; kept as 0.1 V, 0.1 A, W, Wh.
    # Energy in 0.1 Wh: bills are checked to the Wh, so no truncation to it.
    scales.update({"met_v": 0.1, "met_a": 0.1, "met_w": 1, "met_wh": 0.1})
    # Every float is an object of its own in RAM and the register maps hold
    # one per field: share one per distinct value (ints are not objects).
    shared = {}
    out = []
    for n in names:
        s = scales[n]
        if isinstance(s, float):
            s = shared.setdefault(s, s)
        out.append(s)
    return names, tuple(out)


NAMES, SCALES = _names_scales()
del _names_scales  # run once: not kept in RAM
INDEX = {n: i for i, n in enumerate(NAMES)}


_DIRTY = const(16)  # readings put between two interlock steps (a block has at most 9)


class Readings:
    def __init__(self, max_age_ms=1000):
        n = len(SCALES)
        self.raw = array("i", [UNKNOWN] * n)
        self.ts = array("i", [0] * n)
        self.seen = bytearray(n)  # 1 once the value was ever read
        self.max_age_ms = max_age_ms
        # The readings put since the interlocks last looked (they judge only
        # those rows, h2p.interlocks, and empty it): nd of them in `dirty`;
        # nd past its size: more than fit, everything is judged.
        self.dirty = bytearray(_DIRTY)
        self.nd = 0

    def put(self, i, raw, now):
        self.raw[i] = raw
        self.ts[i] = now
        self.seen[i] = 1
        n = self.nd
        if n < _DIRTY:
            self.dirty[n] = i
            self.nd = n + 1
        else:
            self.nd = _DIRTY + 1

    def get(self, i, now):
        # The raw integer, or UNKNOWN if never read or older than max age.
        if not self.seen[i] or ticks_diff(now, self.ts[i]) > self.max_age_ms:
            return UNKNOWN
        return self.raw[i]

    def value(self, i, now):
        # Physical value as float, None when unknown (telemetry, not control).
        r = self.get(i, now)
        return None if r == UNKNOWN else r * SCALES[i]


# @micropython.viper
def fresh(rd, idx, out, now: int):
    # out[j] = rd.get(idx[j], now) for every j, as machine code: a module
    # that reads the same readings many times in a step (the supervisor)
    # takes them once; on an RP2040 each rd.get cost ~50 us (issue 16).
    # (Viper in a board's build: see h2p.interlocks._judge.)
    raw = rd.raw  # ptr32
    ts = rd.ts  # ptr32
    seen = rd.seen  # ptr8
    ix = idx  # ptr8
    o = out  # ptr32
    age = int(rd.max_age_ms)
    n = int(len(idx))
    j = 0
    while j < n:
        i = int(ix[j])
        # ticks_diff(now, ts[i]) > age, in machine words (ticks wrap at 2**30)
        if seen[i] == 0 or ((now - int(ts[i]) + 0x20000000) & 0x3FFFFFFF) - 0x20000000 > age:
            o[j] = UNKNOWN
        else:
            o[j] = raw[i]
        j += 1


def release():
    # On the board, after boot: the pile addresses readings by index (each
    # module resolved the names it needs while loading), so the names and
    # the index by name (~1.4 KB; boot, host tools and docs) can go.
    global NAMES, INDEX
    NAMES = INDEX = None
