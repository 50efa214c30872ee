# The status LED: what a technician standing next to the pile can read
# without a laptop. One pattern at a time, the most urgent first:
#   fast blink (5 Hz)            fault, E-stop or maintenance
#   2 blinks every 2 s           WiFi: wrong password ("wifi auth")
#   1 blink every 2 s            WiFi: no link (no access point, join failing)
#   slow blink (0.5 Hz)          charging
#   steady on                    running, network up (or no WiFi on this board)
#   off                          off, network up
from h2p import states as S
from h2p.compat import asyncio, const

# (on ms, off ms, blinks per period, period ms): `blinks` times on then off,
# then dark for the rest of the period.
FAST = (100, 100, 1, 200)
AUTH = (150, 250, 2, 2000)
NO_LINK = (150, 150, 1, 2000)
SLOW = (1000, 1000, 1, 2000)
ON = (1000, 0, 1, 1000)
OFF = (0, 1000, 1, 1000)

_TICK_MS = const(50)


def pattern(state, link):
    # state: the supervisor's state number; link: the link keeper's report.
    if state == S.FAULT or state == S.ESTOP or state == S.MAINTENANCE:
        return FAST
    if link == "wifi auth":
        return AUTH
    if link != "up" and link != "none":
        return NO_LINK
    if state == S.CHARGING:
        return SLOW
    return OFF if state == S.OFF else ON


def lit(p, t):
    # Is the LED on at t ms into the pattern's period?
    on, off, n, period = p
    t %= period
    return t // (on + off) < n and t % (on + off) < on


async def run(board, pile):
    t = 0
    while True:
        board.led(lit(pattern(pile.sup.state, pile.link_state()), t))
        await asyncio.sleep_ms(_TICK_MS)
        t += _TICK_MS
