# A pile on a test bench: the real control core (config, drivers, readings,
# supervisor) with readings set by hand instead of read from a bus.
from h2p import codes as K
from h2p import config as C
from h2p import devices as D
from h2p.readings import INDEX, SCALES, Readings
from h2p.supervisor import Supervisor

HEALTHY = {
    "ref_mode": 0, "ref_burner_c": 20, "ref_evap_c": 160, "ref_bed_c": 20, "ref_pump_mlmin": 0,
    "ref_tank_l": 150, "ref_meoh_leak": 0, "ref_alarms": 0,
    "fc_status": 0, "fc_stack_c": 20, "fc_stack_v": 0, "fc_stack_a": 0, "fc_min_cell_v": 0.7,
    "fc_co_ppm": 0, "fc_dcdc_v": 400, "fc_dcdc_a": 0,
    "bat_soc": 80, "bat_v": 420, "bat_a": 0, "bat_c": 25, "bat_chg_lim_a": 70, "bat_dis_lim_a": 140,
    "bat_alarms": 0,
    "chg_status": 0, "chg_pilot": K.PILOT_A, "chg_ev_req_v": 0, "chg_ev_req_a": 0, "chg_ev_soc": 0,
    "chg_out_v": 0, "chg_out_a": 0, "chg_iso_kohm": 5000, "chg_c": 25,
    "sio_status": 0, "sio_h2_lel": 0, "sio_airflow": 6,
    "met_v": 0, "met_a": 0, "met_w": 0, "met_wh": 1000000,
}


class Bench:
    def __init__(self, **cfg):
        base = {"pile_id": "bench", "auto_start": True, "auto_charge": True}
        base.update(cfg)
        self.cfg = C.from_dict(base)
        self.devs = D.build(self.cfg)
        self.dev = {d.name: d for d in self.devs}
        self.rd = Readings(1000)
        self.now = 0
        self.values = dict(HEALTHY)
        self.sup = Supervisor(self.cfg, self.devs, 0)
        self.silent = set()  # devices that do not answer: their readings are not refreshed
        self.own = {}  # reading index -> its device's name
        for d in self.devs:
            for blk in d.blocks:
                for f in blk.fields:
                    self.own[f[0]] = d.name

    def set(self, **kw):
        self.values.update(kw)

    def refresh(self):
        for name, v in self.values.items():
            if name.startswith("_"):
                continue  # test knobs, not readings
            i = INDEX[name]
            if self.own.get(i) in self.silent:
                continue
            self.rd.put(i, int(round(v / SCALES[i])), self.now)
        for d in self.devs:
            if d.name not in self.silent:
                d.ok_ms = self.now
                d.silent = False

    def step(self, ms=100, n=1, fresh=True):
        for _ in range(n):
            self.now += ms
            if fresh:
                self.refresh()
            self.sup.step(self.now, self.rd)

    def cmd(self, name):
        for d in self.devs:
            for i, c in enumerate(d.commands):
                if c[0] == name:
                    return d.want[i] * c[3]
        raise KeyError(name)

    def state(self):
        from h2p.states import NAMES

        return NAMES[self.sup.state]

    def until(self, state, ms=100, limit=100000, each=None):
        for _ in range(limit):
            if self.state() == state:
                return True
            if each:
                each(self)
            self.step(ms)
        return False


def follow_plant(b):
    # Crude plant for the core tests: the bed and stack heat while the
    # firmware asks, the pump follows, contactor aux and lock follow.
    v = b.values
    if b.cmd("ref_mode_cmd") in (K.REF_MODE_PREHEAT, K.REF_MODE_RUN):
        v["ref_bed_c"] = min(265, v["ref_bed_c"] + 2)
        v["fc_stack_c"] = min(165, v["fc_stack_c"] + 1)
    v["ref_pump_mlmin"] = b.cmd("ref_pump_sp")
    v["fc_stack_a"] = b.cmd("fc_current_sp") if b.cmd("fc_enable") else 0
    v["fc_dcdc_a"] = v["fc_stack_a"] * 0.18
    st = 0
    if b.cmd("chg_contactor"):
        st |= K.CHG_AUX_CLOSED
    if b.cmd("chg_lock") and v["chg_pilot"] != K.PILOT_A:
        st |= K.CHG_LOCKED | K.CHG_IMD_DONE
    if b.values.get("_welded"):
        st |= K.CHG_AUX_CLOSED
    v["chg_status"] = st
    on = b.cmd("chg_contactor") and b.cmd("chg_enable") and v["chg_pilot"] == K.PILOT_C
    v["chg_out_a"] = min(b.cmd("chg_limit_a"), v["chg_ev_req_a"]) if on else 0
    v["chg_out_v"] = 400 if b.cmd("chg_contactor") else 0
