"""The day-long energy bench (issue 17 Goals): the firmware's control core
(h2p.supervisor with its energy manager, interlocks and arbiter, the real
config and drivers) stepped in simulated milliseconds against the
simulator's physics (sim.plant), in one process: no bus, no MQTT, so that a
day of ~50 simulated hours runs in a minute or two of wall time. The whole
pile over the wire is `bench.session` / `make sim`; this is the same core
and the same plant, joined directly.

The day: a cold morning start (bed and stack at ambient, battery at its
target), 8 sessions of 15-40 kWh with random gaps of 10-90 min (seeded),
warm-up included, until the pile has brought its battery back to target
and cooled down. Figures: premix per kWh delivered to EVs, the battery's
SOC at the end, the stack's share. Then `deliver_kwh` is read off the cold
pile and it is run until empty (EVs back to back until it cannot charge
any more): the estimate against what it really delivered.

    python -m bench.day                 # the day and the run until empty; JSON on stdout
    python -m bench.day --plot docs/energy-day.png
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from h2p import config as C
from h2p import devices as D
from h2p import registers as R
from h2p.readings import INDEX, SCALES, Readings
from h2p.states import NAMES as STATES
from h2p.supervisor import Supervisor
from sim import params as P
from sim.plant import Plant

STEP_MS = 1000  # control step: rates and timeouts are in ms, so any interval holds them
PLANT_DT = 0.25  # s, the plant's integration step
SESSIONS = 8
KWH = (15.0, 40.0)
GAP_MIN = (10.0, 90.0)
EV_PACK_KWH = 80.0
EV_SOC0 = 20.0
CONFIG = {"pile_id": "day", "auto_start": False, "auto_charge": True, "idle_shutdown_s": 300,
          "bus": {"data_age_ms": 5000}}
PARAMS = {"tank_l": 250.0, "bat_soc": 90.0}  # a full tank and the battery at target from the day before
GOAL_L_PER_KWH = 0.95
GOAL_ESTIMATE = 0.05
GOAL_BED_K = 10.0  # the bed within this of its setpoint whenever premix is fed (the loop holds it)


class CoSim:
    """The core and the plant, joined: readings from the plant's register
    view, commands from the drivers' words, one control step per STEP_MS."""

    def __init__(self, config: dict | None = None, params: dict | None = None, trace_every_s: float = 0):
        cfg = dict(CONFIG)
        cfg.update(config or {})
        self.cfg = C.from_dict(cfg)
        self.devs = D.build(self.cfg)
        self.rd = Readings(self.cfg["bus"]["data_age_ms"])
        self.sup = Supervisor(self.cfg, self.devs, 0)
        self.plant = Plant(P.merged(dict(PARAMS, **(params or {}))))
        self.now = 0
        self.sent: dict[str, float] = {}
        skip = set(R.COMM_TIMEOUT.values())  # the devices' own watchdogs: nobody is silent here
        self.cmds = [(d, i, c[0], c[3]) for d in self.devs for i, c in enumerate(d.commands) if c[0] not in skip]
        self.idx = [(INDEX[n], n, SCALES[INDEX[n]]) for n in self.plant.readings()]
        self.trace: list[tuple] = []
        self.trace_every = int(trace_every_s * 1000)
        self.sessions: list[dict] = []
        # The reformer bed while premix is fed (the loop's figure): lowest,
        # highest, and the premix the burner fired.
        self.bed_fed = [1e9, -1e9]

    def state(self) -> str:
        return STATES[self.sup.state]

    def step(self) -> None:
        self.now += STEP_MS
        pl = self.plant
        pl.advance(self.now / 1000.0, PLANT_DT)
        r = pl.readings()
        for i, n, sc in self.idx:
            self.rd.put(i, int(round(r[n] / sc)), self.now)
        for d in self.devs:  # every device answered (as the shell marks it)
            d.ok_ms = self.now
            d.silent = False
        self.sup.step(self.now, self.rd)
        for d, i, name, scale in self.cmds:
            v = d.want[i] * scale
            if self.sent.get(name) != v:
                self.sent[name] = v
                pl.command(name, v)
        if self.sup.events:
            for e in self.sup.events:
                if e[0] == "session_start":
                    self.sessions.append({"t0_s": self.now / 1000, "wh0": pl.meter_kwh * 1000})
                elif e[0] == "session_stop" and self.sessions:
                    s = self.sessions[-1]
                    s.update(t1_s=self.now / 1000, kwh=round((pl.meter_kwh * 1000 - s["wh0"]) / 1000, 3), reason=e[2])
            self.sup.events.clear()
        rf = pl.reformer
        if rf.mode == R.REF_MODE_RUN and rf.pump > 0 and pl.stack.current > 0:
            self.bed_fed[0] = min(self.bed_fed[0], rf.bed)
            self.bed_fed[1] = max(self.bed_fed[1], rf.bed)
        if self.trace_every and self.now % self.trace_every == 0:
            self.trace.append((self.now / 3.6e6, pl.stack.current, pl.battery.soc, pl.ev_a * pl.ev_v / 1000,
                               pl.ev.present, self.state(), rf.bed, rf.burner_sp if rf.mode == R.REF_MODE_RUN else 0.0))

    def run_until(self, cond, limit_s: float) -> bool:
        end = self.now + int(limit_s * 1000)
        while self.now < end:
            if cond():
                return True
            self.step()
        return cond()

    def plug(self, kwh: float) -> None:
        self.plant.ev.plug(soc=EV_SOC0, kwh=EV_PACK_KWH, target=EV_SOC0 + kwh / EV_PACK_KWH * 100.0)

    def charged(self) -> bool:
        ev = self.plant.ev
        return ev.present and not ev.asking and self.state() in ("ready", "fault", "cooldown", "off")

    def used_l(self) -> float:
        rf = self.plant.reformer
        return rf.fed_l + rf.burnt_l

    def delivered_kwh(self) -> float:
        return self.plant.meter_kwh - self.plant.meter_kwh0


def day(seed: int = 1, trace_every_s: float = 0, log=None, config: dict | None = None) -> tuple[dict, CoSim]:
    rnd = random.Random(seed)
    plan = [(round(rnd.uniform(*KWH), 1), round(rnd.uniform(*GAP_MIN), 1)) for _ in range(SESSIONS)]
    cs = CoSim(config, trace_every_s=trace_every_s)
    wall0 = time.perf_counter()
    cs.sup.wake()
    ok = cs.run_until(lambda: cs.state() == "ready", 4 * 3600)
    res: dict = {"seed": seed, "plan_kwh_gap_min": plan, "warm_up_min": round(cs.now / 60000, 1),
                 "warm_up_l": round(cs.used_l(), 2), "reached_ready": ok}
    for k, (kwh, gap) in enumerate(plan):
        cs.plug(kwh)
        done = cs.run_until(cs.charged, 48 * 3600)
        cs.plant.ev.unplug()
        if log:
            log(f"  session {k + 1}: {kwh} kWh asked, {cs.sessions[-1].get('kwh') if cs.sessions else None} "
                f"delivered, at {cs.now / 3.6e6:.1f} h, battery {cs.plant.battery.soc:.1f} %")
        if not done:
            res["error"] = f"session {k + 1} did not finish"
            break
        if k < len(plan) - 1:
            cs.run_until(lambda: False, gap * 60)
    # The day ends when the pile has refilled its battery and cooled down.
    res["cooled"] = cs.run_until(lambda: cs.state() == "off", 24 * 3600)
    kwh, litres = cs.delivered_kwh(), cs.used_l()
    res.update({
        "sim_h": round(cs.now / 3.6e6, 2), "wall_s": round(time.perf_counter() - wall0, 1),
        "delivered_kwh": round(kwh, 2), "premix_l": round(litres, 2),
        "l_per_kwh": round(litres / kwh, 4) if kwh else None, "goal_l_per_kwh": GOAL_L_PER_KWH,
        "bat_soc_end": round(cs.plant.battery.soc, 2), "bat_soc_target": cs.cfg["limits"]["bat_soc_target"],
        "sessions": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k != "wh0"}
                     for s in cs.sessions],
        # the energy manager's stored figures (h2p.energy slots 0, 1: mL/kWh, 0.1 L)
        "measured_l_per_kwh": cs.sup.em[0] / 1000, "measured_warm_up_l": cs.sup.em[1] / 10,
        "tank_left_l": round(cs.plant.reformer.tank, 2),
        "bed_c_fed": [round(cs.bed_fed[0], 1), round(cs.bed_fed[1], 1)],
        "bed_setpoint_c": cs.cfg["limits"]["bed_setpoint_c"], "goal_bed_k": GOAL_BED_K,
        "burner_l": round(cs.plant.reformer.burnt_l, 2),
    })
    return res, cs


def until_empty(cs: CoSim, log=None) -> dict:
    """From the cold pile the day left: its estimate, then EVs back to back
    (each a fresh 80 kWh pack) until a whole hour passes without energy."""
    cs.sup.step(cs.now, cs.rd)  # the estimate for the readings now
    est = cs.sup.em[4] / 1000  # h2p.energy slot 4: Wh
    k0 = cs.delivered_kwh()
    wall0 = time.perf_counter()
    cs.sup.wake()
    last_kwh, last_t = k0, cs.now
    empty = False
    while cs.now - last_t < 3600 * 1000 and cs.now < 200 * 3600 * 1000:
        if not cs.plant.ev.present:
            cs.plug(60.0)
        cs.step()
        if cs.plant.ev.present and not cs.plant.ev.asking:
            cs.plant.ev.unplug()
        k = cs.delivered_kwh()
        if k > last_kwh + 0.01:
            last_kwh, last_t = k, cs.now
        if "tank_empty" in cs.sup.il.names_in_force():
            empty = True
        if cs.state() in ("fault", "cooldown", "off") and not cs.sup.want_run and not empty:
            cs.sup.wake()  # an idle shutdown between two cars: the dispatcher sends it on
    real = cs.delivered_kwh() - k0
    out = {"estimate_kwh": round(est, 2), "delivered_kwh": round(real, 2),
           "error": round(est / real - 1, 4) if real else None, "goal_error": GOAL_ESTIMATE,
           "tank_left_l": round(cs.plant.reformer.tank, 2), "bat_soc_end": round(cs.plant.battery.soc, 2),
           "faults": cs.sup.il.names_in_force(), "wall_s": round(time.perf_counter() - wall0, 1)}
    if log:
        log(f"  run until empty: estimate {out['estimate_kwh']} kWh, delivered {out['delivered_kwh']} kWh")
    return out


def plot(cs: CoSim, path: str, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [x[0] for x in cs.trace]
    fig, ax = plt.subplots(4, 1, figsize=(11, 9.5), sharex=True)
    ax[0].plot(t, [x[1] for x in cs.trace], lw=0.8, color="tab:red")
    ax[0].set_ylabel("stack current, A")
    ax[1].plot(t, [x[2] for x in cs.trace], lw=0.8, color="tab:green")
    ax[1].axhline(res["bat_soc_target"], ls="--", lw=0.6, color="gray")
    ax[1].set_ylabel("battery SOC, %")
    ax[2].plot(t, [x[3] for x in cs.trace], lw=0.8, color="tab:blue")
    ax[2].set_ylabel("EV power, kW")
    ax[3].plot(t, [x[6] for x in cs.trace], lw=0.8, color="tab:orange", label="bed, °C")
    ax[3].axhline(res["bed_setpoint_c"], ls="--", lw=0.6, color="gray")
    ax[3].set_ylabel("reformer bed, °C")
    burner = ax[3].twinx()
    burner.plot(t, [x[7] for x in cs.trace], lw=0.6, color="tab:purple", alpha=0.6)
    burner.set_ylabel("burner command, %")
    ax[3].set_xlabel("hours from the cold start")
    for s in res["sessions"]:
        for a in ax:
            a.axvspan(s["t0_s"] / 3600, s.get("t1_s", s["t0_s"]) / 3600, color="tab:blue", alpha=0.08)
    fig.suptitle("one simulated day: %d sessions, %.0f kWh delivered, %.3f L premix/kWh, battery %.1f %% at the end"
                 % (len(res["sessions"]), res["delivered_kwh"], res["l_per_kwh"] or 0, res["bat_soc_end"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.day", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", metavar="PNG", help="write the plot of the day (stack current, battery SOC, EV power, "
                    "reformer bed and burner, sessions)")
    ap.add_argument("--no-empty", action="store_true", help="skip the run until empty")
    a = ap.parse_args(argv)

    def log(m):
        print(m, file=sys.stderr, flush=True)

    res, cs = day(a.seed, trace_every_s=60 if a.plot else 0, log=log)
    if a.plot:
        plot(cs, a.plot, res)
    if not a.no_empty:
        res["until_empty"] = until_empty(cs, log=log)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
