# Texts for people (docs, the live view's help), kept out of the modules the
# board runs so they cost no RAM there. Host tools and docs import this.

# What each state means, for docs and the live view.
STATE_DOC = (
    "everything off, contactor open; waits for a wake command or auto-start",
    "checks every device answers, no interlock active, contactor reads open",
    "burner heats the reformer bed and the stack; ventilation proven",
    "premix fed once the bed is hot; waits for hydrogen to reach the stack",
    "stack enabled with an immediate small load, ramped to minimum load",
    "stack running, buffer battery charging; an EV may plug in",
    "contactor closed, EV current set by the power arbiter",
    "EV current ramped down, then the contactor opens",
    "load ramped down, pump stopped, residual H2 consumed, purge, cool",
    "a stop-severity fault: contactor open, waits until it clears",
    "emergency: contactor open at once, fuel off, ventilation maximum",
    "crashed `maintenance_after` times in a row: no control (devices in their safe defaults), "
    "REPL and MQTT alive; a `reset` command clears it",
)


# Reformer modes (h2p.codes.REF_MODE_*), indexed by mode.
REF_MODES = ("off", "preheat", "run", "cooldown")

# BMS alarm bits (bat_alarms): the firmware stops on any of them.
BMS_ALARM_OVERTEMP = 1
BMS_ALARM_CELL = 2
BMS_ALARM_COMM = 4

# The energy manager's modes (h2p.energy), indexed by mode (docs/energy.md).
ENERGY_MODES = ("off", "warm_up", "charge", "boost", "hold", "full", "low")

# Names of the interlock codes (h2p.interlocks), indexed by code.
SEVERITY_NAMES = ("none", "warning", "derate", "stop", "emergency")
OP_NAMES = (">=", "<=", "bit", "==", "ohm/V <", "code")
WHEN_NAMES = ("always", "fuel present", "stack loaded", "EV connected")
CLEAR_NAMES = ("auto", "reset command")

INTERLOCK_WHY = {
    "estop": "E-stop pressed (GPIO or safety I/O chain)",
    "h2_warn": "hydrogen at 10 % LEL",
    "h2_trip": "hydrogen at 25 % LEL: fuel off, ventilation max",
    "meoh_leak": "methanol in the tank bund",
    "bed_overtemp": "reformer bed above 320 degC",
    "burner_overtemp": "burner above 650 degC (it runs at ~480): fuel off",
    "ref_trip": "reformer controller alarm: flame lost (premix and off-gas would pass unburnt) or reformate over-pressure",
    "ref_alarm": "reformer controller alarm: premix pump without flow or a thermocouple fault: the stack winds down on what is on its way",
    "evap_overtemp": "evaporator above 250 degC: running dry",
    "evap_cold": "evaporator below 120 degC while the stack is loaded: premix may reach the bed as liquid; half power",
    "co_high": "CO in the reformate at 2 % (the cells lose ~15 mV per %): half power while the bed loop brings the bed back",
    "co_trip": "CO in the reformate at 3 %: stop charging",
    "stack_hot": "stack above 185 degC: lower power",
    "stack_overtemp": "stack at 195 degC",
    "cell_low": "minimum cell below 0.35 V",
    "cell_trip": "minimum cell below 0.20 V: starvation",
    "tank_empty": "premix tank empty",
    "vent_fail": "no proven ventilation airflow while fuel is present",
    "tilt": "pile tilted",
    "door_open": "enclosure door open",
    "estop_chain": "hard-wired E-stop chain open",
    "water": "water ingress",
    "iso_warn": "insulation 100-500 ohm/V",
    "iso_fault": "insulation below 100 ohm/V",
    "pilot_short": "pilot state E (short)",
    "bms_alarm": "buffer battery BMS alarm: the battery neither charges nor discharges (the stack carries the load)",
    "bat_hot": "buffer battery above 50 degC: lower power (the BMS lowers its own limits too; in the cold it allows no charge below 0 degC, which bounds the stack through the claim `bms`)",
    "bat_overtemp": "buffer battery at 60 degC",
    "charger_hot": "charger modules above 85 degC",
    "contactor_welded": "contactor welded: commanded open, aux reads closed",
    "contactor_stuck": "contactor stuck open: commanded closed, aux reads open",
    "comm_charger": "charger controller silent",
    "comm_safety": "safety I/O silent",
    "comm_fuelcell": "fuel-cell controller silent",
    "comm_reformer": "reformer controller silent",
    "comm_bms": "battery BMS silent",
    "comm_meter": "energy meter silent",
    "task_crash": "a task of the firmware raised: the pile stops safely, then the board resets on purpose (h2p.crash)",
}
