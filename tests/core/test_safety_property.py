"""Property-based safety test of the control core (CPython + hypothesis).

The real core (config, drivers, Readings, Supervisor, Interlocks, Contactor,
Arbiter) is driven with random reading sequences fed through the drivers'
own decoders (Device.store: implausible values and NaN become UNKNOWN),
random time steps, silent devices, pilot changes, an aux contact that
disagrees (welded / stuck open), hydrogen ramps, E-stop bits and GPIO, and
random operator commands. A crude plant closes the loop so that the pile
really reaches `ready` and `charging`. After every step the firmware's
safety contract must hold:

  fuel  fuel is off (reformer mode not PREHEAT/RUN, pump setpoint 0, fuel
        cell enable 0, fan 100 %) whenever the hydrogen reading has been at
        or above 25 % LEL, or unknown, for at least the h2_trip debounce
        (100 ms), and after a measured trip until a reset command once the
        hydrogen is gone. Checked against an oracle that tracks what was
        put on the wire, not against the interlock engine's own flags.
  (a)   the contactor is never commanded from open to closed while a
        blocking interlock (severity >= STOP) is in force;
  (b)   while an EMERGENCY is in force the contactor is commanded open (and
        the output disabled, limit 0, fuel off, fan 100 %); the E-stop GPIO,
        the E-stop bit of the safety I/O and a silent charger controller are
        also checked from the oracle;
  (c)   the EV current limit written never exceeds the smallest claim the
        arbiter saw this step (Supervisor.ev_arb), nor any claim recomputed
        here from the inputs (charger rating, operator and session limits,
        the EV's request, derating), and it is 0 whenever the contactor is
        not verified closed (commanded closed and a fresh aux reading says
        closed);
  (d)   a welded contactor (contactor_welded latched, or the oracle saw the
        aux read closed on consecutive fresh readings, all taken after an
        open command, for at least 1 s: limits.aux_confirm_ms) is never
        commanded closed until a reset command. One reading is no weld: a
        closed reading that a fresh open one follows is a bounce.

Run: .venv/bin/pytest tests/core/test_safety_property.py -q
Set H2P_PROP_EXAMPLES to change the number of examples (default 300).
"""

import copy
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2p import codes as K
from h2p import interlocks as IL
from h2p import registers as R
from h2p import states as S
from h2p.readings import INDEX, NAMES
from tests.helpers.pilebench import HEALTHY, Bench

EXAMPLES = int(os.environ.get("H2P_PROP_EXAMPLES", "300"))
MAX_AGE = 1000
H2_TRIP = 250  # 25.0 % LEL in 0.1 % LEL
H2_DEBOUNCE = 100
H2_PLAUSIBLE_MAX = 1000  # 100 % LEL
AGREE_MS = 1000

# Wire type and scale of every reading (device maps and the meter profile).
WIRE = {}
for _dev in R.DEVICE_ORDER:
    for _f in R.DEVICES[_dev]["readings"]:
        WIRE[_f[0]] = (_f[2], _f[3])
for _f in R.METER_PROFILES["sdm630"]["fields"]:
    WIRE[_f[0]] = (_f[2], _f[3])

DEVICES = ("charger", "safety", "fuelcell", "reformer", "bms", "meter")
ROW = IL.ROW


# Known firmware bugs (see the regression tests at the end of this file):
# the property tolerates them, so that it keeps hunting for new ones.
# Empty this set to see them fail the property again.
TOLERATE: set = set()  # bugs the search may meet; each fixed one was removed
FOUND = set()
_KNOWN = frozenset(TOLERATE)


class Violation(AssertionError):
    pass


class Rig:
    """The real core, a crude plant, and an oracle of what is on the wire."""

    def __init__(self):
        b = Bench(auto_charge=True)
        self.b = b
        self.sup = b.sup
        self.rd = b.rd
        self.devs = b.devs
        self.dev = b.dev
        self.phys = dict(HEALTHY)
        self.phys["fc_min_cell_v"] = 0.7
        self.over = {}  # reading -> list of wire words (overrides the plant)
        self.silent = {}  # device -> silent until (ms)
        self.weld = False  # aux contact stays closed
        self.stuck = False  # aux contact stays open
        self.lag = False  # EV current follows the limit slowly
        self.h2_target = None  # (target % LEL, % LEL per second)
        self.pulses = {}  # knob -> off at (ms)
        self.now = 0
        # Oracle state.
        self.put = {}  # reading -> (wire words, ms) last delivered
        self.h2_since = None
        self.h2_latched = False
        self.h2_prev_on = False
        self.weld_seen = False  # aux read closed for 1 s of fresh readings after an open command
        self.weld_from = None  # read time of the first of those readings
        self.open_ms = 0  # when the contactor was last commanded open
        self.unplug_ms = None  # since when the pilot reads A
        self.operator = self.sup.operator
        self.session_limit = self.sup.session_limit
        self.log = []
        self._hook_arbiter()

    def _hook_arbiter(self):
        arb = self.sup.ev_arb
        rig = self
        orig = type(arb).decide.__get__(arb)

        def decide():
            v = orig()
            rig.ev_decided = min(arb.claims)
            return v

        self.ev_decided = None
        arb.decide = decide

    def clone(self):
        c = copy.deepcopy(self)
        c._hook_arbiter()
        return c

    # ---- commands the core wants ---------------------------------------
    def cmd(self, name):
        return self.b.cmd(name)

    def raw(self, name):
        for d in self.devs:
            for i, c in enumerate(d.commands):
                if c[0] == name:
                    return d.want[i]
        raise KeyError(name)

    # ---- the wire ------------------------------------------------------
    def words(self, name):
        if name in self.over:
            return self.over[name]
        typ, scale = WIRE[name]
        return R.encode(self.phys[name], typ, scale)

    def feed(self):
        now = self.now
        for d in self.devs:
            if self.silent.get(d.name, -1) > now:
                continue
            for blk in d.blocks:
                buf = bytearray(2 * blk.count)
                for i, off, typ, f, lo, hi in blk.fields:
                    w = self.words(NAMES[i])
                    for j, x in enumerate(w):
                        buf[2 * (off + j)] = (x >> 8) & 0xFF
                        buf[2 * (off + j) + 1] = x & 0xFF
                    self.put[NAMES[i]] = (w, now)
                d.store(blk, buf, self.rd, now)

    def known(self, name):
        # The oracle's view: the wire word if it was delivered within the
        # data age, else None. (Plausibility only for the names used.)
        p = self.put.get(name)
        if p is None or self.now - p[1] > MAX_AGE:
            return None
        w = p[0][0]
        if name == "sio_h2_lel" and w > H2_PLAUSIBLE_MAX:
            return None
        if name == "chg_pilot" and w > 5:
            return None
        return w

    # ---- plant -----------------------------------------------------------
    def plant(self, dt):
        v = self.phys
        s = dt / 1000.0
        mode = self.cmd("ref_mode_cmd")
        if mode in (K.REF_MODE_PREHEAT, K.REF_MODE_RUN):
            v["ref_bed_c"] = min(265.0, v["ref_bed_c"] + 40 * s)
            v["fc_stack_c"] = min(165.0, v["fc_stack_c"] + 20 * s)
        else:
            v["ref_bed_c"] = max(20.0, v["ref_bed_c"] - 5 * s)
            v["fc_stack_c"] = max(20.0, v["fc_stack_c"] - 5 * s)
        v["ref_pump_mlmin"] = self.cmd("ref_pump_sp")
        v["ref_mode"] = mode
        v["fc_stack_a"] = self.cmd("fc_current_sp") if self.cmd("fc_enable") else 0
        v["fc_dcdc_a"] = v["fc_stack_a"] * 0.18
        closed = bool(self.cmd("chg_contactor"))
        if self.weld:
            closed = True
        if self.stuck:
            closed = False
        st_ = K.CHG_AUX_CLOSED if closed else 0
        if self.cmd("chg_lock") and v["chg_pilot"] != K.PILOT_A:
            st_ |= K.CHG_LOCKED | K.CHG_IMD_DONE
        v["chg_status"] = st_
        on = closed and self.cmd("chg_enable") and v["chg_pilot"] in (K.PILOT_C, K.PILOT_D)
        target = min(self.cmd("chg_limit_a"), v["chg_ev_req_a"]) if on else 0
        if self.lag and closed:
            a = v["chg_out_a"]
            step = 20 * s  # 20 A/s
            v["chg_out_a"] = max(target, a - step) if a > target else min(target, a + step)
        else:
            v["chg_out_a"] = target
        v["chg_out_v"] = 400 if closed else 0
        v["met_a"] = v["chg_out_a"]
        v["met_v"] = v["chg_out_v"]
        v["met_w"] = v["chg_out_a"] * v["chg_out_v"]
        v["met_wh"] += v["met_w"] * s / 3600
        if self.h2_target is not None:
            tgt, rate = self.h2_target
            h = v["sio_h2_lel"]
            d = rate * s
            v["sio_h2_lel"] = min(tgt, h + d) if h < tgt else max(tgt, h - d)

    # ---- one step ----------------------------------------------------------
    def step(self, dt):
        for knob, t in list(self.pulses.items()):
            if self.now >= t:
                del self.pulses[knob]
                self.apply(knob if isinstance(knob, tuple) else (knob, False))
                self.log.pop()
        prev_closed = self.raw("chg_contactor")
        self.prev_limit = self.raw("chg_limit_a")
        self.prev_state = self.sup.state
        self.now += dt
        self.feed()
        self.ev_decided = None
        self.sup.step(self.now, self.rd)
        self.check(prev_closed)
        if prev_closed and not self.raw("chg_contactor"):
            self.open_ms = self.now
        self.plant(dt)

    # ---- events ------------------------------------------------------------
    def apply(self, ev):
        kind = ev[0]
        self.log.append(ev)
        v = self.phys
        if kind == "word":
            self.over[ev[1]] = list(ev[2])
        elif kind == "unword":
            self.over.pop(ev[1], None)
        elif kind == "phys":
            self.over.pop(ev[1], None)
            v[ev[1]] = ev[2]
        elif kind == "silence":
            self.silent[ev[1]] = self.now + ev[2]
        elif kind == "pilot":
            self.over.pop("chg_pilot", None)
            v["chg_pilot"] = ev[1]
        elif kind == "pulse":  # a knob on for a while: weld, stuck, estop_in
            self.pulses[ev[1]] = self.now + ev[2]
            self.apply((ev[1], True))
            self.log.pop()
        elif kind == "wordpulse":  # a wire word for a while, then the plant again
            self.over[ev[1]] = list(ev[2])
            self.pulses[("unword", ev[1])] = self.now + ev[3]
        elif kind == "plug":  # an EV plugs in (or resumes) and asks for current
            self.over.pop("chg_pilot", None)
            v["chg_pilot"] = ev[1]
            v["chg_ev_req_a"] = ev[2]
            v["chg_ev_req_v"] = 380
        elif kind == "estop_in":
            self.sup.estop_in = ev[1]
        elif kind == "sio":
            self.over.pop("sio_status", None)
            v["sio_status"] = ev[1]
        elif kind == "weld":
            self.weld = ev[1]
        elif kind == "stuck":
            self.stuck = ev[1]
        elif kind == "lag":
            self.lag = ev[1]
        elif kind == "h2ramp":
            self.over.pop("sio_h2_lel", None)
            self.h2_target = (ev[1], ev[2])
        elif kind == "reset":
            # The latch clears only if the condition was gone at the last step.
            if not self.h2_prev_on:
                self.h2_latched = False
            self.weld_seen = False
            self.sup.reset()
        elif kind == "start":
            ok, _ = self.sup.start("tag", ev[1])
            if ok:
                self.session_limit = self.sup.chg_max if ev[1] is None else int(ev[1] * 10)
        elif kind == "stop":
            self.sup.stop()
        elif kind == "shutdown":
            self.sup.shutdown()
        elif kind == "wake":
            self.sup.wake()
        elif kind == "limit":
            self.sup.set_limit(ev[1])
            self.operator = int(ev[1] * 10)
        else:
            raise ValueError(ev)

    # ---- the contract ------------------------------------------------------
    def fail(self, what):
        raise Violation("%s at t=%d ms, state %s, in force: %s"
                        % (what, self.now, S.NAMES[self.sup.state], self.sup.il.names_in_force()))

    def extra(self, name, what):
        if name in TOLERATE:
            FOUND.add(name)
        else:
            self.fail(what)

    def fuel_off(self):
        return (self.raw("ref_mode_cmd") not in (K.REF_MODE_PREHEAT, K.REF_MODE_RUN)
                and self.raw("ref_pump_sp") == 0 and self.raw("fc_enable") == 0
                and self.raw("fc_current_sp") == 0)

    def check(self, prev_closed):
        sup, il, now = self.sup, self.sup.il, self.now
        closed = self.raw("chg_contactor")
        limit = self.raw("chg_limit_a")
        enable = self.raw("chg_enable")

        # -- hydrogen oracle
        h2 = self.known("sio_h2_lel")
        on = h2 is None or h2 >= H2_TRIP
        if on:
            if self.h2_since is None:
                self.h2_since = now
        else:
            self.h2_since = None
        h2_active = on and now - self.h2_since >= H2_DEBOUNCE
        if h2_active and h2 is not None:
            self.h2_latched = True
        self.h2_prev_on = h2_active
        if (h2_active or self.h2_latched) and not (self.fuel_off() and self.raw("sio_fan") == 100):
            self.fail("fuel on with hydrogen %s (>= 25 %% LEL or unknown for >= %d ms, or latched)"
                      % (h2, H2_DEBOUNCE))

        # -- (a) never open -> closed with a blocking interlock in force
        if closed and not prev_closed and il.severity >= IL.STOP:
            self.fail("(a) contactor commanded closed with a blocking interlock in force")
        if closed != sup.contactor.closed_cmd:
            self.fail("contactor word %d differs from Contactor.closed_cmd %d" % (closed, sup.contactor.closed_cmd))

        # -- (b) emergency: open at once, fuel off, ventilation max
        emergency = il.severity == IL.EMERGENCY
        sio = self.known("sio_status")
        if sup.estop_in or (sio is not None and sio & K.SIO_ESTOP) or self.known("chg_status") is None:
            if not emergency:
                self.fail("(b) E-stop / silent charger is not an emergency")
        if emergency:
            if closed or limit or enable:
                self.fail("(b) emergency in force but contactor %d, limit %d, enable %d" % (closed, limit, enable))
            if not self.fuel_off() or self.raw("sio_fan") != 100:
                self.fail("(b) emergency in force but fuel on or fan below 100 %")

        # -- (c) EV current limit
        if limit and self.ev_decided is None and "stop_req_holds_limit" in TOLERATE and (
                self.prev_state == S.CHARGING and sup.state == S.STOPPING and limit == self.prev_limit):
            FOUND.add("stop_req_holds_limit")
        elif limit:
            if self.ev_decided is None:
                self.fail("(c) limit %d written without an arbiter decision this step" % limit)
            if limit > self.ev_decided:
                self.fail("(c) limit %d above the smallest claim %d" % (limit, self.ev_decided))
            aux = self.known("chg_status")
            if not (closed and sup.contactor.closed_cmd and aux is not None and aux & K.CHG_AUX_CLOSED):
                self.fail("(c) limit %d with the contactor not verified closed (aux %s)" % (limit, aux))
            bound = min(sup.chg_max, self.operator, self.session_limit)
            req = self.known("chg_ev_req_a")
            bound = min(bound, 0 if req is None else req)
            if il.severity >= IL.STOP:
                bound = 0
            for k in range(IL.N):
                if il.in_force(k) and IL.TABLE[k][5] == IL.DERATE:
                    bound = min(bound, sup.chg_max * IL.TABLE[k][8] // 100)
            if limit > bound:
                self.fail("(c) limit %d above the independent bound %d" % (limit, bound))
            if not enable:
                self.fail("(c) limit without output enable")

        # -- (e) an EV that unplugs: contactor open within 100 ms (domain.md 3)
        pilot = self.known("chg_pilot")
        if pilot == K.PILOT_A:
            if self.unplug_ms is None:
                self.unplug_ms = now
        else:
            self.unplug_ms = None
        if closed and self.unplug_ms is not None and now - self.unplug_ms >= 100:
            self.extra("unplugged_still_closed", "(e) contactor closed %d ms after the pilot read A" % (now - self.unplug_ms))
        # -- (f) closing only in `charging`, after lock and insulation check
        if closed and not prev_closed:
            if sup.state != S.CHARGING:
                self.extra("close_outside_charging", "(f) contactor closed in state %s" % S.NAMES[sup.state])
            aux = self.known("chg_status")
            if aux is None or aux & K.CHG_AUX_CLOSED:
                self.extra("close_with_aux_closed", "(f) close commanded while the aux contact reads %s" % aux)

        # -- (d) welded
        st_ = self.known("chg_status")
        p = self.put.get("chg_status")
        if not closed and not prev_closed and st_ is not None and st_ & K.CHG_AUX_CLOSED and p[1] > self.open_ms:
            if self.weld_from is None:
                self.weld_from = p[1]
            if p[1] - self.weld_from >= AGREE_MS:
                self.weld_seen = True
        else:
            self.weld_from = None
        if (self.weld_seen or il.latched[ROW["contactor_welded"]]) and closed:
            if not prev_closed and sup.state == S.STOPPING and "close_outside_charging" in TOLERATE:
                FOUND.add("close_outside_charging")  # the same bug: stopping closes
                return
            self.fail("(d) welded contactor commanded closed before a reset")


# ---- strategies ---------------------------------------------------------
H2_WORDS = st.sampled_from([0, 99, 100, 249, 250, 251, 999, 1000, 1001, 0xFFFF])
WORD = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 2, 4, 8, 15, 0x7FFF, 0x8000, 0xFFFF]))
# NaN, huge, zero, +-50. (+-inf: see test_meter_infinity_is_unknown_not_a_crash.)
F32_WORDS = st.sampled_from([[0x7FC0, 0], [0x7F7F, 0xFFFF], [0, 0], [0x4248, 0], [0xC248, 0]])
PERTURB = ["sio_status", "sio_h2_lel", "sio_airflow", "chg_status", "chg_pilot", "chg_out_a",
           "chg_out_v", "chg_iso_kohm", "chg_ev_req_a", "chg_ev_req_v", "chg_c", "bat_soc",
           "bat_alarms", "bat_v", "bat_dis_lim_a", "fc_stack_c", "fc_min_cell_v", "fc_dcdc_v",
           "fc_dcdc_a", "ref_bed_c", "ref_tank_l", "ref_meoh_leak", "ref_pump_mlmin"]


def _word_event():
    plain = st.tuples(st.just("word"), st.sampled_from(PERTURB), st.lists(WORD, min_size=1, max_size=1))
    h2 = st.tuples(st.just("word"), st.just("sio_h2_lel"), st.lists(H2_WORDS, min_size=1, max_size=1))
    meter = st.tuples(st.just("word"), st.sampled_from(["met_a", "met_v", "met_w", "met_wh"]), F32_WORDS)
    return st.one_of(plain, h2, meter)


EVENT = st.one_of(
    _word_event(),
    st.tuples(st.just("unword"), st.sampled_from(PERTURB + ["met_a"])),
    st.tuples(st.just("silence"), st.sampled_from(DEVICES), st.integers(50, 5000)),
    st.tuples(st.just("pilot"), st.sampled_from([0, 1, 2, 2, 3, 4, 5])),
    st.tuples(st.just("estop_in"), st.booleans()),
    st.tuples(st.just("sio"), st.sampled_from([0, 0, 1, 2, 4, 8, 6])),
    st.tuples(st.just("weld"), st.booleans()),
    st.tuples(st.just("stuck"), st.booleans()),
    st.tuples(st.just("lag"), st.booleans()),
    st.tuples(st.just("h2ramp"), st.sampled_from([0.0, 9.0, 12.0, 24.9, 25.0, 40.0]),
              st.sampled_from([1.0, 10.0, 100.0])),
    st.tuples(st.just("phys"), st.just("chg_ev_req_a"), st.sampled_from([0, 10, 50, 200, 400])),
    st.tuples(st.just("phys"), st.just("fc_stack_c"), st.sampled_from([150.0, 186.0, 196.0])),
    st.tuples(st.just("phys"), st.just("chg_c"), st.sampled_from([25.0, 90.0])),
    st.tuples(st.just("phys"), st.just("bat_soc"), st.sampled_from([5.0, 50.0, 96.0])),
    st.tuples(st.just("phys"), st.just("chg_iso_kohm"), st.sampled_from([5000, 100, 20])),
    st.tuples(st.just("reset")),
    st.tuples(st.just("start"), st.sampled_from([None, 16.0, 0.0, 600.0])),
    st.tuples(st.just("stop")),
    st.tuples(st.just("shutdown")),
    st.tuples(st.just("wake")),
    st.tuples(st.just("limit"), st.sampled_from([0.0, 10.0, 32.0, 500.0])),
)
# A second mix for the contactor: EVs plugging, pausing, leaving, a
# contactor that welds or sticks, aux words, quiet devices, resets.
PULSE_MS = st.sampled_from([50, 200, 900, 1100, 3000])
CONTACTOR_EVENT = st.one_of(
    st.tuples(st.just("plug"), st.sampled_from([K.PILOT_C, K.PILOT_C, K.PILOT_D, K.PILOT_B]),
              st.sampled_from([0, 16, 200, 400])),
    st.tuples(st.just("pilot"), st.sampled_from([0, 1, 2, 4, 5])),
    st.tuples(st.just("wordpulse"), st.just("chg_pilot"), st.lists(st.integers(0, 9), min_size=1, max_size=1),
              PULSE_MS),
    st.tuples(st.just("wordpulse"), st.just("chg_status"), st.lists(st.integers(0, 15), min_size=1, max_size=1),
              PULSE_MS),
    st.tuples(st.just("wordpulse"), st.just("chg_out_a"),
              st.lists(st.sampled_from([0, 30, 51, 2000]), min_size=1, max_size=1), PULSE_MS),
    st.tuples(st.just("pulse"), st.sampled_from(["weld", "stuck", "stuck", "estop_in"]),
              PULSE_MS),
    st.tuples(st.just("lag"), st.booleans()),
    st.tuples(st.just("silence"), st.sampled_from(["charger", "meter", "safety", "bms"]), st.integers(50, 3000)),
    st.tuples(st.just("sio"), st.sampled_from([0, 0, 0, 2])),
    st.tuples(st.just("wake")),
    st.tuples(st.just("phys"), st.just("chg_iso_kohm"), st.sampled_from([5000, 5000, 100, 20])),
    st.tuples(st.just("phys"), st.just("chg_c"), st.sampled_from([25.0, 90.0])),
    st.tuples(st.just("wordpulse"), st.just("sio_h2_lel"), st.lists(H2_WORDS, min_size=1, max_size=1),
              PULSE_MS),
    st.tuples(st.just("reset")),
    st.tuples(st.just("reset")),
    st.tuples(st.just("start"), st.sampled_from([None, 16.0, 0.0])),
    st.tuples(st.just("stop")),
    st.tuples(st.just("limit"), st.sampled_from([0.0, 10.0, 32.0, 500.0])),
)
DT = st.one_of(st.integers(1, 60), st.integers(60, 400), st.integers(400, 1500), st.integers(1500, 4000))
# Most steps carry no event, so that the plant and the core get time to
# reach `charging` again (and close the contactor) between disturbances.
QUIET = st.just(())
STEP = st.tuples(DT, st.one_of(QUIET, QUIET, QUIET, QUIET, QUIET, st.lists(EVENT, min_size=1, max_size=2)))
C_STEP = st.tuples(st.one_of(st.integers(1, 60), st.integers(60, 400), st.integers(400, 1500)),
                   st.one_of(QUIET, QUIET, QUIET, st.lists(CONTACTOR_EVENT, min_size=1, max_size=2)))


# ---- templates: the pile cold, ready, charging (built once) ---------------
def _run_until(rig, state, limit=3000, dt=100):
    for _ in range(limit):
        if S.NAMES[rig.sup.state] == state:
            return rig
        rig.step(dt)
    raise AssertionError("template did not reach %s (%s)" % (state, S.NAMES[rig.sup.state]))


_TEMPLATES = {}


def template(name):
    if not _TEMPLATES:
        cold = Rig()
        _TEMPLATES["off"] = cold.clone()
        ready = _run_until(cold, "ready")
        _TEMPLATES["ready"] = ready.clone()
        ch = ready.clone()
        ch.apply(("phys", "chg_ev_req_a", 200))
        ch.apply(("phys", "chg_ev_req_v", 380))
        ch.apply(("pilot", K.PILOT_C))
        for _ in range(100):
            ch.step(100)
            if ch.raw("chg_limit_a"):
                break
        assert S.NAMES[ch.sup.state] == "charging" and ch.raw("chg_limit_a") > 0
        _TEMPLATES["charging"] = ch.clone()
        for t in _TEMPLATES.values():
            t.log = []
    return _TEMPLATES[name].clone()


def run_steps(start, steps):
    rig = template(start)
    for dt, evs in steps:
        for ev in evs:
            rig.apply(ev)
        rig.step(dt)
    return rig


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(start=st.sampled_from(["off", "ready", "charging", "charging"]),
       steps=st.lists(STEP, min_size=30, max_size=200))
def test_safety_contract_holds_for_random_readings(start, steps):
    run_steps(start, steps)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(start=st.sampled_from(["ready", "charging"]), steps=st.lists(C_STEP, min_size=30, max_size=200))
def test_safety_contract_holds_for_contactor_cycles(start, steps):
    run_steps(start, steps)


# ---- the templates themselves are checked, and the oracle can fail --------
def test_templates_reach_charging_under_the_contract():
    rig = template("charging")
    assert rig.sup.session_active and rig.raw("chg_contactor") == 1


def test_oracle_catches_a_guard_that_lets_fuel_flow():
    # The property is not vacuous: with the guard's fuel-off branch
    # disabled, a hydrogen trip during charging is a violation.
    rig = template("charging")
    il = rig.sup.il
    judged = il._sum

    def fuel_always_allowed():  # the flag fuel_allowed() answers, stuck at "allowed"
        judged()
        il.fuel_ok = True

    il._sum = fuel_always_allowed
    il.fuel_allowed = lambda: True
    rig.apply(("word", "sio_h2_lel", [400]))
    with pytest.raises(Violation, match="fuel on with hydrogen"):
        for _ in range(5):
            rig.step(60)


# ---- known firmware bugs, found by the properties above (minimal examples) --
# Each was a bug the search found (strict xfail while open); all are fixed,
# and these tests keep them fixed.
def _fresh(start):
    FOUND.clear()
    saved = set(TOLERATE)
    TOLERATE.clear()
    try:
        return template(start)
    finally:
        TOLERATE.update(saved)


def test_stop_before_close_never_closes_the_contactor():
    rig = _fresh("ready")
    TOLERATE.clear()
    try:
        rig.apply(("pilot", K.PILOT_E))  # a fresh plug with a shorted pilot: session starts
        rig.step(1)
        rig.apply(("word", "chg_out_a", [51]))  # 5.1 A offset on the current reading
        for _ in range(5):
            rig.step(1)  # Violation "(f) contactor closed in state stopping"
    finally:
        TOLERATE.update(_KNOWN)


def test_stop_before_close_counts_no_contactor_cycle():
    rig = _fresh("ready")
    rig.apply(("plug", K.PILOT_C, 200))
    rig.step(1)
    rig.apply(("stop",))
    rig.step(1)
    rig.step(1)
    assert rig.sup.contactor.cycles == 0


def test_stop_request_zeroes_the_limit_in_the_same_step():
    rig = _fresh("charging")
    assert rig.raw("chg_limit_a") > 0
    rig.apply(("stop",))
    rig.step(1)
    assert rig.raw("chg_limit_a") == 0


def test_close_needs_the_aux_contact_open_first():
    rig = _fresh("charging")
    rig.apply(("pilot", K.PILOT_B))  # EV stops asking: contactor opens
    rig.step(1)
    rig.apply(("weld", True))  # ... but it welded
    rig.apply(("pilot", K.PILOT_C))  # and the EV asks again within the 1 s window
    closed_with_aux = False
    for _ in range(30):
        prev = rig.raw("chg_contactor")
        rig.step(50)
        aux = rig.known("chg_status")
        if rig.raw("chg_contactor") and not prev and aux & K.CHG_AUX_CLOSED:
            closed_with_aux = True
    assert not closed_with_aux


@pytest.mark.parametrize("words", [[0x7F80, 0], [0xFF80, 0]], ids=["+inf", "-inf"])
def test_meter_infinity_is_unknown_not_a_crash(words):
    # A float meter that sends +-inf: an implausible value (UNKNOWN), like
    # NaN. devices.Device.store must not raise (int(inf) is OverflowError on
    # CPython and MicroPython alike), or the bus task dies with it.
    rig = _fresh("charging")
    rig.apply(("word", "met_a", words))
    rig.step(1)
    from h2p.readings import UNKNOWN
    assert rig.rd.get(INDEX["met_a"], rig.now) == UNKNOWN


def test_unplug_during_ramp_down_opens_within_100_ms():
    rig = _fresh("charging")
    rig.apply(("lag", True))  # the EV's current falls at 20 A/s
    rig.apply(("stop",))
    rig.step(1)
    rig.apply(("pilot", K.PILOT_A))
    rig.step(1)
    for _ in range(3):
        rig.step(50)
    assert rig.raw("chg_contactor") == 0, "contactor still closed %d ms after unplug" % 150
