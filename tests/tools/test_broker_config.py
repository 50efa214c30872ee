"""Generated mosquitto passwd + ACL: piles are confined to their own topics."""
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from h2p import keys, topics
from host_tools import broker_config
from tests.helpers.mqtt_broker import Broker, Pile, paho_client

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython, pytest.mark.broker]


SECRET = "test-fleet-secret"


class Client:
    def __init__(self, port, user, password):
        self.msgs = []
        self.subacks = []
        self.rc = None
        self.ev = threading.Event()
        self.c = paho_client(port, user=user, password=password, client_id="t-" + user)
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p=None: self.subacks.append([r.value for r in rcs])
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.ev.wait(5)

    def _on_connect(self, c, u, f, rc, p=None):
        self.rc = rc
        self.ev.set()

    def sub(self, t):
        n = len(self.subacks)
        self.c.subscribe(t, 1)
        t_end = time.monotonic() + 5
        while len(self.subacks) == n and time.monotonic() < t_end:
            time.sleep(0.01)

    def pub(self, t, p):
        self.c.publish(t, p, qos=1).wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def fleet(tmp_path):
    out = tmp_path / "broker"
    paths = broker_config.generate(SECRET, ["A", "B"], [("ops", "opspw")], str(out))
    extra = "password_file %s\nacl_file %s\n" % (paths["passwd"], paths["acl"])
    with Broker(tmp_path, extra=extra, anonymous=False) as b:
        yield b


def pw(p):
    return keys.mqtt_password(SECRET, p)


def test_passwd_line_same_as_mosquitto_passwd(tmp_path):
    import base64
    f = tmp_path / "pw"
    f.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(f), "u1", "s3cret"], check=True, capture_output=True)
    ref = f.read_text().strip()
    salt = base64.b64decode(ref.split("$")[3])
    assert broker_config.passwd_line("u1", "s3cret", salt=salt) == ref


def test_acl_confines_piles(fleet):
    port = fleet.port
    ops = Client(port, "ops", "opspw")
    a = Client(port, "A", pw("A"))
    assert ops.rc == 0 and a.rc == 0
    bad = Client(port, "A", pw("B"))  # B's password for user A
    assert bad.rc is not None and bad.rc != 0
    bad.close()
    ops.sub(topics.PREFIX + "#")
    a.sub(topics.topic("B", "cmd"))
    a.sub(topics.topic("A", "cmd"))
    time.sleep(0.2)
    ops.pub(topics.topic("B", "cmd"), b"for B")
    ops.pub(topics.topic("A", "cmd"), b"for A")
    a.pub(topics.topic("B", "status"), b'{"online": false}')  # spoof B: must not arrive
    a.pub(topics.topic("A", "cmd"), b"self-command")  # pile may not write cmd
    a.pub(topics.topic("A", "status"), b'{"online": true}')  # allowed
    time.sleep(0.5)
    got_a = [m[0] for m in a.msgs]
    got_ops = [(m[0], m[1]) for m in ops.msgs]
    assert got_a == [topics.topic("A", "cmd")]
    assert a.msgs[0][1] == b"for A"
    assert (topics.topic("A", "status"), b'{"online": true}') in got_ops
    assert all(t != topics.topic("B", "status") for t, _ in got_ops)
    assert (topics.topic("A", "cmd"), b"self-command") not in got_ops
    a.close()
    ops.close()


def test_micropython_pile_logs_in_with_derived_password(fleet, tmp_path):
    ops = Client(fleet.port, "ops", "opspw")
    ops.sub(topics.topic("A", "status"))
    with Pile(tmp_path, fleet.port, id="A", user="A", password=pw("A"), duration=5) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        t_end = time.monotonic() + 3
        while not ops.msgs and time.monotonic() < t_end:
            time.sleep(0.05)
        assert ops.msgs and json.loads(ops.msgs[0][1])["online"] is True
    with Pile(tmp_path, fleet.port, id="A", user="A", password=pw("B"), duration=3) as pile:
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["refused"] >= 1, 3)
        assert st and st["stats"]["connects"] == 0
    ops.close()


def test_broker_config_cli_errors(tmp_path, capsys):
    from host_tools import cli

    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A,b/c", "--out", str(tmp_path)]) == 2
    assert "bad pile id 'b/c'" in capsys.readouterr().err
    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A", "--operator", "nopass",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "NAME:PASSWORD" in err and "nopass" not in err  # an entry may be a password: not echoed
    assert cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A,B", "--operator", "ops:x",
                     "--out", str(tmp_path / "o")]) == 0
    acl = (tmp_path / "o" / "acl").read_text()
    assert "user A\ntopic write h2pile/v1/A/status" in acl
    assert "topic read h2pile/v1/A/cmd" in acl and "topic write h2pile/v1/A/cmd\n" not in acl
    assert "user ops\ntopic read h2pile/v1/#\ntopic write h2pile/v1/+/cmd" in acl
