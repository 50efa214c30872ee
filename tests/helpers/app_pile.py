"""The real h2p.app.Pile on CPython against a fake line and clock: its Modbus master, poll
schedule and bus task, without a simulator (tests/firmware/test_app_chores.py,
test_app_idle.py)."""

import asyncio
import time
from types import SimpleNamespace

from h2p import app, compat
from h2p import config as C


def fake_pile(tmp_path, monkeypatch, line, clock, bus=None):
    """A Pile (pile id t1, journal under tmp_path) on a board made of `line` and `clock`."""
    monkeypatch.setattr(app, "forget", lambda *names: None)  # keep h2p.registers for the other tests
    monkeypatch.setattr(asyncio, "sleep_ms", compat.sleep_ms, raising=False)  # MicroPython's, as h2p.compat has it

    async def opened():
        pass

    board = SimpleNamespace(clock=clock, line=line, reset_cause="power_on", fs_sync=True, unix_time=lambda: None,
                            console=True, name="test", estop_pressed=lambda: False, open=opened)
    cfg = {"pile_id": "t1", "data_dir": str(tmp_path / "data")}
    if bus is not None:
        cfg["bus"] = bus
    return app.Pile(board, C.from_dict(cfg))


def run_until(coros, done, poll_s=0.0, timeout=60):
    """Run `coros` as tasks until done() is true (checked every poll_s), then cancel them."""

    async def main():
        tasks = [asyncio.create_task(c) for c in coros]
        end = time.monotonic() + timeout
        try:
            # Checked here, between the tasks' steps (not in a task of its own,
            # which would let them run a step further before they are cancelled).
            while not done():
                if time.monotonic() > end:
                    raise TimeoutError("not done in %s s" % timeout)
                await asyncio.sleep(poll_s)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
