# Contactor supervision: the aux contact must follow every command. Commanded
# open but reading closed is a weld: it latches a fault and the pile never
# closes again until a technician resets it. Commanded closed but reading open
# is stuck open: a stop. Either is declared only on evidence: the aux contact
# disagreeing with a command the charger has received, on consecutive fresh
# readings (each one newer than the last, all taken after the command) for
# `confirm_ms` (limits.aux_confirm_ms). One reading is not enough: a reading
# that predates the command's delivery (a write lost to a timeout on a busy
# bus, retried), or one old reading judged again and again, is no weld. An
# agreeing or unknown reading starts the count again. Operations are counted;
# the shell persists the count with rate-limited writes.
from h2p.compat import ticks_diff
from h2p.codes import CHG_AUX_CLOSED
from h2p.readings import UNKNOWN
from h2p.interlocks import NAMES as _IL_NAMES

_WELDED = _IL_NAMES.index("contactor_welded")  # interlock rows, found once
_STUCK = _IL_NAMES.index("contactor_stuck")


class Contactor:
    def __init__(self, interlocks, confirm_ms=1000):
        self.il = interlocks
        self.confirm_ms = confirm_ms
        self.closed_cmd = 0
        self.aux = 0
        self.changed_ms = None  # set at the first reading: no judgement before it
        self.sent = -1  # the contactor word the charger acknowledged last; -1: not tracked
        self.dis_ms = -1  # read time of the first reading of the running disagreement; -1: none
        self.last_ms = 0  # read time of the last reading judged
        self.cycles = 0  # close operations since boot
        self.cycles_base = 0  # the stored count from earlier boots (journal meta)
        self.welded = False
        self.adopted = False  # found closed at boot (a reset mid-charge)

    def adopt(self):
        # After a reset mid-charge the contactor may still be closed under
        # load: take it as commanded closed so it is ramped down, not
        # dropped open at full current.
        self.closed_cmd = 1
        self.adopted = True

    def command(self, close):
        close = 1 if close else 0
        # Closing needs the interlocks' consent. Staying closed while the
        # current ramps down does not: opening under load is for emergencies
        # only, and the supervisor's guard decides those.
        if close and not self.closed_cmd and not self.il.contactor_allowed():
            close = 0
        if close != self.closed_cmd:
            self.closed_cmd = close
            self.changed_ms = self._now
            self.dis_ms = -1
            if close:
                self.adopted = False
            if close:
                self.cycles += 1

    _now = 0

    def delivered(self, word, now):
        # The shell: the charger acknowledged a write carrying contactor word
        # `word` at `now`. The contact can follow a command only once it has
        # it: a changed word starts the agreement window again.
        if word != self.sent:
            self.sent = word
            self.changed_ms = now
            self.dis_ms = -1

    def verified_closed(self):
        return self.closed_cmd == 1 and self.aux == 1

    def supervise(self, now, status, status_ms):
        # status_ms: when the aux contact was read. Only readings taken after
        # the command (its delivery, when the shell reports it) count.
        self._now = now
        if self.changed_ms is None:
            self.changed_ms = now
        if status == UNKNOWN:
            self.dis_ms = -1  # unknown is no evidence either way
            return
        self.aux = 1 if status & CHG_AUX_CLOSED else 0
        if ticks_diff(status_ms, self.last_ms) <= 0 and self.dis_ms >= 0:
            return  # the same reading again: the count does not advance
        self.last_ms = status_ms
        judged = ticks_diff(status_ms, self.changed_ms) > 0 and (self.sent < 0 or self.sent == self.closed_cmd)
        if judged and self.aux != self.closed_cmd:
            if self.dis_ms < 0:  # read times are ticks: never negative
                self.dis_ms = status_ms
            confirmed = ticks_diff(status_ms, self.dis_ms) >= self.confirm_ms
        else:
            self.dis_ms = -1
            confirmed = False
        welded = confirmed and self.closed_cmd == 0
        stuck = confirmed and self.closed_cmd == 1
        if welded and not self.welded:
            self.welded = True
        elif not welded and self.closed_cmd == 0 and self.aux == 0:
            self.welded = False
        # (a call only on a change: twice a step, ~40 us a call on an RP2040)
        il = self.il
        if il.ext[_WELDED] != (1 if welded else 0):
            il.set_ext(_WELDED, welded)
        if il.ext[_STUCK] != (1 if stuck else 0):
            il.set_ext(_STUCK, stuck)
