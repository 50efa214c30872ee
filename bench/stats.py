"""Percentiles without numpy."""

from __future__ import annotations

import math


def pct(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs) -> dict:
    if not xs:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None}
    return {"n": len(xs), "p50": round(pct(xs, 50), 2), "p99": round(pct(xs, 99), 2),
            "max": round(max(xs), 2), "min": round(min(xs), 2)}
