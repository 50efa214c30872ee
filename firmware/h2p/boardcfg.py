# Board descriptions (boards/<name>.json): which pins and peripherals the
# pile's board uses. Validated with the same schema code as the config so a
# wrong pin number is caught at boot with the file and key named.
from h2p.schema import REQUIRED, ident, load_json, one_of, rng

_PIN = (int, None, rng(0, 48), "GPIO number")

UART = {
    "id": (int, 1, rng(0, 2), "hardware UART id"),
    "tx": _PIN,
    "rx": _PIN,
    "de": _PIN[:1] + (None, rng(0, 48), "RS-485 driver-enable GPIO (high = transmit)"),
    "baud": (int, 115200, one_of(9600, 19200, 38400, 57600, 115200), "default baud"),
    "transport": (str, "uart", one_of("uart", "tcp", "serial"), "uart on boards; tcp or serial on unix"),
    "host": (str, "127.0.0.1", None, "tcp: simulator host"),
    "port": (int, 5020, rng(1, 65535), "tcp: simulator port"),
    "device": (str, "", None, "serial: device path on unix"),
}

SCHEMA: dict = {
    "name": (str, REQUIRED, ident, "board name, same as the file name"),
    "platform": (str, REQUIRED, one_of("esp32", "rp2", "unix"), "MicroPython port"),
    "description": (str, "", None, "what this board is"),
    "uart": (UART, None, None, ""),
    "watchdog_ms": (int, 5000, rng(1000, 8388), "hardware watchdog timeout (RP2040 max 8388)"),
    "estop_pin": _PIN[:1] + (None, rng(0, 48), "E-stop chain input GPIO"),
    "estop_active_low": (bool, True, None, "E-stop input reads 0 when pressed"),
    "led_pin": _PIN[:1] + (None, rng(0, 48), "status LED GPIO"),
    "led_name": (str, "", None, "status LED by pin name instead (Pico W: 'LED', on the WiFi chip)"),
    "heap_kb": (int, 96, rng(32, 512), "Python heap the firmware is budgeted for"),
    "has_wifi": (bool, False, None, "board has WiFi (network.WLAN)"),
    "native": (list, [], None, "firmware modules the build compiles to machine code for this board "
               "(mpy-cross -X emit=native): CPU for RAM, checked by the build"),
}


def load(path):
    return load_json(path, SCHEMA)


def load_both(platform):
    # board.json and config.json, checked at boot (main.py): -> (desc, cfg),
    # or (None, None) after one line naming the file and key. Here rather
    # than in main.py, which is compiled into the heap and kept: this module
    # runs from flash and is dropped after boot.
    from h2p.schema import ConfigError
    from h2p import config

    try:
        desc = load("board.json")
        if desc["platform"] != platform:
            raise ConfigError(
                "board.json: key 'platform' is %r but this firmware runs on %r" % (desc["platform"], platform)
            )
        cfg = config.load("config.json")
        for key, name in config.named_files(cfg):
            # Opened now, not when first used: a missing CA must stop the
            # boot here with its key named, not kill the uplink later.
            try:
                with open(name, "rb") as f:
                    data = f.read()
            except OSError as e:
                if e.errno != 2:  # ENOENT: reported as "no such file"
                    raise ConfigError("config.json: key '%s' names '%s': cannot read (%s)" % (key, name, e))
                data = None
            config.check_file(key, name, data)
        return desc, cfg
    except ConfigError as e:
        print("CONFIG ERROR " + str(e))
        print("STATE off (not started: fix the file and reset)")
        return None, None
