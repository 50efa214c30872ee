# h2p.crash names the task that died from its traceback: the frame right
# below h2p.app.run's (asyncio's own frames skipped). Runs on CPython and
# MicroPython.
from h2p.crash import task_of


def _tb(*frames):
    return ["Traceback (most recent call last):",
            '  File "h2p/app.py", line 409, in run',
            '  File "asyncio/funcs.py", line 1, in gather',
            '  File "asyncio/core.py", line 1, in run_until_complete'] + \
        ['  File "%s", line 1, in %s' % f for f in frames] + ["MemoryError: x"]


def test_each_task_by_its_frame():
    assert task_of(_tb(("h2p/app.py", "bus_task"), ("main.py", "_bad_flush"))) == "bus"
    assert task_of(_tb(("h2p/app.py", "watchdog_task"))) == "watchdog"
    assert task_of(_tb(("h2p/uplink.py", "run"), ("h2p/uplink.py", "_setup"))) == "uplink"
    assert task_of(_tb(("h2p/link.py", "run"))) == "link"
    assert task_of(_tb(("h2p/app.py", "clock_task"), ("h2p/sntp.py", "query"))) == "clock"
    assert task_of(_tb(("h2p/led.py", "run"))) == "led"


def test_unknown_task_is_its_function_and_no_traceback_is_unknown():
    assert task_of(_tb(("h2p/other.py", "mystery"))) == "mystery"
    assert task_of(["MemoryError: x"]) == "?"


def test_a_traceback_with_no_room_for_its_text_still_reaches_the_console():
    # Out of memory, describing the crash into a buffer fails too: the
    # traceback then goes to the console straight (seen at 96K: "CRASH task
    # ?" and no traceback said nothing of where).
    import sys

    from h2p import crash

    seen = []

    def printer(e, f):
        if f is not sys.stdout:
            raise MemoryError("no room for the text")
        seen.append(e)

    keep = crash._print_exception
    crash._print_exception = printer
    try:
        err = MemoryError("allocating 368 bytes")
        text, where, task = crash.describe(err)
    finally:
        crash._print_exception = keep
    assert seen == [err]
    assert text == "MemoryError: allocating 368 bytes" and task == "?"
