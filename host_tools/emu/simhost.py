"""The pile simulator (sim.server.PileSim) in a thread of the harness, on the board's clock.

The simulator's physics must see the time the board sees. The emulated
RP2040 runs ~25x slower than its own clock while busy and races ahead while
it sleeps, so a fixed speed factor would always be wrong; instead `now()`
reads the emulator's clock (seconds since the plant was created). Wire
timing is the RS-485 bridge's job (in emulated time), so the server's own
wall-clock reply delay is off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sim import control
from sim import params as P
from sim.server import PileSim

_T = TypeVar("_T")


def _free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class BoardClockSim(PileSim):
    """PileSim whose simulated seconds are the emulated board's seconds."""

    def __init__(self, clock_s: Callable[[], float], **kw: Any) -> None:
        self._clock_s = clock_s
        self._origin = clock_s()
        super().__init__(**kw)

    def now(self) -> float:
        return self._clock_s() - self._origin

    def set_speed(self, speed: float) -> None:
        raise RuntimeError("the emulated board's clock drives this simulator; it has no speed")


class SimHost:
    """Runs a BoardClockSim: RTU over TCP on `port`, live control on `control_port`."""

    def __init__(self, clock_s: Callable[[], float], overrides: dict[str, float] | None = None,
                 meter: str = "sdm630", baud: int = 115200, turnaround_ms: float = 2.0) -> None:
        self.sim = BoardClockSim(clock_s, params=P.merged(overrides or {}), speed=1.0, baud=baud,
                                 turnaround_ms=turnaround_ms, meter_profile=meter, wire_timing=False)
        self.port = _free_port()
        self.control_port = _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None

    def start(self) -> SimHost:
        self._thread = threading.Thread(target=self._run, name="sim", daemon=True)
        self._thread.start()
        self._started.result(30)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001
            if not self._started.done():
                self._started.set_exception(e)
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.sim.serve_tcp("127.0.0.1", self.port)
        ctl = await control.serve(self.sim, "127.0.0.1", self.control_port)
        phys = asyncio.create_task(self.sim.physics_task())
        self._started.set_result(None)
        await self._stop.wait()
        phys.cancel()
        ctl.close()
        await self.sim.stop()

    def call(self, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Run `fn` on the simulator's thread (e.g. to read or inject into the plant)."""
        assert self._loop is not None

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """A live-control request, as `h2pile sim inject` sends it."""
        import json

        return self.call(lambda: control.handle_request(self.sim, json.dumps(req).encode()))

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
