# The interlock table: one row per hazard (docs/domain.md section 3) and
# per device whose silence makes the pile blind. It is data; docs/safety.md
# is generated from it. The engine is stepped with (now, readings, state)
# and every other module asks it, and only it, whether the contactor may
# close or fuel may flow. A reading that is UNKNOWN (stale, missing,
# implausible) makes every rule that reads it true: unknown is unsafe.
from array import array

from h2p.compat import const, ticks_diff

from h2p import codes as K
from h2p import states as S
from h2p.readings import INDEX, SCALES

# Severities (EVerest-style taxonomy): the path the pile takes.
WARNING = const(1)  # event only
DERATE = const(2)  # a lower power claim
STOP = const(3)  # ramp the EV current to zero, open, keep stack running
EMERGENCY = const(4)  # contactor open at once, fuel off, ventilation max

# Comparisons.
GE = const(0)  # value >= threshold
LE = const(1)  # value <= threshold
BIT = const(2)  # value & threshold != 0
EQ = const(3)  # value == threshold
OHM_V = const(4)  # insulation kohm per output volt below threshold (ohm/V)
EXT = const(5)  # raised by code (contactor supervision, E-stop input)

# When a row applies (outside its phase it is inactive).
ALWAYS = const(0)
FUEL = const(1)  # fuel may be present: preheat .. cooldown
STACK = const(2)  # stack is loaded: stack_start .. stopping
EV = const(3)  # an EV is connected (pilot B, C or D) or the contactor is closed

# Clearing: auto when the condition has gone; RESET needs the condition
# gone and a reset command (operator or technician).
AUTO = const(0)
RESET = const(1)

# derate rows carry the fraction of charger current still allowed (percent).
# (name, reading, op, threshold, debounce_ms, severity, clear, when, derate %)
# What each row guards against is in docs_text.INTERLOCK_WHY (docs only); the
# names of the codes above are in docs_text too.
# Rows are lists, not tuples: a tuple of constants is compiled into the
# module's constants and stays in RAM as long as the module; these are built
# at import, compiled into _RULES below and freed by release(). Whole
# thresholds are written as ints: a float literal is an object of its own,
# in RAM for as long as the module is loaded (the rows are not).
TABLE = (
    ["estop", None, EXT, 0, 0, EMERGENCY, RESET, ALWAYS, 0],
    ["h2_warn", "sio_h2_lel", GE, 10, 500, WARNING, AUTO, ALWAYS, 0],
    ["h2_trip", "sio_h2_lel", GE, 25, 100, EMERGENCY, RESET, ALWAYS, 0],
    ["meoh_leak", "ref_meoh_leak", GE, 1, 500, EMERGENCY, RESET, ALWAYS, 0],
    ["bed_overtemp", "ref_bed_c", GE, 320, 500, EMERGENCY, RESET, ALWAYS, 0],
    ["burner_overtemp", "ref_burner_c", GE, 650, 1000, EMERGENCY, RESET, FUEL, 0],
    ["ref_trip", "ref_alarms", BIT, K.REF_ALM_FLAME | K.REF_ALM_PRESSURE, 200, EMERGENCY, RESET, FUEL, 0],
    ["ref_alarm", "ref_alarms", BIT, K.REF_ALM_PUMP | K.REF_ALM_SENSOR, 1000, STOP, AUTO, FUEL, 0],
    ["evap_overtemp", "ref_evap_c", GE, 250, 2000, STOP, AUTO, FUEL, 0],
    ["evap_cold", "ref_evap_c", LE, 120, 10000, DERATE, AUTO, STACK, 50],
    ["co_high", "fc_co_ppm", GE, 20000, 5000, DERATE, AUTO, STACK, 50],
    ["co_trip", "fc_co_ppm", GE, 30000, 2000, STOP, AUTO, STACK, 0],
    ["stack_hot", "fc_stack_c", GE, 185, 2000, DERATE, AUTO, STACK, 50],
    ["stack_overtemp", "fc_stack_c", GE, 195, 500, EMERGENCY, RESET, ALWAYS, 0],
    ["cell_low", "fc_min_cell_v", LE, 0.35, 1000, DERATE, AUTO, STACK, 50],
    ["cell_trip", "fc_min_cell_v", LE, 0.20, 200, EMERGENCY, RESET, STACK, 0],
    ["tank_empty", "ref_tank_l", LE, 2, 5000, STOP, AUTO, FUEL, 0],
    ["vent_fail", "sio_airflow", LE, 0.5, 3000, EMERGENCY, RESET, FUEL, 0],
    ["tilt", "sio_status", BIT, K.SIO_TILT, 500, STOP, AUTO, ALWAYS, 0],
    ["door_open", "sio_status", BIT, K.SIO_DOOR_OPEN, 500, STOP, AUTO, ALWAYS, 0],
    ["estop_chain", "sio_status", BIT, K.SIO_ESTOP, 0, EMERGENCY, RESET, ALWAYS, 0],
    ["water", "sio_status", BIT, K.SIO_WATER, 1000, STOP, AUTO, ALWAYS, 0],
    ["iso_warn", "chg_iso_kohm", OHM_V, 500, 1000, WARNING, AUTO, EV, 0],
    ["iso_fault", "chg_iso_kohm", OHM_V, 100, 200, STOP, RESET, EV, 0],
    ["pilot_short", "chg_pilot", EQ, K.PILOT_E, 100, STOP, AUTO, EV, 0],
    ["bms_alarm", "bat_alarms", GE, 1, 500, STOP, AUTO, ALWAYS, 0],
    ["bat_hot", "bat_c", GE, 50, 5000, DERATE, AUTO, ALWAYS, 50],
    ["bat_overtemp", "bat_c", GE, 60, 2000, STOP, AUTO, ALWAYS, 0],
    ["charger_hot", "chg_c", GE, 85, 2000, DERATE, AUTO, EV, 50],
    ["contactor_welded", None, EXT, 0, 0, STOP, RESET, ALWAYS, 0],
    ["contactor_stuck", None, EXT, 0, 0, STOP, AUTO, ALWAYS, 0],
    ["comm_charger", "chg_status", EXT, 0, 0, EMERGENCY, AUTO, ALWAYS, 0],
    ["comm_safety", "sio_status", EXT, 0, 0, EMERGENCY, AUTO, ALWAYS, 0],
    ["comm_fuelcell", "fc_status", EXT, 0, 0, EMERGENCY, AUTO, FUEL, 0],
    ["comm_reformer", "ref_mode", EXT, 0, 0, EMERGENCY, AUTO, FUEL, 0],
    ["comm_bms", "bat_soc", EXT, 0, 0, STOP, AUTO, ALWAYS, 0],
    ["comm_meter", "met_a", EXT, 0, 0, STOP, AUTO, EV, 0],
    ["task_crash", None, EXT, 0, 0, STOP, RESET, ALWAYS, 0],
)

N = len(TABLE)
if N >= 255:  # row indices are bytes (_BY, todo) and _summed packs one in 8 bits
    raise ValueError("interlocks: %d rows, at most 254" % N)
NAMES = tuple(r[0] for r in TABLE)
# Row index by name, for tools and tests (the pile itself needs only NAMES:
# dropped by release()).
ROW = {n: i for i, n in enumerate(NAMES)}

# Rows whose reading is a "comm_" heartbeat go true when that reading is
# unknown; that is how loss of a device is a hazard like any other.

_UNKNOWN = const(2)  # condition true because the data is unknown

_I_OUT_V = INDEX["chg_out_v"]
_I_REQ_V = INDEX["chg_ev_req_v"]
# The billing meter is no safety reading: its heartbeat row holds off for
# the configured gap (bus.meter_gap_ms, counted from the last good reading:
# the data age plus this row's debounce), not the control loop's data age.
_COMM_METER = NAMES.index("comm_meter")

# The compiled rules: _NC 16-bit ints per row, at these offsets.
_READING = const(0)  # reading index, -1 for none
_OP = const(1)
_THRESHOLD = const(2)  # in the stored integer units of the reading
_DEBOUNCE = const(3)  # ms
_SEVERITY = const(4)
_CLEAR = const(5)
_WHEN = const(6)
_DERATE = const(7)  # percent
_NC = const(8)


def _compile(table):
    rules = array("h")  # every value fits: thresholds, debounce (ms) < 32768
    for name, reading, op, thr, debounce, severity, clear, when, derate in table:
        i = INDEX[reading] if reading else -1
        if op in (GE, LE) and reading:
            t = int(round(thr / SCALES[i]))
        else:
            t = int(thr)
        for v in (i, op, t, debounce, severity, clear, when, derate):  # extend(tuple) needs v1.24
            rules.append(v)
    return rules


# One array for every Interlocks (they only read it): the engine's rules.
_RULES = _compile(TABLE)
del _compile  # run once: not kept in RAM
# The rows by the reading they read, for the incremental step: those of
# reading i are _BY[_AT[i]:_AT[i + 1]] (external flags read none: they are
# judged whole). Insulation rows read two more readings: judged every step.
def _by_reading():
    from h2p.readings import SCALES

    at = bytearray(len(SCALES) + 1)
    by = bytearray()
    for i in range(len(SCALES)):
        at[i] = len(by)
        for k in range(N):
            if _RULES[k * _NC + _READING] == i:
                by.append(k)
    at[len(SCALES)] = len(by)
    return bytes(at), bytes(by)


_AT, _BY = _by_reading()
del _by_reading  # run once: not kept in RAM
_EVERY = bytes(k for k in range(N) if _RULES[k * _NC + _OP] == OHM_V)
_NEVERY = len(_EVERY)

# What a step hands the judging (_judge) and gets back: Interlocks.io.
_IO_NOW = const(0)
_IO_AGE = const(1)  # the readings' max age, ms
_IO_STACK = const(2)  # Interlocks.stack_ms
_IO_PHASE = const(3)  # live phases: 1 fuel, 2 stack, 4 EV
_IO_GAP = const(4)  # Interlocks.meter_gap_ms
_IO_WHOLE = const(5)  # 1: judge every row
_IO_DUE = const(6)  # in: the deadline so far; out: the earliest found
_IO_N = const(7)
# ticks_diff in viper's machine words: ticks wrap at 2**30 on MicroPython
# (on CPython they do not wrap; equal while two times are < 2**29 ms apart).
_TICKS_HALF = const(0x20000000)
_TICKS_MASK = const(0x3FFFFFFF)
_UNKNOWN_RAW = const(-0x3FFFFFFF)  # h2p.readings.UNKNOWN, as a constant the viper code can use


class Interlocks:
    # Evaluated incrementally (issue 16: on an RP2040 the whole table every
    # step was half the control step). A row's condition depends only on its
    # reading (value, time read, age), the phase that makes it live, its
    # external flag and, for STACK rows, when the stack started. So a step
    # re-judges only the rows whose reading was read again since; the rest
    # keep their result until a deadline that time alone can change (a
    # reading growing stale, a debounce running out) or a change of phase or
    # flag, at which the whole table is judged again. The rows to judge come
    # from the readings put since the last step (Readings.dirty), not from a
    # scan of the table: on an RP2040 checking each row cost ~30 us a row,
    # every step. `step_full` judges it whole every step: the property test
    # holds the two equal.
    def __init__(self, meter_gap_ms=30000):
        self.meter_gap_ms = meter_gap_ms
        self.stack_ms = -1  # the step that began the stack phase (STACK rows judge readings since); -1: none
        self.last_ms = 0
        self.active = bytearray(N)  # 1 while the rule holds (debounced)
        self.latched = bytearray(N)  # 1 until reset (RESET rows)
        self.since = array("i", [0] * N)  # when the condition was first seen
        self.pending = bytearray(N)  # 1 while the condition holds, debouncing
        self.ext = bytearray(N)  # conditions raised by code
        self.changed = False  # an active/latched flag changed at the last step
        self.severity = 0  # highest severity in force
        # What contactor_allowed() and fuel_allowed() answer, kept as flags
        # (set with the severity, _sum): the supervisor asks them several
        # times a step, and on an RP2040 a call costs ~40 us, a load ~2.
        self.contactor_ok = True
        self.fuel_ok = True
        self.derate_pct = 100
        self.first = -1  # row index of the highest-severity rule in force
        # the incremental evaluation's memory
        self.at_ts = array("i", [0] * N)  # its reading's time and value then
        self.at_raw = array("i", [0] * N)
        self.todo = bytearray(N)  # the rows this step judges ...
        self.inq = bytearray(N)  # ... each once
        self.due_ms = 0  # the whole table is judged again at this time ...
        self.whole = True  # ... or at the next step
        self.phase = -1  # live phases at the last step (bits: fuel, stack, EV)
        self.io = array("i", [0] * _IO_N)  # what a step and _judge exchange

    def raise_ext(self, name, on=True):
        self.set_ext(NAMES.index(name), on)

    def set_ext(self, k, on):
        v = 1 if on else 0
        if self.ext[k] != v:
            self.ext[k] = v
            self.whole = True

    def in_force(self, i):
        return self.active[i] or self.latched[i]

    def step_full(self, now, rd, state, ev_connected):
        self.whole = True
        self.step(now, rd, state, ev_connected)

    def step(self, now, rd, state, ev_connected):
        self.changed = False
        # When rows apply. The states are numbered in the order the pile runs
        # through them: fuel is present preheat .. cooldown, the stack loaded
        # stack_start .. stopping.
        fuel = S.PREHEAT <= state <= S.COOLDOWN
        stack = S.STACK_START <= state <= S.STOPPING
        if not stack:
            self.stack_ms = -1
        elif self.stack_ms < 0:  # ticks are never negative
            self.stack_ms = self.last_ms  # the step that started the stack
        self.last_ms = now
        phase = (1 if fuel else 0) | (2 if stack else 0) | (4 if ev_connected else 0)
        whole = (self.whole or phase != self.phase or ticks_diff(now, self.due_ms) >= 0
                 or rd.nd > len(rd.dirty))  # more readings put than it could note
        self.phase = phase
        self.whole = False
        io = self.io
        io[_IO_NOW] = now
        io[_IO_AGE] = rd.max_age_ms
        io[_IO_STACK] = self.stack_ms if stack else 0
        io[_IO_PHASE] = phase
        io[_IO_GAP] = self.meter_gap_ms
        io[_IO_WHOLE] = 1 if whole else 0
        # the earliest deadline found; judged whole at least once a data age
        io[_IO_DUE] = now + rd.max_age_ms if whole else self.due_ms
        flips = _judge(self, rd, io)
        rd.nd = 0
        self.due_ms = io[_IO_DUE]
        if flips or whole:
            self.changed = flips == 1
            self._sum()

    def _sum(self):
        # The highest severity in force (the first row of it named) and the
        # lowest derating: only when a flag changed.
        x = _summed(self)
        self.severity = x & 0xFF
        self.contactor_ok = self.severity < STOP
        self.fuel_ok = self.severity < EMERGENCY
        self.first = ((x >> 8) & 0xFF) - 1
        self.derate_pct = x >> 16

    def reset(self):
        # A reset clears latches whose condition has gone. The welded
        # contactor is a technician's reset: it only clears through here too,
        # and the contactor supervisor re-checks the aux contact after.
        n = 0
        for k in range(N):
            if self.latched[k] and not self.active[k]:
                self.latched[k] = 0
                self.changed = True
                n += 1
        if n:
            self.whole = True  # severity and first are summed again at the next step
        return n

    # Questions every other module asks. No other code decides these.
    def contactor_allowed(self):
        return self.contactor_ok  # severity < STOP (_sum)

    def fuel_allowed(self):
        return self.fuel_ok  # severity < EMERGENCY (_sum)

    def names_in_force(self):
        return [NAMES[k] for k in range(N) if self.active[k] or self.latched[k]]


# The judging of a step, as machine code (viper): on an RP2040 a row judged
# in Python cost ~150 us (issue 16). Semantics, row by row:
# - the rows: all (whole), or those whose reading was put since the last
#   step with a new time or value, and the insulation rows;
# - a row outside its phase is off; in phase, a reading never read or older
#   than the max age makes it true as unknown (2: blocks, never latches);
#   a STACK row ignores a reading taken before the stack was loaded (a cell
#   at open circuit with no hydrogen yet reads 0 V); a comm row is true (1)
#   when its heartbeat reading is unknown; an external row is its flag;
# - true for its debounce makes it active (the billing meter's heartbeat
#   row: the configured gap less the data age); a measured hazard (1) on a
#   RESET row latches; false clears the debounce and the flag;
# - the earliest time only time can change a result (a reading growing
#   stale, a debounce running out) goes to io[_IO_DUE].
# Plain Python as written (CPython, or a MicroPython without a native
# emitter); a build for a board with one makes it viper: host_tools.build
# turns "# @micropython.viper" into the decorator and each "x = y  # ptrN"
# into the cast x = ptrN(y). Viper's pointers load unsigned (on the unix
# port's 64-bit words too): a value that can be negative has its sign
# restored with `>=`, a no-op on plain (signed) arrays. Returns 1 when a
# flag changed.
# @micropython.viper
def _judge(il, rd, io) -> int:
    ctl = io  # ptr32
    now = int(ctl[_IO_NOW])
    age = int(ctl[_IO_AGE])
    stack_ms = int(ctl[_IO_STACK])
    phase = int(ctl[_IO_PHASE])
    due = int(ctl[_IO_DUE])
    rules = _RULES  # ptr16
    raw = rd.raw  # ptr32
    ts = rd.ts  # ptr32
    seen = rd.seen  # ptr8
    active = il.active  # ptr8
    latched = il.latched  # ptr8
    pending = il.pending  # ptr8
    ext = il.ext  # ptr8
    since = il.since  # ptr32
    at_ts = il.at_ts  # ptr32
    at_raw = il.at_raw  # ptr32
    todo = il.todo  # ptr8
    inq = il.inq  # ptr8
    one = 1
    sign = one << 31  # (not folded by the compiler: 2**31 is no small int on a 32-bit board)
    wrap = sign << 1  # 2**32 on 64-bit words, 0 on 32-bit ones
    whole = int(ctl[_IO_WHOLE])
    if whole:
        cnt = int(N)
    else:
        # Only a row whose reading was read again can have changed.
        cnt = 0
        dirty = rd.dirty  # ptr8
        nd = int(rd.nd)
        at = _AT  # ptr8
        by = _BY  # ptr8
        j = 0
        while j < nd:
            i = int(dirty[j])
            q = int(at[i])
            qe = int(at[i + 1])
            while q < qe:
                k = int(by[q])
                if inq[k] == 0 and (ts[i] != at_ts[k] or raw[i] != at_raw[k]):
                    inq[k] = 1
                    todo[cnt] = k
                    cnt += 1
                q += 1
            j += 1
        every = _EVERY  # ptr8
        ne = int(_NEVERY)
        q = 0
        while q < ne:
            k = int(every[q])
            if inq[k] == 0:
                inq[k] = 1
                todo[cnt] = k
                cnt += 1
            q += 1
    out_v = int(_I_OUT_V)
    req_v = int(_I_REQ_V)
    comm_meter = int(_COMM_METER)
    flips = 0
    j = 0
    while j < cnt:
        if whole:
            k = j
        else:
            k = int(todo[j])
            inq[k] = 0
        b = k * _NC
        i = int(rules[b + _READING])
        if i >= 0x8000:
            i -= 0x10000
        op = int(rules[b + _OP])
        t = int(rules[b + _THRESHOLD])
        if t >= 0x8000:
            t -= 0x10000
        when = int(rules[b + _WHEN])
        live = 0
        if when == ALWAYS:
            live = 1
        elif when == FUEL:
            live = phase & 1
        elif when == STACK:
            live = phase & 2
        elif when == EV:
            live = phase & 4
        on = 0
        if live and i >= 0:
            # rd.get: the value, or UNKNOWN never read, too old or put so
            if seen[i] == 0 or ((now - int(ts[i]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF > age:
                v = _UNKNOWN_RAW
            else:
                v = int(raw[i])
                if v >= sign:
                    v -= wrap
            if op == EXT:  # comm row: the device's heartbeat reading
                if v == _UNKNOWN_RAW:
                    on = 1
            elif v == _UNKNOWN_RAW:
                on = _UNKNOWN  # true, but not a measured hazard
            elif when == STACK and ((int(ts[i]) - stack_ms + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= 0:
                on = 0  # read before the stack was loaded: judged on the first reading since
            elif op == GE:
                if v >= t:
                    on = 1
            elif op == LE:
                if v <= t:
                    on = 1
            elif op == BIT:
                if v & t:
                    on = 1
            elif op == EQ:
                if v == t:
                    on = 1
            else:
                # OHM_V: kohm * 1000 / volts < t; volts stored in 0.1 V.
                # All three are U16 registers: the products fit 31 bits.
                dv = _UNKNOWN_RAW
                if seen[out_v] and ((now - int(ts[out_v]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= age:
                    dv = int(raw[out_v])
                    if dv >= sign:
                        dv -= wrap
                rv = _UNKNOWN_RAW
                if seen[req_v] and ((now - int(ts[req_v]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= age:
                    rv = int(raw[req_v])
                    if rv >= sign:
                        rv -= wrap
                if dv == _UNKNOWN_RAW or rv == _UNKNOWN_RAW:
                    on = _UNKNOWN
                else:
                    if rv > dv:
                        dv = rv
                    if dv < 500:  # below 50 V the ratio means nothing; judge at 50 V
                        dv = 500
                    if dv > 65535:
                        dv = 65535
                    if v < 0:
                        on = 1
                    elif v < 214748 and v * 10000 < t * dv:
                        on = 1
        elif live and ext[k] == 1:  # raised by code
            on = 1
        if i >= 0:
            at_ts[k] = ts[i]
            at_raw[k] = raw[i]
            if live and seen[i]:
                # when this reading grows stale (OHM_V: any of its three)
                d = int(ts[i]) + age + 1
                if op == OHM_V:
                    if seen[out_v] and ((int(ts[out_v]) + age + 1 - d + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF < 0:
                        d = int(ts[out_v]) + age + 1
                    if seen[req_v] and ((int(ts[req_v]) + age + 1 - d + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF < 0:
                        d = int(ts[req_v]) + age + 1
                if (((d - now + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF > 0
                        and ((d - due + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF < 0):
                    due = d
        # Unknown data blocks like the hazard itself, but only a measured
        # hazard latches: a device that was silent at boot is not a leak.
        if on:
            if active[k] == 0:
                if pending[k] == 0:
                    pending[k] = 1
                    since[k] = now
                deb = int(rules[b + _DEBOUNCE])
                if k == comm_meter:
                    deb = int(ctl[_IO_GAP]) - age
                if ((now - int(since[k]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF >= deb:
                    active[k] = 1
                    flips = 1
                else:
                    d = int(since[k]) + deb
                    if ((d - due + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF < 0:
                        due = d
            if active[k] and on == 1 and rules[b + _CLEAR] == RESET and latched[k] == 0:
                latched[k] = 1
                flips = 1
        else:
            pending[k] = 0
            if active[k]:
                active[k] = 0
                flips = 1
        j += 1
    ctl[_IO_DUE] = due
    return flips


# @micropython.viper
def _summed(il) -> int:
    # Interlocks._sum's scan as machine code: severity | (first + 1) << 8 |
    # derate << 16 (N < 255 rows, checked at import).
    rules = _RULES  # ptr16
    active = il.active  # ptr8
    latched = il.latched  # ptr8
    n = int(N)
    sev = 0
    first = -1
    derate = 100
    k = 0
    while k < n:
        if active[k] or latched[k]:
            b = k * _NC
            s = int(rules[b + _SEVERITY])
            if s > sev:
                sev = s
                first = k
            if s == DERATE and int(rules[b + _DERATE]) < derate:
                derate = int(rules[b + _DERATE])
        k += 1
    return sev | ((first + 1) << 8) | (derate << 16)


def release():
    # On the board: the compiled rules and NAMES are all the engine needs;
    # the source table and the index by name (docs, host tools) can go, and
    # h2p.codes (the table's codes) is dropped after boot (h2p.app.boot).
    global TABLE, ROW, INDEX, K
    TABLE = ROW = INDEX = K = None
