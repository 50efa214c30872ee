# The contactor supervision (h2p.contactor): a weld (or a stuck-open
# contactor) is declared only when the aux contact disagrees with a command
# the charger has, on consecutive fresh readings for limits.aux_confirm_ms.
from h2p import codes as K
from h2p import interlocks as IL
from h2p.contactor import Contactor
from h2p.readings import UNKNOWN

CLOSED = K.CHG_AUX_CLOSED
OPEN = 0


def _opened_at(t, confirm_ms=1000):
    # A contactor that was closed (aux agreeing) and is commanded open at t.
    il = IL.Interlocks()
    c = Contactor(il, confirm_ms)
    c.supervise(0, OPEN, 0)
    c.command(1)
    c.supervise(100, CLOSED, 100)
    c._now = t
    c.command(0)
    return il, c


def _welded(il):
    return il.ext[IL.ROW["contactor_welded"]] == 1


def test_weld_needs_consecutive_fresh_disagreeing_readings_for_the_configured_ms():
    il, c = _opened_at(1000)
    # Aux reads closed 100 ms after the open command, fresh every 200 ms.
    for ts in range(1100, 2100, 200):
        c.supervise(ts + 5, CLOSED, ts)
        assert not _welded(il), ts
    # More than 1 s after the command, but only 950 ms of disagreeing
    # readings: one late reading is no weld (the old rule declared it here).
    c.supervise(2055, CLOSED, 2050)
    assert not _welded(il) and not c.welded
    c.supervise(2105, CLOSED, 2100)  # 1000 ms of disagreeing readings
    assert _welded(il) and c.welded


def test_an_agreeing_reading_starts_the_weld_count_again():
    il, c = _opened_at(1000)
    for ts in range(1100, 2000, 100):
        c.supervise(ts, CLOSED, ts)
    c.supervise(2000, OPEN, 2000)  # the contact did open: it bounced
    for ts in range(2100, 3100, 100):
        c.supervise(ts, CLOSED, ts)
        assert not _welded(il), ts
    c.supervise(3100, CLOSED, 3100)
    assert _welded(il)


def test_the_configured_time_is_used():
    il, c = _opened_at(1000, confirm_ms=3000)
    for ts in range(1100, 4100, 100):
        c.supervise(ts, CLOSED, ts)
        assert not _welded(il), ts
    c.supervise(4100, CLOSED, 4100)
    assert _welded(il)


def test_a_stale_aux_reading_does_not_declare_a_weld():
    il, c = _opened_at(1000)
    # One reading, taken 1.5 s after the open command, says closed; then the
    # charger's status is not read again (the same reading, judged at every
    # step until it is too old and reads unknown).
    for now in range(2500, 3500, 20):
        c.supervise(now, CLOSED, 2500)
        assert not _welded(il), now
    c.supervise(3600, UNKNOWN, 2500)  # too old: unknown
    assert not _welded(il)
    # Fresh readings again: the count starts from the first of them.
    c.supervise(3700, CLOSED, 3700)
    c.supervise(4600, CLOSED, 4600)
    assert not _welded(il)
    c.supervise(4700, CLOSED, 4700)
    assert _welded(il)


def test_an_unknown_reading_between_disagreeing_ones_restarts_the_count():
    il, c = _opened_at(1000)
    c.supervise(1100, CLOSED, 1100)
    c.supervise(1800, UNKNOWN, 1100)
    c.supervise(2200, CLOSED, 2200)
    c.supervise(3150, CLOSED, 3150)
    assert not _welded(il)
    c.supervise(3200, CLOSED, 3200)
    assert _welded(il)


def test_no_weld_before_the_open_command_reached_the_charger():
    # The shell reports every write the charger acknowledged: an open
    # command lost to timeouts on a busy bus is retried, and the contact
    # cannot follow a command it does not have.
    il = IL.Interlocks()
    c = Contactor(il, 1000)
    c.supervise(0, OPEN, 0)
    c.command(1)
    c.delivered(1, 20)
    c.supervise(100, CLOSED, 100)
    c._now = 1000
    c.command(0)  # decided at 1000 ...
    for ts in range(1100, 4000, 100):
        c.supervise(ts, CLOSED, ts)
        assert not _welded(il), ts
    c.delivered(0, 4000)  # ... delivered at 4000
    for ts in range(4050, 5050, 100):
        c.supervise(ts, CLOSED, ts)
        assert not _welded(il), ts
    c.supervise(5100, CLOSED, 5100)
    assert _welded(il)


def test_stuck_open_follows_the_same_rule():
    il = IL.Interlocks()
    c = Contactor(il, 1000)
    c.supervise(0, OPEN, 0)
    c._now = 500
    c.command(1)
    stuck = IL.ROW["contactor_stuck"]
    c.supervise(1600, OPEN, 1600)  # one late reading: not yet
    assert not il.ext[stuck]
    c.supervise(2600, OPEN, 2600)
    assert il.ext[stuck]
