"""The wire's physical limits, from the firmware's own Modbus timing helpers
(h2p.modbus.char_time_us / gap_us, as sim.server.wire_time_s uses them) and
the firmware's actual blocks and poll schedule."""

from __future__ import annotations

from h2p import app as A
from h2p import config as C
from h2p import devices as D
from h2p.modbus import char_time_us, gap_us
from sim.server import wire_time_s

BAUDS = (9600, 19200, 115200)
TURNAROUND_S = 0.002  # the simulator's device turnaround per reply (python -m sim default)


def read_bytes(count):
    return 8, 5 + 2 * count


def write_bytes(nregs):
    return (8, 8) if nregs == 1 else (9 + 2 * nregs, 8)


class Layout:
    """Blocks and writes of the firmware for one config."""

    def __init__(self, config=None):
        cfg = {"pile_id": "bench"}
        cfg.update(config or {})
        self.cfg = C.from_dict(cfg)
        self.devices = D.build(self.cfg)
        self.dev = {d.name: d for d in self.devices}

        class _P:  # just enough of app.Pile for its schedule
            devices = self.devices

        self.schedule = A.Pile._schedule(_P())
        self.slow_every = self.cfg["bus"]["slow_every"]

    def block_of(self, reading):
        from h2p.readings import INDEX

        i = INDEX[reading]
        for d in self.devices:
            for b in d.blocks:
                if any(f[0] == i for f in b.fields):
                    return d, b
        raise KeyError(reading)

    def read_s(self, baud, count, turnaround=0.0):
        return wire_time_s(baud, *read_bytes(count)) + turnaround

    def write_s(self, baud, dev_name, turnaround=0.0):
        n = len(self.dev[dev_name].commands)
        return wire_time_s(baud, *write_bytes(n)) + turnaround

    def reaction_bound_s(self, baud, reading, write_dev, turnaround=0.0):
        """One transaction that reads the hazard + one write that fixes it."""
        _d, b = self.block_of(reading)
        return self.read_s(baud, b.count, turnaround) + self.write_s(baud, write_dev, turnaround)

    def reaction_floor_s(self, baud, reading, write_dev, turnaround, between):
        """The worst reaction no loop can beat, at zero CPU: the hazard appears just after
        the device took the reading for a reply (the rest of that transaction), the
        `between` blocks are read, then the reading's block again, then the write is on
        the wire with its t3.5 silence (where bench.picow_loop stops its clock)."""
        c, g = char_time_us(baud) / 1e6, gap_us(baud) / 1e6
        _d, b = self.block_of(reading)
        tail = turnaround + read_bytes(b.count)[1] * c + g
        req, _rep = write_bytes(len(self.dev[write_dev].commands))
        return (tail + sum(self.read_s(baud, x.count, turnaround) for x in between)
                + self.read_s(baud, b.count, turnaround) + req * c + g)

    def ev_stop_floors_s(self, baud, turnaround):
        """issue 16's EV stop: (this schedule's floor: the hot reads and the longest other
        block between two charger reads; the floor of any schedule that reads one other
        block between them: the shortest)."""
        hot = [b for d in self.devices if d.name in A._HOT and d.name != "charger" for b in d.blocks]
        others = [b for d in self.devices if d.name != "charger" for b in d.blocks if b.fast]
        longest = max((b for b in others if b not in hot), key=lambda b: b.count)
        shortest = min(others, key=lambda b: b.count)
        return (self.reaction_floor_s(baud, "chg_pilot", "charger", turnaround, hot + [longest]),
                self.reaction_floor_s(baud, "chg_pilot", "charger", turnaround, [shortest]))

    def cycle_reads_s(self, baud, turnaround=0.0):
        """Wire time of one poll cycle's reads (slow blocks pro rata)."""
        t = 0.0
        for _d, b in self.schedule:
            x = self.read_s(baud, b.count, turnaround)
            t += x if b.fast else x / self.slow_every
        return t

    def reads_per_cycle(self):
        return sum(1 if b.fast else 1 / self.slow_every for _d, b in self.schedule)
