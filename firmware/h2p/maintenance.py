# The pile in maintenance (h2p.crash says when): no control loop, the
# contactor and fuel left in their devices' safe defaults, the REPL, MQTT
# and the watchdog alive. Apart from h2p.crash so that a pile in
# maintenance does not hold the crash path's code in its heap.
from h2p.compat import asyncio
from h2p.log import log


async def maintenance_task(pile):
    # No control loop: open the journal (MQTT needs the boot number and the
    # bills), feed the watchdog while the event loop runs, and restart once
    # a `reset` command cleared the crash record.
    try:
        pile._open_journal()
    except Exception as e:  # noqa: BLE001 - it may be what crashed
        log("maintenance", "journal", type(e).__name__, e)
    wdt = pile.board.wdt
    while not pile.maintenance.restart:
        wdt.feed()
        await asyncio.sleep_ms(200)
    await asyncio.sleep_ms(1000)  # the ack goes out first (and the command's code is dropped)
    from h2p.crash import clear

    clear()
    pile.board.reset("maintenance_reset")


class Maintenance:
    # The command target while in maintenance: `reset` clears the crash
    # record and restarts the pile normally, once the ack is out.
    def __init__(self):
        self.restart = False

    def reset(self):
        self.restart = True  # maintenance_task clears the record and restarts
        return True, "clearing the crash record and restarting"

    def wake(self):
        return False, "pile is in maintenance (reset first)"

    def start(self, auth, limit_a, cap_kwh=None, cap_min=None):
        return self.wake()
