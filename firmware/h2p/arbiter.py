# Power arbitration: one arbiter decides a current from prioritised claims
# (safety > fuel/power > operator > session), as OpenEVSE does, and anyone
# can ask it which claim is in charge. The smallest claim wins; on a tie the
# higher-priority claim is named. Currents are integers in 0.1 A.
from h2p.compat import const

# The claims, by index, and their names are the user's (the supervisor's
# EV_CLAIMS and STACK_CLAIMS): index 0 is the highest priority.

# A claim that does not limit (an interlock with nothing in force, a
# verified contactor): larger than any real current, so it never wins.
NONE = const(0x3FFFFFFF)


class Arbiter:
    def __init__(self, names):
        self.names = names
        self.claims = [0] * len(names)
        self.limit = 0
        self.owner = 0

    def claim(self, who, deci_amps):
        self.claims[who] = deci_amps if deci_amps > 0 else 0

    def decide(self):
        # A claim may also be stored straight into `claims` (the
        # supervisor's step does: on an RP2040 a call to claim() cost
        # ~50 us); a negative one counts, and is kept, as 0, as claim() does.
        c = self.claims
        lim = c[0]
        if lim < 0:
            lim = c[0] = 0
        owner = 0
        for k in range(1, len(c)):
            x = c[k]
            if x < 0:
                x = c[k] = 0
            if x < lim:
                lim = x
                owner = k
        self.limit = lim
        self.owner = owner
        return lim

    def in_charge(self):
        return self.names[self.owner]
