from h2p.arbiter import NONE, Arbiter
from h2p.supervisor import EV_CLAIMS


def _arb(**claims):
    a = Arbiter(EV_CLAIMS)
    for k in range(len(EV_CLAIMS)):
        a.claim(k, NONE)
    for name, v in claims.items():
        a.claim(EV_CLAIMS.index(name), v)
    return a


def test_smallest_claim_wins_and_is_named():
    a = _arb(battery=800, charger=1250, operator=600, session=900)
    assert a.decide() == 600 and a.in_charge() == "operator"


def test_tie_goes_to_higher_priority():
    a = _arb(battery=600, operator=600)
    assert a.decide() == 600 and a.in_charge() == "battery"


def test_safety_zero_beats_everything():
    a = _arb(interlock=0, battery=800, session=100)
    assert a.decide() == 0 and a.in_charge() == "interlock"


def test_negative_claim_counts_as_zero():
    a = _arb(session=-50)
    assert a.decide() == 0 and a.in_charge() == "session"


def test_a_claim_stored_straight_counts_as_claim_would():
    # The supervisor stores claims into `claims` without claim() (a call
    # per claim was its step's cost on an RP2040): decide() treats a
    # negative one as 0, and keeps it so, as claim() would have.
    a = Arbiter(("safety", "battery", "session"))
    a.claims[0] = NONE
    a.claims[1] = -50
    a.claims[2] = 160
    assert a.decide() == 0 and a.in_charge() == "battery"
    assert a.claims[1] == 0
    a.claims[1] = 200
    assert a.decide() == 160 and a.in_charge() == "session"
    a.claims[0] = -1  # the first claim too
    assert a.decide() == 0 and a.in_charge() == "safety" and a.claims[0] == 0
