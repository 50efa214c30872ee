# Charging session records: one journal record per session, never lost.
#
# SessionRecorder is pure logic over a Journal (h2p.journal): the control
# code calls start() / step() / stop() with readings it already has; the
# recorder accumulates energy from the billing meter, premix from the pump
# counter, peak power and EV SOC, and asks the journal for a rate-limited
# checkpoint so a reset mid-charge closes the session at the next boot with
# the energy counted so far (recover()).
#
# Session id: "<pile>-<boot counter>-<sequence in this boot>", e.g.
# "P7-00042-003". The boot counter lives in the journal (META "boot") and is
# incremented once per boot before any session starts, so ids are unique and
# stable across reboots. The id is also the idempotency key of the bill.
from h2p.compat import const
from h2p.journal import JournalFull

SCHEMA = const(1)
_CLOCK_SET_AFTER = const(1600000000)  # an epoch before 2020-09 means "not set"

# stop reasons used by the firmware (the ledger accepts these)
REASONS = (
    "ev_stop",  # EV ended the charge (pilot C -> B)
    "unplug",
    "user",  # stop from the app / button
    "auth",  # authorisation ended or limit reached
    "fault",
    "estop",
    "power_loss",  # closed at boot from the last checkpoint
    "reboot",  # closed at boot after a software / watchdog reset
    "shutdown",
    "energy_cap",  # the session's energy cap (start's cap_kwh) reached on the billing meter
    "time_cap",  # the session's time cap (start's cap_min) reached
)


def reason_for(cause):
    # The supervisor's stop causes -> the billing taxonomy above. Any
    # interlock name not listed is a "fault"; the caller keeps the cause
    # itself as a flag. RAM: a chain of tests, not a dict.
    if cause in REASONS:
        return cause
    if cause == "ev_stopped":
        return "ev_stop"
    if cause == "ev_unplugged":
        return "unplug"
    if cause == "operator":
        return "user"
    if cause == "estop_chain":
        return "estop"
    return "fault"


class SessionRecorder:
    """
    journal: an opened h2p.journal.Journal.
    wall: callable -> epoch seconds, or None while the clock is not set.
    now arguments: monotonic seconds since boot (uptime).
    max_power_w: the charger's rating; meter jumps larger than it allows
      over the elapsed time are rejected as bad readings.
    on_close: callable(record) called with every closed record (billing).

    s: the running session (a dict, None between sessions): "id", "start",
      "token", "soc0", "soc1", "m0"/"m" (meter at start / last counted
      reading, Wh; m0 None = no reading yet), "pm" (last premix counter),
      "e" (Wh counted), "ep" (Wh from power), "p" (premix L), "pk" (peak W),
      "t" (time of the last step), "tm" (of the last counted meter
      reading), "dur" (s), "flags", "cap" (the start command's
      (cap_kwh, cap_min), or None: the record shows them).
    active: the running session's id, or None.
    """

    def __init__(self, journal, pile_id, wall=None, max_power_w=80000, on_close=None):
        self.j = journal
        self.pile = pile_id
        self.wall = wall
        self.max_power_w = max_power_w
        self.on_close = on_close
        self.boot_no = None
        self.seq = 0
        self.s = None
        self.active = None
        self.last_error = None

    # ------------------------------------------------------------- boot
    def boot(self):
        """Increment and store the boot counter. Call once per boot, after
        journal.open() and recover(). Returns the boot counter."""
        n = self.j.get_meta("boot", 0) + 1
        self.j.set_meta("boot", n)  # may raise JournalFull: ids need it
        self.boot_no = n
        self.seq = 0
        return n

    def recover(self, now, meter_wh=None, premix_l=None, reason="power_loss"):
        """Close every session left open by the previous boot with the
        energy of its last checkpoint, plus the meter advance since that
        checkpoint when the meter is readable now and the advance is
        plausible. Returns the closed records."""
        # RAM: boot-only code, in h2p.journal_maint, dropped after.
        return self.j._maint("recover", self, now, meter_wh, premix_l, reason)

    # ---------------------------------------------------------- helpers
    def stamp(self, now):
        w = self.wall() if self.wall is not None else None
        if w is not None and w >= _CLOCK_SET_AFTER:
            return int(w)
        return "boot:%d+%d" % (self.boot_no or 0, int(now))

    def _count(self, st, now, meter_wh, premix_l):
        # Energy from the billing meter, premix from the pump counter: both
        # only as increments. True when this reading is the session's first
        # (its baseline): the caller journals it at once.
        flag = None
        base = False
        m = st["m"]
        if meter_wh is None:
            flag = "meter_gap"  # the next reading covers the gap
        elif m is None:
            st["m"] = meter_wh  # the first reading: the baseline
            st["tm"] = now
            base = True
            if st["m0"] is None:
                st["m0"] = meter_wh
        elif meter_wh < m:
            # meter replaced or its counter reset: never subtract, restart
            # the baseline at the new reading
            flag = "meter_backwards"
            st["m"] = meter_wh
            st["tm"] = now
        elif meter_wh - m > self.max_power_w * (now - st["tm"] + 2) / 3600 + 1:
            flag = "meter_jump"  # implausible reading: skip it
        else:
            st["e"] += meter_wh - m
            st["m"] = meter_wh
            st["tm"] = now
        fl = st["flags"]
        if flag is not None and flag not in fl:
            fl.append(flag)
        if premix_l is not None:
            pm = st["pm"]
            if pm is not None and premix_l >= pm:
                st["p"] += premix_l - pm
            elif pm is not None and "premix_backwards" not in fl:
                fl.append("premix_backwards")
            st["pm"] = premix_l
        return base

    def _record(self, st, stop_stamp, reason):
        e = st["e"]
        flags = st["flags"]
        if st["m0"] is None and st["ep"] > 0:
            e = st["ep"]  # no meter reading at all: integrated power
            if "energy_from_power" not in flags:
                flags.append("energy_from_power")
        r = {
            "v": SCHEMA,
            "id": st["id"],
            "idem": st["id"],
            "pile": self.pile,
            "start": st["start"],
            "stop": stop_stamp,
            "dur_s": int(st["dur"]),
            "energy_wh": round(e, 1),
            "premix_l": round(st["p"], 3),
            "peak_w": int(st["pk"]),
            "reason": reason,
            "token": st["token"],
            "soc0": st["soc0"],
            "soc1": st["soc1"],
            "meter0": st["m0"],
            "meter1": st["m"],
            "flags": flags,
        }
        cap = st["cap"]
        if cap:  # only then: RAM and flash, every bill would carry two nulls
            r["cap_kwh"] = cap[0]
            r["cap_min"] = cap[1]
        return r

    # --------------------------------------------------------- session
    def start(self, now, token, meter_wh=None, premix_l=None, ev_soc=None, cap=None):
        """Open a session; returns its id, or None if the journal cannot
        take it (full of unacknowledged data: last_error says so; do not
        charge then, or charge unbilled by policy). cap: (cap_kwh, cap_min)
        of the start command (either may be None), or None."""
        if self.s is not None or self.boot_no is None:
            raise ValueError("a session is running or boot() was not called")
        seq = self.seq + 1
        sid = "%s-%05d-%03d" % (self.pile, self.boot_no, seq)  # the id format (module comment)
        ts = self.stamp(now)
        try:
            self.j.open_session({"id": sid, "boot": self.boot_no, "seq": seq, "start": ts, "t0": now,
                                 "token": token, "soc0": ev_soc, "meter0": meter_wh, "premix0": premix_l,
                                 "cap": cap}, now)
        except JournalFull as e:
            self.last_error = str(e)
            return None
        self.seq = seq
        # RAM: a dict literal's table is sized to its keys: every key the
        # session uses is here, so none is added (which would grow it).
        self.s = {"id": sid, "start": ts, "token": token, "soc0": ev_soc, "soc1": ev_soc, "m0": meter_wh,
                  "m": meter_wh, "pm": premix_l, "e": 0.0, "ep": 0.0, "p": 0.0, "pk": 0, "t": now, "tm": now,
                  "dur": 0, "flags": [], "cap": cap}
        self.active = sid
        return sid

    def step(self, now, meter_wh=None, premix_l=None, power_w=None, ev_soc=None):
        """Feed one set of readings (any may be None = not available).
        Returns True when a checkpoint was written to flash."""
        st = self.s
        if st is None:
            return False
        dt = now - st["t"]
        if dt < 0:
            dt = 0
        if power_w is not None:
            if power_w > st["pk"]:
                st["pk"] = power_w
            if power_w > 0:
                st["ep"] += power_w * dt / 3600
        st["t"] = now
        st["dur"] += dt
        # A baseline taken after the session opened (the start meter value
        # comes on the next slow read) is journaled at once, not at the next
        # interval: a reset before that would leave recovery no meter value
        # to count from, and bill the energy so far as 0 Wh.
        base = self._count(st, now, meter_wh, premix_l)
        if ev_soc is not None:
            if st["soc0"] is None:
                st["soc0"] = ev_soc
            st["soc1"] = ev_soc
        sid = st["id"]
        # RAM: the checkpoint body is built only when one is due
        if not (base or self.j.due(sid, now)):
            return False
        return self.j.checkpoint({
            "id": sid,
            "ts": self.stamp(now),
            "dur": int(st["dur"]),
            "e": round(st["e"], 2),
            "ep": round(st["ep"], 2),
            "p": round(st["p"], 4),
            "pk": int(st["pk"]),
            "m": st["m"],
            "m0": st["m0"],
            "pm": st["pm"],
            "soc1": st["soc1"],
            "seen": st["m0"] is not None,
            "fl": st["flags"],
        }, now, True)

    def stop(self, now, reason, meter_wh=None, premix_l=None, ev_soc=None, power_w=None):
        """Close the running session with final readings. Returns the
        closed record (already journaled) or None if none was running."""
        st = self.s
        if st is None:
            return None
        dt = now - st["t"]
        if dt > 0:
            st["dur"] += dt
            if power_w is not None and power_w > 0:
                st["ep"] += power_w * dt / 3600
        st["t"] = now
        self._count(st, now, meter_wh, premix_l)
        if ev_soc is not None:
            st["soc1"] = ev_soc
        rec = self._record(st, self.stamp(now), reason)
        self.j.close_session(rec)  # room for it was reserved at start
        self.s = self.active = None
        if self.on_close is not None:
            self.on_close(rec)
        return rec
