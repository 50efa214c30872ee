"""Home Assistant and evcc against the real pile: the firmware (MicroPython
unix port, the simulator) on a real mosquitto with the ACL `h2pile
broker-config` writes, `h2pile hass` as its own process on a gateway account,
Home Assistant's (and evcc's) side on a home account, and the two checked the
way they read MQTT (tests/helpers/hass_check).

The pile's topics are taken from the running pile: a topic counts as the
pile's once a message stamped as the pile stamps them ("seq" and "boot")
arrived on it. Every state and availability topic of the discovery is one of
them, every value template renders against the pile's real messages, numbers
come out as numbers in the units stated (checked against the same message and
the simulator), the availability follows the pile's status and its last will,
and pressing a button or setting the number makes the pile act through a
signed command. evcc's charger in docs/operators.md is checked the same way."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from h2p import keys, topics
from host_tools import broker_config
from host_tools import hass_discovery as hd
from host_tools.pilerun import HEAP, PileRun
from tests.helpers import hass_check as ha
from tests.helpers.mqtt_broker import Broker, free_port
from tests.helpers.pilewait import until

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
PILE = "ha-1"
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]
# auto_charge off: a plugged EV waits for a start (the button, evcc's enable)
CONFIG = {"pile_id": PILE, "auto_charge": False, "idle_shutdown_s": 0, "mqtt": {"keepalive_s": 5},
          "limits": {"feed_lead_s": 6, "stack_ramp_up": 0.05}, "bus": {"data_age_ms": 3000}}
DISCOVERY = hd.discovery_topic(PILE)
SECRET = "hass-pile-fleet-secret"
# the accounts: the bridge (gateway role), Home Assistant and evcc (home
# role), and a test-only one that reads the bills the home account may not
PW = {"gw": "gw-pw", "ha": "ha-pw", "watch": "watch-pw"}


def broker(tmp_path, port):
    """mosquitto with the generated password file and ACL (+ the watcher)."""
    paths = broker_config.generate(SECRET, [PILE], [], str(tmp_path / "broker"),
                                   gateways=[("gw", PW["gw"])], homes=[("ha", PW["ha"])])
    with open(paths["acl"], "a") as f:
        f.write("\nuser watch\ntopic read %s#\n" % topics.PREFIX)
    with open(paths["passwd"], "a") as f:
        f.write(broker_config.passwd_line("watch", PW["watch"]) + "\n")
    return Broker(tmp_path, extra="password_file %s\nacl_file %s\n" % (paths["passwd"], paths["acl"]),
                  anonymous=False, port=port).start()


class Home:
    """Home Assistant's (and evcc's) side of the broker: every message on the
    pile's topics and the discovery, with arrival times; publishes as they do."""

    def __init__(self, port, user):
        self.msgs = []  # (monotonic, topic, payload bytes, retain)
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="%s-%d" % (user, os.getpid()))
        self.c.username_pw_set(user, PW[user])
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(
            [(topics.PREFIX + PILE + "/#", 1), ("homeassistant/#", 1)])
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c, u, m):
        with self.cond:
            self.msgs.append((time.monotonic(), m.topic, bytes(m.payload), m.retain))

    def on(self, topic, since=0.0, pred=None):
        """Payloads on topic since a time, oldest first (pred: on the decoded JSON)."""
        with self.cond:
            out = [p for t, tp, p, _r in self.msgs if tp == topic and t >= since]
        return [p for p in out if pred is None or pred(json.loads(p))]

    def last(self, topic, pred=None):
        got = self.on(topic, pred=pred)
        return got[-1] if got else None

    def pile_topics(self):
        """Topics the pile published on: its messages carry seq and boot."""
        out = set()
        with self.cond:
            for _t, tp, p, _r in self.msgs:
                if tp.startswith(topics.PREFIX):
                    try:
                        d = json.loads(p)
                    except ValueError:
                        continue
                    if isinstance(d, dict) and "seq" in d and "boot" in d:
                        out.add(tp)
        return out

    def press(self, topic, payload):
        self.c.publish(topic, payload, qos=1, retain=False)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class Bridge:
    """`h2pile hass` as its own process; its stderr lines are kept."""

    def __init__(self, port, secret):
        env = dict(os.environ, H2PILE_FLEET_SECRET=secret, H2PILE_MQTT_PASSWORD=PW["gw"],
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "firmware")]))
        self.p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "hass", "--broker", "127.0.0.1:%d" % port,
                                   "--user", "gw"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.append(line.rstrip())

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def evcc_charger():
    """The charger of docs/operators.md's evcc section, for this test's pile."""
    text = (ROOT / "docs" / "operators.md").read_text()
    section = text.split("\n## evcc", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block.replace("pile-7", PILE))["chargers"][0]


async def _scenario(tmp_path, fw_build):
    port = free_port()
    mosq = broker(tmp_path, port)
    # the pile logs in as itself, with the password derived from the fleet secret
    cfg = dict(CONFIG, mqtt=dict(CONFIG["mqtt"], host="127.0.0.1", port=port, cmd_key=keys.cmd_key(SECRET, PILE),
                                 password=keys.mqtt_password(SECRET, PILE)))
    run = PileRun(speed=5, heap=HEAP, config=cfg, sim_args=WARM, firmware_build=fw_build,
                  board_dir=str(tmp_path / "board"))
    await run.start()
    home = Home(port, "ha")
    watch = Home(port, "watch")
    bridge = Bridge(port, SECRET)
    tele, state, status = (topics.topic(PILE, n) for n in ("tele", "state", "status"))
    o = {"t0": time.monotonic()}
    try:
        # Discovery as soon as the pile is seen; again with its firmware once meta is in.
        assert await until(lambda: home.on(DISCOVERY, pred=lambda d: "sw_version" in d["dev"]), 30), bridge.lines
        o["discovered_s"] = time.monotonic() - o["t0"]
        cfg = ha.normalise(home.last(DISCOVERY))
        o["cfg"] = cfg
        assert await until(lambda: home.last(status), 10)
        o["online"] = ha.available(cfg, status, home.last(status))
        assert await run.wait_state("ready", 60), run.lines[-20:]
        ev = evcc_charger()
        o["evcc"] = ev
        assert await until(lambda: home.last(tele), 70)
        o["evcc_no_ev"] = ha.evcc_get(ev["status"], home.last(tele), "status")

        # An EV plugs in; auto_charge is off: it waits. evcc: B, not enabled.
        await run.inject("ev_plug", soc=30, kwh=60, target=90)
        assert await until(lambda: home.last(tele, lambda d: (d.get("ev_soc") or 0) > 0), 20)
        o["evcc_plugged"] = ha.evcc_get(ev["status"], home.last(tele, lambda d: (d.get("ev_soc") or 0) > 0),
                                        "status")
        o["evcc_enabled_before"] = ha.evcc_get(ev["enabled"], home.last(state), "bool")

        # evcc enables the charger: a relay request, a signed start, a session.
        home.press(ev["enable"]["topic"], ha.evcc_payload(ev["enable"], "enable", True))
        assert await run.wait_state("charging", 20), bridge.lines[-5:]
        assert await until(lambda: home.last(tele, lambda d: d["state"] == "charging" and (d["p_kw"] or 0) > 1), 20)
        charging = home.last(tele, lambda d: d["state"] == "charging" and (d["p_kw"] or 0) > 1)
        o["plant"] = await run.plant()
        o["charging_tele"] = charging
        assert await until(lambda: home.last(state, lambda d: d["state"] == "charging"), 10)
        o["charging_state"] = home.last(state)
        o["evcc_charging"] = ha.evcc_get(ev["status"], charging, "status")
        o["evcc_enabled"] = ha.evcc_get(ev["enabled"], home.last(state), "bool")
        o["evcc_power_w"] = ha.evcc_get(ev["power"], charging, "float")
        o["evcc_soc"] = ha.evcc_get(ev["soc"], charging, "float")

        # The number sets the limit; then evcc's maxcurrent does.
        number = cfg["components"]["current_limit"]
        for name, topic, payload, amps in (
                ("ha", number["command_topic"], "40", 40.0),
                ("evcc", ev["maxcurrent"]["topic"], ha.evcc_payload(ev["maxcurrent"], "maxcurrent", 32), 32.0)):
            t = time.monotonic()
            home.press(topic, payload)
            ok = await until(lambda a=amps, t=t: any(ha.state(number, p) == a for p in home.on(tele, since=t)), 20)
            # the pile's own console says the same (its STATUS lines come at their own pace)
            await until(lambda a=amps: (run.status.get("ev_limit_a"), run.status.get("ev_limit_by")) == (a, "operator"),
                        10)
            o["limit_" + name] = (ok, run.status.get("ev_limit_a"), run.status.get("ev_limit_by"))

        # Stop: the button ends the session (once it has some energy to
        # show); the bill comes, and the energy sensor drops back to 0.
        assert await until(lambda: home.last(tele, lambda d: d["e_kwh"] >= 0.2), 30)
        t_stop = time.monotonic()
        home.press(cfg["components"]["stop"]["command_topic"], "PRESS")
        ack = topics.topic(PILE, "cmd/ack")
        assert await until(lambda: home.on(ack, since=t_stop), 20), bridge.lines[-5:]
        with home.cond:
            o["press_to_ack_s"] = max(t for t, tp, _p, _r in home.msgs if tp == ack) - t_stop
        o["last_command"] = ha.state(cfg["components"]["last_command"], home.on(ack, since=t_stop)[-1])
        assert await until(lambda: run.state != "charging", 20), bridge.lines[-5:]
        assert await until(lambda: watch.on(topics.topic(PILE, "bill"), since=t_stop), 30), bridge.lines[-5:]
        o["bill"] = json.loads(watch.on(topics.topic(PILE, "bill"), since=t_stop)[-1])
        assert await until(lambda: home.on(tele, since=t_stop, pred=lambda d: d["e_kwh"] == 0), 20)
        o["energy_seen"] = [ha.state(cfg["components"]["energy"], p) for p in home.on(tele)]
        evt = topics.topic(PILE, "evt")
        await until(lambda: home.on(evt, since=t_stop, pred=lambda d: d["kind"] == "session_stop"), 20)
        o["stopped_evt"] = [json.loads(p) for p in home.on(evt, since=t_stop)]

        # The start button: a new session with the EV still plugged.
        home.press(cfg["components"]["start"]["command_topic"], "PRESS")
        o["restarted"] = await run.wait_state("charging", 20)

        # Home Assistant restarts: discovery comes again.
        t = time.monotonic()
        home.press("homeassistant/status", "online")
        o["republished"] = await until(lambda: home.on(DISCOVERY, since=t), 10)

        # Every request relayed was answered ok by the pile (the bridge logs each ack).
        await until(lambda: sum(" ok" in ln for ln in bridge.lines) >= sum(" sent as command " in ln
                                                                           for ln in bridge.lines), 10)
        o["pile_topics"] = home.pile_topics()
        o["last"] = {tp: home.last(tp) for tp in o["pile_topics"]}

        # Killed: the will makes it unavailable.
        t_kill = time.monotonic()
        await run.kill_firmware()
        ok = await until(lambda: home.on(status, since=t_kill), 20)
        o["offline"] = ha.available(cfg, status, home.on(status, since=t_kill)[-1]) if ok else None
        o["unavailable_s"] = time.monotonic() - t_kill
        o["bridge"] = list(bridge.lines)
        return o
    finally:
        bridge.stop()
        home.close()
        watch.close()
        await run.stop()
        mosq.kill()
        (tmp_path / "console.log").write_text("\n".join(run.lines) + "\n")
        (tmp_path / "bridge.log").write_text("\n".join(bridge.lines) + "\n")


def test_home_assistant_and_evcc_on_the_real_pile(tmp_path, fw_build):
    o = asyncio.run(_scenario(tmp_path, fw_build))
    cfg, last, pile_topics = o["cfg"], o["last"], o["pile_topics"]
    comps = cfg["components"]

    # Every topic an entity reads is one the pile publishes; every template
    # renders against the pile's last real message there.
    for cid, c in comps.items():
        if "state_topic" in c:
            assert c["state_topic"] in pile_topics, (cid, c["state_topic"], sorted(pile_topics))
            ha.state(c, last[c["state_topic"]])
        for a in c["availability"]:
            assert a["topic"] in pile_topics, (cid, a["topic"])
    # While charging, every number is a number (none unknown), in its unit.
    tele, st = o["charging_tele"], o["charging_state"]
    shown = {cid: ha.state(c, tele if c.get("state_topic") == topics.topic(PILE, "tele") else st)
             for cid, c in comps.items() if c.get("state_topic") in (topics.topic(PILE, "tele"), topics.topic(PILE, "state"))}
    for cid in ("power", "session_energy", "energy", "ev_soc", "battery_soc", "premix", "deliverable", "current_limit"):
        assert isinstance(shown[cid], float), (cid, shown[cid])
    assert shown["state"] == "charging" and shown["fault"] == "OFF" and shown["faults"] == "none"
    d = json.loads(tele)
    assert comps["power"]["unit_of_measurement"] == "kW"
    assert abs(shown["power"] - d["v_out"] * d["i_out"] / 1000) <= 0.05 * shown["power"] + 0.05, (shown, d)
    plant = o["plant"]
    assert abs(shown["ev_soc"] - plant["ev_soc"]) < 5, (shown["ev_soc"], plant["ev_soc"])
    assert abs(shown["battery_soc"] - plant["bat_soc"]) < 5, (shown["battery_soc"], plant["bat_soc"])
    assert abs(shown["premix"] - plant["tank_l"]) < 2, (shown["premix"], plant["tank_l"])
    assert 0 < shown["deliverable"] and comps["deliverable"]["unit_of_measurement"] == "kWh"

    # Availability: online from the pile's status, offline from its will.
    assert o["online"] is True and o["offline"] is False, (o["online"], o["offline"])

    # The number and evcc's maxcurrent: the pile's limit follows, set by the operator claim.
    for name, amps in (("ha", 40.0), ("evcc", 32.0)):
        assert o["limit_" + name] == (True, amps, "operator"), (name, o["limit_" + name])
    # Stop ended the session as the operator's; the energy sensor rose and
    # fell back to 0 (a reset for total_increasing), its last value the bill's.
    assert any(e.get("kind") == "session_stop" and e.get("b") == "operator" for e in o["stopped_evt"]), o["stopped_evt"]
    seen = o["energy_seen"]
    top = max(seen)
    assert seen.index(top) < len(seen) - 1 and seen[-1] == 0.0, seen[-5:]
    assert all(a <= b for a, b in zip(seen[:seen.index(top)], seen[1:seen.index(top) + 1])), seen
    # Home Assistant's energy dashboard adds `top`: at most the tele deadband
    # below the bill (the pile's last few Wh of a session may not be sent).
    bill_kwh = o["bill"]["energy_wh"] / 1000
    assert -0.0006 <= bill_kwh - top <= topics.TELE_DEADBAND["e_kwh"] + 0.0006, (top, bill_kwh)
    assert o["restarted"], "the start button did not start a session"
    assert o["last_command"] == "stop: ok", o["last_command"]
    sent = [ln for ln in o["bridge"] if " sent as command " in ln]
    acked = [ln for ln in o["bridge"] if ln.endswith(" ok")]
    assert len(sent) == 5 and len(acked) == len(sent), o["bridge"]  # enable, 2 limits, stop, start
    assert o["republished"], "no discovery after homeassistant/status online"

    # evcc: A with no EV, B plugged and not enabled, C charging and enabled.
    assert (o["evcc_no_ev"], o["evcc_plugged"], o["evcc_charging"]) == ("A", "B", "C")
    assert o["evcc_enabled_before"] is False and o["evcc_enabled"] is True
    assert abs(o["evcc_power_w"] - shown["power"] * 1000) < 1 and o["evcc_power_w"] > 1000
    assert o["evcc_soc"] == shown["ev_soc"]
    ev = o["evcc"]
    for key in ("status", "enabled", "power", "soc"):
        assert ev[key]["topic"] in pile_topics, (key, ev[key]["topic"])
    for key in ("enable", "maxcurrent"):
        assert hd.parse_ctl(ev[key]["topic"], b"1") is not None, (key, ev[key]["topic"])
    print("\ndiscovery %.1f s after start; stop button -> pile's ack %.2f s; energy sensor last %.3f kWh vs bill "
          "%.4f kWh; unavailable %.1f s after kill"
          % (o["discovered_s"], o["press_to_ack_s"], top, bill_kwh, o["unavailable_s"]))
