# The pile's config: /config.json on the board's filesystem. Everything but
# the pile id has a default. Loaded and validated once at boot; a bad file
# stops the firmware in `off` with the contactor open and one clear line.
from h2p.schema import REQUIRED, ConfigError, ident, load_json, one_of, rng, validate
from h2p.registers import METER_PROFILES

_UNIT = (int, None, rng(1, 247), "Modbus unit id")
_HEX = "0123456789abcdefABCDEF"


def _key(v):
    # The command key as `h2pile keys` prints it: 32 bytes in hex. Anything
    # else would boot and then refuse every command as "bad signature".
    if v and (len(v) != 64 or v.strip(_HEX)):
        return "must be 64 hex digits (32 bytes, as `h2pile keys` prints it) or empty"
    return None


def _ssid(v):
    return "must be at most 32 bytes" if len(v.encode()) > 32 else None


def _wpa(v):
    # A shorter or longer WPA2 passphrase never joins: the pile would retry forever.
    n = len(v)
    if n and not (8 <= n <= 63 or (n == 64 and not v.strip(_HEX))):
        return "must be 8 to 63 characters or 64 hex digits (WPA2), or empty for an open network"
    return None


def _comm_timeout(v):
    # 0.1 s in a u16 register; under 0.5 s normal polling could not keep it fed.
    return None if v == 0 or 500 <= v <= 600000 else "must be 0 (twice data_age_ms) or 500 to 600000"


BUS = {
    "baud": (int, 115200, one_of(9600, 19200, 38400, 57600, 115200), "RS-485 baud rate"),
    "timeout_ms": (int, 60, rng(5, 2000), "response timeout per transaction"),
    "retries": (int, 0, rng(0, 3), "retries of a read before the device counts as silent"),
    "data_age_ms": (int, 2500, rng(100, 60000), "a reading older than this is unknown (raise only for accelerated simulation)"),
    "slow_every": (int, 10, rng(1, 100), "slow telemetry is read every N poll cycles"),
    "idle_cycle_ms": (int, 1000, rng(0, 2000), "while off (nothing energised), one poll cycle per this period "
                      "instead of back to back, so the CPU sleeps; at most half of data_age_ms and of the comm "
                      "watchdog (and under the board's watchdog); 0: back to back"),
    "comm_timeout_ms": (int, 0, _comm_timeout, "charger, fuel cell and reformer go safe on their own after hearing "
                        "nothing from the pile this long (their comm watchdog, written at boot; any request "
                        "feeds it); 0: twice data_age_ms"),
    "meter_gap_ms": (int, 30000, rng(1000, 600000), "the billing meter (not a safety reading) may be silent this long before a session ends (comm_meter, meter_timeout); its energy register bridges the gap"),
}

UNITS = {
    "reformer": (int, 1, _UNIT[2], "reformer controller"),
    "fuelcell": (int, 2, _UNIT[2], "fuel-cell controller"),
    "bms": (int, 3, _UNIT[2], "battery BMS"),
    "charger": (int, 4, _UNIT[2], "charger controller"),
    "meter": (int, 5, _UNIT[2], "energy meter"),
    "safety": (int, 6, _UNIT[2], "safety I/O"),
}

LIMITS = {
    "charger_max_a": (float, 125.0, rng(1, 500), "charger modules' output current rating"),
    "operator_limit_a": (float, 500.0, rng(0, 500), "operator's EV current limit at boot"),
    "charger_eff": (float, 0.955, rng(0.5, 1.0), "DC charger efficiency"),
    "stack_cells": (int, 120, rng(1, 400), "cells in the stack"),
    "stack_rated_a": (float, 75.0, rng(1, 500), "stack current at rated power"),
    "stack_min_load": (float, 0.25, rng(0.1, 0.5), "minimum stack load, fraction of rated"),
    "stack_ramp_up": (float, 0.01, rng(0.001, 0.05), "stack ramp up, fraction of rated per second"),
    "stack_ramp_down": (float, 0.07, rng(0.01, 0.2), "stack ramp down, fraction of rated per second"),
    "fuel_util": (float, 0.78, rng(0.5, 0.95), "anode fuel utilisation"),
    "premix_h2_mol_per_l": (float, 50.3, rng(10, 100), "mol H2 per litre of premix (60 wt % MeOH)"),
    # At most 60 s: the supervisor's flow delay line holds 64 one-second samples.
    "feed_lead_s": (float, 45.0, rng(0, 60), "evaporator + reformer delay the feed leads the current by"),
    "bed_setpoint_c": (float, 265.0, rng(220, 300), "reformer bed setpoint"),
    "bed_feed_min_c": (float, 240.0, rng(200, 300), "bed temperature before premix is fed"),
    "stack_start_c": (float, 130.0, rng(120, 180), "stack temperature before current is drawn"),
    "stack_ready_c": (float, 150.0, rng(120, 180), "stack temperature for `ready`"),
    "bat_soc_min": (float, 10.0, rng(0, 50), "buffer battery SOC floor for EV charging"),
    "bat_kwh": (float, 60.0, rng(1, 500), "buffer battery capacity (deliverable-energy estimate)"),
    "premix_l_per_kwh": (float, 0.95, rng(0.6, 3.0), "premix per kWh delivered to EVs (dispatch estimate) until the pile has measured its own"),
    "bat_soc_target": (float, 90.0, rng(50, 100), "stack charges the battery up to this SOC"),
    "bat_soc_max": (float, 95.0, rng(50, 100), "stack drops to minimum load above this SOC"),
    "stop_current_a": (float, 5.0, rng(0.5, 20), "contactor opens only below this current"),
    "aux_confirm_ms": (int, 1000, rng(200, 10000), "contactor aux contact disagreeing with the delivered command on consecutive fresh readings this long: welded (open commanded) or stuck (closed)"),
    "purge_s": (float, 30.0, rng(0, 600), "purge time in cooldown"),
    "cool_reformer_c": (float, 80.0, rng(20, 200), "cooldown ends below this bed temperature"),
    "cool_stack_c": (float, 90.0, rng(20, 200), "cooldown ends below this stack temperature"),
}

# The energy manager (h2p.energy; the policy: docs/energy.md).
ENERGY = {
    "band_lo": (float, 0.6, rng(0.1, 1.0), "stack current while it recharges the battery without an EV, fraction of rated (its best-efficiency band)"),
    "band_hi": (float, 0.67, rng(0.1, 1.0), "stack current while an EV charges and the battery is below target, fraction of rated (top of the band; not below band_lo)"),
    "boost_soc": (float, 0.0, rng(0, 100), "below this battery SOC with an EV charging the stack runs at rated, off its best band (~2.5 % more premix per kWh): the EV waits on the stack alone (0: never)"),
    "hold_s": (int, 1800, rng(0, 86400), "once the battery is back at target with no EV, the stack is held warm at minimum load this long before an idle shutdown may cool the pile"),
    "premix_low_l": (float, 10.0, rng(2, 200), "premix at or below which an idle pile may cool down without refilling its battery"),
    "reserve_l": (float, 2.0, rng(0, 50), "premix the pile never delivers (the tank_empty interlock stops it at 2 L): left out of the dispatch estimate"),
    "warmup_l": (float, 1.0, rng(0, 50), "premix a warm-up from cold takes (dispatch estimate), until the pile has measured one"),
    "window_kwh": (float, 10.0, rng(1, 200), "energy the stack produces between two measurements of premix per kWh"),
}

# Reformer control (h2p.reformer; the loop and its tuning: docs/energy.md).
# The bed setpoint and the feed minimum are in limits (the warm-up uses them).
REFORMER = {
    "burner_base_pct": (float, 8.0, rng(0, 50), "burner firing with the stack at no load, % of full fire: what the bed's insulation loses at its setpoint"),
    "burner_pct_per_a": (float, 0.03, rng(0, 2), "burner firing added per ampere of stack current fed (feed-forward: the premix's heat need beyond what its anode off-gas brings back)"),
    "burner_lead_pct_per_a": (float, 0.8, rng(0, 5), "burner firing added per ampere of feed not yet at the stack (the new premix evaporates for a transport delay before its off-gas burns)"),
    "bed_kp_pct_per_k": (float, 5.0, rng(0, 50), "bed loop: burner % per K below the bed setpoint"),
    "bed_ki_pct_per_k_min": (float, 1.5, rng(0, 10), "bed loop: burner % added per minute per K below the setpoint (integral)"),
    "feed_resume_k": (float, 10.0, rng(1, 50), "a bed below limits.bed_feed_min_c is not fed until it is this much above it again"),
}

MQTT = {
    "host": (str, "", None, "broker host; empty disables MQTT"),
    "port": (int, 1883, rng(1, 65535), "broker port"),
    "user": (str, "", None, "MQTT user name (defaults to the pile id)"),
    "password": (str, "", None, "per-pile MQTT password (h2pile keys)"),
    "cmd_key": (str, "", _key, "per-pile command key (h2pile keys); empty: every command is refused"),
    "keepalive_s": (int, 15, rng(5, 600), "MQTT keepalive"),
    "tls": (bool, False, None, "TLS with server-certificate verification"),
    "ca_file": (str, "ca.der", None, "fleet CA certificate (DER) on the board, checked at boot when tls and host are set"),
    "server_hostname": (str, "", None, "name in the broker certificate"),
    "heartbeat_s": (int, 30, rng(1, 3600), "telemetry heartbeat"),
}

WIFI = {
    "ssid": (str, "", _ssid, "WiFi network (boards with WiFi)"),
    "password": (str, "", _wpa, "WiFi password (WPA2); empty: open network"),
    "join_s": (int, 20, rng(5, 120), "a join that takes longer counts as failed and is retried"),
    "backoff_max_s": (int, 60, rng(2, 600), "longest wait between join attempts (doubling from 1 s, +/-25 % jitter)"),
}

NTP = {
    "server": (str, "pool.ntp.org", None, "SNTP server (an IP address avoids DNS); empty: never set the clock"),
    "port": (int, 123, rng(1, 65535), "SNTP port"),
    "retry_s": (int, 30, rng(1, 3600), "after a failed query, retry this much later (doubling to 10x)"),
    "resync_s": (int, 3600, rng(60, 86400), "query again this often once the clock is set"),
}


def _meter(v):
    return None if v in METER_PROFILES else "must be one of " + ", ".join(sorted(METER_PROFILES))


SCHEMA = {
    "pile_id": (str, REQUIRED, ident, "pile id: a-z, 0-9, '-', '_' (used in topics)"),
    "bus": (BUS, None, None, ""),
    "units": (UNITS, None, None, ""),
    "meter_profile": (str, "sdm630", _meter, "energy meter profile (registers.METER_PROFILES)"),
    "limits": (LIMITS, None, None, ""),
    "energy": (ENERGY, None, None, ""),
    "reformer": (REFORMER, None, None, ""),
    "mqtt": (MQTT, None, None, ""),
    "wifi": (WIFI, None, None, ""),
    "ntp": (NTP, None, None, ""),
    "maintenance_after": (int, 3, rng(1, 20), "crashes in a row (each within stable_s of boot) before the pile stays in maintenance"),
    "stable_s": (int, 120, rng(10, 3600), "a boot that runs this long without a crash clears the crash count"),
    "auto_start": (bool, False, None, "wake the pile at boot without a command"),
    "auto_charge": (bool, False, None, "start a session when an EV plugs in, without a command"),
    "idle_shutdown_s": (int, 0, rng(0, 86400), "shut down after this long without an EV (0: never)"),
    "data_dir": (str, "data", None, "directory for the journal and persistent counters"),
    "journal_kb": (int, 32, rng(8, 512), "flash the session journal may use"),
    "checkpoint_s": (int, 60, rng(5, 3600), "at most one checkpoint of a running session per this many s"),
}


def _cross(c, where):
    # Settings that must agree with each other (each is in range already).
    e, lim = c["energy"], c["limits"]
    if e["band_lo"] > e["band_hi"]:
        raise ConfigError("%s: key 'energy.band_lo' is %r: must not exceed energy.band_hi (%r)"
                          % (where, e["band_lo"], e["band_hi"]))
    if lim["bed_feed_min_c"] >= lim["bed_setpoint_c"]:
        raise ConfigError("%s: key 'limits.bed_feed_min_c' is %r: must be below limits.bed_setpoint_c (%r)"
                          % (where, lim["bed_feed_min_c"], lim["bed_setpoint_c"]))
    if lim["bat_soc_target"] > lim["bat_soc_max"]:
        raise ConfigError("%s: key 'limits.bat_soc_target' is %r: must not exceed limits.bat_soc_max (%r)"
                          % (where, lim["bat_soc_target"], lim["bat_soc_max"]))
    return c


def load(path):
    return _cross(load_json(path, SCHEMA), path)


def named_files(c):
    # The files settings name that the firmware will open: (key, file name)
    # pairs, each checked by check_file at boot (h2p.boardcfg) and by
    # `h2pile provision` before it writes (against the files it installs).
    m = c["mqtt"]
    return (("mqtt.ca_file", m["ca_file"]),) if m["tls"] and m["host"] else ()


def check_file(key, name, data, where="config.json"):
    # data: the file's bytes, None if there is no such file. Today every such
    # file is a certificate, DER as MicroPython's ssl takes it: one
    # SEQUENCE whose length is the file's. Raises ConfigError naming both.
    n = 0 if data is None else len(data)
    if data is None:
        msg = "no such file"
    elif not n:
        msg = "the file is empty"
    elif b"-----BEGIN" in data:
        msg = "the file is PEM; the board needs DER (h2pile provision --ca converts it)"
    else:
        size = -1
        if n > 3 and data[0] == 0x30:
            size = data[1]
            h = 2
            if size & 0x80:  # long form: the next size & 0x7f bytes
                h += size & 0x7F
                size = 0
                for b in data[2:h]:
                    size = size << 8 | b
            size += h
        msg = None if size == n else "not a DER certificate (%d bytes)" % n
    if msg:
        raise ConfigError("%s: key '%s' names '%s': %s" % (where, key, name, msg))


def from_dict(d, where="config"):
    return _cross(validate(SCHEMA, d, where), where)
