"""Live control of a running simulator: JSON lines over TCP on loopback.

Requests: {"op": "status"}, {"op": "inject", "event": NAME, "args": {...}}
(optionally "at": simulated seconds, to apply it then rather than now;
"tag": any string copied into the log record), {"op": "events"} (the list
of events with their arguments). Every reply is
one JSON line with "ok" and either the result or "error" saying what was
wrong. Used by ``h2pile sim inject``, the live view and the tests.
"""

from __future__ import annotations

import asyncio
import json

from sim import faults

MAX_LINE = 64 * 1024


async def serve(sim, host: str = "127.0.0.1", port: int = 5021, on_event=None):
    async def handle(reader, writer):
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    writer.write(b'{"ok": false, "error": "request too long"}\n')
                    break
                writer.write((json.dumps(handle_request(sim, line, on_event)) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_LINE)


def handle_request(sim, line: bytes, on_event=None) -> dict:
    try:
        req = json.loads(line)
    except ValueError as e:
        return {"ok": False, "error": f"not JSON: {e}"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    op = req.get("op")
    if op == "status":
        sim.advance()
        return {"ok": True, "status": sim.plant.summary(), "requests": sim.requests,
                "silent": sorted(sim.silent), "speed": sim.speed}
    if op == "events":
        return {"ok": True, "events": {k: {"doc": d, "args": {a: list(v) for a, v in spec.items()}, "device": dev}
                                       for k, (d, spec, dev) in faults.EVENTS.items()}}
    if op == "inject":
        name = req.get("event")
        args = req.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        try:
            faults.check(name, args)
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        at = req.get("at")
        tag = req.get("tag")

        def fire():
            faults.apply(sim, name, args)
            rec = {"kind": "inject", "t": round(sim.now(), 4), "event": name, "args": args}
            if tag is not None:
                rec["tag"] = str(tag)
            sim.log(rec)
            if on_event:
                on_event(rec)
            return rec

        if at is not None:
            if not isinstance(at, (int, float)) or at != at:
                return {"ok": False, "error": "at must be a number of simulated seconds"}
            delay = (float(at) - sim.now()) / sim.speed
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, fire)
                return {"ok": True, "scheduled": float(at)}
        return {"ok": True, "t": fire()["t"]}
    return {"ok": False, "error": f"unknown op {op!r} (status, inject, events)"}


async def request(host: str, port: int, req: dict, timeout: float = 5.0) -> dict:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write((json.dumps(req) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return json.loads(line)
    finally:
        writer.close()
