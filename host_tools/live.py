"""`h2pile live` (`make sim`): the whole pile, live, against the simulator.

Starts a private mosquitto, the simulator and the firmware on the MicroPython
unix port (compiled, heap-limited), then watches the pile the way an
operator does: subscribed to its MQTT topics. An EV plugs in once the pile
is ready; when it is full (or stops asking) it unplugs, the pile refills its
buffer battery to target (the energy manager, docs/energy.md), then cools
down and switches off. Ctrl-C stops everything and leaves no process behind.
Inject faults from another terminal: `h2pile sim inject h2_leak lel=30`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from h2p import topics
from host_tools.pilerun import HEAP, PileRun, rig_data_age_ms
from host_tools.topic_filter import topic_filter


class View:
    def __init__(self, pile_id: str) -> None:
        self.pile_id = pile_id
        self.tele: dict = {}
        self.state: dict = {}
        self.online = None
        self.events: list[str] = []
        self.acks: list[str] = []

    def on_message(self, topic: str, payload: bytes | bytearray) -> None:
        parsed = topics.parse(topic)
        if parsed is None:
            return
        try:
            d = json.loads(payload)
        except ValueError:
            return
        name = parsed[1]
        if name == "tele":
            self.tele = d
        elif name == "state":
            self.state = d
        elif name == "status":
            self.online = d.get("online")
        elif name == "evt":
            self.events.append(f"{d.get('kind')} {d.get('a')} {d.get('b')}")
            del self.events[:-6]
        elif name == "bill":
            self.events.append(f"bill {d.get('id')} {d.get('energy_wh')} Wh {d.get('reason')}")
            del self.events[:-6]
        elif name == "bill/ack":
            self.events.append(f"ledger stored {d.get('id')}")
            del self.events[:-6]

    def render(self, sim_t: float, plant: dict) -> str:
        t, s = self.tele, self.state

        def f(k: str, fmt: str = "{:.1f}") -> str:
            v = t.get(k)
            return "-" if v is None else fmt.format(v)

        h, m = divmod(int(sim_t) // 60, 60)
        lines = [
            f"h2pile {self.pile_id}   simulated {h:02d}:{m:02d}:{int(sim_t) % 60:02d}   "
            f"{'online' if self.online else 'offline'} (MQTT, as an operator sees it)",
            "",
            f"  state        {s.get('state', '-'):<12} "
            f"faults: {', '.join(s.get('faults') or []) or 'none'}",
            f"  EV current   {f('limit_a')} A limit, set by {s.get('limit_by', '-')}; "
            f"stack by {s.get('stack_limit_by', '-')}",
            f"  reformer     {f('ref_t')} degC      stack {f('fc_t')} degC",
            f"  power        stack {f('fc_kw', '{:.2f}')} kW   EV {f('p_kw', '{:.1f}')} kW   "
            f"battery {f('bat_kw', '{:.1f}')} kW",
            f"  SOC          battery {f('bat_soc')} %   EV {f('ev_soc')} %",
            f"  premix       {f('premix_l')} L left    H2 {f('h2_lel')} % LEL",
            f"  delivered    {f('e_kwh', '{:.2f}')} kWh this session   "
            f"can still deliver {f('deliver_kwh')} kWh",
            "",
            f"  simulator    EV received {plant.get('ev_received_wh', 0) / 1000:.2f} kWh, "
            f"meter {plant.get('meter_kwh', 0):.2f} kWh, "
            f"contactor {'closed' if plant.get('contactor') else 'open'}",
            "",
            "  events:",
        ]
        lines += ["    " + e for e in self.events[-6:]] or ["    -"]
        lines += ["", "  Ctrl-C stops everything.  "
                  "Another terminal: h2pile sim inject ev_unplug | h2_leak lel=30 | ..."]
        return "\n".join(lines)


async def live(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    run = PileRun(speed=args.speed, heap=args.heap or HEAP, mqtt=True, port=args.port, ctl_port=args.control_port,
                  config={"pile_id": args.pile_id, "idle_shutdown_s": args.idle_s,
                          "bus": {"data_age_ms": rig_data_age_ms(args.speed)}})
    view = View(args.pile_id)
    await run.start()
    # How to reach the simulated pile (broker, a working `h2pile cmd` line): host_tools/live_hint.py.
    from host_tools import live_hint

    hint = live_hint.text(args.pile_id, run.mqtt_port, run.fleet_secret, run.ctl_port)
    print(hint, flush=True)
    # The back office too: bills are stored and acknowledged, as in a fleet.
    import os
    import tempfile

    db = args.ledger_db or os.path.join(tempfile.mkdtemp(prefix="h2pile-ledger-"), "ledger.db")
    ledger = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "host_tools.cli", "ledger", "ingest", "--broker", f"127.0.0.1:{run.mqtt_port}",
        "--db", "sqlite:///" + db, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="h2pile-live")
    client.on_message = lambda c, u, msg: view.on_message(msg.topic, msg.payload)
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic_filter(args.pile_id), 1)
    client.connect("127.0.0.1", run.mqtt_port)
    client.loop_start()
    tty = sys.stdout.isatty() and not args.plain
    plugged = unplugged = False
    last_print = 0.0
    try:
        while True:
            await asyncio.sleep(0.5)
            if run.fw.returncode is not None:
                print("\n".join(run.lines[-20:]))
                print(f"firmware exited with {run.fw.returncode}")
                return 1
            plant = await run.plant()
            st = view.state.get("state") or run.state
            if st == "ready" and not plugged:
                await run.inject("ev_plug", soc=args.ev_soc, kwh=args.ev_kwh, target=args.ev_target)
                plugged = True
            if plugged and not unplugged and plant.get("ev_present") and not plant.get("ev_asking", True) \
                    and st in ("ready", "stopping"):
                await run.inject("ev_unplug")
                unplugged = True
            screen = view.render(plant.get("t", 0), plant) + "\n\n" + hint
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
                sys.stdout.flush()
            elif time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(screen + "\n", flush=True)
            if unplugged and st == "off":
                print(screen)
                print(f"\nsession complete: the pile is off. Ledger: {db}"
                      f" (h2pile ledger report --db sqlite:///{db})")
                return 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    finally:
        client.loop_stop()
        if ledger.returncode is None:
            ledger.terminate()
            await ledger.wait()
        await run.stop()
        if args.console_log:
            with open(args.console_log, "w") as f:
                f.write("\n".join(run.lines) + "\n")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="the whole pile live against the simulator (make sim)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    p.add_argument("--heap", default=None,
                   help="MicroPython heap (-X heapsize); default: the unix board's budget, boards/unix_sim.json "
                        "heap_kb (docs/memory.md)")
    p.add_argument("--pile-id", default="sim-1", help="the simulated pile's id (default %(default)s)")
    p.add_argument("--port", type=int, default=5020, help="simulator RTU-over-TCP port")
    p.add_argument("--control-port", type=int, default=5021,
                   help="simulator control port (h2pile sim inject)")
    p.add_argument("--ev-soc", type=float, default=20.0, help="the EV's state of charge at plug-in, %% (default %(default)s)")
    p.add_argument("--ev-kwh", type=float, default=60.0, help="the EV's battery, kWh (default %(default)s)")
    p.add_argument("--ev-target", type=float, default=60.0, help="SOC at which the EV stops asking, %% (default %(default)s)")
    p.add_argument("--idle-s", type=int, default=120, help="pile shuts down after this long without an EV")
    p.add_argument("--plain", action="store_true", help="print snapshots instead of redrawing")
    p.add_argument("--console-log", default="",
                   help="write the firmware's console lines to this file at the end")
    p.add_argument("--ledger-db", default="", help="SQLite file for the ledger (default: a temp dir)")

    def run(a: argparse.Namespace) -> int:
        try:
            return asyncio.run(live(a))
        except KeyboardInterrupt:
            return 130

    p.set_defaults(func=run)
