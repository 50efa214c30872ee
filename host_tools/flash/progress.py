"""A plain-text progress bar for `h2pile flash`: redrawn in place on a
terminal, one line per 10 % otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, out: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.out = out or sys.stdout
        self.width = width
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.last_step = -1
        self.t0 = time.monotonic()

    def add(self, n: int, what: str = "") -> None:
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        fill = self.width * pct // 100
        line = "%s [%s%s] %3d%% %6.1f/%.1f KB %s" % (
            self.label, "#" * fill, "." * (self.width - fill), pct, self.done / 1024,
            self.total / 1024, what)
        if self.tty:
            self.out.write("\r" + line[:120].ljust(120))
            self.out.flush()
        elif pct // 10 != self.last_step:
            self.last_step = pct // 10
            self.out.write(line + "\n")
            self.out.flush()

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")
        dt = time.monotonic() - self.t0
        self.out.write("%s: %.1f KB in %.1f s\n" % (self.label, self.done / 1024, dt))
        self.out.flush()
