"""`h2pile gateway CONFIG`: connect the fleet's piles to a CSMS over OCPP.

One process for the whole fleet: it reads the piles' MQTT topics (a
`gateway` broker account, h2pile broker-config --gateway) and keeps one
OCPP-J websocket per pile to the CSMS (charge point id = pile id). The
CSMS's requests become signed commands (keys derived from the fleet
secret); transaction events wait in a SQLite queue while the CSMS is
unreachable. CONFIG is a TOML file: see host_tools/gateway/config.py and
docs/operators.md. Runs until SIGTERM or Ctrl-C; exit 2 for a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from host_tools.exitcodes import OK, USAGE, CliError
from host_tools.gateway.agent import Agent
from host_tools.gateway.bridge import Bridge
from host_tools.gateway.config import Config, GatewayConfigError, load
from host_tools.gateway.link import Link, adapter_for
from host_tools.gateway.mqtt import MqttSide
from host_tools.gateway.store import Store

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(cfg.queue_path, cfg.max_per_pile)
        self.agents = {p: Agent(p, self.store, cfg.meter_interval_s) for p in cfg.piles}
        self.unknown: set[str] = set()
        self.mqtt = MqttSide(cfg.broker_host, cfg.broker_port, self.on_pile_message, cfg.mqtt_user,
                             cfg.mqtt_password, cfg.mqtt_tls_ca, cfg.client_id)
        self.bridge = Bridge(cfg.fleet_secret, self.mqtt.publish, self.online, cfg.cmd_timeout_s)
        adapter = adapter_for(cfg.ocpp)
        self.links = {p: Link(cfg, a, self.bridge, self.store, adapter) for p, a in self.agents.items()}

    def online(self, pile: str) -> bool:
        a = self.agents.get(pile)
        return bool(a and a.online)

    def on_pile_message(self, pile: str, name: str, d: dict[str, Any]) -> None:
        if name == "cmd/ack":
            self.bridge.on_ack(d)
            return
        a = self.agents.get(pile)
        if a is None:
            if pile not in self.unknown:
                self.unknown.add(pile)
                log.info("%s: not in the config's piles: its messages are ignored", pile)
            return
        a.on_message(name, d)

    async def run(self, stop: asyncio.Event) -> None:
        self.mqtt.start()
        tasks = [asyncio.create_task(link.run(), name="link " + p) for p, link in self.links.items()]
        log.warning("up: %d pile(s), OCPP %s, CSMS %s (security profile %d), queue %s (%d event(s) waiting)",
                    len(self.links), self.cfg.ocpp, self.cfg.csms_url, self.cfg.security_profile,
                    self.cfg.queue_path, sum(self.store.queued(p) for p in self.links))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.mqtt.stop()
            self.store.close()
            log.warning("stopped")


async def serve(cfg: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Gateway(cfg).run(stop)


def handler(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else
                        logging.WARNING, format="gateway: %(message)s", stream=sys.stderr)
    if args.verbose < 2:
        for noisy in ("ocpp", "websockets"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load(args.config)
    except GatewayConfigError as e:
        raise CliError(str(e), USAGE)
    if args.check:
        print("%s: ok: %d pile(s), OCPP %s, %s" % (args.config, len(cfg.piles), cfg.ocpp, cfg.csms_url))
        return OK
    asyncio.run(serve(cfg))
    return OK


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gateway", help="connect the fleet's piles to a CSMS over OCPP (2.0.1 or 1.6J)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the gateway's TOML file")
    p.add_argument("--check", action="store_true", help="check the config and exit")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log transactions and commands (-vv: every OCPP frame)")
    p.set_defaults(func=handler)
    return p


def main(argv: list[str] | None = None) -> int:
    from host_tools.cli import main as cli_main

    return cli_main(["gateway"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
