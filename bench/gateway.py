"""Bench section `gateway`: one `h2pile gateway` process with 1,000
emulated piles against mosquitto and an in-process CSMS (OCPP 2.0.1).

The emulated piles (Fleet) speak the MQTT contract, not the firmware: they
share one MQTT connection, publish status/meta/state (retained), evt and
tele with the seq/boot stamps, and answer signed commands on cmd/ack
(checked with the pile's key, as h2p.sign does). Each pile runs one
transaction and sends one tele every 10 s (each forwarded as a
TransactionEvent Updated: meter_interval_s = 0), phases spread evenly.

Figures (no asserts): the gateway's memory per pile (RSS with every pile
connected and booted, minus its RSS before the piles appeared, / piles),
its CPU per message (its CPU time over the steady window / MQTT messages
it handled), and the MQTT -> OCPP latency, p50/p99: from the tele's
publish to the TransactionEvent's arrival at the CSMS (both clocks are
this process's).

    python -m bench.gateway [--piles 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from h2p import keys, sign, signer, topics
from host_tools import ROOT

SECRET = "bench-fleet-secret"
PASSWORD = "bench-password-0123456789"


class Fleet:
    """Emulated piles on one paho connection. answer(pile, cmd) -> (ok,
    reason, detail) decides each command's ack (default: ok)."""

    def __init__(self, host: str, port: int, piles: list[str], secret: str = SECRET, boot: int = 7) -> None:
        import paho.mqtt.client as mqtt

        self.piles = piles
        self.secret = secret
        self.boot = dict.fromkeys(piles, boot)
        self.seq = dict.fromkeys(piles, 0)
        self.cmds: list[tuple[float, str, dict[str, Any]]] = []
        self.answer = lambda pile, cmd: (True, "ok", "")
        self.lock = threading.Lock()
        self._keys = {p: sign.key_bytes(keys.cmd_key(secret, p)) for p in piles}
        self._replay: dict[str, list] = {p: [] for p in piles}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fleet-%d" % os.getpid())
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.on_message = self._msg
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        self.c.subscribe(topics.PREFIX + "+/cmd", 1)
        if not ready.wait(10):
            raise RuntimeError("emulated fleet: no SUBACK from the broker")

    def _msg(self, c: Any, ud: Any, m: Any) -> None:
        parsed = topics.parse(m.topic)
        if parsed is None or parsed[0] not in self._keys:
            return
        pile = parsed[0]
        cmd, reason = signer.verify_command(m.payload, self._keys[pile], time.time(), self._replay[pile], pile)
        d = json.loads(m.payload)
        with self.lock:
            self.cmds.append((time.monotonic(), pile, d))
        if cmd is None:
            ack = {"id": d.get("id"), "op": d.get("op"), "ok": False, "reason": reason}
        else:
            ok, why, detail = self.answer(pile, cmd)
            ack = {"id": cmd["id"], "op": cmd["op"], "ok": ok, "reason": why}
            if detail:
                ack["detail"] = detail
        self.pub(pile, "cmd/ack", ack)

    def pub(self, pile: str, name: str, d: dict[str, Any]) -> None:
        with self.lock:
            self.seq[pile] += 1
            d = dict(d, seq=self.seq[pile], boot=self.boot[pile])
        self.c.publish(topics.topic(pile, name), json.dumps(d), qos=topics.qos(name), retain=topics.retain(name))

    def online(self, pile: str, state: str = "ready") -> None:
        self.pub(pile, "status", {"online": True})
        self.pub(pile, "meta", {"fw": "bench", "board": "bench", "reset": "power_on", "caps": ["charge"]})
        self.pub(pile, "state", {"state": state, "faults": [], "limit_by": "ev", "limit_a": 125.0})

    def offline(self, pile: str) -> None:
        """As the broker's last will says it."""
        self.c.publish(topics.topic(pile, "status"), json.dumps({"online": False, "seq": 0,
                                                                 "boot": self.boot[pile]}), qos=1, retain=True)

    def clear(self) -> None:
        for p in self.piles:
            for name in ("status", "meta", "state"):
                self.c.publish(topics.topic(p, name), b"", qos=1, retain=True)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def write_config(d: str, broker_port: int, csms_url: str, piles: list[str], version: str = "2.0.1",
                 meter_interval_s: float = 0, extra: str = "", password: str = PASSWORD,
                 secret: str = SECRET) -> str:
    """A gateway config in directory d for these piles; its path."""
    with open(os.path.join(d, "fleet.secret"), "w") as f:
        f.write(secret + "\n")
    with open(os.path.join(d, "csms.pw"), "w") as f:
        f.write("* %s\n" % password)
    path = os.path.join(d, "gateway.toml")
    with open(path, "w") as f:
        f.write("piles = %s\n\n[mqtt]\nbroker = \"127.0.0.1:%d\"\nclient_id = \"gw-%d\"\n\n"
                "[csms]\nurl = \"%s\"\nocpp = \"%s\"\nsecurity_profile = 1\npassword_file = \"csms.pw\"\n"
                "meter_interval_s = %s\nbackoff_min_s = 0.2\nbackoff_max_s = 2\n%s\n"
                "[keys]\nfleet_secret_file = \"fleet.secret\"\n\n[queue]\npath = \"gateway.db\"\n"
                % (json.dumps(piles), broker_port, os.getpid(), csms_url, version, meter_interval_s, extra))
    return path


class GatewayProc:
    """`h2pile gateway CONFIG` in a subprocess; stderr lines in .lines."""

    def __init__(self, config: str, verbose: int = 1, cwd: str | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "firmware"), env.get("PYTHONPATH", "")])
        self.p = subprocess.Popen([sys.executable, "-m", "host_tools.gateway.cli", config] + ["-v"] * verbose,
                                  cwd=cwd or os.path.dirname(config), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> list[str]:
        return [ln for ln in list(self.lines) if text in ln]

    async def wait_line(self, text: str, timeout: float = 20) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.has(text)
            if got:
                return got[0]
            if self.p.poll() is not None:
                await asyncio.sleep(0.2)
                got = self.has(text)
                return got[0] if got else None
            await asyncio.sleep(0.05)
        return None

    def cpu_s(self) -> float:
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tck

    def rss_kb(self) -> int:
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def kill(self, sig: int = 9) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            self.p.wait(10)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def measure(n: int = 1000, seconds: float = 30.0, period_s: float = 10.0, log: Any = print) -> dict[str, Any]:
    from host_tools.broker import start as start_broker
    from host_tools.pilerun import free_port
    from tests.helpers.csms import Csms

    piles = ["bp%04d" % i for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="h2pile-gwbench-")
    port = free_port()
    # A reconnect delivers every pile's retained status, meta and state at
    # once: the broker's queue per client must hold them (docs/operators.md).
    broker = start_broker(port, extra="max_queued_messages %d" % (8 * n + 1000))
    csms = Csms("2.0.1", dict.fromkeys(piles, PASSWORD), record=False)
    await csms.start()
    sent: dict[tuple[str, float], float] = {}  # (pile, power tag W) -> publish time
    lat: list[float] = []

    def probe(m: Any) -> None:
        if m.action != "TransactionEvent" or m.payload.get("event_type") != "Updated":
            return
        for sv in m.payload["meter_value"][0]["sampled_value"]:
            if sv.get("measurand") == "Power.Active.Import":
                t0 = sent.pop((m.pile, float(sv["value"])), None)
                if t0 is not None:
                    lat.append(time.monotonic() - t0)

    csms.on_msg = probe
    gw = GatewayProc(write_config(tmp, port, csms.url, piles, meter_interval_s=0), verbose=0)
    fleet = None
    out: dict[str, Any] = {"piles": n, "period_s": period_s}
    try:
        if not await gw.wait_line("up:", 30):
            raise RuntimeError("gateway did not start: " + "\n".join(gw.lines[-5:]))
        await asyncio.sleep(1.0)  # its imports and table settle: the baseline
        rss0 = gw.rss_kb()
        fleet = Fleet("127.0.0.1", port, piles)
        t_conn = time.monotonic()
        for i, p in enumerate(piles):
            fleet.online(p, "charging")
            fleet.pub(p, "evt", {"kind": "session_start", "a": 1, "b": "sponsor:bench:%d" % i})
        while csms.counts.get("TransactionEvent", 0) < n and time.monotonic() - t_conn < 60:
            await asyncio.sleep(0.2)
        out["connect_all_s"] = round(time.monotonic() - t_conn, 1)
        out["started"] = csms.counts.get("TransactionEvent", 0)
        await asyncio.sleep(1.0)
        rss1 = gw.rss_kb()
        out["rss_before_kb"], out["rss_after_kb"] = rss0, rss1
        out["kb_per_pile"] = round((rss1 - rss0) / n, 1)
        # Steady load: each pile one tele every period_s, phases spread.
        cpu0, t0 = gw.cpu_s(), time.monotonic()
        tick = period_s / n
        k = 0
        while time.monotonic() - t0 < seconds:
            p = piles[k % n]
            tag = float(1000 + k)  # W: unique per message, read back at the CSMS
            sent[(p, tag)] = time.monotonic()
            fleet.pub(p, "tele", {"p_kw": tag / 1000, "i_out": 10.0, "e_kwh": k / 1000, "ev_soc": 50.0,
                                  "state": "charging"})
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * tick - time.monotonic()))
        end = time.monotonic() + 5
        while sent and time.monotonic() < end:
            await asyncio.sleep(0.1)
        cpu1 = gw.cpu_s()
        out["messages"] = k
        out["lost"] = len(sent)
        out["cpu_ms_per_msg"] = round((cpu1 - cpu0) * 1000 / max(1, k), 3)
        out["cpu_share"] = round((cpu1 - cpu0) / (time.monotonic() - t0), 3)
        out["latency_ms"] = {"n": len(lat), "p50": round(_pct(lat, 0.5) * 1000, 1),
                             "p99": round(_pct(lat, 0.99) * 1000, 1), "max": round(max(lat) * 1000, 1) if lat else None}
    finally:
        gw.kill(15)
        if fleet is not None:
            fleet.clear()
            fleet.close()
        await csms.stop()
        broker.terminate()
        broker.wait(5)
    return out


def rows(r: dict[str, Any]) -> list[tuple]:
    """bench.run's table rows for this section."""
    if "kb_per_pile" not in r:
        return [("gateway", "OCPP gateway", "not measured", "", "", r.get("error", ""))]
    lat = r["latency_ms"]
    return [
        ("gateway", f"memory per pile ({r['piles']} piles, one process)", f"{r['kb_per_pile']:.1f} KB",
         "<= 100 KB", f"{r['kb_per_pile'] / 100:.2f}x",
         f"RSS {r['rss_before_kb'] / 1024:.0f} -> {r['rss_after_kb'] / 1024:.0f} MB; all connected and booted "
         f"in {r['connect_all_s']} s; the goals are the gateway's own budgets (100 MB, 10 % of a core, "
         "a tenth of a second for 1,000 piles)"),
        ("gateway", "CPU per MQTT message (tele -> TransactionEvent)", f"{r['cpu_ms_per_msg']:.2f} ms",
         "<= 1 ms", f"{r['cpu_ms_per_msg']:.2f}x",
         f"{r['messages']} messages at 1 per pile per {r['period_s']:g} s; the gateway used "
         f"{r['cpu_share'] * 100:.0f} % of a core; most of it the ocpp package's schema checks (request and "
         "answer, in a thread pool) and two SQLite commits per event"),
        ("gateway", "MQTT -> OCPP latency p50/p99", f"{lat['p50']:.1f}/{lat['p99']:.1f} ms", "p99 <= 100 ms",
         f"{lat['p99'] / 100:.2f}x", f"n={lat['n']}, max {lat['max']} ms, {r['lost']} not seen"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--piles", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0, help="steady-load window (default 30)")
    a = ap.parse_args(argv)
    r = asyncio.run(measure(a.piles, a.seconds))
    print(json.dumps(r, indent=1))
    for row in rows(r):
        print("  ".join(str(x) for x in row[1:5]), "|", row[5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
