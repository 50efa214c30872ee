"""Physics of the pile, stepped in simulated seconds.

One object per part (reformer, stack, battery, charger with contactor and
insulation monitor, EV, meter, safety I/O). Each reads the commands the
firmware wrote on the bus and produces what its device's registers show.
Parameters live in sim/params.py.
"""

from __future__ import annotations

import math
from collections import deque

from h2p import registers as R

F = 96485.0


class Reformer:
    def __init__(self, p):
        self.p = p
        self.mode = R.REF_MODE_OFF
        self.pump_sp = 0.0  # ml/min
        self.bed_sp = 265.0
        self.burner_sp = 0.0  # % of full fire, in run mode
        self.bed = p["bed_c0"]
        self.evap = min(max(p["bed_c0"], p["ambient_c"]), 180.0)
        self.burner = p["bed_c0"]  # warm start: the burner was just lit
        self.tank = p["tank_l"]
        self.pump = 0.0
        self.burnt_l = 0.0
        self.fed_l = 0.0
        self.fire_kw = 0.0  # premix the burner fires now
        self.offgas_w = 0.0  # the stack's unused hydrogen, burnt in the burner (set by the plant)
        self.delay = deque()  # (t_arrive, ml/min)
        self.flow_at_stack = 0.0
        self.leak = False
        self.overheat = 0.0  # injected extra degC/s
        self.alarm = 0  # injected alarm word (R.REF_ALM_*)
        self.extra_loss_w = 0.0  # injected extra heat loss of the bed (wind, failed insulation)
        self.co_force = None  # injected CO in the reformate, %

    def h2_mol_s(self):
        # Hydrogen reaching the stack now: feed one transport delay ago,
        # times conversion at the bed temperature.
        p = self.p
        conv = self.conversion()
        frac = p["starvation_fraction"]
        return self.flow_at_stack / 60000.0 * p["premix_h2_mol_per_l"] * conv * frac

    def conversion(self):
        p = self.p
        c = (self.bed - p["conv_zero_c"]) / (p["conv_full_c"] - p["conv_zero_c"])
        return min(1.0, max(0.0, c))

    def fuelled(self):
        """Burner lit or premix pumped: fuel is present."""
        return (self.mode in (R.REF_MODE_PREHEAT, R.REF_MODE_RUN) and self.tank > 0) or self.pump > 0

    def co_pct(self):
        p = self.p
        if self.co_force is not None:
            return self.co_force
        if self.bed < p["conv_zero_c"]:
            return 0.0
        return max(0.0, p["co_pct_at_265"] + p["co_pct_per_k"] * (self.bed - 265.0))

    def heat_w(self):
        """The bed's heat balance now, W (positive: it warms)."""
        p = self.p
        if not (self.mode in (R.REF_MODE_PREHEAT, R.REF_MODE_RUN) and self.tank > 0):
            return 0.0
        lit = not self.alarm & R.REF_ALM_FLAME
        q = p["burner_eff"] * (self.fire_kw * 1000.0 + self.offgas_w) if lit else 0.0
        q -= self.pump / 60000.0 * p["evap_mj_per_l"] * 1e6
        q -= self.flow_at_stack / 60000.0 * self.conversion() * p["reform_mj_per_l"] * 1e6
        q -= p["bed_loss_w_per_k"] * (self.bed - p["ambient_c"]) + self.extra_loss_w
        return q

    def step(self, t, dt):
        p = self.p
        amb = p["ambient_c"]
        running = self.mode in (R.REF_MODE_PREHEAT, R.REF_MODE_RUN) and self.tank > 0
        # Pump: premix drawn from the tank, arriving after the evaporator.
        ok = self.mode == R.REF_MODE_RUN and self.tank > 0 and not self.alarm & R.REF_ALM_PUMP
        self.pump = self.pump_sp if ok else 0.0
        self.delay.append((t + p["evap_delay_s"], self.pump))
        while self.delay and self.delay[0][0] <= t:
            self.flow_at_stack = self.delay.popleft()[1]
        # Burner: its own warm-up in preheat (full fire up to 10 K below
        # the bed setpoint, proportional above), the pile's command in run.
        # A flame-out stops its premix (the controller's fuel valve).
        full = p["burner_full_kw"]
        if not running or self.alarm & R.REF_ALM_FLAME:
            self.fire_kw = 0.0
        elif self.mode == R.REF_MODE_PREHEAT:
            self.fire_kw = full * min(1.0, max(0.0, (self.bed_sp - self.bed) / 10.0))
        else:
            self.fire_kw = full * min(100.0, max(0.0, self.burner_sp)) / 100.0
        if running:
            self.bed += self.heat_w() / (p["bed_heat_kj_per_k"] * 1000.0) * dt
        else:
            self.bed += (amb - self.bed) / p["bed_cool_tau_s"] * dt
        lit = running and not self.alarm & R.REF_ALM_FLAME and (self.fire_kw * 1000.0 + self.offgas_w) > 50.0
        self.burner += ((p["burner_c"] if lit else amb) - self.burner) * min(1.0, dt / (30.0 if lit else 120.0))
        self.bed += self.overheat * dt
        self.evap += (min(self.bed, 180.0) - self.evap) * min(1.0, dt / 60.0)
        fired = self.fire_kw / (p["premix_lhv_mj_per_l"] * 1000.0) * dt
        self.fed_l += self.pump / 60000.0 * dt
        self.burnt_l += fired
        self.tank = max(0.0, self.tank - self.pump / 60000.0 * dt - fired)


class Stack:
    def __init__(self, p):
        self.p = p
        self.enable = 0
        self.sp = 0.0  # A
        self.current = 0.0
        self.temp = p["stack_c0"]
        self.purge = 0
        self.util = 0.0
        self.v_cell = 0.0
        self.min_cell = 0.0
        self.overheat = 0.0  # injected W; the oil cooler has failed while > 0

    def cell_v(self, j, temp, co_pct):
        p = self.p
        v = (
            p["e0_v"]
            - p["tafel_b_v"] * math.log10((j + p["jx"]) / p["j0"])
            - p["r_ohm_cm2"] * j
            + p["c_conc_v"] * math.log(max(1e-6, 1 - j / p["jl"]))
            + p["v_per_k"] * (temp - 160.0)
            - p["v_per_co_pct"] * co_pct
        )
        return v

    def step(self, dt, h2_mol_s, co_pct, heating):
        p = self.p
        n = p["cells"]
        area = p["cell_area_cm2"]
        # Current follows the setpoint within the DC/DC's limits; no current
        # below 120 degC (the controller refuses).
        target = self.sp if (self.enable and self.temp >= p["stack_min_temp_c"]) else 0.0
        self.current += (target - self.current) * min(1.0, dt / 0.5)
        j = self.current / area
        need = self.current * n / (2 * F)
        self.util = need / h2_mol_s if h2_mol_s > 1e-9 else (9.9 if need > 0 else 0.0)
        co = co_pct if h2_mol_s > 0 else 0.0
        v = self.cell_v(j, self.temp, co) if (self.enable or h2_mol_s > 0) else 0.0
        if self.current > 0.5 and self.util > 1.0:
            # The whole stack is short of hydrogen: the mean voltage sags too.
            v -= min(v, (self.util - 1.0) * 0.5)
        self.v_cell = max(0.0, v)
        spread = p["cell_spread_v"] + p["cell_spread_per_j"] * j
        self.min_cell = max(0.0, self.v_cell - spread) if self.v_cell > 0 else 0.0
        if self.current > 0.5 and self.util > p["starve_util"]:
            # The weakest cell runs out of hydrogen first: its voltage
            # collapses (towards reversal; the sensor reads 0).
            self.min_cell = max(0.0, self.min_cell - (self.util - p["starve_util"]) * p["starve_v_per_util"])
        # Heat: waste heat of the reaction, warm-up heater, oil cooler, loss.
        q = self.current * n * max(0.0, p["thermoneutral_v"] - self.v_cell)
        if heating and self.temp < 160.0:
            q += p["stack_preheat_kw"] * 1000.0
        q += self.overheat
        if self.enable or heating:
            if not self.overheat:
                q -= max(0.0, self.temp - p["stack_cool_setpoint_c"]) * p["stack_cool_gain_w_per_k"]
            q -= p["stack_ua_w_per_k"] * (self.temp - p["ambient_c"])
            self.temp += q / (p["stack_heat_kj_per_k"] * 1000.0) * dt
        else:
            self.temp += (p["ambient_c"] - self.temp) / p["stack_cool_tau_s"] * dt
            self.temp += self.overheat / (p["stack_heat_kj_per_k"] * 1000.0) * dt

    def power_w(self):
        return self.v_cell * self.p["cells"] * self.current


class Battery:
    def __init__(self, p):
        self.p = p
        self.soc = p["bat_soc"]
        self.temp = p["bat_c"]
        self.current = 0.0  # + discharge
        self.alarm = 0
        self.nominal_v = p["bat_cells"] * 3.2
        self.ah = p["bat_kwh"] * 1000.0 / self.nominal_v

    def ocv(self):
        # LFP open-circuit voltage per cell: steep at the ends, flat between.
        s = self.soc
        pts = ((0, 2.90), (5, 3.10), (10, 3.20), (20, 3.26), (50, 3.29), (80, 3.32), (90, 3.34), (95, 3.38), (100, 3.45))
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            if s <= s1:
                return self.p["bat_cells"] * (v0 + (v1 - v0) * (max(s, 0) - s0) / (s1 - s0))
        return self.p["bat_cells"] * 3.45

    def voltage(self):
        return self.ocv() - self.current * self.p["bat_r_ohm"]

    def _temp_factor(self):
        # What a BMS allows by cell temperature: all up to bat_derate_c,
        # nothing from bat_alarm_c on (its alarm is raised there too).
        p = self.p
        lo, hi = p["bat_derate_c"], p["bat_alarm_c"]
        return 1.0 if self.temp <= lo else max(0.0, (hi - self.temp) / max(1e-6, hi - lo))

    def alarms(self):
        """The alarm word: injected bits, and over-temperature (bit 1)."""
        return self.alarm | (1 if self.temp >= self.p["bat_alarm_c"] else 0)

    def chg_limit(self):
        lim = self.p["bat_chg_c"] * self.ah * self._temp_factor()
        if self.soc > 95:
            lim *= max(0.0, (100 - self.soc) / 5)
        if self.temp < self.p["bat_chg_min_c"]:
            lim = 0.0  # LFP: no charge below freezing
        return lim

    def dis_limit(self):
        lim = self.p["bat_dis_c"] * self.ah * self._temp_factor()
        if self.soc < 10:
            lim *= max(0.0, self.soc / 10)
        return lim

    def step(self, dt, net_load_w):
        p = self.p
        v = max(1.0, self.ocv())
        self.current = net_load_w / v
        self.soc -= self.current * dt / 3600.0 / self.ah * 100.0
        self.soc = min(100.0, max(0.0, self.soc))
        q = self.current ** 2 * p["bat_r_ohm"] - p["bat_ua_w_per_k"] * (self.temp - p["ambient_c"])
        self.temp += q / (p["bat_heat_kj_per_k"] * 1000.0) * dt


class EV:
    def __init__(self, p):
        self.p = p
        self.present = False
        self.soc = p["ev_soc"]
        self.kwh = p["ev_kwh"]
        self.target = p["ev_target_soc"]
        self.asking = False
        self.received_wh = 0.0
        self.greedy = False  # fault: asks beyond its acceptance
        self.greedy_a = p["ev_max_a"]
        self.pilot_short = False  # fault: pilot line shorted (state E)

    def plug(self, soc=None, kwh=None, target=None):
        self.present = True
        if soc is not None:
            self.soc = soc
        if kwh is not None:
            self.kwh = kwh
        if target is not None:
            self.target = target
        self.asking = self.soc < self.target
        self.received_wh = 0.0

    def unplug(self):
        self.present = False
        self.asking = False

    def ocv(self):
        p = self.p
        return p["ev_v_empty"] + (p["ev_v_full"] - p["ev_v_empty"]) * self.soc / 100.0

    def ah(self):
        return self.kwh * 1000.0 / ((self.p["ev_v_empty"] + self.p["ev_v_full"]) / 2)

    def request_a(self):
        # Acceptance: <= 1.75 C below 50 %, 1.25 C to 75 %, 0.5 C above; CV
        # near full so that OCV + I*R stays under the maximum voltage.
        if not (self.present and self.asking):
            return 0.0
        if self.greedy:
            return self.greedy_a
        c = 1.75 if self.soc < 50 else (1.25 if self.soc < 75 else 0.5)
        i = c * self.ah()
        cv = (self.p["ev_v_full"] - self.ocv()) / self.p["ev_r_ohm"]
        return max(0.0, min(i, cv, self.p["ev_max_a"]))

    def pilot(self):
        if self.pilot_short:
            return R.PILOT_E
        if not self.present:
            return R.PILOT_A
        return R.PILOT_C if self.asking else R.PILOT_B

    def step(self, dt, amps, volts):
        if not self.present:
            return
        wh = amps * volts * dt / 3600.0
        self.received_wh += wh
        self.soc += wh / (self.kwh * 1000.0) * 100.0
        if self.asking and self.soc >= self.target:
            self.asking = False  # C -> B: the EV stops asking


class Charger:
    def __init__(self, p, ev):
        self.p = p
        self.ev = ev
        self.contactor_cmd = 0
        self.limit = 0.0
        self.enable = 0
        self.lock_cmd = 0
        self.closed = False
        self.locked = False
        self.t_contactor = 0.0
        self.t_lock = 0.0
        self.imd_t = 0.0
        self.imd_done = False
        self.iso_kohm = p["iso_kohm"]
        self.current = 0.0
        self.sp_seen = 0.0  # setpoint after the modules' latency
        self.latency_q = deque()
        self.temp = p["ambient_c"] + 5
        self.welded = False
        self.stuck_open = False
        self.cycles = 0
        self.opened_under_load = 0
        self.max_open_a = 0.0
        self.bus_max_a = 1e9  # what the DC bus (stack + battery) can feed
        self.max_a = 0.0  # highest output current seen
        self.last_open_a = 0.0  # output current when the contactor last opened
        # Comm watchdog expired: output off at the fast ramp, and the
        # contactor opens on its own once the current is down.
        self.off_ramp = False
        self.open_pending = False

    def comm_lost(self):
        """The master has been silent too long: take the output off (the
        modules' setpoint pipeline is dropped, not waited for) and open the
        contactor once the current is below ``chg_open_a``, never under
        load. The command registers now hold the safe values: only the
        master writing them again turns the output back on."""
        self.limit = 0.0
        self.enable = 0
        self.latency_q.clear()
        self.sp_seen = 0.0
        self.off_ramp = self.current > 0
        self.open_pending = bool(self.contactor_cmd)

    def voltage(self):
        ev = self.ev
        if not (ev.present and self.closed):
            return 0.0
        return ev.ocv() + self.current * self.p["ev_r_ohm"]

    def step(self, t, dt):
        p = self.p
        ev = self.ev
        # Connector lock and insulation measurement (after lock, EV present).
        want_lock = bool(self.lock_cmd) and ev.present
        if want_lock != self.locked:
            self.t_lock += dt
            if self.t_lock >= p["lock_s"]:
                self.locked = want_lock
                self.t_lock = 0.0
        else:
            self.t_lock = 0.0
        if self.locked and ev.present:
            self.imd_t += dt
            self.imd_done = self.imd_t >= p["imd_s"]
        else:
            self.imd_t = 0.0
            self.imd_done = False
        if self.open_pending and self.current <= p["chg_open_a"]:
            # The comm watchdog's open: the current is down now. The
            # connector is released with it (nothing flows any more).
            self.contactor_cmd = 0
            self.lock_cmd = 0
            self.open_pending = False
        # Contactor.
        want = bool(self.contactor_cmd)
        if self.welded and self.closed:
            want = True
        if self.stuck_open:
            want = False
        if want != self.closed:
            self.t_contactor += dt
            if self.t_contactor >= p["contactor_s"]:
                if not want and self.current > 5.0:
                    self.opened_under_load += 1
                    self.max_open_a = max(self.max_open_a, self.current)
                if not want:
                    self.last_open_a = self.current
                self.closed = want
                self.t_contactor = 0.0
                if want:
                    self.cycles += 1
        else:
            self.t_contactor = 0.0
        # Modules: setpoint after latency, then a current ramp.
        self.latency_q.append((t + p["chg_latency_s"], self.limit if self.enable else 0.0))
        while self.latency_q and self.latency_q[0][0] <= t:
            self.sp_seen = self.latency_q.popleft()[1]
        target = 0.0
        if self.closed and ev.present:
            target = min(self.sp_seen, ev.request_a(), self.bus_max_a)
            if not ev.asking:
                target = 0.0
        if not self.closed or not ev.present or not ev.asking:
            self.current = target  # the EV cuts its own current at once
        else:
            rate = p["chg_ramp_a_per_s"]
            if self.off_ramp:
                rate = max(rate, p["chg_off_a_per_s"])
            step = rate * dt
            self.current += max(-step, min(step, target - self.current))
        if self.current <= 0:
            self.off_ramp = False
        self.max_a = max(self.max_a, self.current)
        self.temp += ((p["ambient_c"] + 5 + self.current * 0.2) - self.temp) * min(1.0, dt / 300.0)

    def status(self):
        s = 0
        if self.closed:
            s |= R.CHG_AUX_CLOSED
        if self.enable and self.closed:
            s |= R.CHG_OUTPUT_ON
        if self.locked:
            s |= R.CHG_LOCKED
        if self.imd_done:
            s |= R.CHG_IMD_DONE
        return s


class Safety:
    """Judges the firmware from outside: how long a hazard met fuel or a
    closed contactor, and which commands were written into a hazard the
    firmware had had time to see (after ``safety_grace_s``)."""

    KINDS = ("fuel_with_h2_leak", "contactor_with_iso_fault", "contactor_with_ev_gone")

    def __init__(self, p):
        self.p = p
        self.since = dict.fromkeys(self.KINDS)  # hazard present since (sim s)
        self.exposed = dict.fromkeys(self.KINDS)  # hazard and output together since
        self.max_s = dict.fromkeys(self.KINDS, 0.0)  # longest exposure
        self.writes = dict.fromkeys(self.KINDS, 0)  # unsafe commands written

    def step(self, t, hazards: dict, outputs: dict):
        for k in self.KINDS:
            if hazards[k]:
                if self.since[k] is None:
                    self.since[k] = t
                if outputs[k]:
                    if self.exposed[k] is None:
                        self.exposed[k] = t
                    self.max_s[k] = max(self.max_s[k], t - self.exposed[k])
                else:
                    self.exposed[k] = None
            else:
                self.since[k] = None
                self.exposed[k] = None

    def judge_write(self, t, kind) -> bool:
        # The insulation result arrives in the same register block as the
        # monitor's "done" bit: closing after it is never excused. A leak
        # or an unplug may cross a threshold between two polls: grace.
        grace = 0.0 if kind == "contactor_with_iso_fault" else self.p["safety_grace_s"]
        s = self.since[kind]
        if s is not None and t - s >= grace:
            self.writes[kind] += 1
            return True
        return False


class Plant:
    def __init__(self, params):
        self.p = params
        self.t = 0.0
        self.reformer = Reformer(params)
        self.stack = Stack(params)
        self.battery = Battery(params)
        self.ev = EV(params)
        self.charger = Charger(params, self.ev)
        self.safety = Safety(params)
        self.meter_kwh = params["meter_kwh"]
        self.meter_kwh0 = params["meter_kwh"]
        self.fan = 0.0
        self.h2_lel = 0.0
        self.h2_target = 0.0
        self.h2_rate = 0.0
        self.status_bits = 0  # tilt, door, estop chain, water
        self.vent_blocked = False
        self.ev_v = 0.0
        self.ev_a = 0.0
        self.dcdc_w = 0.0
        self.bop_w = 0.0
        self.bus_v = self.battery.voltage()
        self.hazards = dict.fromkeys(Safety.KINDS, False)
        # Comm watchdogs of the controlled devices (registers.COMM_TIMEOUT):
        # timeout (0: off, the power-up value), when the device last heard
        # a request addressed to it, and when it went safe (None: it hears).
        self.comm_timeout_s = dict.fromkeys(R.COMM_TIMEOUT, 0.0)
        self.heard_t = dict.fromkeys(R.COMM_TIMEOUT, 0.0)
        self.comm_lost = dict.fromkeys(R.COMM_TIMEOUT)
        self.comm_trips: list[tuple[float, str]] = []
        self._timeout_cmd = {v: k for k, v in R.COMM_TIMEOUT.items()}

    # ---- register views ---------------------------------------------------
    def airflow(self):
        return 0.0 if self.vent_blocked else self.fan * self.p["airflow_per_pct"]

    def readings(self) -> dict[str, float]:
        rf, st, bt, ch = self.reformer, self.stack, self.battery, self.charger
        n = self.p["cells"]
        return {
            "ref_mode": rf.mode,
            "ref_burner_c": rf.burner,
            "ref_evap_c": rf.evap,
            "ref_bed_c": rf.bed,
            "ref_pump_mlmin": rf.pump,
            "ref_tank_l": rf.tank,
            "ref_meoh_leak": 1 if rf.leak else 0,
            "ref_alarms": rf.alarm,
            "fc_status": (1 if st.enable else 0),
            "fc_stack_c": st.temp,
            "fc_stack_v": st.v_cell * n,
            "fc_stack_a": st.current,
            "fc_min_cell_v": st.min_cell,
            "fc_co_ppm": self.reformer.co_pct() * 10000 if st.current > 0 else 0,
            "fc_dcdc_v": self.bus_v if st.current > 0 else 0,
            "fc_dcdc_a": self.dcdc_w / self.bus_v if self.bus_v > 0 else 0,
            "bat_soc": bt.soc,
            "bat_v": self.bus_v,
            "bat_a": bt.current,
            "bat_c": bt.temp,
            "bat_chg_lim_a": bt.chg_limit(),
            "bat_dis_lim_a": bt.dis_limit(),
            "bat_alarms": bt.alarms(),
            "chg_status": ch.status(),
            "chg_pilot": self.ev.pilot(),
            "chg_ev_req_v": self.ev.ocv() if self.ev.present else 0,
            "chg_ev_req_a": self.ev.request_a(),
            "chg_ev_soc": self.ev.soc if self.ev.present else 0,
            "chg_out_v": self.ev_v,
            "chg_out_a": self.ev_a,
            "chg_iso_kohm": min(65535, ch.iso_kohm) if ch.imd_done else 65535,
            "chg_c": ch.temp,
            "sio_status": self.status_bits,
            "sio_h2_lel": self.h2_lel,
            "sio_airflow": self.airflow(),
            "met_v": self.ev_v,
            "met_a": self.ev_a,
            "met_w": self.ev_v * self.ev_a,
            "met_wh": self.meter_kwh * 1000.0,
        }

    def heard(self, dev: str) -> None:
        """A valid request addressed to `dev` came from the master (a read
        or a write): its comm watchdog is fed."""
        if dev in self.heard_t:
            self.heard_t[dev] = self.t
            self.comm_lost[dev] = None

    def _comm_check(self, t):
        for dev, timeout in self.comm_timeout_s.items():
            if timeout > 0 and self.comm_lost[dev] is None and t - self.heard_t[dev] >= timeout:
                self.comm_lost[dev] = t
                self.comm_trips.append((round(t, 4), dev))
                if dev == "charger":
                    self.charger.comm_lost()
                elif dev == "fuelcell":
                    self.stack.enable = 0
                    self.stack.sp = 0.0
                else:  # the reformer: no premix, burner to cooldown (its fan purges)
                    rf = self.reformer
                    rf.pump_sp = 0.0
                    rf.burner_sp = 0.0
                    if rf.mode in (R.REF_MODE_PREHEAT, R.REF_MODE_RUN):
                        rf.mode = R.REF_MODE_COOLDOWN

    def command_value(self, name: str) -> float:
        """What a command register holds now (FC03 read-back): what the
        master wrote, or the safe value a comm watchdog put there."""
        rf, st, ch = self.reformer, self.stack, self.charger
        if name in self._timeout_cmd:
            return self.comm_timeout_s[self._timeout_cmd[name]]
        return {
            "ref_mode_cmd": rf.mode, "ref_pump_sp": rf.pump_sp, "ref_bed_sp": rf.bed_sp,
            "ref_burner_sp": rf.burner_sp,
            "fc_enable": st.enable, "fc_current_sp": st.sp, "fc_purge": st.purge,
            "chg_contactor": ch.contactor_cmd, "chg_limit_a": ch.limit, "chg_enable": ch.enable,
            "chg_lock": ch.lock_cmd, "sio_fan": self.fan,
        }[name]

    def command(self, name: str, value: float) -> str | None:
        """Apply a command written on the bus. Returns the kind of unsafe
        write (Safety.KINDS) if it was written into a known hazard."""
        rf, st, ch = self.reformer, self.stack, self.charger
        unsafe = None  # set when the write turns fuel on or closes the contactor
        if name == "ref_mode_cmd":
            fuel = (R.REF_MODE_PREHEAT, R.REF_MODE_RUN)
            if int(value) in fuel and rf.mode not in fuel:
                unsafe = "fuel_with_h2_leak"
            rf.mode = int(value)
        elif name == "ref_pump_sp":
            if value > 0 and rf.pump_sp <= 0:
                unsafe = "fuel_with_h2_leak"
            rf.pump_sp = value
        elif name == "ref_bed_sp":
            rf.bed_sp = value
        elif name == "ref_burner_sp":
            rf.burner_sp = value
        elif name == "fc_enable":
            st.enable = int(value)
        elif name == "fc_current_sp":
            st.sp = value
        elif name == "fc_purge":
            st.purge = int(value)
        elif name == "chg_contactor":
            if value and not ch.contactor_cmd:
                unsafe = "contactor_with_iso_fault" if self.hazards["contactor_with_iso_fault"] else "contactor_with_ev_gone"
            ch.contactor_cmd = int(value)
        elif name == "chg_limit_a":
            ch.limit = value
        elif name == "chg_enable":
            ch.enable = int(value)
        elif name == "chg_lock":
            ch.lock_cmd = int(value)
        elif name == "sio_fan":
            self.fan = max(0.0, min(100.0, value))
        elif name in self._timeout_cmd:
            dev = self._timeout_cmd[name]
            self.comm_timeout_s[dev] = value
            self.heard(dev)
        if unsafe and self.hazards[unsafe] and self.safety.judge_write(self.t, unsafe):
            return unsafe
        return None

    # ---- time ---------------------------------------------------------------
    def advance(self, t_to: float, max_dt: float = 0.05):
        while self.t < t_to - 1e-9:
            dt = min(max_dt, t_to - self.t)
            self._step(dt)
            self.t += dt

    def _step(self, dt):
        p = self.p
        rf, st, bt, ch, ev = self.reformer, self.stack, self.battery, self.charger, self.ev
        self._comm_check(self.t + dt)
        rf.step(self.t, dt)
        heating = rf.mode in (R.REF_MODE_PREHEAT, R.REF_MODE_RUN) and rf.tank > 0
        h2 = rf.h2_mol_s()
        st.step(dt, h2, rf.co_pct(), heating)
        # What the stack leaves of the hydrogen burns in the burner (the
        # starvation fault's lost share never reaches it).
        rf.offgas_w = max(0.0, h2 - st.current * p["cells"] / (2 * F)) * p["h2_lhv_kj_per_mol"] * 1000.0
        stack_w = st.power_w()
        self.dcdc_w = stack_w * p["dcdc_eff"]
        bop = (p["bop_w"] + p["bop_frac"] * stack_w) if (st.enable or rf.mode != R.REF_MODE_OFF) else 0.0
        bop += self.fan / 100.0 * p["fan_w"]
        self.bop_w = bop
        # The charger modules can draw what the stack and the battery give;
        # beyond that the bus sags and the modules derate.
        avail_w = max(0.0, self.dcdc_w + bt.dis_limit() * max(1.0, bt.ocv()) - bop)
        v_ev = max(1.0, ev.ocv()) if ev.present else 1.0
        ch.bus_max_a = avail_w * p["chg_eff"] / v_ev
        ch.step(self.t, dt)
        self.ev_v = ch.voltage()
        self.ev_a = ch.current if self.ev_v > 0 else 0.0
        out_w = self.ev_v * self.ev_a
        # The meter sits at the output and counts what flows to the EV; a
        # little is lost in the cable on the way.
        self.meter_kwh += out_w * dt / 3.6e6
        ev.step(dt, self.ev_a * (1 - p["cable_loss"]), self.ev_v)
        load = out_w / p["chg_eff"] + bop - self.dcdc_w
        bt.step(dt, load)
        self.bus_v = bt.voltage()
        # Hydrogen: an injected leak ramps towards its target; ventilation
        # clears it.
        if self.h2_target > self.h2_lel:
            self.h2_lel = min(self.h2_target, self.h2_lel + self.h2_rate * dt)
        else:
            clear = p["h2_clear_per_s"] * (self.fan / 100.0) * dt if not self.vent_blocked else 0.0
            self.h2_lel = max(self.h2_target, self.h2_lel - clear * max(1.0, self.h2_lel))
        # Safety monitor.
        volts = max(50.0, ev.ocv() if ev.present else 0.0, self.ev_v)
        hz = self.hazards
        hz["fuel_with_h2_leak"] = self.h2_lel >= p["h2_trip_lel"]
        # Known once the insulation monitor has a result to show.
        hz["contactor_with_iso_fault"] = (ev.present and ch.imd_done
                                          and ch.iso_kohm * 1000.0 / volts < p["iso_fault_ohm_per_v"])
        hz["contactor_with_ev_gone"] = not ev.present
        self.safety.step(self.t + dt, hz, {
            "fuel_with_h2_leak": rf.fuelled(),
            "contactor_with_iso_fault": ch.closed,
            "contactor_with_ev_gone": ch.closed,
        })

    def summary(self) -> dict:
        rf, st, bt, ev, ch = self.reformer, self.stack, self.battery, self.ev, self.charger
        sf = self.safety
        return {
            "t": round(self.t, 3),
            "ref_mode": rf.mode,
            "bed_c": round(rf.bed, 1),
            "burner_c": round(rf.burner, 1),
            "burner_pct": round(rf.burner_sp, 1),
            "bed_heat_w": round(rf.heat_w(), 1),
            "evap_c": round(rf.evap, 1),
            "pump_mlmin": round(rf.pump, 2),
            "conversion": round(rf.conversion(), 3),
            "co_pct": round(rf.co_pct(), 3),
            "stack_c": round(st.temp, 1),
            "stack_a": round(st.current, 2),
            "stack_w": round(st.power_w(), 1),
            "cell_v": round(st.v_cell, 4),
            "min_cell_v": round(st.min_cell, 3),
            "util": round(min(st.util, 9.9), 3),
            "net_w": round(self.dcdc_w, 1),
            "bop_w": round(self.bop_w, 1),
            "bat_soc": round(bt.soc, 3),
            "bat_a": round(bt.current, 2),
            "bat_v": round(self.bus_v, 1),
            "bat_c": round(bt.temp, 2),
            "tank_l": round(rf.tank, 3),
            "fed_l": round(rf.fed_l, 4),
            "burnt_l": round(rf.burnt_l, 4),
            "ev_present": ev.present,
            "ev_asking": ev.asking,
            "pilot": R.PILOT_NAMES[ev.pilot()],
            "ev_soc": round(ev.soc, 3),
            "ev_a": round(self.ev_a, 2),
            "ev_v": round(self.ev_v, 1),
            "ev_w": round(self.ev_a * self.ev_v, 1),
            "ev_received_wh": round(ev.received_wh, 2),
            "meter_kwh": self.meter_kwh,
            "delivered_kwh": round(self.meter_kwh - self.meter_kwh0, 4),
            "contactor": ch.closed,
            "contactor_cmd": ch.contactor_cmd,
            "locked": ch.locked,
            "chg_limit_a": ch.limit,
            "iso_kohm": ch.iso_kohm,
            "contactor_cycles": ch.cycles,
            "opened_under_load": ch.opened_under_load,
            "last_open_a": round(ch.last_open_a, 2),
            "comm_timeout_s": dict(self.comm_timeout_s),
            "comm_lost": dict(self.comm_lost),
            "max_open_a": round(ch.max_open_a, 1),
            "max_ev_a": round(ch.max_a, 2),
            "fan": self.fan,
            "airflow": round(self.airflow(), 2),
            "h2_lel": round(self.h2_lel, 2),
            "fuel_on": rf.fuelled(),
            "unsafe_s": {k: round(v, 3) for k, v in sf.max_s.items()},
            "unsafe_writes": dict(sf.writes),
        }




def summary_keys() -> tuple[str, ...]:
    """Every field of Plant.summary(), for validating scenario conditions."""
    from sim import params as P

    return tuple(Plant(P.defaults()).summary())
