# h2p.link.Keeper: WiFi kept up forever with a bounded, jittered backoff.
# Runs on CPython (pytest) and MicroPython (tests/core/runner.py).
from h2p.link import JOIN, LEAVE, NOTHING, Keeper

JOIN_MS = 20000
MAX_MS = 60000


def _keeper(rand=None):
    return Keeper(JOIN_MS, MAX_MS, rand)


def _run(k, t, status, until_ms, step=250):
    # Steps the keeper with one status until `until_ms`; -> the actions, timed.
    out = []
    while t < until_ms:
        a = k.step(t, status)
        if a != NOTHING:
            out.append((t, a))
        t += step
    return out, t


def test_first_join_at_once_then_up():
    k = _keeper()
    assert k.step(0, "down") == JOIN
    assert k.step(250, "connecting") == NOTHING
    assert k.step(500, "up") == NOTHING
    assert k.up and k.ready() and k.report() == "up" and k.joins == 1


def test_wrong_password_is_reported_and_retried_with_growing_waits():
    k = _keeper()
    k.step(0, "down")
    acts, _ = _run(k, 250, "wifi auth", 200000)
    leaves = [t for t, a in acts if a == LEAVE]
    joins = [t for t, a in acts if a == JOIN]
    assert k.report() == "wifi auth" and not k.ready()
    # join, fail, wait 1 s, 2 s, 4 s ... never more than the maximum
    gaps = [j - l for l, j in zip(leaves, joins)]
    assert gaps[:4] == [1000, 2000, 4000, 8000], gaps
    assert max(gaps) <= MAX_MS and gaps[-1] == MAX_MS, gaps
    assert len(joins) >= 8  # it never gives up


def test_a_join_that_hangs_times_out():
    k = _keeper()
    k.step(0, "down")
    acts, _ = _run(k, 250, "connecting", JOIN_MS + 1000)
    assert acts == [(JOIN_MS + 250, LEAVE)], acts
    assert k.report() == "timeout"


def test_a_drop_rejoins_within_a_second_and_is_counted():
    k = _keeper()
    k.step(0, "down")
    k.step(250, "up")
    assert k.step(10000, "down") == NOTHING and k.drops == 1 and not k.ready()
    acts, _ = _run(k, 10250, "down", 12000)
    assert acts and acts[0][1] == JOIN and acts[0][0] <= 11250, acts
    k.step(12000, "up")
    assert k.ready() and k.report() == "up" and k.fault == ""


def test_backoff_resets_once_up():
    k = _keeper()
    k.step(0, "down")
    _run(k, 250, "no ap", 60000)
    assert k.wait > 1000
    k.step(60000, "connecting")
    k.step(60250, "up")
    assert k.wait == 0


def test_jitter_stays_within_a_quarter():
    for r in (0, 10 ** 9):
        k = _keeper(lambda n, r=r: min(r, n - 1))
        k.step(0, "down")
        k.step(250, "fail")  # first failure: 1000 ms +/- 25 %
        due = k.t - 250
        assert 750 <= due <= 1250, due


def test_board_without_wifi_is_always_ready():
    k = _keeper()
    assert k.step(0, "none") == NOTHING
    assert k.ready() and k.report() == "none"


def test_ticks_wrap_does_not_stall_the_keeper():
    # Board ticks wrap (2**30 ms on 32-bit ports); the keeper compares with
    # ticks_diff and adds with ticks_add. The first join is at once
    # wherever the ticks start.
    from h2p.compat import MICROPYTHON, ticks_add

    if not MICROPYTHON:
        return  # CPython ticks do not wrap
    k = _keeper()
    t0 = ticks_add(0, -500)  # 500 ms before the wrap
    assert k.step(t0, "down") == JOIN
    k.step(ticks_add(t0, 250), "fail")
    acts, _ = _run(k, 0, "down", 3000)
    assert acts and acts[0][1] == JOIN and acts[0][0] <= 1000, acts
