# The energy manager (issue 17): what the stack is for, and how much the
# pile can still deliver. A plain object stepped with (now, readings) like
# the rest of the core; the supervisor asks it for the stack current it
# wants (its claim "energy" on the stack arbiter) and whether an idle pile
# may cool down. No I/O: the shell stores the measured figures (journal
# meta "energy") and hands them back at boot (restore()).
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
from array import array

from h2p.compat import const, ticks_diff
from h2p.readings import UNKNOWN


def _indices(*names):
    from h2p.readings import INDEX

    return bytes([INDEX[n] for n in names])


_RD = _indices("bat_soc", "ref_tank_l", "met_wh")
del _indices
_SOC = const(0)
_TANK = const(1)
_WH = const(2)

# What the manager is doing, for `state` (energy) and the docs.
MODES = ("off", "warm_up", "charge", "boost", "hold", "full", "low")
_OFF = const(0)
_WARM_UP = const(1)
_CHARGE = const(2)
_BOOST = const(3)
_HOLD = const(4)
_FULL = const(5)
_LOW = const(6)

# Phases the supervisor passes in.
COLD = const(0)  # off, self-test, cooldown, fault: the stack does not run
WARMING = const(1)  # preheat, reforming: premix spent before any energy
RUNNING = const(2)  # stack_start .. stopping

# Slots of self.a: settings, then state.
_BAND_LO = const(0)  # 0.1 A
_BAND_HI = const(1)
_RATED = const(2)
_MIN_LOAD = const(3)
_BOOST_SOC = const(4)  # 0.1 %
_SOC_MIN = const(5)
_SOC_TARGET = const(6)
_SOC_MAX = const(7)
_HOLD_MS = const(8)
_LOW_L = const(9)  # 0.1 L
_RESERVE_L = const(10)
_WIN_WH = const(11)  # Wh
_BAT_WH = const(12)  # Wh
_EFF = const(13)  # charger efficiency, per mille
_WANT = const(14)  # the claim, 0.1 A
_MODE = const(15)
_AT_TARGET = const(16)  # 1 while at target without an EV since _TARGET_MS
_TARGET_MS = const(17)
_W_ON = const(18)  # a measuring window is open
_W_TANK = const(19)
_W_WH = const(20)
_W_SOC = const(21)
_LPK = const(22)  # premix per kWh delivered, mL/kWh (measured, rolling)
_WARM_L = const(23)  # premix a warm-up from cold took, 0.1 L
_WARM_TANK = const(24)  # tank when the warm-up began, -1: none measured
_SAVES = const(25)  # counts figures the shell should store
_DELIVER = const(26)  # Wh the pile can still deliver, -1: unknown
_N = const(27)


class Energy:
    def __init__(self, energy, limits):
        # energy: config "energy"; limits: config "limits".
        a = self.a = array("i", bytes(4 * _N))
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

    # ---- the figures kept across reboots (journal meta, by the shell) ------
    def figures(self):
        # [mL of premix per kWh delivered, 0.1 L per warm-up]
        return [self.a[_LPK], self.a[_WARM_L]]

    def restore(self, v):
        # Figures a past boot stored; anything implausible is ignored.
        try:
            lpk, warm = int(v[0]), int(v[1])
        except (TypeError, ValueError, IndexError):
            return False
        if not (500 <= lpk <= 3000 and 0 <= warm <= 500):
            return False
        self.a[_LPK] = lpk
        self.a[_WARM_L] = warm
        return True

    # ---- questions -----------------------------------------------------------
    def want(self):
        return self.a[_WANT]

    def mode(self):
        return MODES[self.a[_MODE]]

    def saves(self):
        return self.a[_SAVES]

    def deliver_wh(self):
        return self.a[_DELIVER]

    def may_cool(self, now):
        # May an idle pile cool down now? Not before the battery has been
        # back at target for hold_s (unless the premix is low or the
        # battery full): the next car finds it full and the stack warm.
        m = self.a[_MODE]
        if m == _LOW or m == _FULL:
            return True
        return m == _HOLD and ticks_diff(now, self.a[_TARGET_MS]) >= self.a[_HOLD_MS]

    # ---- the step --------------------------------------------------------------
    def step(self, now, rd, phase, ev):
        # phase: COLD, WARMING or RUNNING; ev: an EV session is on.
        a = self.a
        soc = rd.get(_RD[_SOC], now)
        tank = rd.get(_RD[_TANK], now)
        wh = rd.get(_RD[_WH], now)
        self._measure(now, phase, soc, tank, wh)
        # What the stack should do.
        if soc == UNKNOWN:
            want, m = a[_MIN_LOAD], _HOLD  # no battery figures: no energy pushed into it
        elif tank != UNKNOWN and tank <= a[_LOW_L] and not ev:
            want, m = a[_MIN_LOAD], _LOW
        elif soc >= a[_SOC_MAX] and not ev:
            want, m = a[_MIN_LOAD], _FULL
        elif soc >= a[_SOC_TARGET] and not ev:
            # held warm in its band: what goes into the battery above
            # target is delivered later, at the best point
            want, m = a[_BAND_LO], _HOLD
        elif ev and soc < a[_BOOST_SOC]:
            want, m = a[_RATED], _BOOST
        else:
            want, m = a[_BAND_HI] if ev else a[_BAND_LO], _CHARGE
        if m == _HOLD and phase == RUNNING:  # held warm: counted while the stack runs
            if not a[_AT_TARGET]:
                a[_AT_TARGET] = 1
                a[_TARGET_MS] = now
        else:
            a[_AT_TARGET] = 0
        if phase != RUNNING:
            m = _WARM_UP if phase == WARMING else _OFF
        a[_WANT] = want
        a[_MODE] = m
        self._estimate(phase, soc, tank)

    def _measure(self, now, phase, soc, tank, wh):
        # Premix per kWh delivered, in windows of window_kwh while the stack
        # runs: litres the tank lost over the energy metered to EVs plus what
        # the battery gained (through the charger, as it will be delivered).
        a = self.a
        if phase == WARMING:
            if a[_WARM_TANK] < 0 and tank != UNKNOWN:
                a[_WARM_TANK] = tank
        elif phase == RUNNING and a[_WARM_TANK] >= 0 and tank != UNKNOWN:
            used = a[_WARM_TANK] - tank  # a warm-up from cold: what it cost
            if 0 <= used <= 500:
                a[_WARM_L] = used
                a[_SAVES] += 1
            a[_WARM_TANK] = -1
        elif phase == COLD:
            a[_WARM_TANK] = -1
        if phase != RUNNING or soc == UNKNOWN or tank == UNKNOWN or wh == UNKNOWN:
            if phase != RUNNING:
                a[_W_ON] = 0
            return
        if not a[_W_ON] or tank > a[_W_TANK] or wh < a[_W_WH]:
            # a window opens (or restarts after a refill or a meter reset)
            a[_W_ON] = 1
            a[_W_TANK] = tank
            a[_W_WH] = wh
            a[_W_SOC] = soc
            return
        e = (wh - a[_W_WH]) // 10 + (soc - a[_W_SOC]) * (a[_BAT_WH] // 100) // 10 * a[_EFF] // 1000
        if e < a[_WIN_WH]:
            return
        lpk = (a[_W_TANK] - tank) * 100000 // e
        if 500 <= lpk <= 3000:
            a[_LPK] = (3 * a[_LPK] + lpk + 2) // 4
            a[_SAVES] += 1
        a[_W_ON] = 0

    def _estimate(self, phase, soc, tank):
        a = self.a
        if soc == UNKNOWN or tank == UNKNOWN:
            a[_DELIVER] = -1
            return
        litres = tank - a[_RESERVE_L]  # 0.1 L
        if phase != RUNNING:
            litres -= a[_WARM_L]
        wh = litres * 100000 // a[_LPK] if litres > 0 else 0
        if soc > a[_SOC_MIN]:
            wh += (soc - a[_SOC_MIN]) * (a[_BAT_WH] // 100) // 10 * a[_EFF] // 1000
        a[_DELIVER] = wh
