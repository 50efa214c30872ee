"""Commands are never run twice across a reboot, and a command left retained
on the broker is not run at every reconnect (the firmware on the unix port,
real mosquitto, a restart of the firmware in between)."""

import asyncio
import json
import time

import pytest

from h2p import keys, signer
from host_tools.pilerun import HEAP, PileRun
from tests.helpers.cmd_operator import Operator
from tests.helpers.pilewait import until

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

PILE = "rp-1"
CONFIG = {"pile_id": PILE, "idle_shutdown_s": 0, "mqtt": {"keepalive_s": 5}}
WARM = ["--param", "bed_c0=265", "--param", "stack_c0=165", "--param", "evap_delay_s=5"]


async def _scenario(tmp_path, fw_build):
    run = PileRun(speed=5, heap=HEAP, mqtt=True, config=CONFIG, sim_args=WARM,
                  firmware_build=fw_build, board_dir=str(tmp_path / "board"))
    await run.start()
    op = Operator(run.mqtt_port, PILE)
    out = {}
    try:
        assert await run.wait_state("ready", 60), run.lines[-20:]
        assert await until(op.ready.is_set, 10)
        # signed once the pile's first seconds are over (docs/mqtt.md)
        assert await until(lambda: run.status.get("t", 0) >= 3000 * run.speed, 60)
        key = keys.cmd_key(run.fleet_secret, PILE)
        now = int(time.time())
        a = json.dumps(signer.sign_command("set_limit", {"amps": 40}, key, now, ttl_s=300, pile=PILE,
                                           cid="before-reboot")).encode()
        # issued ahead of the pile's clock (an operator clock 5 s fast)
        b = json.dumps(signer.sign_command("set_limit", {"amps": 41}, key, now + 5, ttl_s=300, pile=PILE,
                                           cid="ahead-of-clock")).encode()
        c = json.dumps(signer.sign_command("set_limit", {"amps": 42}, key, now, ttl_s=300, pile=PILE,
                                           cid="left-retained")).encode()
        op.send(a)
        out["a"] = await op.ack("before-reboot")
        op.send(b)
        out["b"] = await op.ack("ahead-of-clock")
        op.send(c, retain=True)  # live: the pile gets it without the retain flag
        out["c"] = await op.ack("left-retained")

        # The pile restarts (a crash, a power cut): the same bytes again.
        await run.kill_firmware()
        run.state = None
        await run.start_firmware()
        assert await run.wait_state("ready", 60), run.lines[-20:]
        # on its new subscription the broker hands it the retained one
        out["c_again"] = await op.ack("left-retained", 2)
        op.send(a)
        out["a_again"] = await op.ack("before-reboot", 2)
        op.send(b)
        out["b_again"] = await op.ack("ahead-of-clock", 2)
        op.send(b"", retain=True)  # the operator clears the retained one
        # A command signed after both the boot and the kept floor works.
        assert await until(lambda: time.time() >= now + 7, 30)
        d = signer.sign_command("set_limit", {"amps": 43}, key, time.time(), pile=PILE, cid="after-reboot")
        op.send(json.dumps(d).encode())
        out["d"] = await op.ack("after-reboot")
        # what the pile carried out, as its log says, before and after the reboot
        boots = [i for i, ln in enumerate(run.lines) if ln.startswith("LOG boot ")]
        out["ran"] = [sum(1 for ln in run.lines[i:j] if ln.startswith("LOG cmd ") and ln.endswith(" ok ok"))
                      for i, j in ((boots[0], boots[1]), (boots[1], len(run.lines)))]
        return out
    finally:
        op.close()
        await run.stop()
        (tmp_path / "console.log").write_text("\n".join(run.lines) + "\n")


def test_no_command_runs_twice_across_a_reboot_or_from_the_retained_store(tmp_path, fw_build):
    o = asyncio.run(_scenario(tmp_path, fw_build))
    for k in ("a", "b", "c", "d"):
        assert o[k] and o[k]["ok"] and o[k]["reason"] == "ok", (k, o[k])
    assert o["a_again"] and o["a_again"]["reason"] == "issued before boot", o["a_again"]
    # issued 5 s ahead: newer than the boot, refused by the floor kept in the journal
    assert o["b_again"] and o["b_again"]["reason"] == "issued before boot", o["b_again"]
    assert o["c_again"] and o["c_again"]["reason"] == "retained" and not o["c_again"]["ok"], o["c_again"]
    # three carried out before the reboot, only the new one after it
    assert o["ran"] == [3, 1], o["ran"]
