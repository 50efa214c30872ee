# The supervisor: the pile's state machine. A plain object stepped with
# (now) over the Readings store; it writes the words it wants on the bus
# into the device drivers (Device.want) and the I/O shell sends what changed.
# It never touches the bus, the clock or the network itself, so it is tested
# fast and deterministically on CPython and MicroPython alike.
#
# Units: temperatures 0.1 degC, currents 0.1 A, voltages 0.1 V, SOC 0.1 %,
# power W, energy Wh, time ms: integers, so a step allocates nothing.
from array import array

from h2p.compat import const, ticks_diff
from h2p import states as S
from h2p import interlocks as IL
from h2p.arbiter import Arbiter, NONE
from h2p.contactor import Contactor
from h2p import energy as E
from h2p import reformer as RF
from h2p.readings import UNKNOWN, fresh

# The codes of h2p.codes the step compares, as constants of this module
# (h2p.codes is dropped after boot, and a constant costs no lookup in the
# step; tests/firmware/test_codes_copies.py checks they match).
_PILOT_A = const(0)
_PILOT_B = const(1)
_PILOT_C = const(2)
_PILOT_D = const(3)
_PILOT_E = const(4)
_CHG_AUX_CLOSED = const(1)
_CHG_LOCKED = const(4)
_CHG_IMD_DONE = const(8)
_SIO_ESTOP = const(4)
_REF_MODE_OFF = const(0)
_REF_MODE_PREHEAT = const(1)
_REF_MODE_RUN = const(2)
_REF_MODE_COOLDOWN = const(3)


def _indices(*names):
    # Reading indices by name, resolved while loading (as h2p.uplink does):
    # the index by name is dropped after boot (h2p.readings.release), and a
    # step compares integers instead of hashing names.
    from h2p.readings import INDEX

    return bytes([INDEX[n] for n in names])


_H2_WARN = IL.NAMES.index("h2_warn")  # its interlock row, found once
_BMS_ALARM = IL.NAMES.index("bms_alarm")
_ESTOP = IL.NAMES.index("estop")

# _RD[_CHG_STATUS] is the reading index of chg_status, and so on.
_RD = _indices("bat_dis_lim_a", "bat_soc", "bat_v", "chg_ev_req_a", "chg_ev_req_v", "chg_out_a", "chg_out_v", "chg_pilot", "chg_status", "fc_dcdc_a", "fc_dcdc_v", "fc_stack_c", "ref_bed_c", "ref_pump_mlmin", "sio_airflow", "sio_status", "bat_a", "bat_chg_lim_a", "fc_stack_a", "fc_stack_v")
del _indices
_BAT_DIS_LIM_A = const(0)
_BAT_SOC = const(1)
_BAT_V = const(2)
_CHG_EV_REQ_A = const(3)
_CHG_EV_REQ_V = const(4)
_CHG_OUT_A = const(5)
_CHG_OUT_V = const(6)
_CHG_PILOT = const(7)
_CHG_STATUS = const(8)
_FC_DCDC_A = const(9)
_FC_DCDC_V = const(10)
_FC_STACK_C = const(11)
_REF_BED_C = const(12)
_REF_PUMP_MLMIN = const(13)
_SIO_AIRFLOW = const(14)
_SIO_STATUS = const(15)
_BAT_A = const(16)
_BAT_CHG_LIM_A = const(17)
_FC_STACK_A = const(18)
_FC_STACK_V = const(19)

_SELFTEST_MS = const(15000)
_LOCK_MS = const(3000)
_ISO_MS = const(10000)
_FLOW_SLOTS = const(64)  # one pump-flow sample per second
_RESIDUAL_MS = const(20000)  # small load after the pump stops: eats the H2
_IMD_SETTLE_MS = const(300)  # longer than the insulation rows' debounce
_MAX_DT_MS = const(2000)  # a stalled loop ramps at most this much time at once
# Stack ramps: rates in mA/s times elapsed ms are micro-amperes; this many
# make one 0.1 A step of the setpoint. What is left over carries to the next
# step, so the rate holds whatever the step interval (5 ms at real time,
# ~100 ms at 60x): adding a rounded increment per step made it depend on
# the step rate (10 A/s instead of 0.75 A/s at real time). Integers below
# 2**30 for any rate the config allows (100 A/s * 2000 ms): no allocation.
_UA_PER_STEP = const(100000)

# 96485 C/mol * 2 electrons; see _a_per_flow below.
_FARADAY2 = 192970

# Claims on the EV current limit, highest priority first (the arbiter names
# the one in charge by these names: telemetry, the live view).
_INTERLOCK = const(0)
_CONTACTOR = const(1)
_BATTERY = const(2)
_CHARGER = const(3)
_OPERATOR = const(4)
_SESSION = const(5)
EV_CLAIMS = ("interlock", "contactor", "battery", "charger", "operator", "session")

# Claims on the stack current setpoint. "bms": the stack current that puts
# the BMS's charge limit into the battery (after the EV and the balance of
# plant); "energy": what the energy manager (h2p.energy) wants.
_S_INTERLOCK = const(0)
_S_REFORMER = const(1)  # 0 while the bed is too cold to be fed (h2p.reformer)
_S_FUEL = const(2)
_S_BMS = const(3)
_S_RAMP = const(4)
_S_TEMP = const(5)
_S_ENERGY = const(6)
_S_DEMAND = const(7)
STACK_CLAIMS = ("interlock", "reformer", "fuel", "bms", "ramp", "stack_temp", "energy", "demand")

# The energy manager's slots the supervisor reads (h2p.energy's contract).
_EM_WANT = const(2)
_EM_COOL = const(6)
# ... and the reformer loop's (h2p.reformer's contract).
_RF_BURNER = const(0)
_RF_FEED_OK = const(1)
_RF_ON = const(12)
_RF_TS = const(14)

# Command words: their index in the device's driver is the register's offset
# from the device's command base in the register maps (0x100 + index). The
# core tests read every command back by name, so a map that moved one fails
# there.
_C_CONTACTOR = const(0)  # charger
_C_LIMIT = const(1)
_C_ENABLE = const(2)
_C_LOCK = const(3)
_F_ENABLE = const(0)  # fuel cell
_F_SP = const(1)
_F_PURGE = const(2)
_R_MODE = const(0)  # reformer
_R_PUMP = const(1)
_R_BED = const(2)
_R_BURNER = const(4)  # (3: the comm timeout)
_FAN = const(0)  # safety I/O: fan duty %


class Supervisor:
    def __init__(self, config, devices, now=0):
        self.dev = {}
        for d in devices:
            self.dev[d.name] = d
        self.il = IL.Interlocks()
        self.v = array("i", [UNKNOWN] * len(_RD))  # the step's readings (fresh)
        self.ev_arb = Arbiter(EV_CLAIMS)
        self.st_arb = Arbiter(STACK_CLAIMS)
        self.contactor = Contactor(self.il)
        self.em = E.new(config["energy"], config["limits"])  # the energy manager (h2p.energy)
        self.rf = RF.new(config["reformer"], config["limits"])  # the bed loop (h2p.reformer)
        self.rf_dev = self.dev["reformer"]
        # The words the core wants written, per device, set straight (what
        # Device.set does, without a call: ~12 a step, ~40 us each on an
        # RP2040). Every value is masked to the 16-bit register.
        self.rf_w = self.rf_dev.want
        self.fc_w = self.dev["fuelcell"].want
        self.ch_w = self.dev["charger"].want
        self.sio_w = self.dev["safety"].want
        self.feed_da = 0  # the stack current the pump feeds for (0.1 A)
        self._limits(**config["limits"])
        self._bus(**config["bus"])
        self.auto_charge = config["auto_charge"]
        self.idle_ms = config["idle_shutdown_s"] * 1000
        # State.
        self.state = S.OFF
        self.since = now
        self.last = now
        self.phase = 0  # sub-step inside a state
        self.phase_ms = now
        self.fc_sp = 0  # stack current setpoint, 0.1 A
        self.up_ua = 0  # ramp time not yet a whole 0.1 A step, uA (see _UA_PER_STEP)
        self.down_ua = 0
        self.ev_limit = 0  # 0.1 A
        self.flow = array("H", [0] * _FLOW_SLOTS)  # 0.1 ml/min, as the u16 register reads
        self.flow_ms = now
        self.flow_k = 0
        self.flow_in = 0  # the last pump flow read (in force until the next reading)
        self.flow_min = 0  # the lowest of the last lead_s whole seconds
        self.flow_at = 0  # ... and its slot
        self.estop_in = False  # board GPIO
        # Requests (from commands, auto-start, the EV).
        self.want_run = config["auto_start"]
        self.want_charge = False
        self.session_limit = self.chg_max
        self.session_auth = ""
        self.session_caps = None  # (cap_kwh, cap_min) of start: h2p.app holds the session to them
        self.stop_req = ""
        self.saw_c = False
        self.fresh_plug = False  # an EV plugged in since the last session
        self.imd_ms = -1
        self.hold_close = False  # set by the shell until the start meter value is taken
        self.pilot = -1  # unknown until read: an EV found plugged at boot is not a new plug-in
        self.idle_since = now
        # Session bookkeeping the shell reads (journal, telemetry).
        self.session_active = False
        self.session_n = 0
        self.events = []  # (kind, detail) drained by the shell

    def _limits(self, stack_rated_a, stack_min_load, stack_ramp_up, stack_ramp_down, charger_max_a,
                operator_limit_a, charger_eff, bed_setpoint_c, bed_feed_min_c, stack_start_c,
                stack_ready_c, bat_soc_min, bat_soc_target, bat_soc_max, stop_current_a, purge_s,
                cool_reformer_c, cool_stack_c, feed_lead_s, premix_h2_mol_per_l, fuel_util,
                stack_cells, aux_confirm_ms, **others):
        # The config's limits, in the integer units the step compares. Taken
        # as named parameters, not by string key: a key string of more than
        # ten characters in this module would be an object in RAM for good.
        self.rated = int(stack_rated_a * 10)
        self.min_load = int(stack_rated_a * stack_min_load * 10)
        # mA/s, not 0.1 A/s: int(7.5) would have been a 7 % error.
        self.ramp_up = int(stack_rated_a * stack_ramp_up * 1000 + 0.5)
        self.ramp_down = int(stack_rated_a * stack_ramp_down * 1000 + 0.5)
        self.chg_max = int(charger_max_a * 10)
        self.operator = int(operator_limit_a * 10)
        self.eff_pm = int(charger_eff * 1000)
        self.bed_sp = int(bed_setpoint_c * 10)
        self.bed_feed = int(bed_feed_min_c * 10)
        self.stack_start_t = int(stack_start_c * 10)
        self.stack_ready_t = int(stack_ready_c * 10)
        self.soc_min = int(bat_soc_min * 10)
        # (bat_soc_target, bat_soc_max: the energy manager's, h2p.energy)
        self.stop_a = int(stop_current_a * 10)
        self.purge_ms = int(purge_s * 1000)
        self.cool_bed = int(cool_reformer_c * 10)
        self.cool_stack = int(cool_stack_c * 10)
        self.lead_s = int(feed_lead_s)
        # Stack amps (0.1 A) carried by 0.1 ml/min of premix, times 1000:
        # H2 mol/s = flow L/s * mol/L; current = mol/s * util * 2F / cells.
        self.a_per_flow = int(premix_h2_mol_per_l * fuel_util * _FARADAY2 / stack_cells / 60000 * 1000)
        self.contactor.confirm_ms = aux_confirm_ms

    def _bus(self, meter_gap_ms, **others):
        # The billing meter's silence is tolerated this long (not the data
        # age): comm_meter and the wait for the start meter value.
        self.il.meter_gap_ms = meter_gap_ms

    # ---- requests (from signed commands or the config) ------------------
    def wake(self):
        if self.state in (S.FAULT, S.ESTOP):
            return False, "pile is in " + S.NAMES[self.state]
        self.want_run = True
        return True, ""

    def shutdown(self):
        self.want_run = False
        self.want_charge = False
        if self.session_active:
            self.stop_req = "shutdown"
        return True, ""

    def start(self, auth="", limit_a=None, cap_kwh=None, cap_min=None):
        if self.state in (S.FAULT, S.ESTOP, S.COOLDOWN):
            return False, "pile is in " + S.NAMES[self.state]
        self.want_run = True
        self.want_charge = True
        self.session_auth = auth or ""
        self.session_caps = (cap_kwh, cap_min) if cap_kwh or cap_min else None
        self.session_limit = self.chg_max if limit_a is None else int(limit_a * 10)
        return True, ""

    def stop(self):
        if not self.session_active:
            self.want_charge = False
            return False, "no session"
        self.stop_req = "operator"
        self.want_charge = False
        return True, ""

    def set_limit(self, amps):
        self.operator = int(amps * 10)
        return True, ""

    def reset(self):
        n = self.il.reset()
        return True, "%d latch(es) cleared" % n

    def fail_safe(self, now, force):
        # The shell lost its control loop (h2p.app.Pile.go_safe): EV current
        # to zero; the contactor opens once the current is down (_ev), or at
        # once with `force`. -> True once it is commanded open.
        self.last = now
        self._ev(0, 0, 0, 0, force)
        return not self.contactor.closed_cmd

    # ---- helpers ---------------------------------------------------------
    def _go(self, state, now):
        if state != self.state:
            self.events.append(("state", S.NAMES[self.state], S.NAMES[state]))
            self.state = state
            self.since = now
            self.phase = 0
            self.phase_ms = now

    def _late(self, ms):
        # A charger reply overdue: only a reading taken `ms` after the phase
        # began can say the device did not follow (a slow bus is not a
        # failed lock).
        return ticks_diff(self.rd.ts[_RD[_CHG_STATUS]], self.phase_ms) > ms

    def _r(self, k, now):
        # reading _RD[k] (k: one of the _NAME constants above)
        return self.rd.get(_RD[k], now)

    def ev_connected(self, now):
        # E (pilot shorted) is still an EV on the cable: a fault to ramp
        # down from, not an unplug to open on at once. (Asked within a step:
        # the pilot as the step took it, self.v.)
        p = self.v[_CHG_PILOT]
        return p == _PILOT_B or p == _PILOT_C or p == _PILOT_D or p == _PILOT_E

    def _fuel_current(self, now, arriving=False):
        # The current the hydrogen reaching the stack can carry from now
        # until a transport delay on: the lowest feed of the last lead_s
        # seconds (and of now). Not just the feed one delay ago: a feed that
        # dipped and rose again within the delay (a bed too cold to feed,
        # then hot again) would let the stack ramp up into the dip as it
        # arrives. `arriving`: only what arrives now (the feed one delay
        # ago), for the bed loop's feed-forward.
        if arriving:
            lag = self.flow[(self.flow_k - self.lead_s) % _FLOW_SLOTS]
            if self.lead_s:
                # ... and of the second after it: a reading late in one
                # second may show a flow that began after the lead's start.
                n = self.flow[(self.flow_k - self.lead_s + 1) % _FLOW_SLOTS]
                if n < lag:
                    lag = n
        else:
            lag = self.flow_min
            if self.flow[self.flow_k] < lag:
                lag = self.flow[self.flow_k]
        f = self._r(_REF_PUMP_MLMIN, now)
        if f == UNKNOWN:
            return 0
        if lag < f:
            f = lag
        return f * self.a_per_flow // 1000

    def _flow_for(self, deci_amps):
        # Pump setpoint that carries `deci_amps`, with 5 % margin.
        return (deci_amps * 1050) // self.a_per_flow

    # ---- the step --------------------------------------------------------
    def step(self, now, readings):
        self.rd = readings
        # The readings this module uses, taken once (UNKNOWN when stale):
        # self.v[_NAME] in the step, not a call per use.
        fresh(readings, _RD, self.v, now)
        dt = ticks_diff(now, self.last)
        if dt < 0:
            dt = 0
        elif dt > _MAX_DT_MS:
            dt = _MAX_DT_MS
        self.last = now
        il = self.il
        evc = self.ev_connected(now)
        p = self.v[_CHG_PILOT]
        if p != UNKNOWN:
            # A plug-in, or an EV that paused (B) asking again (C), may start
            # a session on its own (auto_charge).
            if self.pilot < 0:
                # First reading after boot: an EV still asking (a reset
                # mid-charge) gets a new session; one that is done (B) not.
                self.fresh_plug = p == _PILOT_C or p == _PILOT_D
            elif (self.pilot == _PILOT_A and p != _PILOT_A) or (self.pilot == _PILOT_B and p == _PILOT_C):
                self.fresh_plug = True
            elif p == _PILOT_A:
                self.fresh_plug = False
            self.pilot = p
        il.set_ext(_ESTOP, self.estop_in)
        # Contactor supervision first, so a weld seen in this read is acted
        # on in this step, not the next.
        k = _RD[_CHG_STATUS]
        aux = readings.get(k, now)
        c = self.contactor
        if c.changed_ms is None and aux != UNKNOWN and aux & _CHG_AUX_CLOSED and self._ev_amps() > self.stop_a:
            c.adopt()
        c.supervise(now, aux, readings.ts[k])
        # The rows' phase is what runs, not the state's name: a stop-severity
        # fault keeps a healthy stack loaded (_fault), so its fuel and stack
        # rows still apply. (Judged as out of phase there, a row such as
        # co_trip cleared itself in `fault`, the pile went back to `ready`,
        # the row applied again: fault, ready, fault ... every 2 s.)
        ph = self.state
        if ph == S.FAULT and self.fc_sp > 0:
            ph = S.READY
        il.step(now, readings, ph, evc or self.contactor.closed_cmd)
        if il.changed:
            self.events.append(("faults", ",".join(il.names_in_force()) or "none", S.NAMES[self.state]))
        # The feed-forward delay line: one slot a second, holding the lowest
        # pump flow of that second (the flow in force when it began and
        # every reading in it). Seconds a stalled loop missed get the flow
        # in force before the stall, not the reading after it: a reading
        # that arrives late must not look a whole lead old (it let the stack
        # draw current before the hydrogen reached it: cell_trip).
        # (An unknown reading adds nothing: _fuel_current gives 0 while the
        # flow now is unknown, and a silent reformer stops the fuel.)
        while ticks_diff(now, self.flow_ms) >= 1000:
            self.flow_ms += 1000
            k = self.flow_k  # the second that ends: its lowest reading joins the window's minimum
            if self.flow[k] <= self.flow_min:
                self.flow_min, self.flow_at = self.flow[k], k
            self.flow_k = (self.flow_k + 1) % _FLOW_SLOTS
            self.flow[self.flow_k] = self.flow_in
            # Once a second: the lowest feed of the window (_fuel_current).
            # Scanned only when the slot that held it has left the window
            # (a feed ramping up); otherwise the new slot is compared.
            k = self.flow_k
            m = self.flow[k]
            if m <= self.flow_min:
                self.flow_min, self.flow_at = m, k
            elif (k - self.flow_at) % _FLOW_SLOTS > self.lead_s:
                at = k
                for j in range(self.lead_s):
                    k = k - 1 if k else _FLOW_SLOTS - 1
                    if self.flow[k] < m:
                        m, at = self.flow[k], k
                self.flow_min, self.flow_at = m, at
        f = self.v[_REF_PUMP_MLMIN]
        if f != UNKNOWN:
            if f < self.flow[self.flow_k]:
                self.flow[self.flow_k] = f
            self.flow_in = f

        st = self.state
        if il.severity == IL.EMERGENCY:
            k = il.first
            # E-stop state only when it is really pressed; unknown data is
            # an emergency of its own (FAULT), not a pressed button.
            sio = self.v[_SIO_STATUS]
            estop = self.estop_in or (sio != UNKNOWN and sio & _SIO_ESTOP)
            # While off or in self-test nothing is energised and devices are
            # still coming up: unknown data is waited for, not tripped on.
            if (st != S.OFF and st != S.SELFTEST) or estop:
                self._end_session(IL.NAMES[k])
                self._go(S.ESTOP if estop else S.FAULT, now)
        elif il.severity == IL.STOP and st in (S.CHARGING, S.READY, S.STACK_START, S.REFORMING, S.PREHEAT):
            if st == S.CHARGING and self.contactor.closed_cmd:
                self.stop_req = IL.NAMES[il.first]
                self._go(S.STOPPING, now)  # ramp down, then open
            else:
                self._end_session(IL.NAMES[il.first])  # nothing flowed: no ramp
                self._go(S.FAULT, now)
        st = self.state
        # The energy manager: its claim for this step, the dispatch estimate.
        E.step(self.em, now, readings, st, self.session_active)
        # The bed loop, while premix is fed (run mode as last commanded).
        # Judged once per new bed reading (or when it starts, stops or the
        # reading goes stale), not every step: the bed's time constant is
        # minutes, and the step runs after every read (issue 16: CPU).
        rf = self.rf
        run = 1 if self.rf_dev.want[_R_MODE] == _REF_MODE_RUN else 0
        k = _RD[_REF_BED_C]
        if run != rf[_RF_ON] or (run and (readings.ts[k] != rf[_RF_TS]
                                          or ticks_diff(now, readings.ts[k]) > readings.max_age_ms)):
            fed = rf[_RF_FEED_OK]
            RF.step(rf, now, readings, run, self.feed_da, self._fuel_current(now, True))
            if rf[_RF_FEED_OK] != fed:
                self.events.append(("feed", "resumed" if fed == 0 else "stopped", readings.get(k, now)))

        if st == S.OFF:
            self._off(now)
        elif st == S.SELFTEST:
            self._selftest(now)
        elif st == S.PREHEAT:
            self._preheat(now)
        elif st == S.REFORMING:
            self._reforming(now)
        elif st == S.STACK_START:
            self._stack_start(now, dt)
        elif st == S.READY:
            self._ready(now, dt, evc)
        elif st == S.CHARGING:
            self._charging(now, dt, evc)
        elif st == S.STOPPING:
            self._stopping(now, dt)
        elif st == S.COOLDOWN:
            self._cooldown(now, dt)
        elif st == S.FAULT:
            self._fault(now, dt)
        else:
            self._estop(now)
        self._guard()

    # ---- outputs ---------------------------------------------------------
    def _fuel(self, mode, pump, fc_en, purge=0):
        rf, fc = self.rf_w, self.fc_w
        rf[_R_MODE] = mode & 0xFFFF
        rf[_R_PUMP] = pump & 0xFFFF
        rf[_R_BED] = self.bed_sp & 0xFFFF
        rf[_R_BURNER] = (self.rf[_RF_BURNER] if mode == _REF_MODE_RUN else 0) & 0xFFFF
        fc[_F_ENABLE] = fc_en & 0xFFFF
        fc[_F_SP] = (self.fc_sp if fc_en else 0) & 0xFFFF
        fc[_F_PURGE] = purge & 0xFFFF

    def _open_now(self):
        # Does an emergency demand the contactor open at once, under load?
        # Not the one a reboot mid-charge starts with (nothing read yet, so
        # every device counts as lost): a contactor found closed at boot is
        # ramped down first, unless the E-stop is pressed.
        if self.il.severity < IL.EMERGENCY:
            return False
        if self.contactor.adopted and self.state in (S.OFF, S.SELFTEST):
            sio = self.rd.get(_RD[_SIO_STATUS], self.last)
            return self.estop_in or (sio != UNKNOWN and sio & _SIO_ESTOP)
        return True

    def _ev(self, contactor, limit, enable, lock, force=False):
        # The one place the contactor is driven. Never open under load: if
        # current still flows to an EV that is plugged and asking, hold it
        # closed with the limit at zero until the current has fallen. Only
        # an emergency (the guard), an EV that let go (pilot A/B/E: no load
        # any more) or `force` (a ramp that timed out) opens at once.
        ch = self.ch_w
        if (not contactor and self.contactor.closed_cmd and not force
                and not self._open_now() and self._ev_amps() > self.stop_a
                and self.pilot in (_PILOT_C, _PILOT_D)):
            contactor, limit, lock = 1, 0, 1  # and no unlocking under load
        self.contactor.command(contactor)
        ch[_C_CONTACTOR] = 1 if self.contactor.closed_cmd else 0
        ch[_C_LIMIT] = limit & 0xFFFF
        ch[_C_ENABLE] = enable & 0xFFFF
        ch[_C_LOCK] = lock & 0xFFFF
        self.ev_limit = limit

    def _fan(self, pct):
        self.sio_w[_FAN] = pct & 0xFFFF

    def _guard(self):
        # Last word before anything goes on the wire: no code path closes
        # the contactor or feeds fuel while a blocking interlock is in force.
        il = self.il
        ch = self.ch_w
        if not il.contactor_allowed():
            if self.contactor.closed_cmd and not self._open_now() and self._ev_amps() > self.stop_a:
                # Ramp first: the limit is already 0, the contactor opens
                # when the current has fallen (STOPPING does that).
                ch[_C_LIMIT] = 0
            else:
                self.contactor.command(0)
                ch[_C_CONTACTOR] = 0
                ch[_C_ENABLE] = 0
                ch[_C_LIMIT] = 0
        if not il.fuel_allowed():
            rf, fc = self.rf_w, self.fc_w
            rf[_R_MODE] = _REF_MODE_OFF
            rf[_R_PUMP] = 0
            rf[_R_BURNER] = 0
            fc[_F_SP] = 0
            fc[_F_ENABLE] = 0
            self.fc_sp = 0
            self._fan(100)
        elif il.in_force(_H2_WARN):
            self._fan(100)

    def _ev_amps(self):
        a = self.rd.get(_RD[_CHG_OUT_A], self.last)
        return self.chg_max if a == UNKNOWN else a

    # ---- stack and feed ----------------------------------------------------
    def _run_stack(self, now, dt, ev_load):
        # Decide the stack current from its claims; feed-forward the pump.
        il = self.il
        arb = self.st_arb
        c = arb.claims  # claims stored straight (Arbiter.decide: a negative one is 0)
        rated = self.rated
        if not il.fuel_allowed():
            c[_S_INTERLOCK] = 0
        else:
            c[_S_INTERLOCK] = NONE if il.derate_pct >= 100 else rated * il.derate_pct // 100
        fed = self.rf[_RF_FEED_OK]
        c[_S_FUEL] = self._fuel_current(now)
        c[_S_REFORMER] = NONE if fed else 0
        # The ramp allows what its rate gives over dt (with the remainder
        # of earlier steps); it claims one step more, so that a target
        # already within reach is named as the limit, not the ramp.
        up = self.up_ua + self.ramp_up * dt
        inc = up // _UA_PER_STEP
        c[_S_RAMP] = self.fc_sp + inc + 1
        t = self.v[_FC_STACK_C]
        c[_S_TEMP] = NONE if t != UNKNOWN and t >= self.stack_ready_t else self.min_load
        # A stop-severity BMS alarm: the battery neither charges nor
        # discharges; the stack carries the load itself (bms and energy
        # both claim the current that sets the battery current to zero).
        alarm = il.in_force(_BMS_ALARM)
        # The BMS's charge limit (0 under an alarm): the measured stack
        # current plus the battery current still allowed, carried over from
        # the bus voltage to the stack's (the DC/DC's loss makes it a little
        # less: the safe side). Inline, not a method: RAM.
        lim = 0 if alarm else self.v[_BAT_CHG_LIM_A]
        ba = self.v[_BAT_A]  # + discharge
        bv = self.v[_BAT_V]
        sa = self.v[_FC_STACK_A]
        sv = self.v[_FC_STACK_V]
        if lim == UNKNOWN or ba == UNKNOWN or bv == UNKNOWN:
            bms = self.min_load  # battery unknown: push nothing into it
        elif sa == UNKNOWN or sv == UNKNOWN or sv < 100:
            bms = NONE  # the stack is not loaded yet: nothing to bound
        else:
            bms = sa + (lim + ba) * bv // sv
        c[_S_BMS] = bms
        c[_S_ENERGY] = bms if alarm else self.em[_EM_WANT]
        c[_S_DEMAND] = rated  # the stack's own rating
        want = arb.decide()
        if want >= self.fc_sp + inc:  # the ramp limits: its rate, never its extra step
            want = self.fc_sp + inc
            self.up_ua = up - inc * _UA_PER_STEP
        else:
            self.up_ua = 0
        down = self.down_ua + self.ramp_down * dt
        dec = down // _UA_PER_STEP
        floor = self.fc_sp - dec
        if want < floor and arb.owner != _S_INTERLOCK and arb.owner != _S_FUEL and not alarm:
            want = floor
            self.down_ua = down - dec * _UA_PER_STEP
        else:
            self.down_ua = 0
        self.fc_sp = want
        # The pump leads: feed what the stack will be allowed to draw when
        # the feed arrives: every claim but the fuel's own and the ramp's
        # (the energy manager's wish as far as the BMS, the stack's
        # temperature, the interlocks' derating and the bed allow).
        claims = arb.claims
        target = claims[_S_ENERGY]
        if claims[_S_INTERLOCK] < target:  # (unrolled: a loop over a tuple costs ~100 us on an RP2040)
            target = claims[_S_INTERLOCK]
        if claims[_S_REFORMER] < target:
            target = claims[_S_REFORMER]
        if claims[_S_BMS] < target:
            target = claims[_S_BMS]
        if claims[_S_TEMP] < target:
            target = claims[_S_TEMP]
        if claims[_S_DEMAND] < target:
            target = claims[_S_DEMAND]
        if target < self.min_load and fed:
            target = self.min_load
        if target < self.fc_sp:
            target = self.fc_sp
        # The feed leads the current by what the ramp adds over a transport
        # delay and 5 s more (slow readings: one every 3 s simulated at 60x):
        # the hydrogen arriving is what the ramp draws, a little more. (A
        # feed stepped to the target at once arrived a delay later while the
        # current still ramped: premix burnt in the burner, the bed
        # overheated on it.)
        lead = self.fc_sp + self.ramp_up * (self.lead_s + 5) // 100
        if target > lead:
            target = lead if lead > self.min_load else self.min_load
        # (A bed too cold to feed: claim "reformer" is 0, the feed follows
        # the stack's ramp down to nothing.)
        self.feed_da = target
        self._fuel(_REF_MODE_RUN, self._flow_for(target), 1)

    # ---- states ----------------------------------------------------------
    def _off(self, now):
        self.fc_sp = 0
        self._fuel(_REF_MODE_OFF, 0, 0)
        self._ev(0, 0, 0, 0)
        self._fan(0)
        if self.want_run:
            self._go(S.SELFTEST, now)

    def _selftest(self, now):
        self._fuel(_REF_MODE_OFF, 0, 0)
        self._ev(0, 0, 0, 0)
        self._fan(30)
        aux = self.v[_CHG_STATUS]
        fresh = True  # every device answered within the data age
        for d in self.dev.values():
            if d.silent or ticks_diff(now, d.ok_ms) > self.rd.max_age_ms:
                fresh = False
        ok = (
            fresh
            and self.il.severity < IL.STOP
            and aux != UNKNOWN
            and not aux & _CHG_AUX_CLOSED
        )
        if ok and ticks_diff(now, self.since) >= 1000:
            self.events.append(("selftest", "pass", ""))
            self._go(S.PREHEAT, now)
        elif ticks_diff(now, self.since) > _SELFTEST_MS:
            self.events.append(("selftest", "fail", ",".join(self.il.names_in_force())))
            self._go(S.FAULT, now)
        elif not self.want_run:
            self._go(S.OFF, now)

    def _preheat(self, now):
        self._ev(0, 0, 0, 0)
        self._fan(60)
        air = self.v[_SIO_AIRFLOW]
        # Ignition only with proven airflow.
        if air != UNKNOWN and air > 5:
            self._fuel(_REF_MODE_PREHEAT, 0, 0)
        else:
            self._fuel(_REF_MODE_OFF, 0, 0)
        # Premix only once the stack can take current a transport delay
        # later: hydrogen the stack does not take burns in the burner, and
        # a bed fed for a stack still warming up overheats on it (and the
        # premix is wasted).
        bed = self.v[_REF_BED_C]
        t = self.v[_FC_STACK_C]
        if bed != UNKNOWN and bed >= self.bed_feed and t != UNKNOWN and t >= self.stack_start_t:
            self.feed_da = self.min_load
            self._go(S.REFORMING, now)
        if not self.want_run:
            self._go(S.COOLDOWN, now)

    def _reforming(self, now):
        self._ev(0, 0, 0, 0)
        self._fan(60)
        self.fc_sp = 0
        self._fuel(_REF_MODE_RUN, self._flow_for(self.min_load if self.rf[_RF_FEED_OK] else 0), 0)
        t = self.v[_FC_STACK_C]
        if (
            ticks_diff(now, self.since) >= self.lead_s * 1000
            and t != UNKNOWN
            and t >= self.stack_start_t
            and self._fuel_current(now) >= self.min_load // 2
        ):
            # An immediate small load: an open-circuit stack above 0.85 V
            # per cell ages fast.
            self.fc_sp = self.min_load // 2
            self._go(S.STACK_START, now)
        if not self.want_run:
            self._go(S.COOLDOWN, now)

    def _stack_start(self, now, dt):
        self._ev(0, 0, 0, 0)
        self._fan(60)
        self._run_stack(now, dt, False)
        t = self.v[_FC_STACK_C]
        if self.fc_sp >= self.min_load and t != UNKNOWN and t >= self.stack_ready_t:
            self.idle_since = now
            self._go(S.READY, now)
        if not self.want_run:
            self._go(S.COOLDOWN, now)

    def _ready(self, now, dt, evc):
        self._fan(60)
        self._run_stack(now, dt, False)
        self._ev(0, 0, 0, 0)
        if evc:
            self.idle_since = now
            # Auto-charge starts a session on a fresh plug-in only: an EV that
            # stopped asking stays plugged without a new session.
            if (self.want_charge or (self.auto_charge and self.fresh_plug)) and self.il.contactor_allowed():
                soc = self.v[_BAT_SOC]
                if soc != UNKNOWN and soc > self.soc_min:
                    self.fresh_plug = False
                    self.session_active = True
                    self.session_n += 1
                    self.saw_c = False
                    self.stop_req = ""
                    self.events.append(("session_start", self.session_n, self.session_auth))
                    self._go(S.CHARGING, now)
                    return
        if not self.want_run:
            self._go(S.COOLDOWN, now)
        elif self.idle_ms and ticks_diff(now, self.idle_since) > self.idle_ms and self.em[_EM_COOL]:
            # (the energy manager holds it until the battery is back at
            # target, unless the premix is low: h2p.energy)
            self.events.append(("idle_shutdown", "", ""))
            self.want_run = False
            self._go(S.COOLDOWN, now)

    def _ev_claims(self, now):
        arb = self.ev_arb
        c = arb.claims  # claims stored straight (Arbiter.decide: a negative one is 0)
        il = self.il
        if not il.contactor_allowed():
            c[_INTERLOCK] = 0
        else:
            c[_INTERLOCK] = NONE if il.derate_pct >= 100 else self.chg_max * il.derate_pct // 100
        c[_CONTACTOR] = NONE if self.contactor.verified_closed() else 0
        # Power balance: stack net power plus what the battery may give.
        w = 0
        v = self.v[_FC_DCDC_V]
        a = self.v[_FC_DCDC_A]
        if v != UNKNOWN and a != UNKNOWN:
            w = v * a // 100
        soc = self.v[_BAT_SOC]
        bv = self.v[_BAT_V]
        bl = self.v[_BAT_DIS_LIM_A]
        ba = self.v[_BAT_A]
        ov = self.v[_CHG_OUT_V]
        oa = self.v[_CHG_OUT_A]
        if (soc != UNKNOWN and bv != UNKNOWN and bl != UNKNOWN and soc > self.soc_min
                and not il.in_force(_BMS_ALARM)):
            w += bl * bv // 100
        elif bv != UNKNOWN and ba != UNKNOWN and ov != UNKNOWN and oa != UNKNOWN:
            # Battery at its floor (or in alarm): the EV gets what the stack
            # gives beyond the balance of plant, i.e. the charger's input now
            # less what the battery is giving: no more energy out of it.
            w = ov * oa // 100 * 1000 // self.eff_pm - ba * bv // 100
        ev_v = self.v[_CHG_OUT_V]
        rv = self.v[_CHG_EV_REQ_V]
        if ev_v == UNKNOWN or ev_v < 500:
            ev_v = rv if rv != UNKNOWN and rv > 500 else 4000
        c[_BATTERY] = w * self.eff_pm // ev_v // 10 if soc != UNKNOWN else 0
        c[_CHARGER] = self.chg_max
        c[_OPERATOR] = self.operator
        req = self.v[_CHG_EV_REQ_A]
        s = self.session_limit
        if req != UNKNOWN and req < s:
            s = req
        c[_SESSION] = s if req != UNKNOWN else 0
        return arb.decide()

    def _charging(self, now, dt, evc):
        self._fan(60)
        self._run_stack(now, dt, True)
        ch = self.v[_CHG_STATUS]
        pilot = self.v[_CHG_PILOT]
        if not evc:
            # Unplugged: the EV draws nothing any more; open at once.
            self._ev(0, 0, 0, 0)
            self._end_session("ev_unplugged")
            self._go(S.READY, now)
            return
        if pilot == _PILOT_E:
            self.stop_req = "pilot_short"  # ramp down, then open
        elif pilot == _PILOT_C or pilot == _PILOT_D:
            self.saw_c = True
        elif self.saw_c and pilot == _PILOT_B:
            # The EV stopped asking (C->B): it has already cut its current,
            # IEC 61851 wants the contactor open within 100 ms.
            self._ev(0, 0, 0, 1)
            self._end_session("ev_stopped")
            self._go(S.STOPPING, now)
            self.phase, self.phase_ms = 2, now
            return
        if self.stop_req:
            c = self.contactor.closed_cmd
            self._ev(c, 0, c, 1)  # the limit goes to zero in this very step
            self._go(S.STOPPING, now)
            return
        p = self.phase
        if p == 0:  # lock the connector
            self._ev(0, 0, 0, 1)
            if ch != UNKNOWN and ch & _CHG_LOCKED:
                self.phase, self.phase_ms = 1, now
            elif self._late(_LOCK_MS):
                self.stop_req = "lock_failed"
        elif p == 1:  # insulation measured and fine (the interlocks judge it)
            self._ev(0, 0, 0, 1)
            if ch == UNKNOWN or not ch & _CHG_IMD_DONE:
                self.imd_ms = -1
            elif self.imd_ms < 0:
                self.imd_ms = now
            # The result must stand past the insulation rules' debounce
            # before it counts: a bad value and "done" can come in one read.
            if ch != UNKNOWN and ch & _CHG_AUX_CLOSED:
                # Commanded open, reads closed: never close onto a weld. The
                # contactor supervision declares the weld (a latch) once
                # fresh readings confirm it; one reading is no weld.
                pass
            elif (self.imd_ms >= 0 and ticks_diff(now, self.imd_ms) > _IMD_SETTLE_MS
                    and self.il.contactor_allowed() and not self.hold_close):
                self._ev(1, 0, 0, 1)
                self.phase, self.phase_ms = 2, now
                return
            # Say what was missing: the insulation result, or the start meter
            # value the session waits for before any energy flows (the meter
            # is no safety reading: it may be silent for meter_gap_ms).
            if self._late(_ISO_MS) and (self.imd_ms < 0 or not self.hold_close):
                self.stop_req = "insulation_timeout"
            elif self.hold_close and self._late(self.il.meter_gap_ms):
                self.stop_req = "meter_timeout"
        else:  # closed: aux must agree before current flows
            lim = self._ev_claims(now)
            on = 1 if self.contactor.verified_closed() else 0
            self._ev(1, lim if on else 0, on, 1)

    def _stopping(self, now, dt):
        self._fan(60)
        if self.il.fuel_allowed() and self.fc_sp > 0:
            self._run_stack(now, dt, False)
        if self.phase == 0:
            # Ramp the EV current down; open only below a few amperes. Never
            # close from here: a stop before the close just ends; an unplug
            # means no load any more: open at once.
            if not self.contactor.closed_cmd or not self.ev_connected(now):
                self._ev(0, 0, 0, 1)
                self._end_session(self.stop_req or "stopped")
                self.phase, self.phase_ms = 1, now
                return
            self._ev(1, 0, 1, 1)
            a = self.v[_CHG_OUT_A]
            if (a != UNKNOWN and a <= self.stop_a) or self._late(5000):
                self._ev(0, 0, 0, 1, force=True)
                self._end_session(self.stop_req or "stopped")
                self.phase, self.phase_ms = 1, now
        elif self.phase == 1:
            self._ev(0, 0, 0, 1)
            if ticks_diff(now, self.phase_ms) > 500:
                self.phase, self.phase_ms = 2, now
        else:
            self._ev(0, 0, 0, 0)  # unlock
            if ticks_diff(now, self.phase_ms) > 500:
                self.stop_req = ""
                self.want_charge = False
                self.saw_c = False
                if self.il.severity >= IL.STOP:
                    self._go(S.FAULT, now)
                elif not self.want_run:
                    self._go(S.COOLDOWN, now)
                else:
                    self.idle_since = now
                    self._go(S.READY, now)

    def _cooldown(self, now, dt):
        # Ramp down, stop the pump, eat residual H2 with a small load, purge,
        # cool with the fan running.
        self._ev(0, 0, 0, 0)
        self._fan(100)
        p = self.phase
        if p == 0:
            down = self.down_ua + self.ramp_down * dt
            dec = down // _UA_PER_STEP
            self.down_ua = down - dec * _UA_PER_STEP
            self.fc_sp -= dec
            if self.fc_sp <= self.min_load // 2:
                self.fc_sp = self.min_load // 2
                self.phase, self.phase_ms = 1, now
            self.feed_da = self.fc_sp
            self._fuel(_REF_MODE_RUN, self._flow_for(self.fc_sp), 1)
        elif p == 1:
            self._fuel(_REF_MODE_COOLDOWN, 0, 1)
            if ticks_diff(now, self.phase_ms) > _RESIDUAL_MS:
                self.fc_sp = 0
                self.phase, self.phase_ms = 2, now
        elif p == 2:
            self._fuel(_REF_MODE_COOLDOWN, 0, 0, 1)
            if ticks_diff(now, self.phase_ms) > self.purge_ms:
                self.phase, self.phase_ms = 3, now
        else:
            self._fuel(_REF_MODE_COOLDOWN, 0, 0)
            bed = self.v[_REF_BED_C]
            st = self.v[_FC_STACK_C]
            if bed != UNKNOWN and st != UNKNOWN and bed < self.cool_bed and st < self.cool_stack:
                self._fuel(_REF_MODE_OFF, 0, 0)
                self._go(S.OFF, now)

    def _fault(self, now, dt):
        self._ev(0, 0, 0, 0)
        il = self.il
        if il.fuel_allowed() and self.fc_sp > 0:
            # A stop-severity fault keeps a healthy stack and reformer running.
            self._fan(60)
            self._run_stack(now, dt, False)
        else:
            self.fc_sp = 0
            self._fuel(_REF_MODE_OFF, 0, 0)
            self._fan(100)
        if il.severity < IL.STOP and ticks_diff(now, self.since) > 2000:
            if self.fc_sp > 0 and self.want_run:
                self._go(S.READY, now)
            else:
                self._go(S.COOLDOWN, now)

    def _estop(self, now):
        self.fc_sp = 0
        self._fuel(_REF_MODE_OFF, 0, 0)
        self._ev(0, 0, 0, 0)
        self._fan(100)
        if self.il.severity < IL.EMERGENCY and ticks_diff(now, self.since) > 2000:
            self.want_run = False
            self._go(S.COOLDOWN, now)

    # ---- sessions --------------------------------------------------------
    def _end_session(self, reason):
        if self.session_active:
            self.session_active = False
            self.events.append(("session_stop", self.session_n, reason))

    def status(self, now):
        # What the state topic and the live view show.
        return {
            "state": S.NAMES[self.state],
            "faults": self.il.names_in_force(),
            "ev_limit_by": self.ev_arb.in_charge(),
            "stack_limit_by": self.st_arb.in_charge(),
            "ev_limit_a": self.ev_limit / 10,
            "stack_sp_a": self.fc_sp / 10,
        }
