# Register maps of every device on the pile's RS-485 line, defined once.
# The firmware decodes with them, the simulator serves them, the host tools
# (`h2pile bus read`) and docs/registers.md print them. Change a register
# here and everything follows.
#
# A field is (name, address, type, scale): value = raw * scale.
# Readings (input registers, FC04 unless a profile says otherwise) carry the
# device prefix in their name so every reading name is unique on the pile.
# Commands are holding registers (FC03 read-back, FC06/FC16 write).
# constfold: off  (the build leaves U16, I16 ... as names here: folded, each
# row became a constant of the compiled module, kept with its code, instead
# of a tuple built once at boot and dropped with the maps: +2 KB of heap)

from h2p.codes import *  # noqa: F401,F403  (types, modes, pilot states, bits)
from h2p.codes import U16, I16, U32, F32, TYPE_WORDS  # noqa: F401 - users of the maps read U32, TYPE_WORDS here

DEVICES = {
    "reformer": {
        "unit": 1,
        "title": "reformer controller",
        "readings": (
            ("ref_mode", 0, U16, 1),
            ("ref_burner_c", 1, I16, 0.1),
            ("ref_evap_c", 2, I16, 0.1),
            ("ref_bed_c", 3, I16, 0.1),
            ("ref_pump_mlmin", 4, U16, 0.1),
            ("ref_tank_l", 5, U16, 0.1),
            ("ref_meoh_leak", 6, U16, 1),
            ("ref_alarms", 7, U16, 1),
        ),
        "commands": (
            ("ref_mode_cmd", 0x100, U16, 1),
            ("ref_pump_sp", 0x101, U16, 0.1),
            ("ref_bed_sp", 0x102, I16, 0.1),
            ("ref_comm_timeout", 0x103, U16, 0.1),  # see COMM_TIMEOUT below
            # Burner firing in run mode, % of full fire: the pile holds the
            # bed temperature with it (h2p.reformer). In preheat the
            # controller runs its own warm-up towards ref_bed_sp.
            ("ref_burner_sp", 0x104, U16, 0.1),
        ),
    },
    "fuelcell": {
        "unit": 2,
        "title": "fuel-cell controller (HT-PEM stack + DC/DC)",
        "readings": (
            ("fc_status", 0, U16, 1),
            ("fc_stack_c", 1, I16, 0.1),
            ("fc_stack_v", 2, U16, 0.1),
            ("fc_stack_a", 3, U16, 0.1),
            ("fc_min_cell_v", 4, U16, 0.001),
            ("fc_co_ppm", 5, U16, 1),
            ("fc_dcdc_v", 6, U16, 0.1),
            ("fc_dcdc_a", 7, U16, 0.1),
        ),
        "commands": (
            ("fc_enable", 0x100, U16, 1),
            ("fc_current_sp", 0x101, U16, 0.1),
            ("fc_purge", 0x102, U16, 1),
            ("fc_comm_timeout", 0x103, U16, 0.1),
        ),
    },
    "bms": {
        "unit": 3,
        "title": "buffer battery BMS (LFP)",
        "readings": (
            ("bat_soc", 0, U16, 0.1),
            ("bat_v", 1, U16, 0.1),
            ("bat_a", 2, I16, 0.1),  # + discharge, - charge
            ("bat_c", 3, I16, 0.1),
            ("bat_chg_lim_a", 4, U16, 0.1),
            ("bat_dis_lim_a", 5, U16, 0.1),
            ("bat_alarms", 6, U16, 1),
        ),
        "commands": (),
    },
    "charger": {
        "unit": 4,
        "title": "charger controller (modules, connector, contactor, IMD)",
        "readings": (
            ("chg_status", 0, U16, 1),
            ("chg_pilot", 1, U16, 1),
            ("chg_ev_req_v", 2, U16, 0.1),
            ("chg_ev_req_a", 3, U16, 0.1),
            ("chg_ev_soc", 4, U16, 0.1),
            ("chg_out_v", 5, U16, 0.1),
            ("chg_out_a", 6, U16, 0.1),
            ("chg_iso_kohm", 7, U16, 1),
            ("chg_c", 8, I16, 0.1),
        ),
        "commands": (
            ("chg_contactor", 0x100, U16, 1),
            ("chg_limit_a", 0x101, U16, 0.1),
            ("chg_enable", 0x102, U16, 1),
            ("chg_lock", 0x103, U16, 1),
            ("chg_comm_timeout", 0x104, U16, 0.1),
        ),
    },
    "meter": {
        "unit": 5,
        "title": "energy meter (billing, EV output)",
        # Readings come from the meter profile chosen in the config.
        "readings": (),
        "commands": (),
    },
    "safety": {
        "unit": 6,
        "title": "safety I/O (gas, enclosure, ventilation)",
        "readings": (
            ("sio_status", 0, U16, 1),
            ("sio_h2_lel", 1, U16, 0.1),
            ("sio_airflow", 2, U16, 0.1),  # m3/min through the enclosure
        ),
        "commands": (("sio_fan", 0x100, U16, 1),),  # fan duty %
    },
}

# Meter support is a table of profiles, not code per meter. Each field:
# (reading, address, type, scale to SI: V, A, W, Wh). Users of peer
# chargers meet meters in kW and odd multipliers: scale is any float.
METER_FIELDS = ("met_v", "met_a", "met_w", "met_wh")
METER_PROFILES = {
    # Eastron SDM630: FC04, float32 high word first, energy in kWh.
    "sdm630": {
        "fc": 4,
        "fields": (
            ("met_v", 0x0000, F32, 1.0),
            ("met_a", 0x0006, F32, 1.0),
            ("met_w", 0x000C, F32, 1.0),
            ("met_wh", 0x0048, F32, 1000.0),
        ),
    },
    # CHINT DTSU666: FC03, float32; V in 0.1 V, I in mA, P in 0.1 W, kWh.
    "dtsu666": {
        "fc": 3,
        "fields": (
            ("met_v", 0x2006, F32, 0.1),
            ("met_a", 0x200C, F32, 0.001),
            ("met_w", 0x2012, F32, 0.1),
            ("met_wh", 0x401E, F32, 1000.0),
        ),
    },
}

# The communication watchdog of every controlled device: seconds (0.1 s
# units) without a request addressed to it from the master, read or write,
# after which it goes to its safe state on its own (charger: output off,
# then the contactor opens once the current is down; fuel cell: current 0,
# stack disabled; reformer: pump off, burner to cooldown). 0 (the power-up
# value) disables it. The master writes it with the device's other commands
# (one block, so no command ever arrives without it); its normal polling
# keeps it fed, no write is needed for that.
COMM_TIMEOUT = {"reformer": "ref_comm_timeout", "fuelcell": "fc_comm_timeout", "charger": "chg_comm_timeout"}

DEVICE_ORDER = ("reformer", "fuelcell", "bms", "charger", "meter", "safety")


def reading_names():
    # Every reading name on the pile, in a fixed order: the index of a name
    # is its slot in the Readings store. Meter fields come from METER_FIELDS.
    names = []
    for dev in DEVICE_ORDER:
        for f in DEVICES[dev]["readings"]:
            names.append(f[0])
    names.extend(METER_FIELDS)
    return tuple(names)


def command_names():
    names = []
    for dev in DEVICE_ORDER:
        for f in DEVICES[dev]["commands"]:
            names.append(f[0])
    return tuple(names)


def find_command(name):
    for dev in DEVICE_ORDER:
        for f in DEVICES[dev]["commands"]:
            if f[0] == name:
                return dev, f
    raise KeyError(name)


def encode(value, typ, scale):
    # Physical value -> list of register words (used by the simulator and
    # by the master when writing commands).
    if typ == F32:
        import struct

        b = struct.pack(">f", value / scale)
        return [(b[0] << 8) | b[1], (b[2] << 8) | b[3]]
    raw = int(round(value / scale))
    if typ == U16:
        return [max(0, min(0xFFFF, raw))]
    if typ == I16:
        raw = max(-0x8000, min(0x7FFF, raw))
        return [raw & 0xFFFF]
    raw = max(0, min(0xFFFFFFFF, raw))
    return [(raw >> 16) & 0xFFFF, raw & 0xFFFF]
