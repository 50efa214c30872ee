# Power arbitration: one arbiter decides a current from prioritised claims
# (safety > fuel/power > operator > session), as OpenEVSE does, and anyone
# can ask it which claim is in charge. The smallest claim wins; on a tie the
# higher-priority claim is named. Currents are integers in 0.1 A.
from array import array

from h2p.compat import const

# The claims, by index, and their names are the user's (the supervisor's
# EV_CLAIMS and STACK_CLAIMS): index 0 is the highest priority.

# A claim that does not limit (an interlock with nothing in force, a
# verified contactor): larger than any real current, so it never wins.
NONE = const(0x3FFFFFFF)


class Arbiter:
    def __init__(self, names):
        self.names = names
        # An int array, not a list: decide() walks it as machine code.
        self.claims = array("i", bytes(4 * len(names)))
        self.limit = 0
        self.owner = 0

    def claim(self, who, deci_amps):
        self.claims[who] = deci_amps if deci_amps > 0 else 0

    # Viper on a board with a native emitter (host_tools.build; see
    # h2p.interlocks._judge): twice a step, ~70 us each in Python on an
    # RP2040 (issue 16). A claim may also be stored straight into `claims`
    # (the supervisor's step does: a call to claim() cost ~50 us); a negative
    # one counts, and is kept, as 0, as claim() does. Viper's pointers load
    # unsigned words: the sign is restored first (a no-op on 32-bit words).
    # @micropython.viper
    def decide(self) -> int:
        c = self.claims  # ptr32
        n = int(len(self.claims))
        one = 1
        sign = one << 31  # (not folded: 2**31 is no small int on a 32-bit board)
        wrap = sign << 1  # 2**32 on 64-bit words, 0 on 32-bit ones
        lim = int(c[0])
        if lim >= sign:
            lim -= wrap
        if lim < 0:
            lim = 0
            c[0] = 0
        owner = 0
        k = 1
        while k < n:
            x = int(c[k])
            if x >= sign:
                x -= wrap
            if x < 0:
                x = 0
                c[k] = 0
            if x < lim:
                lim = x
                owner = k
            k += 1
        self.limit = lim
        self.owner = owner
        return lim

    def in_charge(self):
        return self.names[self.owner]
