"""Every physical parameter of the simulated pile, in one documented place.

Figures tagged (V) were read in a public source, (E) are our estimates or
fits (docs/domain.md section 2). Override any of them per run with
``--param name=value`` or a scenario's ``params:`` section.
"""

from __future__ import annotations

import math

DEFAULTS: dict[str, tuple[float, str]] = {
    # ambient and start-up
    "ambient_c": (20.0, "ambient temperature, degC"),
    "bed_c0": (20.0, "reformer bed temperature at start, degC (warm start: 265)"),
    "stack_c0": (20.0, "stack temperature at start, degC (warm start: 165)"),
    # premix and reformer
    "tank_l": (200.0, "premix in the tank at start, L"),
    "tank_capacity_l": (250.0, "tank capacity, L"),
    "premix_h2_mol_per_l": (50.3, "mol H2 per L premix: 60 wt % MeOH, 0.895 kg/L, 3 H2 per MeOH (E)"),
    "premix_lhv_mj_per_l": (10.7, "premix heating value burnt in the burner, MJ/L (V/E)"),
    # The bed and evaporator as one heat balance (E): burner heat (premix
    # fired plus the stack's anode off-gas, times burner_eff) in; premix
    # evaporation (at the pump's flow now), the reforming reaction (at the
    # flow reaching the bed, one transport delay later) and the insulation's
    # loss out. A feed step thus cools the bed for a transport delay before
    # its off-gas comes back as heat; a loop that ignores the bed drifts.
    "bed_heat_kj_per_k": (11.0, "reformer bed + evaporator heat capacity, kJ/K (E: 20 -> 240 degC in ~12 min at full fire)"),
    "bed_loss_w_per_k": (1.2, "bed heat loss through the insulation, W/K (~0.3 kW at 265 degC, E)"),
    "bed_cool_tau_s": (900.0, "bed cooling time constant with the burner off and the fan purging, s"),
    "burner_c": (480.0, "burner temperature when lit, degC (V)"),
    "burner_full_kw": (4.5, "burner at full fire, premix kW: the warm-up, and 100 % of ref_burner_sp"),
    "burner_eff": (0.85, "share of the burner's heat (premix and anode off-gas) that reaches the bed and evaporator"),
    "evap_mj_per_l": (1.9, "heat to evaporate and superheat premix, MJ/L (E)"),
    "reform_mj_per_l": (0.83, "heat of methanol steam reforming, MJ/L premix (49.5 kJ/mol MeOH, E)"),
    "h2_lhv_kj_per_mol": (242.0, "hydrogen lower heating value (anode off-gas burnt in the burner), kJ/mol (V)"),
    "evap_delay_s": (40.0, "evaporator + reformer transport delay, s (30-60, E)"),
    "starvation_fraction": (1.0, "fraction of the reformate hydrogen that reaches the stack (fault injection)"),
    "conv_full_c": (240.0, "conversion is complete above this bed temperature, degC"),
    "conv_zero_c": (200.0, "no conversion below this bed temperature, degC"),
    "co_pct_at_265": (1.0, "CO in reformate at 265 degC, %"),
    "co_pct_per_k": (0.03, "CO rise per K of bed temperature, %/K"),
    # HT-PEM stack, polarisation fit per cell (E)
    "cells": (120.0, "cells in the stack"),
    "cell_area_cm2": (300.0, "active area per cell, cm2"),
    "e0_v": (1.15, "fit: E0, V"),
    "tafel_b_v": (0.136, "fit: Tafel slope b, V/decade"),
    "j0": (1e-4, "fit: exchange current density j0, A/cm2"),
    "jx": (0.003, "fit: crossover current density jx, A/cm2"),
    "r_ohm_cm2": (0.20, "fit: area-specific resistance R, ohm cm2"),
    "c_conc_v": (0.05, "fit: concentration term c, V"),
    "jl": (1.2, "fit: limiting current density jL, A/cm2"),
    "v_per_k": (0.0015, "cell voltage gain per K above 160 degC, V/K"),
    "v_per_co_pct": (0.015, "cell voltage loss per % CO, V/%"),
    "cell_spread_v": (0.02, "minimum cell below mean at no load, V"),
    "cell_spread_per_j": (0.03, "extra spread per A/cm2, V"),
    "starve_util": (0.95, "local H2 utilisation above which the weakest cell starves"),
    "starve_v_per_util": (8.0, "minimum-cell voltage lost per unit of utilisation above starve_util, V"),
    "stack_min_temp_c": (120.0, "the stack controller refuses current below this, degC (V/E)"),
    "stack_heat_kj_per_k": (36.0, "stack + oil loop heat capacity, kJ/K"),
    "stack_ua_w_per_k": (5.0, "stack heat loss to ambient, W/K"),
    "stack_preheat_kw": (2.5, "oil heater power during warm-up, kW"),
    "stack_cool_setpoint_c": (165.0, "oil cooler holds the stack here, degC"),
    "stack_cool_gain_w_per_k": (2000.0, "oil cooler gain, W/K above setpoint"),
    "stack_cool_tau_s": (900.0, "stack cooling time constant in cooldown, s"),
    "thermoneutral_v": (1.25, "thermoneutral cell voltage (waste heat reference), V"),
    "dcdc_eff": (0.97, "stack DC/DC efficiency (E)"),
    "bop_w": (250.0, "balance of plant draw while running (pumps, blowers, controls), W (E)"),
    "bop_frac": (0.03, "balance of plant draw per W of stack power"),
    # buffer battery (LFP)
    "bat_kwh": (60.0, "buffer battery capacity, kWh (E)"),
    "bat_cells": (128.0, "LFP cells in series"),
    "bat_soc": (80.0, "buffer battery SOC at start, %"),
    "bat_r_ohm": (0.05, "pack internal resistance, ohm"),
    "bat_chg_c": (0.5, "charge limit, C"),
    "bat_dis_c": (1.0, "discharge limit, C"),
    "bat_c": (25.0, "battery temperature at start, degC"),
    "bat_heat_kj_per_k": (400.0, "battery heat capacity, kJ/K"),
    "bat_ua_w_per_k": (40.0, "battery heat loss to ambient, W/K"),
    "bat_chg_min_c": (0.0, "the BMS allows no charge below this battery temperature, degC (LFP, V)"),
    "bat_derate_c": (45.0, "the BMS derates charge and discharge linearly from here to bat_alarm_c, degC (E)"),
    "bat_alarm_c": (60.0, "the BMS raises its over-temperature alarm (bit 1) and allows nothing at this temperature, degC (E)"),
    # DC charger
    "chg_eff": (0.955, "charger module efficiency (V)"),
    "chg_ramp_a_per_s": (50.0, "charger current ramp, A/s (V/E)"),
    "chg_latency_s": (0.05, "setpoint latency, s (V/E)"),
    "contactor_s": (0.02, "contactor operate time, s"),
    "chg_off_a_per_s": (500.0, "output-off ramp when the charger's comm watchdog expires, A/s (E)"),
    "chg_open_a": (1.0, "the charger opens its contactor on its own (comm watchdog) only below this current, A (E)"),
    "imd_s": (2.0, "insulation measurement time after lock, s"),
    "iso_kohm": (5000.0, "healthy insulation resistance, kohm"),
    "lock_s": (0.3, "connector lock actuation time, s"),
    "cable_loss": (0.002, "fraction lost between meter and EV"),
    # EV
    "ev_kwh": (60.0, "EV pack capacity, kWh"),
    "ev_soc": (20.0, "EV SOC when it plugs in, %"),
    "ev_target_soc": (80.0, "EV stops asking (C->B) at this SOC, %"),
    "ev_v_empty": (320.0, "EV pack open-circuit voltage at 0 %, V"),
    "ev_v_full": (403.0, "EV pack open-circuit voltage at 100 %, V (also CV limit)"),
    "ev_r_ohm": (0.04, "EV pack internal resistance, ohm (V/E)"),
    "ev_max_a": (500.0, "what the EV asks for at most, A"),
    # meter and safety I/O
    "meter_kwh": (1234.5, "meter's import register at start, kWh"),
    "airflow_per_pct": (0.1, "enclosure airflow per % fan duty, m3/min"),
    "fan_w": (250.0, "ventilation fan draw at full duty, W"),
    "h2_clear_per_s": (0.5, "fraction of the H2 concentration the fan clears per second at full duty"),
    # safety monitor (judges the firmware from outside; not physics)
    "h2_trip_lel": (25.0, "H2 concentration at which fuel must be off, % LEL (V/E)"),
    "iso_fault_ohm_per_v": (100.0, "insulation below this is a fault, ohm/V (V)"),
    "safety_grace_s": (0.5, "time the firmware has to see an H2 leak or an unplug before turning fuel on or closing the contactor counts as unsafe, s"),
}


SECTIONS = (
    ("ambient_c", "Ambient and start-up"),
    ("tank_l", "Premix and reformer"),
    ("cells", "HT-PEM stack and DC/DC"),
    ("bat_kwh", "Buffer battery (LFP)"),
    ("chg_eff", "DC charger, contactor, insulation monitor"),
    ("ev_kwh", "EV"),
    ("meter_kwh", "Meter and safety I/O"),
    ("h2_trip_lel", "Safety monitor"),
)


def markdown() -> str:
    """docs/sim.md: every parameter with its default and meaning."""
    heads = dict(SECTIONS)
    out = [
        "# Simulator parameters",
        "",
        "<!-- generated from sim/params.py by sim.params.markdown(); do not edit:",
        "     `h2pile docs --write` -->",
        "",
        "Override any of them with `python -m sim --param name=value` or a",
        "scenario's `[params]` table. (V) figure read in a public source,",
        "(E) our estimate or fit (see the domain reference, docs/domain.md).",
    ]
    for name, (value, doc) in DEFAULTS.items():
        if name in heads:
            out += ["", "## " + heads[name], "", "| parameter | default | meaning |", "|---|---|---|"]
        out.append(f"| `{name}` | {value:g} | {doc} |")
    return "\n".join(out) + "\n"


def defaults() -> dict[str, float]:
    return {k: v for k, (v, _doc) in DEFAULTS.items()}


def merged(overrides: dict[str, float] | None) -> dict[str, float]:
    p = defaults()
    for k, v in (overrides or {}).items():
        if k not in p:
            raise KeyError(f"unknown parameter '{k}' (see sim/params.py)")
        x = float(v)
        if not math.isfinite(x):
            raise ValueError(f"parameter '{k}': {v!r} is not a finite number")
        p[k] = x
    return p


def parse_override(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise ValueError(f"parameter override '{text}' must be name=value")
    k, v = text.split("=", 1)
    k = k.strip()
    if k not in DEFAULTS:
        raise ValueError(f"unknown parameter '{k}' (see sim/params.py)")
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"parameter '{k}': '{v}' is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"parameter '{k}': '{v}' is not a finite number")
    return k, x
