# What the ESP32 and RP2040 boards share: the RS-485 line on a hardware
# UART with a driver-enable pin, the hardware watchdog, the E-stop input,
# the status LED and WiFi. board_esp32 / board_rp2 add what differs (how to
# wait until the last stop bit has left the UART, reset-cause names).
# Only board modules may import machine and network.
import time

import machine

from h2p.compat import asyncio, const

_RXBUF = const(512)
_SETTLE_MS = const(3)  # line counts as idle after this long without a byte

# The hardware watchdog the firmware started, if any. `h2pile flash` feeds
# it from the REPL after stopping the firmware with Ctrl-C, so a flash is
# not cut short by a reset (it never starts one itself).
_hw_wdt = None


def feed_hw():
    if _hw_wdt is not None:
        _hw_wdt.feed()


class Clock:
    # Board time is wall time: ticks_ms wraps like the firmware expects.
    floor = 0

    def ms(self):
        return time.ticks_ms()

    def wall_ms(self):
        return time.ticks_ms()

    def to_wall(self, ms):
        return ms

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)


class UartLine:
    # Modbus RTU on RS-485 (half duplex): DE high while transmitting, low
    # as soon as the last bit is out, so the reply is not talked over.
    def __init__(self, u, baud, tx_done):
        self.uart = machine.UART(u["id"], baudrate=baud, bits=8, parity=None, stop=1,
                                 tx=machine.Pin(u["tx"]), rx=machine.Pin(u["rx"]),
                                 rxbuf=_RXBUF, timeout=0)
        self.de = machine.Pin(u["de"], machine.Pin.OUT, value=0)
        self.char_us = 11000000 // baud
        self.tx_done = tx_done  # fn(uart): True once the shift register is empty

    async def open(self):
        self.de.value(0)
        self.discard()

    def discard(self):
        u = self.uart
        while u.any():
            u.read()

    async def settle(self):
        # After an error: wait until the line has been quiet for a while.
        u = self.uart
        for _ in range(64):
            if not u.any():
                await asyncio.sleep_ms(_SETTLE_MS)
                if not u.any():
                    return
            self.discard()

    async def send(self, buf, n):
        u = self.uart
        self.de.value(1)
        u.write(memoryview(buf)[:n])
        # Most of the frame is on the wire after n characters; sleep that
        # long, then poll for the last stop bit before releasing the line.
        wait = (n * self.char_us) // 1000
        if wait > 1:
            await asyncio.sleep_ms(wait - 1)
        for _ in range(1000):
            if self.tx_done(u):
                break
            await asyncio.sleep_ms(0)
        self.de.value(0)
        # No echo to drop: DE and /RE are tied together (docs/hil.md), so
        # the receiver is off while we talk.

    async def recv_into(self, mv, timeout_ms):
        # Polled from the UART's receive buffer, not awaited through a
        # StreamReader with asyncio.wait_for_ms: that made a task, a closure
        # and generators for every read (garbage in the control loop, which
        # keeps the GC busy and cuts up the heap). Nothing is allocated here
        # but the call's own generator. The bytes asked for cannot all be
        # there before their time on the wire: sleep that long first (capped
        # by the timeout). Then, for 2 ms, look at every pass of the event
        # loop (~0.1 ms: a reply is taken as its last byte lands, not up to
        # a ms later, and not in two parts a ms apart: the control loop's
        # turn, issue 16), and after that every ms (a slow device, or a
        # shorter reply than asked: an exception, taken as it is). The
        # master asks again for whatever is missing, as with a stream.
        u = self.uart
        t0 = time.ticks_ms()
        want = len(mv)
        wire = want * self.char_us // 1000
        if wire >= timeout_ms:
            wire = timeout_ms - 1
        if wire > 0:
            await asyncio.sleep_ms(wire)
        while True:
            n = u.any()
            if n >= want:
                break
            late = time.ticks_diff(time.ticks_ms(), t0)
            if late >= timeout_ms or (n and late > wire + 2):
                if not n:
                    return 0
                break
            await asyncio.sleep_ms(0 if late <= wire + 2 else 1)
        return u.readinto(mv) or 0


class Watchdog:
    # machine.WDT, fed by the app only while the bus and the control loop
    # make progress. RP2040's maximum is 8388 ms (boardcfg checks it).
    def __init__(self, timeout_ms):
        global _hw_wdt
        self.timeout = timeout_ms
        self.hw = machine.WDT(timeout=timeout_ms)
        _hw_wdt = self.hw

    def feed(self):
        self.hw.feed()


def reset_cause(names):
    # The cause the firmware wrote before a deliberate reset (crash, a
    # command) wins: machine.reset() reads as a watchdog reset on the
    # RP2040. Otherwise the hardware's: names are (machine constant, name)
    # pairs; unknown causes keep their number.
    from h2p.board import take_reset_cause

    c = take_reset_cause()
    if c:
        return c
    c = machine.reset_cause()
    for k, name in names:
        if k == c:
            return name
    return "cause_%d" % c


# The time.time() epoch of this port: 2000 on older ESP32 builds, 1970 on
# the rest; unix_time() is always seconds since 1970.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_CLOCK_VALID = const(1704067200)  # 2024-01-01: an RTC before that was never set


class McuBoard:
    # Implements h2p.board.Board (see there); board_esp32/board_rp2 check it.
    PLATFORM = ""

    def __init__(self, desc, tx_done, causes, baud=None, auth_codes=()):
        # Only what is used after boot is kept, not the description dict.
        self.name = desc["name"]
        self.console = True  # STATUS lines on the USB REPL
        self.fs_sync = True  # littlefs: a write counts once committed
        self.has_wifi = desc["has_wifi"]
        self.clock = Clock()
        u = desc["uart"]
        if u["transport"] != "uart":
            raise ValueError("board %s: transport must be 'uart'" % self.name)
        # The line runs at the config's baud; the board's is the default.
        self.line = UartLine(u, baud or u["baud"], tx_done)
        self.reset_cause = reset_cause(causes)
        self.wdt = Watchdog(desc["watchdog_ms"])
        p = desc["estop_pin"]
        self._estop = None if p is None else machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP)
        self._estop_low = desc["estop_active_low"]
        # A named LED ("LED" on the Pico W, wired to the WiFi chip: GPIO 25
        # there is the chip's SPI select and must not be driven) or a GPIO.
        p = desc["led_name"] or desc["led_pin"]
        self._led = None if p is None or p == "" else machine.Pin(p, machine.Pin.OUT, value=0)
        self.has_led = self._led is not None
        self._wlan = None
        self._auth = auth_codes  # more status codes that mean a wrong password
        # An RTC that kept its time across a soft reset counts as set.
        self._clock_set = time.time() + _EPOCH >= _CLOCK_VALID

    async def open(self):
        await self.line.open()

    def estop_pressed(self):
        if self._estop is None:
            return False
        v = self._estop.value()
        return v == 0 if self._estop_low else v == 1

    def led(self, on):
        if self._led is not None:
            self._led.value(1 if on else 0)

    # ---- wall clock (SNTP sets it: command expiry, TLS dates) -----------
    def unix_time(self):
        if not self._clock_set:
            return None
        return time.time() + _EPOCH

    def set_time(self, unix_s):
        t = time.gmtime(int(unix_s) - _EPOCH)
        # RTC: (year, month, day, weekday, hours, minutes, seconds, subseconds)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
        self._clock_set = True

    # ---- WiFi (h2p.link keeps it up) ----------------------------------
    def _sta(self):
        if self._wlan is None:
            import network

            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
            self._sta_setup(self._wlan)
        return self._wlan

    def _sta_setup(self, w):
        pass  # what a port needs once (board_esp32)

    def wifi_connect(self, ssid, password):
        if self.has_wifi:
            self._sta().connect(ssid, password)

    def wifi_disconnect(self):
        if self._wlan is not None:
            self._wlan.disconnect()

    def wifi_status(self):
        if not self.has_wifi:
            return "none"
        if self._wlan is None:
            return "down"
        import network

        w = self._wlan
        if w.isconnected():
            return "up"
        s = w.status()
        if s == network.STAT_CONNECTING:
            return "connecting"
        if s == network.STAT_WRONG_PASSWORD or s in self._auth:
            return "wifi auth"
        if s == network.STAT_NO_AP_FOUND:
            return "no ap"
        if s == network.STAT_IDLE or s == network.STAT_GOT_IP:
            return "down"  # GOT_IP but not connected: the link just went
        return "fail"

    def reset(self, reason):
        from h2p.board import note_reset_cause

        note_reset_cause(reason)
        machine.reset()

    def unique_id(self):
        import binascii

        return binascii.hexlify(machine.unique_id()).decode()
