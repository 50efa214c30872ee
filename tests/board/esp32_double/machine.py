# `machine` as on an ESP32, for running the firmware's board_esp32 path on
# the MicroPython unix port (no ESP32 emulator exists here). Put this
# directory first on MICROPYPATH (keep .frozen in it for asyncio); the file
# shadows the unix port's own, near-empty `machine`.
#
# Strict on purpose: the allowed names, constants and constructor keywords
# come from esp32_surface.jsonl (generated from micropython-esp32-stubs,
# host_tools/esp32_surface.py). A name the ESP32 port lacks raises
# AttributeError naming it; a name the port has but this double does not
# implement raises NotImplementedError; at import the double checks that it
# defines nothing the port lacks.
#
# Behaviour, configured by esp32_double.json in the board directory (the
# working directory, as a board's filesystem):
#   "uart": {"2": {"host": "127.0.0.1", "port": 5020}}  UART id -> the
#        simulator's RTU-over-TCP port (bytes in and out, as on the wire)
#   "pins": {"34": 1}       what an input pin reads (default: 1 with PULL_UP)
#   "trace_pins": [2]       print "PIN 2 1" on the console when it changes
#   "unique_id": "240ac4000001"
# Reset cause across "resets" (process restarts): esp32_double.reset holds
# the machine constant; WDT expiry and reset() write it, as the chip's reset
# reason register would say. machine.reset() reads HARD_RESET afterwards, as
# on the port (ESP_RST_SW maps to HARD_RESET in ports/esp32/modmachine.c).
import io as _io
import json as _json
import os as _os
import socket as _socket
import time as _time

import _surface

_S = _surface.load("machine", (None, "UART", "Pin", "WDT", "RTC"))
_MOD = _surface.Surface("machine", _S[None])
# Every constant now, not on first use: the double must not read its file
# (or allocate much) while the firmware runs in a full heap.
_MOD.set_consts(globals())


def _c(name):
    # A module constant, for the double's own use.
    return globals()[name]


def __getattr__(name):
    _MOD.missing(name)

try:
    with open("esp32_double.json") as _f:
        _CFG = _json.load(_f)
except OSError:
    _CFG = {}

_RESET_FILE = "esp32_double.reset"


def _read_cause():
    try:
        with open(_RESET_FILE) as f:
            c = int(f.read().strip())
        _os.remove(_RESET_FILE)
        return c
    except (OSError, ValueError):
        return _c("PWRON_RESET")


_CAUSE = _read_cause()


def _write_cause(c):
    try:
        with open(_RESET_FILE, "w") as f:
            f.write(str(c))
    except OSError:
        pass


def _die(cause, why):
    _write_cause(cause)
    print("esp32 double: %s, resetting" % why)
    # Not catchable, from any thread, like the chip resetting. The process
    # hosting the interpreter is the shell's parent (as board_unix does).
    _os.system("kill -KILL $PPID")
    while True:
        _time.sleep_ms(1000)


def reset_cause():
    return _CAUSE


def reset():
    _die(_c("HARD_RESET"), "machine.reset()")


def soft_reset():
    _die(_c("SOFT_RESET"), "machine.soft_reset()")


def unique_id():
    import binascii

    return binascii.unhexlify(_CFG.get("unique_id", "240ac4000001"))


# ---- Pin -----------------------------------------------------------------
# ESP32 (original): GPIO 0-39 without 20, 24, 28-31; 34-39 are input-only
# (machine_pin.c refuses output there).
_VALID = set(range(0, 40)) - {20, 24, 28, 29, 30, 31}
_TRACE = _CFG.get("trace_pins", ())
_PIN_IN = _CFG.get("pins", {})


class Pin:
    def __init__(self, id, *args, **kw):
        _SP.check_call(args, kw)
        if id not in _VALID:
            raise ValueError("invalid pin")
        self._id = id
        self._mode = None
        self._pull = None
        self._v = 0
        self.init(*args, **kw)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        if mode != -1:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id >= 34:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._set(value)
        if self._mode == Pin.IN:
            v = _PIN_IN.get(str(self._id))
            self._v = v if v is not None else (1 if self._pull == Pin.PULL_UP else 0)

    def _set(self, v):
        v = 1 if v else 0
        if v != self._v and self._id in _TRACE:
            print("PIN %d %d" % (self._id, v))
        self._v = v

    def value(self, *x):
        if not x:
            return self._v
        if self._mode == Pin.IN:
            return None  # writing an input pin has no effect on its level
        self._set(x[0])

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __getattr__(self, name):
        _SP.missing(name)

    def __setattr__(self, name, v):
        if name[0] != "_":
            raise AttributeError("'Pin' object has no attribute '%s'" % name)
        object.__setattr__(self, name, v)


_SP = _surface.Surface("machine.Pin", _S["Pin"])
_SP.set_consts(Pin)
_SP.check_class(Pin)


# ---- UART ------------------------------------------------------------------
_POLL = 3  # MP_STREAM_POLL
_RD = 1
_WR = 4


class UART(_io.IOBase):
    # A stream object (io.IOBase + ioctl) so asyncio.StreamReader(uart) and
    # select.poll work as with the port's C UART. Bytes go to / come from the
    # TCP port configured for this id; write() returns at once, flush()
    # blocks until the last stop bit would have left at the baud rate (ESP32:
    # uart_wait_tx_done), txdone() says whether it has. The receive buffer
    # holds rxbuf bytes; more is dropped, as the ring buffer does.
    def __init__(self, id, *args, **kw):
        _SU.check_call(args, kw)
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % id)
        self._id = id
        self._baud = 115200
        self._bits = 8
        self._stop = 1
        self._parity = None
        self._rxbuf = 256
        self._timeout = 0
        self._buf = None  # bytearray(rxbuf), self._n bytes in it (set in _init)
        self._n = 0
        self._dropped = 0
        self._tx_end = _time.ticks_us()
        self._sock = None
        self._addr = None
        b = _CFG.get("uart", {}).get(str(id))
        if b:
            self._addr = _socket.getaddrinfo(b["host"], b["port"])[0][-1]
        self._init(*args, **kw)
        self._connect()

    def _init(self, baudrate=0, bits=0, parity=0, stop=0, *, tx=None, rx=None, rts=None, cts=None,
              txbuf=-1, rxbuf=-1, timeout=-1, timeout_char=-1, invert=-1, flow=-1, pins=None):
        if pins is not None:
            # In the stubs from another port's overload; ports/esp32 has no `pins`.
            raise TypeError("UART(): unexpected keyword argument 'pins' (ESP32: tx=, rx=)")
        if baudrate > 0:
            self._baud = baudrate
        if bits:
            if bits not in (5, 6, 7, 8):
                raise ValueError("invalid data bits")
            self._bits = bits
        if parity != 0:
            if parity not in (None, 0, 1):
                raise ValueError("invalid parity")
            self._parity = parity
        if stop:
            if stop not in (1, 2):
                raise ValueError("invalid stop bits")
            self._stop = stop
        if rxbuf >= 0:
            if rxbuf <= 128:  # uart_driver_install: rx buffer must exceed the 128-byte FIFO
                raise OSError(-1, "ESP_ERR_INVALID_ARG (rxbuf must be > 128)")
            self._rxbuf = rxbuf
        if self._buf is None or len(self._buf) != self._rxbuf:
            self._buf = bytearray(self._rxbuf)
            self._mv = memoryview(self._buf)
            self._n = 0
        if timeout >= 0:
            self._timeout = timeout
        for p in (tx, rx, rts, cts):
            if p is not None and not isinstance(p, (int, Pin)):
                raise TypeError("pin must be a Pin or an int")
        self._char_us = (1 + self._bits + (0 if self._parity is None else 1) + self._stop) * 1000000 // self._baud

    def _connect(self):
        if self._addr is None or self._sock is not None:
            return
        s = _socket.socket()
        try:
            s.connect(self._addr)
        except OSError:
            s.close()
            return  # a dead line: nothing arrives, writes are lost
        s.setblocking(False)
        self._sock = s

    def _pump(self):
        # Move what the line has delivered into the receive buffer.
        s = self._sock
        while s is not None and self._n < self._rxbuf:
            try:
                n = s.readinto(self._mv if not self._n else self._mv[self._n:])
            except OSError:
                n = 0  # reset by the far end
            if n is None:
                return  # nothing waiting
            if not n:
                s.close()  # the simulator went away; reconnect on the next write
                self._sock = s = None
                return
            self._n += n
        # A full buffer: the driver's ring buffer drops what keeps arriving.
        while s is not None:
            try:
                n = s.recv(64)
            except OSError:
                return
            if not n:
                return
            self._dropped += len(n)

    def _take(self, k):
        mv = self._mv
        mv[0:self._n - k] = mv[k:self._n]
        self._n -= k

    def any(self):
        self._pump()
        return self._n

    def read(self, *n):
        self._pump()
        k = self._n if not n else min(n[0], self._n)
        if not k:
            return None  # timeout=0: nothing there
        out = bytes(self._mv[:k])
        self._take(k)
        return out

    def readinto(self, buf, *n):
        self._pump()
        k = min(len(buf) if not n else n[0], self._n)
        if not k:
            return None
        buf[:k] = self._mv[:k]
        self._take(k)
        return k

    def write(self, buf):
        n = len(buf)
        now = _time.ticks_us()
        start = self._tx_end if _time.ticks_diff(self._tx_end, now) > 0 else now
        self._tx_end = _time.ticks_add(start, n * self._char_us)
        if self._sock is None:
            self._connect()
        if self._sock is not None:
            try:
                self._sock.send(buf)
            except OSError:
                self._sock.close()
                self._sock = None
        return n

    def txdone(self):
        return _time.ticks_diff(self._tx_end, _time.ticks_us()) <= 0

    def flush(self):
        d = _time.ticks_diff(self._tx_end, _time.ticks_us())
        if d > 0:
            _time.sleep_us(d)

    def deinit(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def ioctl(self, req, arg):
        if req == _POLL:
            self._pump()
            r = 0
            if arg & _RD and self._n:
                r |= _RD
            if arg & _WR:
                r |= _WR
            return r
        # Anything else, MP_STREAM_GET_FILENO included, is refused: with a
        # number here the unix port's select.poll would wait on that file
        # descriptor (0 is stdin) instead of asking this object.
        return -1

    def __getattr__(self, name):
        _SU.missing(name)

    def __setattr__(self, name, v):
        if name[0] != "_":
            raise AttributeError("'UART' object has no attribute '%s'" % name)
        object.__setattr__(self, name, v)


_SU = _surface.Surface("machine.UART", _S["UART"])
_SU.set_consts(UART)
_SU.check_class(UART, extra=("ioctl",))


# ---- WDT -------------------------------------------------------------------
_wdt = None


class WDT:
    # The ESP32's task watchdog: once started it cannot be stopped; not fed
    # within `timeout` ms, the chip resets and reset_cause() says WDT_RESET.
    # A thread outside the event loop, so a blocked loop is caught too.
    def __init__(self, *args, **kw):
        _SW.check_call(args, kw)
        self._init(**kw)

    def _init(self, id=0, timeout=5000):
        global _wdt
        if id != 0:
            raise ValueError("WDT(%d) does not exist" % id)
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self._timeout = timeout
        self._fed = _time.ticks_ms()
        if _wdt is None:
            import _thread

            _thread.start_new_thread(self._watch, ())
            _wdt = self
        else:
            _wdt._timeout = timeout  # a second WDT() reconfigures the one watchdog
            _wdt._fed = self._fed

    def feed(self):
        w = _wdt or self
        w._fed = _time.ticks_ms()

    def _watch(self):
        while True:
            _time.sleep_ms(50)
            if _time.ticks_diff(_time.ticks_ms(), self._fed) > self._timeout:
                _die(_c("WDT_RESET"), "WDT not fed for %d ms" % self._timeout)

    def __getattr__(self, name):
        _SW.missing(name)

    def __setattr__(self, name, v):
        if name[0] != "_":
            raise AttributeError("'WDT' object has no attribute '%s'" % name)
        object.__setattr__(self, name, v)


_SW = _surface.Surface("machine.WDT", _S["WDT"])
_SW.set_consts(WDT)
_SW.check_class(WDT)


# ---- RTC -------------------------------------------------------------------
# The chip's clock: 2000-01-01 00:00:00 at power-up; init() / datetime(t)
# set it, and time.time() follows (the time module here is the double's,
# time.py, which keeps the RTC's offset from the host clock).


def _unix(y, m, d):
    # days since 1970-01-01 of a date (proleptic Gregorian), in seconds; UTC,
    # whatever the host's time zone (the unix port's mktime uses it)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return (era * 146097 + doe - 719468) * 86400


def _rtc_now():
    return _time.time() if hasattr(_time, "set_rtc") else int(_time.time())


class RTC:
    def __init__(self, *args, **kw):
        _SR.check_call(args, kw)
        if args and args[0] != 0:
            raise ValueError("RTC(%d) does not exist" % args[0])
        if "datetime" in kw:
            self.init(kw["datetime"])

    def init(self, datetime):
        t = tuple(datetime) + (0,) * (8 - len(datetime))
        # (year, month, day, weekday, hours, minutes, seconds, subseconds)
        s = _unix(t[0], t[1], t[2]) + t[4] * 3600 + t[5] * 60 + t[6]
        if not hasattr(_time, "set_rtc"):
            raise NotImplementedError("esp32 double: setting the RTC needs the double's time.py first on the path")
        _time.set_rtc(s)

    def datetime(self, datetimetuple=None):
        if datetimetuple is not None:
            self.init(datetimetuple)
            return None
        t = _time.gmtime(_rtc_now())
        # (year, month, mday, hour, minute, second, weekday, yearday) -> RTC order
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)

    def __getattr__(self, name):
        _SR.missing(name)

    def __setattr__(self, name, v):
        if name[0] != "_":
            raise AttributeError("'RTC' object has no attribute '%s'" % name)
        object.__setattr__(self, name, v)


_SR = _surface.Surface("machine.RTC", _S["RTC"])
_SR.set_consts(RTC)
_SR.check_class(RTC)


_S = None
_surface.check_module(_MOD, globals())

import gc as _gc  # noqa: E402

_gc.collect()  # the parsed surface is garbage now; not left to fragment the heap
