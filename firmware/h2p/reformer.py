# Reformer control (issue 17): the pile holds the bed temperature itself.
# The reformer controller runs its own warm-up (preheat); once premix is
# fed (run mode) its burner fires what the pile commands (ref_burner_sp):
# - feed-forward: a base that covers the insulation's loss, a share per
#   ampere of the stack current being fed, and, while the feed leads the
#   hydrogen (the 30-60 s the premix takes through evaporator and bed), the
#   heat the new premix takes to evaporate before its anode off-gas comes
#   back to the burner;
# - feedback: proportional + integral on the bed temperature (the
#   integral only moves while the burner is not pinned at 0 or 100 %);
# - the feed gate: a bed below bed_feed_min_c is not fed (its premix would
#   leave unconverted and poison the stack); the supervisor stops the pump
#   and ramps the stack down on the hydrogen already on its way (claim
#   "reformer"). Fed again once the bed is feed_resume_k above the minimum.
# A plain array stepped with (now, readings) like h2p.energy: no class, no
# allocation, every figure an int below 2**30. Tuning: docs/energy.md.
from array import array

from h2p.compat import const, ticks_diff
from h2p.readings import UNKNOWN

# Slots others read (the supervisor keeps copies: _RF_*).
_BURNER = const(0)  # the burner command, 0.1 % of full fire
_FEED_OK = const(1)  # 1: the bed may be fed
# ... then the settings and the loop's own state.
_SP = const(2)  # bed setpoint, 0.1 degC
_FEED_MIN = const(3)  # 0.1 degC
_RESUME = const(4)  # 0.1 K above _FEED_MIN before the feed starts again
_BASE = const(5)  # 0.1 %
_PER_A = const(6)  # 0.001 % per A (= 0.1 % per 0.1 A, times 1000)
_LEAD = const(7)  # the same units, per ampere of feed not yet arrived
_KP = const(8)  # 0.001 % per K
_KI = const(9)  # 0.001 % per K per minute
_ACC = const(10)  # the integral, 1e-6 % (fine enough for 5 ms steps)
_LAST = const(11)  # ms of the last step
_ON = const(12)  # the loop ran in the last step
_I_BED = const(13)  # reading index of ref_bed_c
_TS = const(14)  # the timestamp of the bed reading last judged
_N = const(15)

_FULL = const(1000)  # 100 %, in 0.1 %
_STEP = const(5)  # 0.5 %: the smallest change of the command
_E_MAX = const(500)  # the integral sees at most 50 K of error (no wind-up from a cold bed)


def new(reformer, limits):
    # reformer: config "reformer"; limits: config "limits" (bed setpoint
    # and feed minimum, which the warm-up uses too).
    from h2p.readings import INDEX

    a = array("i", bytes(4 * _N))
    a[_I_BED] = INDEX["ref_bed_c"]
    a[_SP] = int(limits["bed_setpoint_c"] * 10)
    a[_FEED_MIN] = int(limits["bed_feed_min_c"] * 10)
    a[_RESUME] = int(reformer["feed_resume_k"] * 10)
    a[_BASE] = int(reformer["burner_base_pct"] * 10 + 0.5)
    a[_PER_A] = int(reformer["burner_pct_per_a"] * 1000 + 0.5)
    a[_LEAD] = int(reformer["burner_lead_pct_per_a"] * 1000 + 0.5)
    a[_KP] = int(reformer["bed_kp_pct_per_k"] * 1000 + 0.5)
    a[_KI] = int(reformer["bed_ki_pct_per_k_min"] * 1000 + 0.5)
    a[_FEED_OK] = 1
    return a


def step(a, now, rd, run, feed_da, lag_da):
    # run: premix is being fed (run mode); feed_da: the stack current the
    # pump is feeding for now, lag_da: the current the hydrogen reaching
    # the stack now carries (both 0.1 A).
    if not run:
        a[_BURNER] = 0
        a[_ON] = 0
        a[_FEED_OK] = 1
        a[_LAST] = now
        return
    i = a[_I_BED]
    bed = rd.get(i, now)
    # Judged once per new bed reading (the bed's time constant is minutes;
    # the step runs every few ms): nothing to do until the reformer is read
    # again, unless its reading has gone stale. (The supervisor skips the
    # call itself in that case: slots _ON and _TS.)
    if a[_ON] and rd.ts[i] == a[_TS] and bed != UNKNOWN:
        return
    a[_TS] = rd.ts[i]
    dt = ticks_diff(now, a[_LAST])
    a[_LAST] = now
    if not a[_ON]:
        a[_ON] = 1
        a[_ACC] = 0
        dt = 0
    elif dt < 0:
        dt = 0
    elif dt > 10000:
        dt = 10000  # a stalled loop integrates at most 10 s at once
    if bed == UNKNOWN:
        # Blind: not fed (the comm_reformer interlock stops the fuel); the
        # burner keeps its last command.
        a[_FEED_OK] = 0
        return
    if bed < a[_FEED_MIN]:
        a[_FEED_OK] = 0
    elif bed >= a[_FEED_MIN] + a[_RESUME]:
        a[_FEED_OK] = 1
    e = a[_SP] - bed  # 0.1 K
    lead = feed_da - lag_da
    if lead < 0:
        lead = 0
    # 0.001 % per A times 0.1 A = 0.1 % / 1000; the same for K and 0.1 K.
    out = a[_BASE] + (a[_PER_A] * feed_da + a[_LEAD] * lead + a[_KP] * e) // 1000 + a[_ACC] // 100000
    if out > _FULL:
        out = _FULL
    elif out < 0:
        out = 0
    # Conditional integration: not further into a pinned output.
    if (out < _FULL or e < 0) and (out > 0 or e > 0):
        if e > _E_MAX:
            e = _E_MAX
        elif e < -_E_MAX:
            e = -_E_MAX
        # 0.001 %/K/min * 0.1 K * ms / 60000 (min) / 10 (K) * 1000 (1e-6 %):
        # / 600, each product below 2**30 (ki <= 10, |e| <= 50 K): whole
        # seconds and the rest of dt apart.
        r = a[_KI] * e // 6
        acc = a[_ACC] + r * (dt % 1000) // 100 + r * 10 * (dt // 1000)
        if acc > 100000 * _FULL:
            acc = 100000 * _FULL
        elif acc < -100000 * _FULL:
            acc = -100000 * _FULL
        a[_ACC] = acc
    # The command moves in steps of 0.5 % at least (19 W of a 4.5 kW
    # burner; the bed's time constant is minutes): a new value every step
    # would be a write on the bus every poll cycle.
    d = out - a[_BURNER]
    if d >= _STEP or d <= -_STEP or (out != a[_BURNER] and (out == 0 or out == _FULL)):
        a[_BURNER] = out
