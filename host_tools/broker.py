"""Start a private mosquitto for `make sim` and tests (loopback only)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time


def mosquitto_path() -> str:
    for p in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if p and os.path.exists(p):
            return p
    raise FileNotFoundError("mosquitto not found: install the Debian package 'mosquitto' (make deps)")


def start(port: int, extra: str = "", anonymous: bool = True) -> subprocess.Popen:
    d = tempfile.mkdtemp(prefix="h2pile-broker-")
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous {'true' if anonymous else 'false'}\n"
                f"persistence false\nlog_dest stderr\nlog_type error\n{extra}\n")
    p = subprocess.Popen([mosquitto_path(), "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            if p.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {p.returncode} (config {conf})")
            time.sleep(0.05)
    p.kill()
    raise RuntimeError(f"mosquitto did not listen on {port}")
