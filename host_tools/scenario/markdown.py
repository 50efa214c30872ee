"""The generated part of docs/scenarios.md (`h2pile sim docs` writes it):
the events, the checks, and the names a condition may use."""

from __future__ import annotations

from h2p import interlocks as IL
from h2p import states as S
from host_tools.scenario.condition import context_types
from host_tools.scenario.verdict import EXPECT_KEYS
from sim import faults


def events_markdown() -> str:
    """The generated part of docs/scenarios.md: events, checks, names."""
    out = ["### Events (`do = ...`)", "", faults.markdown(), "### Checks (`[expect]`)", "",
           "| check | meaning |", "|---|---|"]
    for k, doc in EXPECT_KEYS.items():
        out.append(f"| `{k}` | {doc} |")
    out += ["", "### Names a condition may use", ""]
    types = context_types()
    out.append(", ".join(f"`{k}`" for k in sorted(types)))
    out += ["", "### Firmware states", "", ", ".join(f"`{s}`" for s in S.NAMES),
            "", "### Interlocks (for `faults`, `no_faults`, `faults contains`)", "",
            ", ".join(f"`{r[0]}`" for r in IL.TABLE), ""]
    return "\n".join(out)
