# Register maps for people (docs/registers.md, docs/safety.md): the unit of
# every reading and command, and the names of enumerations and bit fields,
# keyed by register name (firmware/h2p/registers.py holds the maps, scales
# only). Host-only: never shipped (h2p.layers), so it costs the board no RAM.
# tests/test_docs_generated.py checks that every register has exactly one
# unit here and that every name here is a register.
from h2p import codes as K
from h2p import docs_text as T

# Unit of every reading and command (the register maps hold scales only).
UNITS = {
    "ref_mode": "", "ref_burner_c": "°C", "ref_evap_c": "°C", "ref_bed_c": "°C",
    "ref_pump_mlmin": "ml/min", "ref_tank_l": "L", "ref_meoh_leak": "", "ref_alarms": "bits",
    "fc_status": "bits", "fc_stack_c": "°C", "fc_stack_v": "V", "fc_stack_a": "A",
    "fc_min_cell_v": "V", "fc_co_ppm": "ppm", "fc_dcdc_v": "V", "fc_dcdc_a": "A",
    "bat_soc": "%", "bat_v": "V", "bat_a": "A", "bat_c": "°C", "bat_chg_lim_a": "A",
    "bat_dis_lim_a": "A", "bat_alarms": "bits",
    "chg_status": "bits", "chg_pilot": "", "chg_ev_req_v": "V", "chg_ev_req_a": "A",
    "chg_ev_soc": "%", "chg_out_v": "V", "chg_out_a": "A", "chg_iso_kohm": "kΩ", "chg_c": "°C",
    "sio_status": "bits", "sio_h2_lel": "% LEL", "sio_airflow": "m³/min",
    "met_v": "V", "met_a": "A", "met_w": "W", "met_wh": "Wh",
    "ref_mode_cmd": "", "ref_pump_sp": "ml/min", "ref_bed_sp": "°C", "ref_burner_sp": "% of full fire",
    "fc_enable": "0/1", "fc_current_sp": "A", "fc_purge": "0/1",
    "chg_contactor": "0/1", "chg_limit_a": "A", "chg_enable": "0/1", "chg_lock": "0/1",
    "ref_comm_timeout": "s", "fc_comm_timeout": "s", "chg_comm_timeout": "s",
    "sio_fan": "%",
}

# Enumerations and bit fields, by register: value/bit -> name.
ENUMS = {
    "ref_mode": dict(enumerate(T.REF_MODES)),
    "ref_mode_cmd": dict(enumerate(T.REF_MODES)),
    "chg_pilot": dict(enumerate(K.PILOT_NAMES)),
}
BITS = {
    "chg_status": {K.CHG_AUX_CLOSED: "aux closed", K.CHG_OUTPUT_ON: "output on",
                   K.CHG_LOCKED: "locked", K.CHG_IMD_DONE: "insulation measured"},
    "sio_status": {K.SIO_TILT: "tilt", K.SIO_DOOR_OPEN: "door open", K.SIO_ESTOP: "E-stop chain open",
                   K.SIO_WATER: "water"},
    "ref_alarms": {K.REF_ALM_FLAME: "flame lost", K.REF_ALM_PUMP: "pump: no flow", K.REF_ALM_SENSOR: "thermocouple",
                   K.REF_ALM_PRESSURE: "over-pressure"},
    "bat_alarms": {T.BMS_ALARM_OVERTEMP: "overtemperature", T.BMS_ALARM_CELL: "cell",
                   T.BMS_ALARM_COMM: "internal comm"},
}
