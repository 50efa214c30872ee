"""The interlock engine judges only what a new reading can change (issue 16),
in viper; this property test holds it equal to judging the whole table every
step, and both equal to the rows judged in plain Python
(tests/helpers/interlocks_oracle.py, the engine as it was before viper).

Two engines get the same inputs: readings read again or not (values around
each row's threshold, some implausible-looking, some never read), time steps
from 0 to 1.5 s (so readings grow stale and debounces run out between
steps), every state (so rows go live and dead), an EV on the cable or not,
the external flags (E-stop, weld, stuck, task crash) and resets. One steps
incrementally (`step`), the other whole (`step_full`); after every step their
flags, debounce clocks, severity, first row, derating and `changed` agree.
CPython only (hypothesis); runs in tests/core like the safety property test.
"""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2p import interlocks as IL
from h2p import states as S
from h2p.readings import INDEX, UNKNOWN, Readings
from tests.helpers.interlocks_oracle import OracleInterlocks

EXAMPLES = int(os.environ.get("H2P_PROP_EXAMPLES", "300"))

# every reading a row reads, and the two the insulation rows divide by
_READ = sorted({r[1] for r in IL.TABLE if r[1]} | {"chg_out_v", "chg_ev_req_v"})
_EXT = [r[0] for r in IL.TABLE if r[2] == IL.EXT and r[1] is None]


def _near(name):
    # raw values around the thresholds of the rows that read `name`
    rows = [r for r in IL.TABLE if r[1] == name]
    out = [0, 1, 5000]
    for r in rows:
        t = r[3]
        if r[2] in (IL.GE, IL.LE):
            from h2p.readings import SCALES

            t = int(round(t / SCALES[INDEX[name]]))
        t = int(t)
        out += [t - 1, t, t + 1]
    # (UNKNOWN: a value the decoder found implausible is put as unknown)
    return st.sampled_from(out + [UNKNOWN]) | st.integers(-100, 6000)


_put = st.sampled_from(_READ).flatmap(lambda n: st.tuples(st.just(n), _near(n)))
# time steps that land on a debounce's end, or just before or after it
_DEBOUNCES = sorted({d + e for d in {r[4] for r in IL.TABLE} | {1000, 2000} for e in (-1, 0, 1) if d + e >= 0})
_step = st.tuples(
    st.lists(_put, max_size=3),  # readings read again this step
    st.sampled_from(_DEBOUNCES) | st.integers(0, 1500),  # ms since the last
    st.integers(-12, len(S.NAMES) - 1),  # the new state; negative (mostly): the same
    st.integers(0, 7),  # 0: the EV's cable changes
    st.lists(st.tuples(st.sampled_from(_EXT), st.booleans()), max_size=2),
    st.integers(0, 9),  # 0: a reset command this step
)


def _same(a, b, n):
    for k in ("active", "latched", "pending", "ext"):
        assert bytes(getattr(a, k)) == bytes(getattr(b, k)), (n, k, getattr(a, k), getattr(b, k))
    for k in range(IL.N):
        if a.pending[k] and not a.active[k]:
            assert a.since[k] == b.since[k], (n, IL.NAMES[k])
    assert (a.severity, a.first, a.derate_pct, a.changed) == (b.severity, b.first, b.derate_pct, b.changed), n


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=60), st.integers(0, 2000))
def test_incremental_evaluation_always_equals_the_whole_table(steps, t0):
    inc, full = IL.Interlocks(meter_gap_ms=3000), IL.Interlocks(meter_gap_ms=3000)
    ref = OracleInterlocks(meter_gap_ms=3000)
    rd = Readings(1000)
    now = t0
    state, ev = S.OFF, False
    for n, (puts, dt, new_state, plug, exts, reset) in enumerate(steps):
        now += dt
        if new_state >= 0:
            state = new_state
        if plug == 0:
            ev = not ev
        for name, raw in puts:
            rd.put(INDEX[name], raw, now)
        for name, on in exts:
            inc.raise_ext(name, on)
            full.raise_ext(name, on)
            ref.raise_ext(name, on)
        if reset == 0:
            assert inc.reset() == full.reset() == ref.reset(), n
        nd = rd.nd
        inc.step(now, rd, state, ev)
        rd.nd = nd  # each engine sees the same readings put since the last step
        full.step_full(now, rd, state, ev)
        ref.step(now, rd, state, ev)
        _same(inc, full, n)
        _same(inc, ref, n)
