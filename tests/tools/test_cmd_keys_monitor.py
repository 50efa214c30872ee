"""host_tools keys / cmd / monitor / gendocs_mqtt, end to end with a MicroPython pile."""
import json
import time
from pathlib import Path

import pytest

from h2p import keys, topics
from host_tools import cli, gendocs_mqtt, monitor
from host_tools import cmd as cmdtool
from host_tools import keys as keys_tool
from tests.helpers.mqtt_broker import Broker, Pile, paho_client

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython, pytest.mark.broker]


SECRET = "fleet-s3cret"


def run_cli(mod, argv):
    """`h2pile ARGV` as a user runs it (mod: the module the command lives in)."""
    return cli.main(argv)


def test_docs_up_to_date():
    assert (ROOT / "docs" / "mqtt.md").read_text() == gendocs_mqtt.render()


def test_docs_cover_contract():
    doc = gendocs_mqtt.render()
    for t in topics.TOPICS:
        assert "`%s`" % t[0] in doc
    for c in topics.CMD_OPS:
        assert "### `%s`" % c[0] in doc
    from h2p import topics_doc
    for f in topics_doc.TELE_FIELDS:
        assert "| %s | %s | %s |" % f[:3] in doc


def test_topics_contract():
    assert topics.topic("P-1_a", "cmd/ack") == "h2pile/v1/P-1_a/cmd/ack"
    assert topics.parse("h2pile/v1/P1/bill/ack") == ("P1", "bill/ack")
    assert topics.parse("h2pile/v1/P1/nope") is None
    for bad in ("", "a/b", "+", "#", "x" * 33, "$SYS"):
        assert not topics.valid_pile_id(bad)
    assert topics.retain("status") and not topics.retain("cmd") and topics.qos("tele") == 0
    subs = [t[0] for t in topics.TOPICS if t[3] == "sub"]
    assert subs == ["cmd", "bill/ack"]


def test_keys_cli(capsys):
    assert run_cli(keys_tool, ["keys", "--fleet-secret", SECRET, "P1", "P2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["pile"] == "P1" and rows[0]["cmd_key"] == keys.cmd_key(SECRET, "P1")
    assert rows[1]["mqtt_password"] == keys.mqtt_password(SECRET, "P2")
    assert run_cli(keys_tool, ["keys", "--fleet-secret", SECRET, "bad/id"]) == 2
    assert "bad pile id" in capsys.readouterr().err


def test_cmd_end_to_end(tmp_path, capsys):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, id="P1", cmd_key=keys.cmd_key(SECRET, "P1"),
                                     duration=15, tele=False) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        broker = "127.0.0.1:%d" % b.port
        rc = run_cli(cmdtool, ["cmd", "P1", "set_limit", "amps=32.5", "--broker", broker,
                                "--fleet-secret", SECRET, "--timeout", "5"])
        out = capsys.readouterr().out
        assert rc == 0, out
        ack = json.loads(out)
        assert ack["ok"] is True and ack["op"] == "set_limit" and ack["boot"] == 7
        assert pile.wait(lambda e: e["ev"] == "do" and e["amps"] == 32.5, 2)
        # a command the target refuses -> 1
        rc = run_cli(cmdtool, ["cmd", "P1", "stop", "--broker", broker, "--fleet-secret", SECRET])
        a = json.loads(capsys.readouterr().out)
        assert rc == 1 and a["reason"] == "refused" and a["detail"] == "not charging", a
        # signed with another pile's key -> rejected -> 1
        rc = run_cli(cmdtool, ["cmd", "P1", "start", "auth=tok", "--broker", broker,
                                "--key", keys.cmd_key(SECRET, "P2")])
        assert rc == 1 and json.loads(capsys.readouterr().out)["reason"] == "bad signature"
        # no such pile -> no answer -> 3 (unreachable)
        rc = run_cli(cmdtool, ["cmd", "P9", "wake", "--broker", broker, "--fleet-secret", SECRET,
                                "--timeout", "0.5"])
        assert rc == 3 and "no ack from P9" in capsys.readouterr().err
        # bad input -> 2 (usage) with a clear message
        rc = run_cli(cmdtool, ["cmd", "P1", "set_limit", "amps=lots", "--broker", broker,
                                "--fleet-secret", SECRET])
        assert rc == 2 and "amps='lots' is not a number" in capsys.readouterr().err
        rc = run_cli(cmdtool, ["cmd", "P1", "set_limit", "amps=900", "--broker", broker,
                                "--fleet-secret", SECRET])
        assert rc == 2 and "out of range" in capsys.readouterr().err
        rc = run_cli(cmdtool, ["cmd", "P1", "fly", "--broker", broker, "--fleet-secret", SECRET])
        assert rc == 2 and "unknown op 'fly'" in capsys.readouterr().err
        acks = [e for e in pile.events if e["ev"] == "ack"]
        assert [a["ok"] for a in acks] == [True, False, False]


def test_cmd_start_with_a_sponsor_and_caps(tmp_path, capsys):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, id="P1", cmd_key=keys.cmd_key(SECRET, "P1"),
                                     duration=15, tele=False) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        rc = run_cli(cmdtool, ["cmd", "P1", "start", "--auth", "sponsor:acme:INV-7", "--cap-kwh", "2.5",
                               "--cap-min", "90", "--broker", "127.0.0.1:%d" % b.port, "--fleet-secret", SECRET,
                               "--timeout", "5"])
        assert rc == 0, capsys.readouterr()
        assert pile.wait(lambda e: e["ev"] == "do" and e["op"] == "start", 2)
        do = [e for e in pile.events if e["ev"] == "do"][-1]
        assert (do["auth"], do["cap_kwh"], do["cap_min"], do["limit_a"]) == ("sponsor:acme:INV-7", 2.5, 90, None)


def test_cmd_signs_again_when_the_pile_had_no_memory(tmp_path, capsys):
    # docs/mqtt.md: "no memory" means send it again; h2pile cmd does, signed anew.
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, id="P1", cmd_key=keys.cmd_key(SECRET, "P1"),
                                     duration=15, tele=False) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        rc = run_cli(cmdtool, ["cmd", "P1", "start", "--auth", "no-memory-once", "--broker",
                               "127.0.0.1:%d" % b.port, "--fleet-secret", SECRET, "--timeout", "5"])
        cap = capsys.readouterr()
        assert rc == 0 and json.loads(cap.out)["ok"], cap
        assert "P1 had no memory for it; signing it again" in cap.err
        acks = [(e["reason"], e["id"]) for e in pile.events if e["ev"] == "ack"]
        assert [a[0] for a in acks] == ["no memory", "ok"] and acks[0][1] != acks[1][1]
        assert len([e for e in pile.events if e["ev"] == "do"]) == 1


@pytest.mark.parametrize("argv,err", [
    (["start", "--cap-kwh", "-1"], "argument cap_kwh=-1 out of range 0.1..500"),
    (["start", "--cap-kwh", "nan"], "argument cap_kwh=nan out of range 0.1..500"),
    (["start", "--cap-kwh", "inf"], "argument cap_kwh=inf out of range 0.1..500"),
    (["start", "--cap-kwh", "0"], "argument cap_kwh=0 out of range 0.1..500"),
    (["start", "--cap-kwh", "1e6"], "argument cap_kwh=1e6 out of range 0.1..500"),
    (["start", "--cap-kwh", "lots"], "argument cap_kwh='lots' is not a number"),
    (["start", "--cap-min", "-30"], "argument cap_min=-30 out of range 1..1440"),
    (["start", "--cap-min", "2000"], "argument cap_min=2000 out of range 1..1440"),
    (["start", "cap_kwh=5", "--cap-kwh", "6"], "argument cap_kwh given twice"),
    (["stop", "--cap-kwh", "5"], "op stop has no argument 'cap_kwh'"),
])
def test_cmd_refuses_a_bad_cap_naming_it(argv, err, capsys):
    # Refused before anything is sent (the broker here does not exist).
    rc = run_cli(cmdtool, ["cmd", "P1"] + argv + ["--broker", "127.0.0.1:1", "--fleet-secret", SECRET])
    assert rc == 2 and err in capsys.readouterr().err


def test_cmd_broker_unreachable(capsys):
    rc = run_cli(cmdtool, ["cmd", "P1", "wake", "--broker", "127.0.0.1:1", "--fleet-secret", SECRET])
    assert rc == 3 and "cannot connect" in capsys.readouterr().err


def test_monitor_once(tmp_path, capsys):
    with Broker(tmp_path) as b, Pile(tmp_path, b.port, id="P7", duration=8) as pile:
        assert pile.wait(lambda e: e["ev"] == "up", 5), pile.stderr
        c = paho_client(b.port)
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        c.publish(topics.topic("P7", "state"), json.dumps(
            {"state": "CHARGING", "faults": ["H2_WARN"], "limit_by": "bms", "limit_a": 80}), qos=1,
            retain=True).wait_for_publish(5)
        c.publish(topics.topic("P8", "tele"), b"not json", qos=1).wait_for_publish(5)
        # a command to an id no pile has, and telemetry without a status: no
        # row. Retained (here only) so that the monitor, which subscribes
        # later, surely receives them.
        c.publish(topics.topic("P9", "cmd"), b'{"op": "wake"}', qos=1, retain=True).wait_for_publish(5)
        c.publish(topics.topic("P10", "tele"), b'{"p_kw": 1.5}', qos=1, retain=True).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()
        time.sleep(0.3)
        rc = run_cli(monitor, ["monitor", "--broker", "127.0.0.1:%d" % b.port, "--once", "--wait", "1"])
        out = capsys.readouterr().out
        assert rc == 0
        lines = out.splitlines()
        assert lines[0].startswith("PILE")
        row = [ln for ln in lines if ln.startswith("P7")]
        assert row, out
        cols = row[0].split()
        assert cols[1] == "yes" and cols[2] == "CHARGING" and "40.5" in cols and "80" in cols
        assert "H2_WARN" in row[0] and "bms" in row[0]
        assert [ln.split()[0] for ln in lines[1:]] == ["P7"], out  # no phantom P9, no P10
    f = monitor.Fleet()
    assert not f.feed("h2pile/v1/P1/tele", b"\xff")
    assert f.feed("h2pile/v1/P1/status", b'{"online": false}')
    assert f.rows(now=f.piles["P1"]["seen"])[0][1] == "NO" and f.bad == 1


def test_monitor_lists_only_piles_that_published_status():
    """A command sent to an id made a phantom row (the monitor took every
    topic under h2pile/v1/ for a pile's): only a pile's own status lists it."""
    f = monitor.Fleet()
    assert not f.feed(topics.topic("GHOST", "cmd"), b'{"op": "wake", "pile": "GHOST"}')
    assert not f.feed(topics.topic("GHOST", "bill/ack"), b'{"id": "GHOST-00001-001"}')
    assert f.feed(topics.topic("P2", "tele"), b'{"p_kw": 3.5, "bat_soc": 70}', now=10.0)
    assert f.feed(topics.topic("P2", "state"), b'{"state": "CHARGING"}', now=10.0)
    assert f.rows(now=11.0) == []
    assert "(no pile has published its status yet)" in f.table(now=11.0)
    assert "GHOST" not in f.table(now=11.0)
    # its status (retained, usually first; here last): listed, with what it said before
    assert f.feed(topics.topic("P2", "status"), b'{"online": true}', now=12.0)
    rows = f.rows(now=13.0)
    assert [r[0] for r in rows] == ["P2"]
    assert rows[0][1:5] == ("yes", "CHARGING", "3.5", "-") and rows[0][-1] == "1"
    # a command to a listed pile does not refresh when it was last heard from
    assert not f.feed(topics.topic("P2", "cmd"), b'{"op": "wake"}', now=20.0)
    assert f.rows(now=20.0)[0][-1] == "8"


def test_monitor_json_lists_piles_by_their_dispatch_estimate(tmp_path, capsys):
    """`h2pile monitor --json --once`: every pile that published its status,
    with the retained state's `deliver_kwh`, the online pile
    that can deliver most first; the table shows the estimate too."""
    with Broker(tmp_path) as b:
        c = paho_client(b.port)
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        for pile, online, kwh, mode in (("A1", True, 80.5, "charge"), ("A2", True, 210.0, "hold"),
                                        ("A3", False, 300.0, "off"), ("A4", True, None, "off")):
            c.publish(topics.topic(pile, "status"), json.dumps({"online": online}), qos=1,
                      retain=True).wait_for_publish(5)
            c.publish(topics.topic(pile, "state"), json.dumps(
                {"state": "ready", "faults": [], "limit_by": "session", "limit_a": 0,
                 "stack_limit_by": "energy", "energy": mode, "deliver_kwh": kwh}), qos=1,
                retain=True).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()
        rc = run_cli(monitor, ["monitor", "--broker", "127.0.0.1:%d" % b.port, "--once", "--wait", "1", "--json"])
        out = capsys.readouterr().out
        assert rc == 0
        piles = json.loads(out)
        # online first, most energy first, an unknown estimate after known ones
        assert [p["pile"] for p in piles] == ["A2", "A1", "A4", "A3"], out
        assert piles[0]["deliver_kwh"] == 210.0 and piles[0]["online"] is True
        assert piles[2]["deliver_kwh"] is None and piles[3]["online"] is False
        rc = run_cli(monitor, ["monitor", "--broker", "127.0.0.1:%d" % b.port, "--once", "--wait", "1"])
        table = capsys.readouterr().out
        assert rc == 0 and "DLV_KWH" in table.splitlines()[0]
        row = [ln for ln in table.splitlines() if ln.startswith("A1")][0].split()
        assert "80.5" in row, row
