"""A scenario as loaded: its events, checks and settings (the TOML format
is in docs/scenarios.md; loader.py reads and checks it), and the error a bad
one raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from host_tools.exitcodes import USAGE, CliError
from host_tools.pilerun import HEAP
from host_tools.scenario.condition import Condition

DEFAULT_SPEED = 10.0
WARM = {"bed_c0": 265.0, "stack_c0": 165.0}


class ScenarioError(CliError):
    """Bad scenario: says which file, which line and what is wrong (exit 2)."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}", USAGE)


@dataclass
class Event:
    index: int
    line: int
    name: str
    args: dict
    at: float | None = None
    when: Condition | None = None
    delay: float = 0.0


@dataclass
class Latency:
    line: int
    source: str  # injected event name
    cmd: str
    value: float
    max_ms: float


@dataclass
class Scenario:
    path: str
    name: str
    description: str = ""
    speed: float = DEFAULT_SPEED
    duration: float = 600.0
    until: Condition | None = None
    settle: float = 0.0
    heap: str = HEAP  # the unix board's budget (boards/unix_sim.json)
    xfail: str = ""
    sample: float = 0.0
    warm: bool = False
    params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    expect: dict = field(default_factory=dict)
    latency: list = field(default_factory=list)

    def plant_params(self) -> dict:
        p = dict(WARM) if self.warm else {}
        p.update(self.params)
        return p

