# Contactor supervision: the aux contact must follow every command within
# ~1 s. Commanded open but reading closed is a weld: it latches a fault and
# the pile never closes again until a technician resets it. Commanded closed
# but reading open is stuck open: a stop. Operations are counted; the shell
# persists the count with rate-limited writes.
from h2p.compat import const, ticks_diff
from h2p.codes import CHG_AUX_CLOSED
from h2p.readings import UNKNOWN

_AGREE_MS = const(1000)


class Contactor:
    def __init__(self, interlocks):
        self.il = interlocks
        self.closed_cmd = 0
        self.aux = 0
        self.changed_ms = None  # set at the first reading: no judgement before it
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
            if close:
                self.adopted = False
            if close:
                self.cycles += 1

    _now = 0

    def verified_closed(self):
        return self.closed_cmd == 1 and self.aux == 1

    def supervise(self, now, status, status_ms):
        # status_ms: when the aux contact was read. Only a reading taken a
        # full agreement window after the command can prove a disagreement;
        # on a slow bus the last reading may predate the command.
        self._now = now
        if self.changed_ms is None:
            self.changed_ms = now
        if status == UNKNOWN:
            return
        self.aux = 1 if status & CHG_AUX_CLOSED else 0
        late = ticks_diff(status_ms, self.changed_ms) > _AGREE_MS
        welded = self.closed_cmd == 0 and self.aux == 1 and late
        stuck = self.closed_cmd == 1 and self.aux == 0 and late
        if welded and not self.welded:
            self.welded = True
        elif not welded and self.closed_cmd == 0:
            self.welded = False
        self.il.raise_ext("contactor_welded", welded)
        self.il.raise_ext("contactor_stuck", stuck)
