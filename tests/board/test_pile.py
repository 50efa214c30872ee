"""The pile on an emulated Pico W, end to end: flashed as a technician does it, then run.

One board for the whole module (booting and flashing cost minutes of wall
time): `h2pile flash` + `h2pile provision` through the emulated USB console,
a reset, then the firmware boots through board_rp2 with its RS-485 UART
bridged to the simulator (on the board's clock), joins the emulated WiFi,
talks MQTT to a mosquitto on 127.0.0.1, rides out a WiFi outage while
off, takes a signed `wake` through selftest into preheat, and is reset by
the real RP2040 watchdog when stuck. The tests run in file order and build on each
other's state; each waits on events (console lines, MQTT messages) with a
deadline in the board's own time (CAP wall seconds only catch an emulator that
stopped), never a fixed sleep: on a loaded machine the emulated board slows
down, and so do its deadlines.

Provisioned with --wifi, --broker 10.0.0.1:PORT and --ntp 10.0.0.1 (the
harness's SNTP responder); one site setting through --config (not a firmware
change): mqtt.keepalive_s 600, as the broker counts wall seconds and the
board's 15 s keepalive would be ~6 min of wall time.
"""

from __future__ import annotations

import json
import time

import pytest

from .conftest import MqttTap, echo_to, h2pile

PILE = "emu-7"
SECRET = "5a" * 32
SITE = {"mqtt": {"keepalive_s": 600}}
TIMES: dict[str, float] = {}
CAP = 3600.0  # wall seconds: a stopped emulator, not a slow one


@pytest.fixture(scope="module")
def pile(uf2_image, fw_rp2, tmp_path_factory):
    from host_tools.emu.rig import PicoRig
    from tests.helpers.mqtt_broker import Broker

    d = tmp_path_factory.mktemp("pile-board")
    bdir = fw_rp2
    (d / "site.json").write_text(json.dumps(SITE))
    broker = Broker(d).start()
    tap = rig = None
    try:
        tap = MqttTap(broker.port, PILE)
        rig = PicoRig(uf2_image, broker_port=broker.port, echo=echo_to(d / "console.log"))
        t0 = time.monotonic()
        rig.start()
        TIMES["start"] = time.monotonic() - t0
        info = {"dir": d, "build": bdir}
        info["flash"] = h2pile("flash", "--port", rig.board.pty, "--board", "rp2_pico_w", "--build", bdir)
        info["provision"] = h2pile("provision", "--port", rig.board.pty, "--pile-id", PILE,
                                   "--fleet-secret", SECRET, "--wifi", "h2pile-emu:any-password",
                                   "--broker", f"10.0.0.1:{broker.port}", "--ntp", "10.0.0.1",
                                   "--config", str(d / "site.json"))
        info["boot_mark"] = rig.board.console.mark()
        info["reset_at"] = time.monotonic()
        rig.board.reset()  # the technician power-cycles the provisioned board
        yield rig, tap, broker, info
    finally:
        if tap is not None:
            tap.close()
        if rig is not None:
            rig.stop(save_fs=d / "flash.lfs")
        broker.kill()


def test_flash_and_provision_through_the_emulated_usb(pile):
    _rig, _tap, _broker, info = pile
    rc, out, err, wall = info["flash"]
    TIMES["flash"] = wall
    assert rc == 0, err
    assert "flashed rp2_pico_w" in out and "sha256 checked on the board" in out
    rc, out, err, wall = info["provision"]
    TIMES["provision"] = wall
    assert rc == 0, err
    assert f"provisioned pile {PILE}" in out


def test_boots_through_board_rp2(pile):
    rig, _tap, _broker, info = pile
    m = rig.board.console.wait(r"^BOOT (\{.*\})$", CAP, start=info["boot_mark"], alive=rig.board.alive,
                               board_s=30)
    TIMES["boot"] = time.monotonic() - info["reset_at"]
    boot = json.loads(m.group(1))
    info["boot"] = boot
    assert boot["board"] == "rp2_pico_w" and boot["pile"] == PILE
    assert boot["mpy"] == "1.23.0" and boot["code"] == "ram"  # no ROMFS before v1.25: .mpy in the heap
    assert boot["crash"] is None and boot["maintenance"] is False
    assert boot["heap_used"] > 0 and boot["heap_free"] > 0


def test_bus_runs_over_the_bridged_uart(pile):
    rig, _tap, _broker, info = pile
    m = rig.board.console.wait(r'^STATUS (\{.*"cycles": [1-9].*\})$', CAP, start=info["boot_mark"],
                               alive=rig.board.alive, board_s=30)
    st = json.loads(m.group(1))
    assert st["state"] == "off"
    assert rig.bridge is not None
    s = rig.bridge.stats
    assert s["replies"] > 20 and s["tx_without_de"] == 0 and s["rx_lost_de"] == 0 and s["rx_overrun"] == 0, s
    assert st["bus"][0] > 20  # the master counted the transactions


def test_publishes_status_meta_state_tele(pile):
    rig, tap, _broker, info = pile
    b = rig.board
    e0 = b.emu_s()
    status = tap.wait("status", lambda m: m.get("online") is True, CAP, board=b, board_s=40)
    TIMES["mqtt_up"] = time.monotonic() - info["reset_at"]
    meta = tap.wait("meta", timeout=CAP, board=b, board_s=15)
    state = tap.wait("state", timeout=CAP, board=b, board_s=15)
    tele = tap.wait("tele", timeout=CAP, board=b, board_s=40)
    assert status["boot"] >= 1
    assert meta["board"] == "rp2_pico_w" and meta["reset"] and meta["last_crash"] is None
    assert meta["link"] == "up"
    assert state["state"] == "off"
    assert tele["premix_l"] > 0 and tele["state"] == "off"
    assert b.emu_s() - e0 < 50  # board seconds


def test_wifi_dropped_and_restored_mqtt_comes_back(pile):
    # Before the wake: the pile is off, its bus polls once a second
    # (bus.idle_cycle_ms) and the emulated CPU mostly sleeps, so the board's
    # 30 s of reconnect back-off cost ~30 s of wall time, not ~10 minutes.
    rig, tap, _broker, _info = pile
    mark = tap.mark()
    cmark = rig.board.console.mark()
    t0 = time.monotonic()
    b = rig.board
    rig.drop_wifi()
    # The broker loses the connection and publishes the pile's last will.
    tap.wait("status", lambda m: m.get("online") is False, CAP, start=mark, board=b, board_s=30)
    # The pile notices, and a join attempt finds no network (the AP is out of range).
    b.console.wait(r"^LOG link down", CAP, start=cmark, board_s=30)
    b.console.wait(r"^LOG link no ap", CAP, start=cmark, board_s=30)
    rig.restore_wifi()
    # MQTT's reconnect backs off up to 30 s of board time (mqtt backoff_max_ms).
    tap.wait("status", lambda m: m.get("online") is True, CAP, start=mark, board=b, board_s=60)
    TIMES["wifi_outage_cycle"] = time.monotonic() - t0
    meta = tap.wait("meta", lambda m: m.get("link") == "up", CAP, start=mark, board=b, board_s=15)
    assert meta["board"] == "rp2_pico_w"


def test_signed_wake_takes_the_cold_pile_through_selftest_into_preheat(pile):
    rig, tap, broker, info = pile
    from h2p import keys, sign, signer
    from host_tools import cmd as cmdtool

    rig.board.console.wait(r"^LOG clock set", CAP, start=info["boot_mark"], board_s=30)
    now = rig.board.unix_time()
    assert now is not None
    key = sign.key_bytes(keys.cmd_key(SECRET, PILE))
    mark = tap.mark()
    cmark = rig.board.console.mark()
    # Signed 5 s ahead (within the 30 s skew): the pile refuses what was
    # signed in its boot's second, and the board's clock as read from its
    # console lags the board (docs/mqtt.md, "issued before boot").
    c = signer.sign_command("wake", {}, key, now + 5, ttl_s=300, pile=PILE)
    code, ack = cmdtool.send("127.0.0.1", broker.port, PILE, c, timeout=900)  # returns at the ack
    assert code == cmdtool.EXIT_OK, ack
    assert ack["ok"] is True
    b = rig.board
    tap.wait("state", lambda m: m.get("state") == "selftest", CAP, start=mark, board=b, board_s=30)
    b.console.wait(r"^LOG event \S+ selftest pass", CAP, start=cmark, board_s=30)
    tap.wait("state", lambda m: m.get("state") == "preheat", CAP, start=mark, board=b, board_s=30)
    # The simulator saw the preheat: the reformer commanded into its preheat mode
    # (after the fan proved airflow), on the simulator's side of the wire.
    from h2p import codes as K

    def preheat_written() -> bool:
        w = rig.sim.call(lambda: list(rig.sim.sim.writes))
        return any(dev == "reformer" and name == "ref_mode_cmd" and v == K.REF_MODE_PREHEAT for _, dev, name, v in w)

    e0 = b.emu_s()
    while not preheat_written():
        assert b.emu_s() - e0 < 30, "the reformer never got REF_MODE_PREHEAT in 30 s of board time"
        b.wait_emu(0.5, CAP)


def test_stuck_firmware_is_reset_by_the_watchdog(pile):
    rig, _tap, _broker, _info = pile
    board = rig.board
    cmark = board.console.mark()
    t0 = time.monotonic()
    # A technician's REPL: Ctrl-C stops the firmware; the hardware watchdog it
    # started keeps running, and nothing feeds it while the CPU spins.
    board.send_console(b"\x03\x03")
    board.console.wait(r'Type "help\(\)"', CAP, start=cmark, board_s=15)
    # The watchdog runs with the firmware's 5 s (boards/rp2_pico_w.json); set
    # again to 1 s (the same hardware timer, reloaded), the CPU spins 1 s of
    # board time instead of 5: ~100 s less wall time on the emulator, the same
    # reset path. (The blank line ends the block: the REPL runs it instead of
    # waiting at "...".)
    board.send_console(b"import machine; machine.WDT(timeout=1000)\r\n")
    board.send_console(b"while True: pass\r\n\r\n")
    m = board.console.wait(r"^BOOT (\{.*\})$", CAP, start=cmark, alive=board.alive, board_s=60)
    TIMES["watchdog_reset_and_boot"] = time.monotonic() - t0
    assert json.loads(m.group(1))["reset"] == "watchdog"
    # The flash (littlefs) outlived the reset: the journal counts this as its second boot.
    board.console.wait(r"^LOG journal boot 2 ", CAP, start=cmark, alive=board.alive, board_s=40)
    # (MQTT after a reset is the crash test's: meta.last_crash from the next boot.)


def test_flash_saved_from_the_board_keeps_the_journal(pile):
    rig, _tap, _broker, info = pile
    from host_tools.emu import fsimage

    img = info["dir"] / "saved.lfs"
    rig.board.save_fs(img)  # what PicoRig.stop(save_fs=...) keeps between emulator runs
    journal = fsimage.read(img, "data/journal.bin")
    assert journal and len(journal) > 0
    assert json.loads(fsimage.read(img, "config.json") or b"{}")["pile_id"] == PILE


def test_report_times(pile):
    print("\nboard tier timings (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMES.items()))
