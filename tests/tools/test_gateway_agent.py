"""host_tools.gateway.agent and .store, host-only: a pile's messages become
the CSMS's transaction events in order; the energy of a transaction is its
bill's; redeliveries and re-sent bills change nothing; the register carries
over from one session to the next; what is queued survives a restart; the
queue is bounded and drops meter values, never a start or an end."""

from host_tools.gateway.agent import Agent
from host_tools.gateway.store import Store

P = "P1"


class Pile:
    """A pile's messages with their stamps."""

    def __init__(self, agent, boot=3):
        self.a = agent
        self.boot = boot
        self.seq = 0

    def send(self, name, **d):
        self.seq += 1
        msg = dict(d, seq=self.seq, boot=self.boot)
        self.a.on_message(name, msg)
        return msg


def bill(n, energy, boot=3, token="sponsor:acme:1", reason="user"):
    return {"v": 1, "id": "%s-%05d-%03d" % (P, boot, n), "pile": P, "energy_wh": energy, "reason": reason,
            "token": token, "start": 1_780_000_000, "stop": 1_780_000_600, "soc1": 80.0}


def drain(store):
    out = []
    while True:
        nxt = store.peek(P)
        if nxt is None:
            return out
        store.done(P, nxt[0])
        out.append(nxt[1])


def test_a_session_becomes_started_updated_ended_with_the_bills_energy(tmp_path):
    s = Store(str(tmp_path / "q.db"))
    a = Agent(P, s, meter_interval_s=0)
    p = Pile(a)
    p.send("status", online=True)
    p.send("meta", fw="1.0", reset="power_on")
    assert a.status() == "available" and a.seen.is_set()
    a.remote_start("sponsor:acme:1", 9)
    p.send("evt", kind="session_start", a=1, b="sponsor:acme:1")
    p.send("state", state="charging", faults=[], limit_a=32.0)
    assert a.status() == "occupied"
    p.send("tele", p_kw=22.0, i_out=55.0, e_kwh=1.234, ev_soc=40.0)
    p.send("tele", p_kw=21.0, i_out=54.0, e_kwh=2.5, ev_soc=45.0)
    p.send("evt", kind="session_stop", a=1, b="operator")
    a.on_message("bill", bill(1, 2503.4))
    ev = drain(s)
    assert [e["t"] for e in ev] == ["started", "updated", "updated", "ended"]
    assert [e["seq"] for e in ev] == [0, 1, 2, 3] and len({e["tx"] for e in ev}) == 1
    assert ev[0]["rsid"] == 9 and ev[0]["token"] == "sponsor:acme:1" and ev[0]["reg"] == 0
    assert ev[1]["reg"] == 1234.0 and ev[1]["w"] == 22000.0 and ev[1]["a"] == 55.0 and ev[1]["soc"] == 40.0
    assert ev[-1]["reg"] - ev[0]["reg"] == 2503.4 and ev[-1]["energy_wh"] == 2503.4
    assert ev[-1]["reason"] == "user" and ev[-1]["bill"] == "P1-00003-001"
    assert [e["ts"] for e in ev] == sorted(e["ts"] for e in ev)
    # The next session starts at the register the last one ended at.
    p.send("evt", kind="session_start", a=2, b="")
    a.on_message("bill", bill(2, 100.0))
    ev2 = drain(s)
    assert ev2[0]["reg"] == 2503.4 and ev2[0]["token"] is None and ev2[0]["rsid"] is None
    assert ev2[-1]["reg"] == 2603.4


def test_redeliveries_and_resent_bills_change_nothing(tmp_path):
    s = Store(str(tmp_path / "q.db"))
    a = Agent(P, s, meter_interval_s=0)
    p = Pile(a)
    start = p.send("evt", kind="session_start", a=1, b="tok")
    a.on_message("evt", dict(start))  # the broker delivers it again
    b = bill(1, 500.0)
    a.on_message("bill", b)
    a.on_message("bill", dict(b))  # the pile re-sends until the ledger acks
    assert [e["t"] for e in drain(s)] == ["started", "ended"]
    # A bill for a session the gateway never saw start is not sent.
    a.on_message("bill", bill(7, 50.0, boot=2))
    assert drain(s) == []


def test_meter_values_at_most_every_interval(tmp_path):
    s = Store(str(tmp_path / "q.db"))
    a = Agent(P, s, meter_interval_s=3600)
    p = Pile(a)
    p.send("evt", kind="session_start", a=1, b="")
    for i in range(5):
        p.send("tele", e_kwh=i / 10)
    assert [e["t"] for e in drain(s)] == ["started"]
    a.meter_now()  # TriggerMessage: now, whatever the interval
    (e,) = drain(s)
    assert e["t"] == "updated" and e["trigger"] and e["reg"] == 400.0


def test_the_queue_and_the_state_survive_a_restart(tmp_path):
    path = str(tmp_path / "q.db")
    s = Store(path)
    a = Agent(P, s, meter_interval_s=0)
    p = Pile(a)
    p.send("evt", kind="session_start", a=4, b="tok")
    p.send("tele", e_kwh=1.0)
    s.close()
    s2 = Store(path)  # the gateway, restarted
    a2 = Agent(P, s2, meter_interval_s=0)
    assert s2.queued(P) == 2 and a2.active_tx()["id"] == "3-4"
    a2.on_message("evt", {"kind": "session_start", "a": 4, "b": "tok", "seq": 1, "boot": 3})  # redelivered
    a2.on_message("bill", bill(4, 1500.0))
    ev = drain(s2)
    assert [e["t"] for e in ev] == ["started", "updated", "ended"] and [e["seq"] for e in ev] == [0, 1, 2]


def test_the_queue_is_bounded_and_keeps_starts_and_ends(tmp_path):
    s = Store(str(tmp_path / "q.db"), max_per_pile=10)
    a = Agent(P, s, meter_interval_s=0)
    p = Pile(a)
    p.send("evt", kind="session_start", a=1, b="")
    for i in range(30):
        p.send("tele", e_kwh=i / 10)
    a.on_message("bill", bill(1, 3000.0))
    ev = drain(s)
    assert len(ev) == 10 and s.dropped == 22
    assert ev[0]["t"] == "started" and ev[-1]["t"] == "ended"
    assert [e["seq"] for e in ev[1:-1]] == list(range(23, 31))  # the newest meter values


def test_status_follows_the_pile(tmp_path):
    a = Agent(P, Store(str(tmp_path / "q.db")))
    assert a.status() == "unavailable"  # never heard of
    for online, state, want in ((True, "off", "available"), (True, "fault", "faulted"),
                                (True, "stopping", "finishing"), (False, "charging", "unavailable")):
        a.on_message("status", {"online": online})
        a.on_message("state", {"state": state})
        assert a.status() == want, (online, state)
    a.on_message("status", {"online": True})
    a.on_message("state", {"state": "ready"})
    a.set_inoperative(True)
    assert a.status() == "unavailable"
