# WiFi kept up by the pile, forever: join, and when a join fails or the link
# drops, wait (1 s doubling to wifi.backoff_max_s, +/-25 % jitter so a fleet
# that lost its access point together does not rejoin together) and join
# again. Wrong credentials are retried too (the network may be mid-change),
# but reported as "wifi auth" on the console, in STATUS and on the LED.
#
# Keeper is the core, stepped with (now, status) like the supervisor; it
# answers what to do. run() is the shell: it reads the board's status, steps
# the keeper and calls the board. The pile's control never waits on it.
from h2p.compat import asyncio, const, ticks_add, ticks_diff
from h2p.log import log

_POLL_MS = const(250)
_FIRST_MS = const(1000)

NOTHING = const(0)
JOIN = const(1)
LEAVE = const(2)  # drop a half-open attempt before joining again


def jitter(n):
    # 0 .. n-1, for the backoff's spread
    from random import getrandbits

    return getrandbits(16) % n


class Keeper:
    def __init__(self, join_ms, backoff_max_ms, rand=None):
        self.join_ms = join_ms
        self.max_ms = backoff_max_ms
        self.rand = rand  # fn(n) -> 0..n-1 (jitter); None: no jitter
        self.state = "down"  # what the board last said
        self.up = False
        self.joining = False
        self.t = 0  # when the join started, or when the next one is due
        self.wait = 0  # the current backoff, ms
        self.drops = 0  # links lost after being up
        self.joins = 0  # join attempts
        self.fault = ""  # how the last join failed ("wifi auth", "no ap", ...), until one succeeds

    def report(self):
        # What the console, STATUS, meta and the LED show.
        if self.up or self.state == "none":
            return self.state
        return self.fault or self.state

    def ready(self):
        # May the uplink try its broker? (boards without WiFi: always)
        return self.up or self.state == "none"

    def step(self, now, status):
        # status: a link state string from the board (h2p.board). -> NOTHING, JOIN or LEAVE
        self.state = status
        if status == "none":
            self.up = False
            return NOTHING
        if status == "up":
            if not self.up:
                self.up = True
                self.joining = False
                self.wait = 0
                self.fault = ""
            return NOTHING
        if self.up:
            # The link went: try again soon (a blip), then back off.
            self.up = False
            self.drops += 1
            self.joining = False
            self._backoff(now)
            return NOTHING
        if self.joining:
            failed = status == "wifi auth" or status == "no ap" or status == "fail"
            if failed or ticks_diff(now, self.t) > self.join_ms:
                self.fault = status if failed else "timeout"
                self.joining = False
                self._backoff(now)
                return LEAVE
            return NOTHING
        if status == "wifi auth" or status == "no ap":
            # Some ports (ESP32) say why only once the attempt is dropped.
            self.fault = status
        if not self.joins or ticks_diff(now, self.t) >= 0:
            # (the first join at once: ticks start anywhere, 0 may be "ahead")
            self.joining = True
            self.joins += 1
            self.t = now
            return JOIN
        return NOTHING

    def _backoff(self, now):
        w = _FIRST_MS if not self.wait else min(self.wait * 2, self.max_ms)
        self.wait = w
        if self.rand is not None:
            w += self.rand(w // 2 + 1) - w // 4  # +/-25 %
        self.t = ticks_add(now, w)


async def run(board, keeper, ssid, password):
    clock = board.clock
    last = None
    while True:
        act = keeper.step(clock.wall_ms(), board.wifi_status())
        st = keeper.report()
        if st != last:
            log("link", st, "drops", keeper.drops, "joins", keeper.joins)
            last = st
        if act == JOIN:
            board.wifi_connect(ssid, password)
        elif act == LEAVE:
            board.wifi_disconnect()
        await asyncio.sleep_ms(_POLL_MS)
