"""Run the simulator: every device of the pile (charger, stack, reformer,
battery, meter, sensors) on one Modbus RTU line, served as RTU over TCP (or
on a serial device), with a control port for `h2pile sim inject | status`.

    python -m sim --port 5020 --speed 50        (or: h2pile sim serve ...)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from sim import params as P


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The simulator's options (also `h2pile sim serve`'s)."""
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    ap.add_argument("--port", type=int, default=5020, help="RTU-over-TCP port (0: any free one, said on the first line)")
    ap.add_argument("--serial", default="", help="serve a serial device instead of TCP")
    ap.add_argument("--control-port", type=int, default=5021, help="live control port (h2pile sim inject)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    ap.add_argument("--baud", type=int, default=115200,
                    help="line speed the wire timing is simulated at (default %(default)s)")
    ap.add_argument("--turnaround-ms", type=float, default=2.0, help="device turnaround per reply")
    ap.add_argument("--no-wire-timing", action="store_true",
                    help="answer at once instead of at the baud rate's pace")
    ap.add_argument("--meter", default="sdm630", help="meter profile (default %(default)s)")
    ap.add_argument("--log", default="", help="JSON-lines log of writes and injected events")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter of sim/params.py (repeatable)")
    ap.add_argument("--sample-s", type=float, default=0.0,
                    help="log the plant's state every this many simulated seconds (0: never)")
    ap.add_argument("--params-doc", action="store_true", help="print docs/sim.md (all parameters) and exit")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return ap


async def amain(args: argparse.Namespace) -> int:
    from sim import control
    from sim.server import PileSim, jsonl_writer

    if args.speed <= 0:
        print("sim: --speed must be > 0", file=sys.stderr)
        return 2
    try:
        overrides = dict(P.parse_override(x) for x in args.param)
    except ValueError as e:
        print(f"sim: {e}", file=sys.stderr)
        return 2
    log = jsonl_writer(args.log) if args.log else None
    sim = PileSim(P.merged(overrides), speed=args.speed, baud=args.baud,
                  turnaround_ms=args.turnaround_ms, meter_profile=args.meter,
                  wire_timing=not args.no_wire_timing, log=log)
    if args.serial:
        await sim.serve_serial(args.serial)
    else:
        args.port = await sim.serve_tcp(args.host, args.port)
    ctl = await control.serve(sim, args.host, args.control_port)
    ctl_port = ctl.sockets[0].getsockname()[1]  # (port 0: the system's pick, said here)
    print(f"sim: serving on {args.serial or f'{args.host}:{args.port}'} (control {ctl_port}), "
          f"speed {args.speed}, epoch_ns {sim.epoch_ns}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    phys = asyncio.create_task(sim.physics_task(sample_s=args.sample_s))
    await stop.wait()
    phys.cancel()
    ctl.close()
    await sim.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit 2 for a bad option, 3 when the port or
    serial device cannot be opened (host_tools/exitcodes.py)."""
    if args.params_doc:
        sys.stdout.write(P.markdown())
        return 0
    from sim.server import RegisterMismatch  # imports pymodbus: not for --help

    try:
        return asyncio.run(amain(args))
    except RegisterMismatch as e:  # the simulator does not match the firmware's map
        print(f"sim: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the port or the serial device
        print(f"sim: {e}", file=sys.stderr)
        return 3


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
