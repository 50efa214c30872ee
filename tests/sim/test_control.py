"""Live control of a running simulator: `h2pile sim inject` / `status`
against `python -m sim` on its control port."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_sim(tmp_path_factory):
    port, ctl = free_port(), free_port()
    log = tmp_path_factory.mktemp("simctl") / "sim.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "sim", "--port", str(port), "--control-port", str(ctl),
                          "--speed", "10", "--log", str(log), "--sample-s", "1", "--param", "bed_c0=265"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    assert "serving" in line, line
    yield f"127.0.0.1:{ctl}", log
    p.terminate()
    p.wait(5)


def h2pile(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def status(ctl):
    r = h2pile("sim", "status", "--control", ctl)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_inject_changes_the_running_plant(running_sim):
    ctl, log = running_sim
    r = h2pile("sim", "inject", "ev_plug", "soc=30", "target=80", "--control", ctl)
    assert r.returncode == 0, r.stderr
    assert "injected ev_plug" in r.stdout
    st = status(ctl)["status"]
    assert st["ev_present"] and st["ev_soc"] == 30 and st["pilot"] == "C"
    r = h2pile("sim", "inject", "silent", "device=meter", "--control", ctl)
    assert r.returncode == 0, r.stderr
    assert status(ctl)["silent"] == ["meter"]
    r = h2pile("sim", "inject", "clear", "fault=silent", "device=meter", "--control", ctl)
    assert r.returncode == 0, r.stderr
    assert status(ctl)["silent"] == []
    r = h2pile("sim", "inject", "ev_unplug", "--control", ctl)
    assert r.returncode == 0
    assert status(ctl)["status"]["pilot"] == "A"
    # Every injection is in the simulator's log with its simulated time.
    time.sleep(0.2)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    inj = [r for r in recs if r["kind"] == "inject"]
    assert [r["event"] for r in inj] == ["ev_plug", "silent", "clear", "ev_unplug"]
    assert all(isinstance(r["t"], float) for r in inj)
    assert any(r["kind"] == "sample" for r in recs)


def test_scheduled_inject(running_sim):
    ctl, _log = running_sim
    now = status(ctl)["status"]["t"]
    r = h2pile("sim", "inject", "tilt", "--at", str(now + 20), "--control", ctl)  # 2 s wall at speed 10
    assert r.returncode == 0 and "scheduled" in r.stdout, r.stdout + r.stderr

    def tilts():
        lines = _log.read_text().split("\n")[:-1]  # whole lines: the simulator is writing
        recs = [json.loads(x) for x in lines]
        return [r for r in recs if r["kind"] == "inject" and r["event"] == "tilt"]

    # The injection in the simulator's log (an event, not a sleep: a loaded
    # machine delays it), with a deadline far past its 2 s.
    end = time.monotonic() + 60
    while not tilts() and time.monotonic() < end:
        time.sleep(0.1)
    r = h2pile("sim", "inject", "clear", "fault=tilt", "--control", ctl)
    assert r.returncode == 0
    tilt = tilts()
    assert tilt and tilt[0]["t"] >= now + 20 - 0.05


@pytest.mark.parametrize("args, why", [
    (["explode"], "unknown event 'explode'"),
    (["silent"], "needs device="),
    (["silent", "device=toaster"], "needs device="),
    (["h2_leak", "lel=300"], "outside"),
    (["h2_leak", "lel=lots"], "not a number"),
    (["ev_plug", "colour=red"], "no argument 'colour'"),
    (["ev_plug", "soc"], "must be k=v"),
    (["clear", "fault=ev_plug"], "not a fault that can be cleared"),
])
def test_bad_inject_is_refused_with_the_reason(running_sim, args, why):
    ctl, _log = running_sim
    r = h2pile("sim", "inject", *args, "--control", ctl)
    assert r.returncode == 2
    assert why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_no_simulator_listening():
    r = h2pile("sim", "inject", "ev_unplug", "--control", f"127.0.0.1:{free_port()}")
    assert r.returncode == 3  # unreachable (host_tools/exitcodes.py)
    assert "no simulator on" in r.stderr
    r = h2pile("sim", "inject", "ev_unplug", "--control", "nowhere")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_control_protocol_errors(running_sim):
    from sim import control

    ctl, _log = running_sim
    host, port = ctl.split(":")

    async def main():
        out = []
        for req in ({"op": "dance"}, {"op": "inject", "event": "tilt", "args": [1]},
                    {"op": "inject", "event": "tilt", "at": "soon"}, {"op": "events"}):
            out.append(await control.request(host, int(port), req))
        r, w = await asyncio.open_connection(host, int(port))
        w.write(b"not json\n")
        await w.drain()
        out.append(json.loads(await r.readline()))
        w.close()
        return out

    bad_op, bad_args, bad_at, events, not_json = asyncio.run(main())
    assert not bad_op["ok"] and "unknown op" in bad_op["error"]
    assert not bad_args["ok"] and "args must be an object" in bad_args["error"]
    assert not bad_at["ok"] and "at must be" in bad_at["error"]
    assert events["ok"] and "h2_leak" in events["events"]
    assert not not_json["ok"] and "not JSON" in not_json["error"]
