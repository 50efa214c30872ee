"""A task of the pile that raises, on the emulated Pico W: safe, logged, kept, reset, reported.

The fault is a real one, put on the board's flash: the config's `data_dir`
names a *file* ("pile"), so the bus task's first journal write (after its
second poll cycle) raises OSError. The crash path (h2p.crash) must log the
task and the traceback, drive the pile safe, write data/crash.json and reset
the board on purpose; the next boot reports the crash on its BOOT line and in
`meta.last_crash`. With `maintenance_after: 1` that next boot stays up in
maintenance (MQTT alive, no control), so the same fault cannot loop.

The littlefs image is built on the host (fsimage.install: the same files
`h2pile flash` writes) and saved back at the end, so the crash record is
read from the flash as the board left it.
"""

from __future__ import annotations

import json
import time

from .conftest import MqttTap, echo_to

PILE = "emu-crash"
CAP = 3600.0  # wall seconds: a stopped emulator; the deadlines are in board seconds


def test_task_that_raises_goes_safe_resets_and_the_next_boot_reports_it(uf2_image, fw_rp2, tmp_path):
    from host_tools.emu import fsimage
    from host_tools.emu.rig import PicoRig
    from tests.helpers.mqtt_broker import Broker

    cfg = {"pile_id": PILE, "wifi": {"ssid": "h2pile-emu", "password": "emu-password"},
           "mqtt": {"host": "10.0.0.1", "port": 0, "keepalive_s": 600},
           "ntp": {"server": "10.0.0.1"}, "data_dir": "pile", "maintenance_after": 1}
    broker = Broker(tmp_path).start()
    tap = rig = None
    try:
        tap = MqttTap(broker.port, PILE)
        cfg["mqtt"]["port"] = broker.port
        img = fsimage.install(tmp_path / "flash.lfs", fw_rp2, cfg, extra={"pile": b"not a directory\n"})
        rig = PicoRig(uf2_image, fs_image=img, broker_port=broker.port, echo=echo_to(tmp_path / "console.log"))
        t0 = time.monotonic()
        rig.start()
        con = rig.board.console
        boot1 = json.loads(con.wait(r"^BOOT (\{.*\})$", CAP, alive=rig.board.alive, board_s=40).group(1))
        assert boot1["crash"] is None
        i = con.mark()
        con.wait(r"^CRASH task bus$", CAP, start=i, alive=rig.board.alive, board_s=40)
        con.wait(r"^Traceback", CAP, start=i, board_s=10)
        err = con.wait(r"^(OSError: .*)$", CAP, start=i, board_s=10).group(1)
        con.wait(r"^LOG crash bus OSError", CAP, start=i, board_s=10)
        # Safe: the charger driven from the crash path (the bus task is what died).
        safe = con.wait(r"^LOG crash charger (open|not confirmed)", CAP, start=i, board_s=20).group(1)
        assert safe == "open"
        boot2 = json.loads(con.wait(r"^BOOT (\{.*\})$", CAP, start=i, alive=rig.board.alive, board_s=40).group(1))
        wall = time.monotonic() - t0
        assert boot2["reset"] == "crash"
        assert boot2["crash"]["task"] == "bus" and boot2["crash"]["error"].startswith("OSError")
        assert boot2["crash"]["n"] == 1 and boot2["maintenance"] is True
        meta = tap.wait("meta", lambda b: b.get("last_crash") is not None, CAP, board=rig.board, board_s=40)
        assert meta["last_crash"]["task"] == "bus" and meta["maintenance"] is True
        print(f"\ncrash test: boot to crash to reported boot {wall:.1f} s wall, meta after "
              f"{time.monotonic() - t0:.1f} s; error {err!r}; network: {rig.rules.timed}")
    finally:
        if tap is not None:
            tap.close()
        if rig is not None:
            rig.stop(save_fs=tmp_path / "flash.lfs")
        broker.kill()
    rec = json.loads(fsimage.read(tmp_path / "flash.lfs", "data/crash.json") or b"null")
    assert rec and rec["task"] == "bus" and rec["n"] == 1
