# What a crash leaves behind, and what the next boots do with it. A task of
# the pile that raises is logged with its name and traceback, the pile is
# taken to its safe state (handle(), called by h2p.app.run), this record is
# written, and the board resets on purpose: the next boot reports the crash (BOOT
# line, `meta.last_crash`). A boot that crashed `maintenance_after` times in
# a row, each within `stable_s` of its start, stays up in `maintenance`
# instead (h2p.maintenance): no control, the contactor and fuel left in their
# devices' safe defaults, the REPL, MQTT and the watchdog alive, until a
# `reset` command (or a technician) clears the record.
#
# data/crash.json: {"n": crashes in a row, "task": name, "error": "Type: text",
#                   "where": last traceback line, "boot": boot number}
import json
import os
import sys

from h2p.compat import ticks_diff
from h2p.log import log

_PATH = "data/crash.json"
# A crashed pile's EV current is down and its contactor open by then: the
# supervisor's STOPPING waits up to 5 s for the current to fall before it
# forces the contactor open, then takes ~1 s of phases (h2p.supervisor).
_SAFE_MS = 8000


def load():
    # The record the last boots left, or None. A damaged file counts as one
    # crash of unknown cause: it must not stop the pile from booting.
    try:
        with open(_PATH) as f:
            d = json.load(f)
        if isinstance(d, dict) and isinstance(d.get("n"), int):
            return d
    except OSError:
        return None
    except ValueError:
        pass
    return {"n": 1, "task": "?", "error": "crash record unreadable", "where": "", "boot": 0}


# The pile's task coroutines, by the function (and file) at the bottom of
# h2p.app.run in a traceback -> the task's name in logs, BOOT and meta.
# (Files with their "/" and closing quote: "uplink.py" ends in "link.py".)
_TASKS = (("bus_task", "bus"), ("status_task", "status"), ("watchdog_task", "watchdog"),
          ("maintenance_task", "maintenance"), ("clock_task", "clock"), ('/link.py"', "link"),
          ('/uplink.py"', "uplink"), ('/led.py"', "led"), ("/board_", "wdt"))


def describe(e):
    # -> ("Type: message", last traceback line, task name); the traceback is
    # printed to the console whole.
    try:
        import io

        buf = io.StringIO()
        _print_exception(e, buf)
        lines = buf.getvalue().strip().split("\n")
        sys.stdout.write(buf.getvalue())
    except Exception:  # noqa: BLE001 - describing must not fail the crash path
        # (Typically a MemoryError with no room for the text: the traceback
        # then goes to the console straight, which needs no buffer.)
        lines = [""]
        try:
            _print_exception(e, sys.stdout)
        except Exception:  # noqa: BLE001
            pass
    text = "%s: %s" % (type(e).__name__, e)
    where = lines[-2].strip() if len(lines) > 1 else ""
    return text[:120], where[:120], task_of(lines)


def task_of(lines):
    # The frame right below app.run's (gather hands run the task's
    # exception, its frames after run's own): "bus" for bus_task, ...
    below = False
    for ln in lines:
        ln = ln.strip()
        if not ln.startswith("File "):
            continue
        if below and "asyncio" not in ln:
            for key, name in _TASKS:
                if key in ln:
                    return name
            return ln[ln.rfind(" ") + 1:]  # the function's name
        if ln.endswith(" in run") and "app.py" in ln:
            below = True
    return "?"


def _print_exception(e, f):
    pe = getattr(sys, "print_exception", None)  # MicroPython
    if pe is not None:
        pe(e, f)
    else:  # CPython
        import traceback  # type: ignore[import-not-found]

        traceback.print_exception(type(e), e, e.__traceback__, file=f)


def note(task, text, where, boot):
    # Count this crash and keep its cause; -> the record written.
    old = load()
    d = {"n": (old["n"] if old else 0) + 1, "task": task, "error": text, "where": where, "boot": boot}
    try:
        os.mkdir("data")
    except OSError:
        pass  # exists
    try:
        # Written whole then renamed: a power cut leaves the old or the new.
        with open(_PATH + ".tmp", "w") as f:
            json.dump(d, f)
        os.rename(_PATH + ".tmp", _PATH)
    except OSError as e:
        print("crash: cannot write %s (%s)" % (_PATH, e))
    return d


def clear():
    try:
        os.remove(_PATH)
        return True
    except OSError:
        return False


async def handle(pile, e):
    # Log it (console, journal), take the pile to its safe state, keep the
    # reason for the next boot; the caller (h2p.app.run) resets.
    text, where, task = describe(e)
    print("CRASH task %s" % task)
    log("crash", task, text, where)
    note(task, text, where, pile.boot_no)
    if pile.rec is not None:
        try:
            pile.rec.j.set_meta("last_crash", {"task": task, "error": text, "boot": pile.boot_no})
        except Exception as e2:  # noqa: BLE001 - the journal may be what failed
            log("crash", "journal", type(e2).__name__)
    await go_safe(pile, task)


async def go_safe(pile, task):
    # STOP severity (interlock row task_crash): the EV current ramps down and
    # the contactor opens once it is low; the fuel is left to the next boot,
    # which starts `off` and shuts it. With the bus task alive the
    # supervisor does it in its own steps; without it (the bus task is what
    # died) the charger is driven from here, read by read.
    sup = pile.sup
    sup.il.raise_ext("task_crash", True)
    clock = pile.clock
    t0 = clock.ms()
    if pile.maintenance:
        return  # nothing is controlled: the devices hold their safe defaults
    if task != "bus":
        # Counted from when the supervisor first wants it open, not from the
        # crash: a ramp-down spans cycles, and the open command goes out on
        # the charger's next write, inside the next whole poll cycle.
        opened_at = -1
        while ticks_diff(clock.ms(), t0) < _SAFE_MS:
            if not sup.contactor.closed_cmd:
                if opened_at < 0:
                    opened_at = pile.cycles
                elif pile.cycles > opened_at + 1:
                    return
            await clock.sleep_ms(20)
        log("crash", "safe state not confirmed in", _SAFE_MS, "ms")
        return
    ch = pile.devices[0]  # the charger (devices.build puts it first)
    while True:
        for b in ch.blocks:
            await pile._read(ch, b)
        now = clock.ms()
        done = sup.fail_safe(now, ticks_diff(now, t0) > _SAFE_MS)
        try:
            await pile.master.write(ch.unit, ch.cmd_base, ch.want, len(ch.want))
        except Exception as e2:  # noqa: BLE001 - ModbusError; keep trying until the deadline
            log("crash", "charger write", type(e2).__name__)
        if done or ticks_diff(now, t0) > _SAFE_MS + 1000:
            log("crash", "charger", "open" if done else "not confirmed")
            return
        await clock.sleep_ms(50)
