"""Session report of a scenario run: one PNG of temperatures, powers, SOCs
and the firmware's state over simulated time, from the run's JSON-lines log
(`sample` records of the plant, `state` changes, `inject` events)."""

from __future__ import annotations

import json

from h2p.states import NAMES as STATE_ORDER  # the plot's y axis, in state order


def read_log(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def plot(records: list[dict], path: str, title: str = "h2pile session") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [r for r in records if r.get("kind") == "sample"]
    states = [r for r in records if r.get("kind") == "state"]
    injects = [r for r in records if r.get("kind") == "inject"]
    t_end = max([r.get("t") or 0.0 for r in records] + [1.0])
    minutes = t_end > 600
    k = 60.0 if minutes else 1.0
    unit = "min" if minutes else "s"

    def series(name: str) -> tuple[list[float], list]:
        return [s["t"] / k for s in samples], [s.get(name) for s in samples]

    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 2, 2]})
    ax = axes[0]
    for name, label in (("bed_c", "reformer bed"), ("stack_c", "stack"), ("burner_c", "burner"),
                        ("bat_c", "battery")):
        x, y = series(name)
        ax.plot(x, y, label=label)
    ax.set_ylabel("°C")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.grid(alpha=0.3)

    ax = axes[1]
    for name, label, scale in (("stack_w", "stack", 1e-3), ("net_w", "DC/DC out", 1e-3),
                               ("ev_w", "to EV (meter)", 1e-3), ("bop_w", "balance of plant", 1e-3)):
        x, y = series(name)
        ax.plot(x, [v * scale if v is not None else None for v in y], label=label)
    x, y = series("bat_a")
    x2, v2 = series("bat_soc")
    ax.set_ylabel("kW")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.grid(alpha=0.3)

    ax = axes[2]
    for name, label in (("bat_soc", "buffer battery SOC"), ("ev_soc", "EV SOC"), ("h2_lel", "H2 % LEL")):
        x, y = series(name)
        ax.plot(x, y, label=label)
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)

    ax = axes[3]
    if states:
        xs = [0.0]
        ys = [STATE_ORDER.index(states[0].get("from", "off")) if states[0].get("from") in STATE_ORDER else 0]
        for s in states:
            xs.append(s["t"] / k)
            ys.append(STATE_ORDER.index(s["to"]) if s["to"] in STATE_ORDER else 0)
        xs.append(t_end / k)
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="black")
    ax.set_yticks(range(len(STATE_ORDER)))
    ax.set_yticklabels(STATE_ORDER, fontsize=7)
    ax.set_ylabel("state")
    ax.grid(alpha=0.3)
    ax.set_xlabel(f"simulated time ({unit})")
    for r in injects:
        for a in axes:
            a.axvline(r["t"] / k, color="red", alpha=0.4, lw=1)
        axes[3].annotate(r["event"], (r["t"] / k, len(STATE_ORDER) - 1), fontsize=7, color="red",
                         rotation=90, va="top", ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
