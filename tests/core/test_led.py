# h2p.led: the status LED's pattern for each condition, the most urgent
# first, and the blink timing. Runs on CPython and MicroPython.
from h2p import led
from h2p import states as S


def _trace(p, period=2000, step=50):
    return "".join("#" if led.lit(p, t) else "." for t in range(0, period, step))


def test_urgent_conditions_win():
    assert led.pattern(S.FAULT, "wifi auth") == led.FAST
    assert led.pattern(S.MAINTENANCE, "up") == led.FAST
    assert led.pattern(S.READY, "wifi auth") == led.AUTH
    assert led.pattern(S.CHARGING, "no ap") == led.NO_LINK
    assert led.pattern(S.CHARGING, "up") == led.SLOW
    assert led.pattern(S.READY, "none") == led.ON
    assert led.pattern(S.OFF, "up") == led.OFF


def test_blink_shapes():
    assert _trace(led.ON) == "#" * 40
    assert _trace(led.OFF) == "." * 40
    assert _trace(led.AUTH) == "###" + "....." + "###" + "." * 29  # two short blinks, then dark
    assert _trace(led.NO_LINK) == "###" + "." * 37
    assert _trace(led.FAST, 400) == "##..##.."
    assert _trace(led.SLOW) == "#" * 20 + "." * 20
