# Housekeeping in the bus task's turns: the STATUS line, telemetry,
# gc.collect() and the like never run while a charger read is due.
#
# The bus task reads the charger and the safety I/O before every other
# block (h2p.app's poll schedule). A chore runs only where one of those
# other blocks would be read: right after the hot reads have been answered,
# stepped and written. It takes that block's turn (the block is read after
# the hot reads once more), one chore per turn, so a chore delays the next charger read by
# no more than its own length minus the turn it took, and the hot reads before and after
# it are on time. Each chore is one piece of work that does not wait (on the RP2040:
# gc.collect() 18 ms, a STATUS line ~20 ms of board time): a task that has one asks for a
# turn and does it when it gets it. Without a bus task (maintenance) every turn is free.
from h2p.compat import MICROPYTHON, asyncio, const

GC = const(0)  # gc.collect() and the heap figures the STATUS line shows
STATUS = const(1)  # the STATUS line on the console
UPLINK = const(2)  # MQTT: state, telemetry, events, bills (h2p.uplink)
N = const(3)


if MICROPYTHON:
    from asyncio import core as _core  # type: ignore[attr-defined]  # (MicroPython's asyncio)
    class _Wake:
        # asyncio.Event's wait and set on asyncio's queues (a task cancelled while waiting
        # leaves it), without the asyncio.event module: ~1.2 KB of RAM nothing else loads.
        def __init__(self):
            self.q = _core.TaskQueue()

        def set(self):
            while self.q.peek():
                _core._task_queue.push(self.q.pop())

        def clear(self):
            pass  # (no state: give() cleared the Event at once after setting it)

        async def wait(self):
            self.q.push(_core.cur_task)
            _core.cur_task.data = self.q  # (what Task.cancel removes it from)
            yield  # type: ignore[misc]  # MicroPython: parked until set() queues it
else:
    _Wake = asyncio.Event  # type: ignore[misc,assignment]


class Chores:
    def __init__(self):
        self.ev = [_Wake() for _ in range(N)]
        self.want = 0  # bit k: chore k waits for a turn
        self.next = 0  # the chore served first at the next turn (round robin)
        self.bus = False  # a bus task gives the turns
        self.given = 0  # turns given (tests, the bench)
        self.busy = False  # a chore was woken and has not run yet

    async def turn(self, k):
        # A chore's task: wait for the bus task's turn; the chore then runs
        # at once, without waiting in between.
        if not self.bus:
            return
        self.want |= 1 << k
        await self.ev[k].wait()
        self.busy = False  # it runs now, to its end: it does not wait

    def give(self):
        # The bus task, at a turn it may give (the hot reads are done): wake
        # the next chore waiting, if any. -> True if one was woken: the
        # caller then yields until it has run (busy). Allocates nothing.
        w = self.want
        if not w:
            return False
        k = self.next
        while not w & (1 << k):
            k = (k + 1) % N
        self.want = w & ~(1 << k)
        self.next = (k + 1) % N
        e = self.ev[k]
        e.set()  # the chore's task is queued to run ...
        e.clear()  # ... once: its next turn() waits for the next turn
        self.given += 1
        self.busy = True
        return True
