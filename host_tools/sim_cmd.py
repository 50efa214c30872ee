"""`h2pile sim`: run scenarios headless, inject events into a running
simulator, or serve the simulator.

    h2pile sim run SCENARIO [--speed N] [--log FILE] [--plot FILE]
    h2pile sim check SCENARIO...            validate only
    h2pile sim inject EVENT [k=v ...] [--control HOST:PORT]
    h2pile sim events                       what can be injected
    h2pile sim serve [--port N --speed N ...]   the simulator alone
    h2pile sim docs [--check]               regenerate docs/sim.md, docs/scenarios.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from host_tools import ROOT
from host_tools.exitcodes import FAILED, OK, UNREACHABLE, USAGE, CliError

DOCS_SIM = os.path.join(ROOT, "docs", "sim.md")
DOCS_SCENARIOS = os.path.join(ROOT, "docs", "scenarios.md")
GEN_BEGIN = "<!-- BEGIN GENERATED: host_tools.scenario.markdown.events_markdown() -->"
GEN_END = "<!-- END GENERATED -->"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ap = subparsers.add_parser("sim", help="simulator: run scenarios, inject events, serve",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    ap.set_defaults(func=lambda a: (ap.print_help(sys.stderr), USAGE)[1])

    p = sub.add_parser("run", help="run a scenario headless; exit 0 pass, 1 fail, 2 bad scenario")
    p.add_argument("scenario", help="scenario file (TOML, docs/scenarios.md), "
                                    "e.g. tests/scenarios/ev_stop_latency.toml")
    p.add_argument("--speed", type=float, default=None, help="simulated seconds per wall second "
                                                              "(default: the scenario's)")
    p.add_argument("--log", default=None, help="JSON-lines log (default: SCENARIO-NAME.jsonl here)")
    p.add_argument("--plot", default=None, help="session report PNG (default: beside the log)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("-q", "--quiet", action="store_true", help="only the verdict lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate scenario files without running them")
    p.add_argument("scenario", nargs="+", help="scenario file(s) (TOML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inject", help="inject an event into a running simulator")
    p.add_argument("event", help="event or fault name (h2pile sim events lists them)")
    p.add_argument("args", nargs="*", metavar="k=v", help="event arguments, e.g. lel=30 or device=meter")
    p.add_argument("--control", default="127.0.0.1:5021", metavar="HOST:PORT",
                   help="the simulator's control port (default %(default)s, as make sim starts it)")
    p.add_argument("--at", type=float, default=None, help="at this simulated time (s) rather than now")
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("status", help="print the running simulator's plant state (JSON)")
    p.add_argument("--control", default="127.0.0.1:5021", metavar="HOST:PORT",
                   help="the simulator's control port (default %(default)s)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("events", help="list the events and faults that can be injected")
    p.set_defaults(func=cmd_events)

    from sim import __main__ as sim_main

    p = sub.add_parser("serve", help="run the simulator alone (python -m sim): the pile's devices on "
                                     "RTU over TCP",
                       description=sim_main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sim_main.add_arguments(p)
    p.set_defaults(func=sim_main.run)

    p = sub.add_parser("docs", help="regenerate docs/sim.md and the generated part of docs/scenarios.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed docs are out of date")
    p.set_defaults(func=cmd_docs)


def _err(args: argparse.Namespace, msg: str) -> None:
    print(f"{getattr(args, '_prog', 'h2pile sim')}: error: {msg}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from host_tools.scenario.loader import load
    from host_tools.scenario.runner import run

    sc = load(args.scenario)  # ScenarioError: exit 2 with file:line: reason
    if args.speed is not None and not 0 < args.speed <= 1000:
        raise CliError(f"--speed {args.speed:g}: must be in (0, 1000]", USAGE)
    log = args.log or (os.path.splitext(os.path.basename(args.scenario))[0] + ".jsonl")
    plot = None if args.no_plot else (args.plot or os.path.splitext(log)[0] + ".png")
    echo = None if args.quiet else print
    if echo:
        echo(f"scenario {sc.name}: {sc.description}".rstrip(": "))
    try:
        res = asyncio.run(run(sc, speed=args.speed, log_path=log, plot_path=plot, echo=echo))
    except (RuntimeError, OSError) as e:
        raise CliError(f"{args.scenario}: run failed: {e}", UNREACHABLE)
    for ok, text in res.checks:
        print(("PASS " if ok else "FAIL ") + text)
    print(f"{'PASSED' if res.passed else 'FAILED'} {sc.name} in {res.wall_s:.1f} s wall, "
          f"{res.final.get('t', 0):.1f} s simulated; log {log}" + (f", plot {plot}" if plot else ""))
    return OK if res.passed else FAILED


def cmd_check(args: argparse.Namespace) -> int:
    from host_tools.scenario.loader import load
    from host_tools.scenario.model import ScenarioError

    rc = OK
    for path in args.scenario:
        try:
            sc = load(path)
            print(f"ok {path}: {sc.name}, {len(sc.events)} events, {len(sc.expect) + len(sc.latency)} checks")
        except ScenarioError as e:
            _err(args, str(e))
            rc = USAGE
    return rc


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--control {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5021", USAGE)
    return host or "127.0.0.1", int(port)


def _control(host: str, port: int, req: dict) -> dict:
    from sim import control

    try:
        return asyncio.run(control.request(host, port, req))
    except (OSError, asyncio.TimeoutError) as e:
        raise CliError(f"no simulator on {host}:{port} ({e.__class__.__name__}: {e}); start it with "
                       f"`make sim` or `h2pile sim serve`", UNREACHABLE)


def cmd_inject(args: argparse.Namespace) -> int:
    from sim import faults

    kv = {}
    for a in args.args:
        if "=" not in a:
            raise CliError(f"argument {a!r} must be k=v", USAGE)
        k, v = a.split("=", 1)
        kv[k.strip()] = v.strip()
    try:
        checked = faults.check(args.event, kv)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    host, port = _hostport(args.control)
    req_args = {k: (v if k in ("device", "fault") else checked[k]) for k, v in kv.items()}
    req = {"op": "inject", "event": args.event, "args": req_args}
    if args.at is not None:
        req["at"] = args.at
    r = _control(host, port, req)
    if not r.get("ok"):
        raise CliError(r.get("error", "refused"), USAGE)
    when = f"scheduled at t={r['scheduled']:.3f}s" if "scheduled" in r else f"at t={r.get('t', 0):.3f}s"
    print(f"injected {args.event} {req_args or ''} {when}".replace("  ", " "))
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    host, port = _hostport(args.control)
    print(json.dumps(_control(host, port, {"op": "status"}), indent=1))
    return OK


def cmd_events(args: argparse.Namespace) -> int:
    from sim import faults

    for name, (doc, spec, dev) in faults.EVENTS.items():
        a = (["device=NAME"] if dev else []) + [f"{k}={d:g}" for k, (d, _lo, _hi) in spec.items()]
        if name == "clear":
            a = ["fault=NAME|all", "[device=NAME]"]
        print(f"{name:22s} {' '.join(a):32s} {doc}")
    return OK


def scenarios_doc(current: str) -> str:
    """docs/scenarios.md with its generated section replaced."""
    from host_tools.scenario.markdown import events_markdown

    head, sep, rest = current.partition(GEN_BEGIN)
    _old, sep2, tail = rest.partition(GEN_END)
    if not sep or not sep2:
        raise ValueError(f"docs/scenarios.md lacks the {GEN_BEGIN} ... {GEN_END} markers")
    return head + GEN_BEGIN + "\n" + events_markdown() + GEN_END + tail


def cmd_docs(args: argparse.Namespace) -> int:
    from sim import params as P

    want_sim = P.markdown()
    try:
        with open(DOCS_SCENARIOS) as f:
            cur_sc = f.read()
        want_sc = scenarios_doc(cur_sc)
    except ValueError as e:
        raise CliError(str(e), USAGE)
    try:
        with open(DOCS_SIM) as f:
            cur_sim = f.read()
    except OSError:
        cur_sim = ""
    if args.check:
        stale = [p for p, cur, want in ((DOCS_SIM, cur_sim, want_sim), (DOCS_SCENARIOS, cur_sc, want_sc))
                 if cur != want]
        for p in stale:
            _err(args, f"{p} is out of date: run `h2pile sim docs`")
        return FAILED if stale else OK
    with open(DOCS_SIM, "w") as f:
        f.write(want_sim)
    with open(DOCS_SCENARIOS, "w") as f:
        f.write(want_sc)
    print(f"wrote {DOCS_SIM} and {DOCS_SCENARIOS}")
    return OK
