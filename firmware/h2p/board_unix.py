# The MicroPython unix port as a board: the RS-485 line is RTU frames over
# TCP to the simulator (or a serial device), the clock runs `speed` times
# faster than the wall so firmware and simulator agree on simulated time,
# and the watchdog is a task that exits the process (the runner restarts
# it, as a board would reboot). The board's filesystem is the working
# directory: config.json, board.json, data/.
import os
import select
import time

from h2p.compat import asyncio, const

TYPE_CHECKING = const(0)  # mypy reads it as true: the block under it is for mypy only

_TICKS_MASK = const(0x3FFFFFFF)

PLATFORM = "unix"


class Clock:
    # Simulated milliseconds in MicroPython's ticks space (wraps like
    # time.ticks_ms on a board, so ticks_diff works the same).
    def __init__(self, speed=1.0, wall_floor_ms=30, epoch_ns=0):
        # epoch_ns: the simulator's wall-clock start; with it both processes
        # read the same simulated time, so their logs line up.
        self.speed = speed
        # The factor in thousandths, so that reading the clock (several
        # times a transaction) is integer arithmetic: a float is a heap
        # object on MicroPython, so d * speed allocated on every call.
        self._k = int(speed * 1000 + 0.5)
        self._last = time.ticks_us()
        self._acc_us = 0
        if epoch_ns:
            self._acc_us = int((time.time_ns() - epoch_ns) // 1000 * speed)
        self.floor = wall_floor_ms

    def ms(self):
        t = time.ticks_us()
        d = time.ticks_diff(t, self._last)
        self._last = t
        self._acc_us += d * self._k // 1000
        return (self._acc_us // 1000) & _TICKS_MASK

    def wall_ms(self):
        return time.ticks_ms()

    def to_wall(self, sim_ms):
        # Host sockets have their own latency; a timeout shorter than the
        # floor would turn scheduling jitter into a silent device.
        w = int(sim_ms) * 1000 // self._k
        return w if w > self.floor else self.floor

    async def sleep_ms(self, sim_ms):
        await asyncio.sleep_ms(int(sim_ms) * 1000 // self._k)


class TcpLine:
    # RTU frames over TCP: exactly the bytes a UART would carry.
    def __init__(self, host, port, clock):
        self.host = host
        self.port = port
        self.clock = clock
        self.r = None
        self.w = None
        self.sock = None  # the stream's socket (non-blocking), read directly
        self.poller = None  # select.poll with only that socket in it (recv_into)
        self.scratch = bytearray(64)  # for bytes we drop: no allocation per transaction

    async def open(self):
        while True:
            try:
                self.r, self.w = await asyncio.open_connection(self.host, self.port)
                # The unix port's non-blocking connect "succeeds" even when
                # refused; the error shows on the first read. Probe: a line
                # that is up is silent until asked.
                try:
                    await asyncio.wait_for_ms(self.r.readinto(bytearray(1)), 20)
                except asyncio.TimeoutError:
                    self.sock = self.r.s  # MicroPython's Stream keeps its socket here
                    self.poller = select.poll()
                    self.poller.register(self.sock, select.POLLIN)
                    return
                raise OSError("connection closed")
            except OSError as e:
                print("bus: cannot reach %s:%d (%s), retrying" % (self.host, self.port, e))
                await asyncio.sleep_ms(500)

    def discard(self):
        # Stale bytes from a late reply must not be taken for the next one.
        s = self.sock
        if s is None:
            return
        try:
            while s.readinto(self.scratch):  # None (nothing waiting) or 0 (closed) ends it
                pass
        except OSError:
            pass

    async def settle(self):
        # Until the line has been quiet for the floor (to_wall(0)) of wall time.
        for _ in range(16):
            if not await self.recv_into(self.scratch, 0):
                return

    async def send(self, buf, n):
        try:
            # Straight to the socket (a frame is a few bytes: it takes them
            # whole); the stream's write and drain made two views and a
            # generator per frame. The stream only if it did not.
            k = self.sock.write(buf, n) or 0
            if k < n:
                self.w.write(memoryview(buf)[k:n])
                await self.w.drain()
        except OSError as e:
            # The simulator (the far end of the line) went away: reconnect;
            # this transaction then times out like one to a silent device.
            print("bus: line lost (%s), reconnecting" % e)
            await self.open()

    async def recv_into(self, mv, timeout_ms):
        # Read from the socket itself, not through the stream with
        # asyncio.wait_for_ms: that made a task, a closure and generators for
        # every read (~1.2 KB of garbage on this port, hundreds of reads a
        # second), which kept the GC busy and cut a 96K heap into holes too
        # small for the next module to load. Here nothing is allocated but the
        # call's own generator: the
        # reply is waited for on the line's own poller, at most 1 ms at a
        # time (the event loop is held that long, so the reply is taken the
        # moment it arrives: no polling delay in the bus's timing), and the
        # other tasks run between those waits.
        # (Few locals: the generator's frame is a heap block per read.)
        timeout_ms = time.ticks_add(time.ticks_ms(), self.clock.to_wall(timeout_ms))  # the deadline
        while True:
            try:
                n = self.sock.readinto(mv)  # None: nothing there yet (non-blocking)
            except OSError as e:
                # Connection reset: the far end of the line went away.
                print("bus: line lost (%s), reconnecting" % e)
                await self.open()
                return 0
            if n is not None:
                break
            if time.ticks_diff(timeout_ms, time.ticks_ms()) <= 0:
                return 0
            self.poller.ipoll(1)  # polls now (ipoll: no list of results made)
            await asyncio.sleep_ms(0)
        if n == 0:
            # Simulator went away: reconnect and report a timeout.
            await self.open()
        return n


# The running watchdog, as in board_mcu: `h2pile flash` feeds it while the
# firmware is stopped at the REPL (host_tools/flash.py, _k).
_hw_wdt = None


class Watchdog:
    # machine.WDT stand-in: a thread outside the event loop (a task would
    # stop with a loop that blocks), so a hung task or a blocked loop both
    # end the process like a hardware reset; the cause is kept for the next
    # boot. Wall time, as a board's WDT.
    def __init__(self, timeout_ms):
        global _hw_wdt
        self.timeout = timeout_ms
        self.fed = time.ticks_ms()
        self.stopped = False
        _hw_wdt = self
        try:
            import _thread

            _thread.start_new_thread(self._watch, ())
        except ImportError:  # a build without threads: no watchdog, say so
            print("watchdog: no _thread on this build, not armed")

    def feed(self):
        self.fed = time.ticks_ms()

    def stop(self):
        # Unlike a hardware WDT this one is firmware code, run by its own
        # thread: `h2pile flash` stops it before rewriting the ROMFS
        # partition that code may be in (the thread leaves within 100 ms).
        self.stopped = True

    def _watch(self):
        while not self.stopped:
            time.sleep_ms(100)
            if time.ticks_diff(time.ticks_ms(), self.fed) > self.timeout:
                from h2p.board import note_reset_cause

                note_reset_cause("watchdog")
                print("watchdog: no progress for %d ms, resetting" % self.timeout)
                _kill_process()
                return


def _kill_process():
    # sys.exit in a thread ends only the thread, and on the main thread it
    # unwinds through asyncio: a reset ends everything at once.
    os.system("kill -KILL $PPID")


class Board:
    # Implements h2p.board.Board (see there; checked below).
    PLATFORM = PLATFORM
    has_wifi = False
    has_led = False
    # The "flash" is a host file: what a killed firmware wrote, the kernel
    # keeps (the crash and e2e tests SIGKILL it), so no fsync per journal
    # write. One under load took 196-427 ms of wall time (measured in the
    # e2e campaign): at 20x that is 4-8.5 s of board time with the control
    # loop stopped, long enough for readings to go stale mid-charge.
    fs_sync = False

    def __init__(self, desc, baud=None):
        # Only what is used after boot is kept, not the description dict.
        # The line is TCP: its baud is the simulator's business.
        self.name = desc["name"]
        speed = float(os.getenv("H2P_SPEED") or "1")
        self.clock = Clock(speed, int(os.getenv("H2P_WALL_FLOOR_MS") or "30"),
                           int(os.getenv("H2P_EPOCH_NS") or "0"))
        u = desc["uart"]
        if u["transport"] != "tcp":
            raise ValueError("board %s: unix board supports transport 'tcp'" % self.name)
        host = os.getenv("H2P_BUS_HOST") or u["host"]
        port = int(os.getenv("H2P_BUS_PORT") or u["port"])
        self.line = TcpLine(host, port, self.clock)
        self.wdt = Watchdog(desc["watchdog_ms"])
        from h2p.board import take_reset_cause

        self.reset_cause = take_reset_cause() or "power_on"
        self.console = True  # STATUS lines on stdout
        self._offset = 0.0  # set_time's correction of the host clock

    def unix_time(self):
        # The host's clock is set (NTP on the host): real seconds, as the
        # operators who sign commands use, plus what set_time corrected.
        return time.time() + self._offset

    def set_time(self, unix_s):
        self._offset = unix_s - time.time()

    async def open(self):
        await self.line.open()

    def estop_pressed(self):
        # No GPIO here: the simulator's safety I/O mirrors the E-stop chain.
        return False

    def led(self, on):
        pass

    # The host's network is the pile's: no WiFi to keep up.
    def wifi_connect(self, ssid, password):
        pass

    def wifi_disconnect(self):
        pass

    def wifi_status(self):
        return "none"

    def reset(self, reason):
        from h2p.board import note_reset_cause

        note_reset_cause(reason)
        print("reset: %s" % reason)
        _kill_process()

    def unique_id(self):
        return "unix"


if TYPE_CHECKING:
    from h2p.board import Board as _Interface  # noqa: F401 - mypy: the interface

    def _is_a_board(b):
        # type: (Board) -> _Interface
        return b  # mypy: Board implements h2p.board.Board (tests/test_typecheck.py)
