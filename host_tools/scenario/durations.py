"""Durations as a scenario writes them: '12m30s', '1h', '250ms', '90s' or a
number of seconds."""

from __future__ import annotations

import math
import re

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(v: object) -> float:
    """'12m30s', '1h', '250ms', '90s' or a number of seconds -> seconds."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a duration")
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        s = v.strip().replace(" ", "")
        if not s:
            raise ValueError("empty duration")
        pos, x = 0, 0.0
        for m in _DUR.finditer(s):
            if m.start() != pos:
                break
            x += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
            pos = m.end()
        if pos != len(s):
            raise ValueError(f"{v!r} is not a duration (examples: '90s', '12m30s', '1h', '250ms')")
    else:
        raise ValueError(f"{v!r} is not a duration")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{v!r} is not a duration >= 0")
    return x

