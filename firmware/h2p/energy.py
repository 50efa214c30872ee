# The energy manager (issue 17): what the stack is for, and how much the
# pile can still deliver. A plain object (one array of ints, made by new())
# stepped with (now, readings) like the rest of the core (step()); the supervisor asks it for the stack current it
# wants (its claim "energy" on the stack arbiter) and whether an idle pile
# may cool down. No I/O: the shell stores the measured figures (journal
# meta "energy", slots _LPK and _WARM_L) and puts them back at boot.
#
# Policy (docs/energy.md):
# - battery below target: the stack runs in its best-efficiency band
#   (band_lo without an EV, band_hi while one charges and drains the
#   battery; rated below boost_soc with an EV, which otherwise waits on
#   the stack alone), sessions or not;
# - battery at target, no EV: still in the band (held warm: a short gap to
#   the next car costs no warm-up, and what the battery takes above target
#   is delivered later at the best point); an idle shutdown waits until
#   the battery has been at target for hold_s, or the premix is low, or
#   the battery is full (bat_soc_max: minimum load);
# - dispatch estimate: premix above the reserve (less a warm-up when the
#   stack is not running) at this pile's measured litres per kWh, plus the
#   battery above its floor through the charger.
#
# Units as in the readings: SOC 0.1 %, premix 0.1 L, meter 0.1 Wh, 0.1 A.
# Every figure is an int below 2**30 (no allocation on any port); state
# and settings live in one array, not as attributes (one heap block).
# RAM: two functions, no class, no accessors (a class and each function are
# heap objects on the board: a class with methods cost ~230 B more): the supervisor, the uplink and the shell read and write
# the array's first slots, whose layout is the contract below
# (tests/core/test_energy.py checks their copies of it).
from array import array

from h2p.compat import const
from h2p import states as S
from h2p.readings import UNKNOWN


# What the manager is doing (its names, for people: docs_text.ENERGY_MODES).
_OFF = const(0)
_WARM_UP = const(1)
_CHARGE = const(2)
_BOOST = const(3)
_HOLD = const(4)
_FULL = const(5)
_LOW = const(6)

# Slots of the array. The first seven are read by others (the contract; they
# keep copies of these numbers: h2p.supervisor, h2p.uplink, h2p.app _EM_*):
_LPK = const(0)  # premix per kWh delivered, mL/kWh (measured, rolling; stored across reboots)
_WARM_L = const(1)  # premix a warm-up from cold took, 0.1 L (stored across reboots)
_WANT = const(2)  # the stack current wanted: the claim "energy", 0.1 A
_MODE = const(3)  # one of the modes above
_DELIVER = const(4)  # Wh the pile can still deliver, -1: unknown
_SAVES = const(5)  # new figures the shell should store (it clears the count when it has)
_COOL = const(6)  # 1: an idle pile may cool down now (the supervisor's idle shutdown asks)
# ... then the settings and the manager's own state.
_BAND_LO = const(7)  # 0.1 A
_BAND_HI = const(8)
_RATED = const(9)
_MIN_LOAD = const(10)
_BOOST_SOC = const(11)  # 0.1 %
_SOC_MIN = const(12)
_SOC_TARGET = const(13)
_SOC_MAX = const(14)
_HOLD_MS = const(15)
_LOW_L = const(16)  # 0.1 L
_RESERVE_L = const(17)
_WIN_WH = const(18)  # Wh
_BAT_WH = const(19)  # Wh
_EFF = const(20)  # charger efficiency, per mille
_AT_TARGET = const(21)  # 1 while at target without an EV since _TARGET_MS
_TARGET_MS = const(22)
_W_ON = const(23)  # a measuring window is open
_W_TANK = const(24)
_W_WH = const(25)
_W_SOC = const(26)
_WARM_TANK = const(27)  # tank when the warm-up began, -1: none measured
_I_SOC = const(28)  # reading indices (resolved while booting: the index by name goes after)
_I_TANK = const(29)
_I_WH = const(30)
_N = const(31)


def new(energy, limits):
    # The manager: one array of ints (settings and state), stepped by
    # step() below. energy: config "energy"; limits: config "limits".
    # (RAM: an array and two functions; a class cost ~230 B more.)
    from h2p.readings import INDEX

    a = array("i", bytes(4 * _N))
    a[_I_SOC] = INDEX["bat_soc"]
    a[_I_TANK] = INDEX["ref_tank_l"]
    a[_I_WH] = INDEX["met_wh"]
    rated = limits["stack_rated_a"] * 10
    a[_RATED] = int(rated)
    a[_MIN_LOAD] = int(rated * limits["stack_min_load"])
    a[_BAND_LO] = int(rated * energy["band_lo"])
    a[_BAND_HI] = int(rated * energy["band_hi"])
    a[_BOOST_SOC] = int(energy["boost_soc"] * 10)
    a[_SOC_MIN] = int(limits["bat_soc_min"] * 10)
    a[_SOC_TARGET] = int(limits["bat_soc_target"] * 10)
    a[_SOC_MAX] = int(limits["bat_soc_max"] * 10)
    a[_HOLD_MS] = energy["hold_s"] * 1000
    a[_LOW_L] = int(energy["premix_low_l"] * 10)
    a[_RESERVE_L] = int(energy["reserve_l"] * 10)
    a[_WIN_WH] = int(energy["window_kwh"] * 1000)
    a[_BAT_WH] = int(limits["bat_kwh"] * 1000)
    a[_EFF] = int(limits["charger_eff"] * 1000 + 0.5)
    a[_LPK] = int(limits["premix_l_per_kwh"] * 1000 + 0.5)
    a[_WARM_L] = int(energy["warmup_l"] * 10)
    a[_WARM_TANK] = -1
    a[_DELIVER] = -1
    return a


_TICKS_HALF = const(0x20000000)  # ticks_diff's wrap (ticks count modulo 2**30)
_TICKS_MASK = const(0x3FFFFFFF)


# Machine code on a board with a native emitter (on an RP2040 the step in
# bytecode cost ~0.58 ms, three rd.get calls of it; issue 16): a build makes
# it viper (host_tools.build; see h2p.interlocks._judge), after folding the
# states and UNKNOWN into it as numbers (host_tools.constfold: viper
# compares machine ints, not objects). Viper's pointers load unsigned
# words: a slot or reading that can be negative has its sign restored
# (`>= sign`, a no-op on plain signed arrays and on 32-bit words).
# @micropython.viper
def step(a, now: int, rd, state: int, ev: int):
    # a: the manager (new()); state: the supervisor's; ev: an EV session is on.
    e = a  # ptr32
    raw = rd.raw  # ptr32
    ts = rd.ts  # ptr32
    seen = rd.seen  # ptr8
    age = int(rd.max_age_ms)
    one = 1
    sign = one << 31  # (not folded: 2**31 is no small int on a 32-bit board)
    wrap = sign << 1  # 2**32 on 64-bit words, 0 on 32-bit ones
    # rd.get of the three readings, inline
    i = int(e[_I_SOC])
    soc = UNKNOWN
    if seen[i] and ((now - int(ts[i]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= age:
        soc = int(raw[i])
        if soc >= sign:
            soc -= wrap
    i = int(e[_I_TANK])
    tank = UNKNOWN
    if seen[i] and ((now - int(ts[i]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= age:
        tank = int(raw[i])
        if tank >= sign:
            tank -= wrap
    i = int(e[_I_WH])
    wh = UNKNOWN
    if seen[i] and ((now - int(ts[i]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF <= age:
        wh = int(raw[i])
        if wh >= sign:
            wh -= wrap
    run = 1 if S.STACK_START <= state and state <= S.STOPPING else 0
    ev = 1 if ev else 0
    # -- what the stack should do
    if soc == UNKNOWN:
        want = int(e[_MIN_LOAD])  # no battery figures: no energy pushed into it
        m = _HOLD
    elif tank != UNKNOWN and tank <= int(e[_LOW_L]) and not ev:
        want = int(e[_MIN_LOAD])
        m = _LOW
    elif soc >= int(e[_SOC_MAX]) and not ev:
        want = int(e[_MIN_LOAD])
        m = _FULL
    elif soc >= int(e[_SOC_TARGET]) and not ev:
        # held warm in its band: what goes into the battery above
        # target is delivered later, at the best point
        want = int(e[_BAND_LO])
        m = _HOLD
    elif ev and soc < int(e[_BOOST_SOC]):
        want = int(e[_RATED])
        m = _BOOST
    else:
        want = int(e[_BAND_HI]) if ev else int(e[_BAND_LO])
        m = _CHARGE
    if m == _HOLD and run:  # held warm: counted while the stack runs
        if not e[_AT_TARGET]:
            e[_AT_TARGET] = 1
            e[_TARGET_MS] = now
    else:
        e[_AT_TARGET] = 0
    # May an idle pile cool down now? Not before the battery has been
    # back at target for hold_s (unless the premix is low or the
    # battery full): the next car finds it full and the stack warm.
    # (ticks_diff(now, target_ms) >= hold_ms, inline)
    cool = 0
    if m == _LOW or m == _FULL:
        cool = 1
    elif m == _HOLD and run and ((now - int(e[_TARGET_MS]) + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF >= int(
            e[_HOLD_MS]):
        cool = 1
    e[_COOL] = cool
    if not run:
        m = _WARM_UP if state == S.PREHEAT or state == S.REFORMING else _OFF
    e[_WANT] = want
    e[_MODE] = m
    # -- the warm-up from cold: what it cost
    warm_tank = int(e[_WARM_TANK])
    if warm_tank >= sign:
        warm_tank -= wrap
    if m == _WARM_UP:
        if warm_tank < 0 and tank != UNKNOWN:
            e[_WARM_TANK] = tank
    elif run and warm_tank >= 0 and tank != UNKNOWN:
        used = warm_tank - tank
        if 0 <= used and used <= 500:
            e[_WARM_L] = used
            e[_SAVES] = int(e[_SAVES]) + 1
        e[_WARM_TANK] = -1
    elif not run:
        e[_WARM_TANK] = -1
    # -- premix per kWh delivered, in windows of window_kwh while the
    # stack runs: litres the tank lost over the energy metered to EVs
    # plus what the battery gained (through the charger, as it will be
    # delivered)
    if not run:
        e[_W_ON] = 0
    elif soc != UNKNOWN and tank != UNKNOWN and wh != UNKNOWN:
        w_tank = int(e[_W_TANK])
        if w_tank >= sign:
            w_tank -= wrap
        w_wh = int(e[_W_WH])
        if w_wh >= sign:
            w_wh -= wrap
        if not e[_W_ON] or tank > w_tank or wh < w_wh:
            # a window opens (or again after a refill or a meter reset)
            e[_W_ON] = 1
            e[_W_TANK] = tank
            e[_W_WH] = wh
            e[_W_SOC] = soc
        else:
            w_soc = int(e[_W_SOC])
            if w_soc >= sign:
                w_soc -= wrap
            got = (wh - w_wh) // 10 + (soc - w_soc) * (int(e[_BAT_WH]) // 100) // 10 * int(e[_EFF]) // 1000
            if got >= int(e[_WIN_WH]):
                lpk = (w_tank - tank) * 100000 // got
                if 500 <= lpk and lpk <= 3000:
                    e[_LPK] = (3 * int(e[_LPK]) + lpk + 2) // 4
                    e[_SAVES] = int(e[_SAVES]) + 1
                e[_W_ON] = 0
    # -- the dispatch estimate: premix above the reserve (less a
    # warm-up unless the stack runs) at the measured figure, plus the
    # battery above its floor through the charger
    if soc == UNKNOWN or tank == UNKNOWN:
        e[_DELIVER] = -1
        return
    litres = tank - int(e[_RESERVE_L])  # 0.1 L
    if not run:
        litres -= int(e[_WARM_L])
    out = litres * 100000 // int(e[_LPK]) if litres > 0 else 0
    soc_min = int(e[_SOC_MIN])
    if soc > soc_min:
        out += (soc - soc_min) * (int(e[_BAT_WH]) // 100) // 10 * int(e[_EFF]) // 1000
    e[_DELIVER] = out
