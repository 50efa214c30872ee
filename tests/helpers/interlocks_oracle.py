"""The interlock rows judged in plain Python, the whole table every step: the
oracle the property test (tests/core/test_interlocks_incremental.py) holds
the firmware's engine to. The engine judges in viper (machine code) and only
the rows a new reading can change; this judges every row as the table
reads, with rd.get and ticks_diff, the way the engine did before issue 16.
Same flags, debounce clocks, severity, first row and derating after every
step, or the property test fails. CPython only."""

from __future__ import annotations

from h2p import interlocks as IL
from h2p import states as S
from h2p.compat import ticks_diff
from h2p.readings import INDEX, UNKNOWN, Readings

_NC = 8  # the compiled rule's fields, in this order:
_READING, _OP, _THRESHOLD, _DEBOUNCE, _SEVERITY, _CLEAR, _WHEN, _DERATE = range(_NC)
_UNKNOWN = 2  # true because the data is unknown: blocks, never latches
_OUT_V = INDEX["chg_out_v"]
_REQ_V = INDEX["chg_ev_req_v"]
_METER = IL.NAMES.index("comm_meter")


class OracleInterlocks(IL.Interlocks):
    """An Interlocks whose step judges every row in Python (its other
    methods, reset and the sum of severities, are the engine's)."""

    def _cond(self, k: int, b: int, rd: Readings, now: int) -> bool | int:
        rules = IL._RULES
        i, op, t = rules[b + _READING], rules[b + _OP], rules[b + _THRESHOLD]
        if op == IL.EXT:
            if i >= 0:
                return rd.get(i, now) == UNKNOWN
            return self.ext[k] == 1
        v = rd.get(i, now)
        if v == UNKNOWN:
            return _UNKNOWN
        if rules[b + _WHEN] == IL.STACK and ticks_diff(rd.ts[i], self.stack_ms) <= 0:
            return False
        if op == IL.GE:
            return v >= t
        if op == IL.LE:
            return v <= t
        if op == IL.BIT:
            return (v & t) != 0
        if op == IL.EQ:
            return v == t
        dv, rv = rd.get(_OUT_V, now), rd.get(_REQ_V, now)
        if dv == UNKNOWN or rv == UNKNOWN:
            return _UNKNOWN
        dv = max(dv, rv, 500)
        return v * 10000 < t * dv

    def step(self, now: int, rd: Readings, state: int, ev_connected: bool) -> None:
        rules = IL._RULES
        self.changed = False
        fuel = S.PREHEAT <= state <= S.COOLDOWN
        stack = S.STACK_START <= state <= S.STOPPING
        if not stack:
            self.stack_ms = -1
        elif self.stack_ms < 0:
            self.stack_ms = self.last_ms
        self.last_ms = now
        flips = False
        for k in range(IL.N):
            b = k * _NC
            when = rules[b + _WHEN]
            live = (when == IL.ALWAYS or (when == IL.FUEL and fuel) or (when == IL.STACK and stack)
                    or (when == IL.EV and ev_connected))
            on = live and self._cond(k, b, rd, now)
            if on:
                if not self.active[k]:
                    if not self.pending[k]:
                        self.pending[k] = 1
                        self.since[k] = now
                    deb = rules[b + _DEBOUNCE]
                    if k == _METER:
                        deb = self.meter_gap_ms - rd.max_age_ms
                    if ticks_diff(now, self.since[k]) >= deb:
                        self.active[k] = 1
                        flips = True
                if self.active[k] and on is True and rules[b + _CLEAR] == IL.RESET and not self.latched[k]:
                    self.latched[k] = 1
                    flips = True
            else:
                self.pending[k] = 0
                if self.active[k]:
                    self.active[k] = 0
                    flips = True
        rd.nd = 0
        self.changed = flips
        self._sum()
