"""What `make sim` (`h2pile live`) shows under its live view: where its
private MQTT broker listens and exact command lines that work against the
simulated pile from another terminal, with the key source they need.

The simulated pile's fleet secret is PileRun's (a throwaway for the
simulation), so the `cmd` line passes it in $H2PILE_FLEET_SECRET.
"""

from __future__ import annotations

from host_tools.secret_args import FLEET_SECRET

H2PILE = ".venv/bin/h2pile"  # as the Makefile installs it, from the repository's top


def cmd_line(pile_id: str, broker_port: int, fleet_secret: str) -> str:
    """A signed command the simulated pile accepts at any time (it sets the
    operator's current limit), with the broker and the key it needs."""
    return (f"{FLEET_SECRET.env}={fleet_secret} {H2PILE} cmd {pile_id} set_limit amps=16 "
            f"--broker 127.0.0.1:{broker_port}")


def text(pile_id: str, broker_port: int, fleet_secret: str, control_port: int) -> str:
    """The lines to show, indented like the live view."""
    return "\n".join([
        f"  MQTT broker  127.0.0.1:{broker_port} (anonymous, this machine only); "
        f"{H2PILE} monitor --broker 127.0.0.1:{broker_port}",
        "  send a command from another terminal:",
        f"    {cmd_line(pile_id, broker_port, fleet_secret)}",
        f"  inject a fault:  {H2PILE} sim inject h2_leak lel=30 --control 127.0.0.1:{control_port}",
    ])
