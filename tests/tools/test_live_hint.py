"""`make sim` shows where its broker listens and an exact `h2pile cmd` line
(host_tools/live_hint.py): that line, run as printed, reaches the simulated
pile and is accepted."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys

from host_tools import ROOT, live_hint
from host_tools.pilerun import PileRun


def test_hint_names_the_broker_and_a_key_source():
    text = live_hint.text("sim-1", 41883, "sim-fleet-secret", 5021)
    assert "MQTT broker  127.0.0.1:41883" in text
    line = live_hint.cmd_line("sim-1", 41883, "sim-fleet-secret")
    assert line in text
    assert line.startswith("H2PILE_FLEET_SECRET=sim-fleet-secret .venv/bin/h2pile cmd sim-1 ")
    assert line.endswith("--broker 127.0.0.1:41883")
    assert "--control 127.0.0.1:5021" in text


def _run_as_printed(line: str) -> subprocess.CompletedProcess:
    """Run the printed line as a shell would: VAR=value words into the
    environment, then the command (.venv/bin/h2pile as this checkout's CLI)."""
    words = shlex.split(line)
    env = dict(os.environ)
    while "=" in words[0] and not words[0].startswith("-"):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    assert words[0] == ".venv/bin/h2pile", words
    env.pop("H2PILE_CMD_KEY", None)
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *words[1:]], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_printed_cmd_line_works_against_the_simulated_pile(fw_build):
    async def scenario() -> tuple[str, list[subprocess.CompletedProcess]]:
        run = PileRun(speed=20, mqtt=True, firmware_build=fw_build)
        await run.start()
        tries = []
        try:
            text = live_hint.text("sim-1", run.mqtt_port, run.fleet_secret, run.ctl_port)
            line = text.splitlines()[2].strip()
            assert line == live_hint.cmd_line("sim-1", run.mqtt_port, run.fleet_secret)
            # The pile joins the broker a few seconds after boot.
            for _ in range(6):
                r = await asyncio.to_thread(_run_as_printed, line)
                tries.append(r)
                if r.returncode != 3:
                    break
            return line, tries
        finally:
            await run.stop()

    line, tries = asyncio.run(scenario())
    last = tries[-1]
    assert last.returncode == 0, (line, [(t.returncode, t.stderr) for t in tries])
    assert '"ok": true' in last.stdout and '"op": "set_limit"' in last.stdout, last.stdout
