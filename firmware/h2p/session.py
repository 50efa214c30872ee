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
)


# The supervisor's stop causes -> the billing taxonomy above. Any interlock
# name not listed is a "fault"; the cause itself is kept as a flag.
_CAUSE = {
    "ev_stopped": "ev_stop",
    "ev_unplugged": "unplug",
    "operator": "user",
    "shutdown": "shutdown",
    "estop": "estop",
    "estop_chain": "estop",
}


def reason_for(cause):
    if cause in REASONS:
        return cause
    return _CAUSE.get(cause, "fault")


def make_id(pile_id, boot, seq):
    return "%s-%05d-%03d" % (pile_id, boot, seq)


class SessionRecorder:
    """
    journal: an opened h2p.journal.Journal.
    wall: callable -> epoch seconds, or None while the clock is not set.
    now arguments: monotonic seconds since boot (uptime).
    max_power_w: the charger's rating; meter jumps larger than it allows
      over the elapsed time are rejected as bad readings.
    on_close: callable(record) called with every closed record (billing).
    """

    def __init__(self, journal, pile_id, wall=None, max_power_w=80000, on_close=None):
        self.j = journal
        self.pile = pile_id
        self.wall = wall
        self.max_power_w = max_power_w
        self.on_close = on_close
        self.boot_no = None
        self.seq = 0
        self.s = None  # state of the running session (dict) or None
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
        out = []
        limit_s = self.j.checkpoint_interval_s + 10
        for op, ck in self.j.open_sessions():
            st = self._state_from(op, ck)
            st["flags"].append("recovered")
            m = st["m"]
            if meter_wh is not None and m is not None:
                d = meter_wh - m
                if 0 <= d <= self.max_power_w * limit_s / 3600.0 + 1:
                    st["e"] += d
                    st["m"] = meter_wh
                    st["flags"].append("meter_at_boot")
                else:
                    st["flags"].append("meter_mismatch_at_boot")
            pm = st["pm"]
            if premix_l is not None and pm is not None:
                d = premix_l - pm
                if 0 <= d <= 1.0:
                    st["p"] += d
            rec = self._record(st, st["ts"], reason)
            self.j.close_session(rec)
            out.append(rec)
            if self.on_close is not None:
                self.on_close(rec)
        return out

    def _state_from(self, op, ck):
        st = {
            "id": op["id"],
            "boot": op.get("boot"),
            "seq": op.get("seq"),
            "start": op.get("start"),
            "token": op.get("token"),
            "soc0": op.get("soc0"),
            "soc1": op.get("soc0"),
            "m0": op.get("meter0"),
            "m": op.get("meter0"),
            "p0": op.get("premix0"),
            "pm": op.get("premix0"),
            "e": 0.0,
            "ep": 0.0,
            "p": 0.0,
            "pk": 0,
            "ts": op.get("start"),
            "t": op.get("t0", 0),
            "dur": 0,
            "flags": [],
            "seen": op.get("meter0") is not None,
        }
        if ck is not None:
            st["e"] = ck.get("e", 0.0)
            st["ep"] = ck.get("ep", 0.0)
            st["p"] = ck.get("p", 0.0)
            st["pk"] = ck.get("pk", 0)
            st["m"] = ck.get("m")
            if ck.get("m0") is not None:
                st["m0"] = ck.get("m0")
            st["pm"] = ck.get("pm")
            st["soc1"] = ck.get("soc1")
            st["ts"] = ck.get("ts")
            st["dur"] = ck.get("dur", 0)
            st["flags"] = list(ck.get("fl", []))
            st["seen"] = ck.get("seen", st["seen"])
        return st

    # ---------------------------------------------------------- helpers
    def stamp(self, now):
        w = self.wall() if self.wall is not None else None
        if w is not None and w >= _CLOCK_SET_AFTER:
            return int(w)
        return "boot:%d+%d" % (self.boot_no or 0, int(now))

    @property
    def active(self):
        return self.s["id"] if self.s is not None else None

    def _flag(self, st, f):
        if f not in st["flags"]:
            st["flags"].append(f)

    def _meter(self, st, now, meter_wh):
        if meter_wh is None:
            self._flag(st, "meter_gap")
            return
        m = st["m"]
        if m is None:
            st["m"] = meter_wh
            st["tm"] = now
            if not st["seen"]:
                st["seen"] = True
                st["m0"] = meter_wh
            return
        d = meter_wh - m
        dt = now - st.get("tm", st["t"])
        if d < 0:
            # meter replaced or its counter reset: never subtract, restart
            # the baseline at the new reading
            self._flag(st, "meter_backwards")
            st["m"] = meter_wh
            st["tm"] = now
            return
        if d > self.max_power_w * (dt + 2) / 3600.0 + 1:
            self._flag(st, "meter_jump")  # implausible reading: skip it
            return
        st["e"] += d
        st["m"] = meter_wh
        st["tm"] = now

    def _premix(self, st, premix_l):
        if premix_l is None:
            return
        pm = st["pm"]
        if pm is None or premix_l < pm:
            if pm is not None:
                self._flag(st, "premix_backwards")
            st["pm"] = premix_l
            return
        st["p"] += premix_l - pm
        st["pm"] = premix_l

    def _record(self, st, stop_stamp, reason):
        e = st["e"]
        flags = st["flags"]
        if not st["seen"] and st["ep"] > 0:
            e = st["ep"]  # no meter reading at all: integrated power
            if "energy_from_power" not in flags:
                flags.append("energy_from_power")
        return {
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

    # --------------------------------------------------------- session
    def start(self, now, token, meter_wh=None, premix_l=None, ev_soc=None):
        """Open a session; returns its id, or None if the journal cannot
        take it (full of unacknowledged data: last_error says so; do not
        charge then, or charge unbilled by policy)."""
        if self.s is not None:
            raise ValueError("session %s already running" % self.s["id"])
        if self.boot_no is None:
            raise ValueError("SessionRecorder.boot() not called")
        seq = self.seq + 1
        sid = make_id(self.pile, self.boot_no, seq)
        ts = self.stamp(now)
        op = {
            "id": sid,
            "boot": self.boot_no,
            "seq": seq,
            "start": ts,
            "t0": now,
            "token": token,
            "soc0": ev_soc,
            "meter0": meter_wh,
            "premix0": premix_l,
        }
        try:
            self.j.open_session(op, now)
        except JournalFull as e:
            self.last_error = str(e)
            return None
        self.seq = seq
        st = self._state_from(op, None)
        st["tm"] = now
        self.s = st
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
                st["ep"] += power_w * dt / 3600.0
        st["t"] = now
        st["dur"] += dt
        self._meter(st, now, meter_wh)
        self._premix(st, premix_l)
        if ev_soc is not None:
            if st["soc0"] is None:
                st["soc0"] = ev_soc
            st["soc1"] = ev_soc
        st["ts"] = self.stamp(now)
        return self.j.checkpoint(self._ckpt(st), now)

    def _ckpt(self, st):
        return {
            "id": st["id"],
            "ts": st["ts"],
            "dur": int(st["dur"]),
            "e": round(st["e"], 2),
            "ep": round(st["ep"], 2),
            "p": round(st["p"], 4),
            "pk": int(st["pk"]),
            "m": st["m"],
            "m0": st["m0"],
            "pm": st["pm"],
            "soc1": st["soc1"],
            "seen": st["seen"],
            "fl": st["flags"],
        }

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
                st["ep"] += power_w * dt / 3600.0
        st["t"] = now
        self._meter(st, now, meter_wh)
        self._premix(st, premix_l)
        if ev_soc is not None:
            st["soc1"] = ev_soc
        rec = self._record(st, self.stamp(now), reason)
        self.j.close_session(rec)  # room for it was reserved at start
        self.s = None
        if self.on_close is not None:
            self.on_close(rec)
        return rec
