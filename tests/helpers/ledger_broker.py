"""Test helper for the ledger tests: a private mosquitto on a free
127.0.0.1 port, an `h2pile ledger ingest` subprocess, a paho "pile", and the
firmware's billing on the MicroPython unix port (mp_pile_billing.py).

    with Mosquitto(tmp_path) as b: ... b.port
    ing = Ingest(b.port, db_url, share=None)  # waits for SUBACK
    pile = PileProc(dir, b.port, nsess, seed)  # journal, sessions, Billing, h2p.mqtt
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.mqtt_broker import Broker

ROOT = Path(__file__).resolve().parents[2]
MP = ROOT / ".venv" / "bin" / "micropython"

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto(Broker):
    """The MQTT tests' broker, with room for the ledger's QoS 1 bursts."""

    def __init__(self, tmp):
        super().__init__(tmp, extra="max_inflight_messages 20\nmax_queued_messages 10000\n")

    def stop(self):
        self.kill()


class Ingest:
    """`python -m host_tools.ledger ingest` in a subprocess; stderr lines
    collected in self.lines by a reader thread (they can lag what the
    ingest did: wait for a line, do not count at once)."""

    running = []  # this process's ingests, for kill_all()

    @classmethod
    def kill_all(cls):
        """Every ingest still running (a test's teardown: none left behind when it failed)."""
        for ing in list(cls.running):
            ing.kill()

    def __init__(self, port, db_url, share=None, client_id=None):
        args = [sys.executable, "-m", "host_tools.ledger", "ingest", "--broker", "127.0.0.1:%d" % port,
                "--db", db_url, "-v"]
        if share:
            args += ["--share", share]
        if client_id:
            args += ["--client-id", client_id]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        Ingest.running.append(self)
        self.lines = []
        self.subscribed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.subscribed.wait(10):
            self.kill()
            raise RuntimeError("ingest did not subscribe: " + "".join(self.lines))

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if "subscribed to" in line:
                self.subscribed.set()

    def count(self, word):
        return sum(1 for ln in list(self.lines) if ln.startswith("ledger: " + word))

    def kill(self, sig=signal.SIGKILL):
        if self in Ingest.running:  # the list holds only ingests not yet killed
            Ingest.running.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


class PileProc:
    """mp_pile_billing.py: NSESS sessions journaled and billed by the
    firmware's own code (h2p.journal, h2p.session, h2p.billing, h2p.mqtt),
    re-sending each bill until its bill/ack; prints BOOT, CLOSED n, DONE."""

    def __init__(self, d, port, nsess, seed, pile_id=None, session_s=None, journal_bytes=None):
        extra = [pile_id or "PM1", 0.4 if session_s is None else session_s, journal_bytes or 16384]
        self.p = subprocess.Popen(
            [str(MP), "-X", "heapsize=256K", "tests/helpers/mp_pile_billing.py", str(d), str(port), str(nsess),
             str(seed)] + [str(a) for a in extra],
            cwd=ROOT, env=dict(os.environ, MICROPYPATH=".frozen:firmware"), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, prefix, timeout=30):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            for ln in list(self.lines):
                if ln.startswith(prefix):
                    return ln
            if self.p.poll() is not None and not any(ln.startswith(prefix) for ln in self.lines):
                time.sleep(0.1)
                if not any(ln.startswith(prefix) for ln in self.lines):
                    raise AssertionError("pile exited: " + "\n".join(self.lines[-20:]))
            time.sleep(0.02)
        raise AssertionError("no %r in time: %s" % (prefix, "\n".join(self.lines[-20:])))

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(5)


class Pile:
    """A paho client that publishes bills at QoS 1 and collects bill/acks."""

    def __init__(self, port, client_id="test-pile"):
        import paho.mqtt.client as mqtt
        self.acks = []  # (id, time)
        self.on_ack = None
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.max_inflight_messages_set(50)
        self.c.on_message = self._msg
        sub = threading.Event()
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe("h2pile/v1/+/bill/ack", qos=1)
        assert sub.wait(5)

    def _msg(self, client, userdata, msg):
        sid = json.loads(msg.payload)["id"]
        if self.on_ack:
            self.on_ack(sid)
        with self.lock:
            self.acks.append(sid)

    def publish(self, pile, payload):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        return self.c.publish("h2pile/v1/%s/bill" % pile, payload, qos=1)

    def wait_acks(self, n, timeout=20):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            with self.lock:
                if len(self.acks) >= n:
                    return True
            time.sleep(0.02)
        return False

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def record(pile, boot, seq, energy_wh, token="sponsor:acme:1", premix_l=None, stop=1_780_000_000, **kw):
    rec = {
        "v": 1, "id": "%s-%05d-%03d" % (pile, boot, seq), "pile": pile, "start": stop - 1800 if isinstance(stop, int) else stop, "stop": stop,
        "dur_s": 1800, "energy_wh": energy_wh, "premix_l": premix_l if premix_l is not None else energy_wh / 1000,
        "peak_w": 22000, "reason": "ev_stop", "token": token, "soc0": 20, "soc1": 80, "meter0": 1000.0,
        "meter1": 1000.0 + energy_wh, "flags": [],
    }
    rec["idem"] = rec["id"]
    rec.update(kw)
    return rec
