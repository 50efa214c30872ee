"""One pile as the gateway sees it on MQTT, in OCPP terms but no OCPP
version's: its connector status, its transactions, and the events it has
queued for the CSMS (host_tools.gateway.store). The OCPP adapters render
these events as TransactionEvent (2.0.1) or Start/StopTransaction and
MeterValues (1.6).

A transaction is the pile's session:
  started  on evt session_start (the session number in this boot, and the
           auth token: a CSMS remote start's idToken comes back here)
  updated  on tele while it runs, at most every meter_interval_s
  ended    on the session's bill: its energy_wh is what the CSMS sees, so
           the CSMS's figure equals the bill (and the ledger's) to 1 Wh.

Energy register: the pile publishes the session's energy, not its meter's
register, so the gateway keeps one per pile: the sum of its billed sessions
(Wh, persisted). A transaction starts at the register and ends at the
register plus its bill; the difference the CSMS works out is the bill.

Redelivery-safe: evt carries (boot, seq) and bills an id; ones already
handled are skipped (a gateway killed between storing a message and its
PUBACK gets it again from the broker).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from host_tools.gateway.store import Store

log = logging.getLogger("gateway")

BILLS_KEPT = 64  # bill ids remembered per pile, for redeliveries and re-sends


def iso(epoch: float | None = None) -> str:
    t = datetime.datetime.fromtimestamp(time.time() if epoch is None else epoch, datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def bill_key(bill_id: object, pile: str) -> tuple[int, int] | None:
    """'<pile>-<boot>-<seq>' -> (boot, seq)."""
    if not isinstance(bill_id, str) or not bill_id.startswith(pile + "-"):
        return None
    try:
        boot, seq = bill_id[len(pile) + 1:].split("-")
        return int(boot), int(seq)
    except ValueError:
        return None


class Agent:
    def __init__(self, pile: str, store: Store, meter_interval_s: float = 60.0) -> None:
        self.pile = pile
        self.store = store
        self.default_meter_interval_s = meter_interval_s
        st: dict[str, Any] = {"txs": [], "reg_wh": 0.0, "evt": [0, 0], "bills": [], "inoperative": False,
                              "settings": {}, "pending": None, "csms_tx": {}}
        st.update(store.state(pile) or {})
        self.st = st
        self.online: bool | None = None  # None: never heard of
        self.meta: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.tele: dict[str, Any] | None = None
        self.reboots = 0  # pile boots seen while we ran: the link sends BootNotification again
        self.wake = asyncio.Event()  # the link has something to send
        self.seen = asyncio.Event()  # meta known: the link may connect
        self.last_meter = 0.0
        self.t_status = 0.0  # monotonic time of the last status change (bench latency)

    # ---- settings ----------------------------------------------------------
    def setting(self, name: str, default: Any) -> Any:
        return self.st["settings"].get(name, default)

    def set_setting(self, name: str, value: Any) -> None:
        self.st["settings"][name] = value
        self.store.commit(self.pile, self.st, [])

    @property
    def meter_interval_s(self) -> float:
        return float(self.setting("meter_interval_s", self.default_meter_interval_s))

    # ---- status --------------------------------------------------------------
    def status(self) -> str:
        """available, occupied (charging), finishing (stopping), faulted or
        unavailable (offline, never heard of, or set inoperative)."""
        if not self.online:
            return "unavailable"
        s = (self.state or {}).get("state")
        if s in ("fault", "estop", "maintenance"):
            return "faulted"
        if s == "charging":
            return "occupied"
        if s == "stopping":
            return "finishing"
        if self.st["inoperative"]:
            return "unavailable"
        return "available"

    def active_tx(self) -> dict[str, Any] | None:
        for tx in self.st["txs"]:
            if tx["stopped"] is None:
                return tx
        return None

    def find_tx(self, tx_id: str) -> dict[str, Any] | None:
        for tx in self.st["txs"]:
            if tx["id"] == tx_id:
                return tx
        return None

    # ---- from the pile ---------------------------------------------------------
    def on_message(self, name: str, d: dict[str, Any]) -> None:
        """One decoded pile message (topic name, JSON object)."""
        if name == "status":
            online = d.get("online") is True
            if online != self.online:
                self.online = online
                self._changed()
        elif name == "meta":
            if self.meta is not None and d.get("boot") != self.meta.get("boot"):
                self.reboots += 1
            self.meta = d
            if self.online is None:
                self.online = True  # meta is only sent online; status may follow
            self.seen.set()
            self._changed()
        elif name == "state":
            old = (self.state or {}).get("state")
            self.state = d
            if d.get("state") != old:
                self._changed()
        elif name == "tele":
            self.tele = d
            self._tele(d)
        elif name == "evt":
            self._evt(d)
        elif name == "bill":
            self._bill(d)

    def _changed(self) -> None:
        self.t_status = time.monotonic()
        self.wake.set()

    def _commit(self, items: list[dict[str, Any]]) -> None:
        self.store.commit(self.pile, self.st, items)
        if items:
            self.wake.set()

    def _tele(self, d: dict[str, Any]) -> None:
        tx = self.active_tx()
        if tx is None:
            return
        e = _num(d.get("e_kwh"))
        if e is not None:
            tx["e"] = e * 1000
        now = time.monotonic()
        if now - self.last_meter < self.meter_interval_s:
            return
        self.last_meter = now
        item = self._item("updated", tx)
        item.update(self._meter(tx, d))
        self._commit([item])

    def _meter(self, tx: dict[str, Any], d: dict[str, Any] | None) -> dict[str, Any]:
        """Meter values from a tele message: register (Wh), power (W),
        current (A), EV SOC (%); those the pile did not send are left out."""
        out: dict[str, Any] = {"reg": round(tx["reg0"] + tx.get("e", 0.0), 1)}
        d = d or {}
        for key, src, scale in (("w", "p_kw", 1000), ("a", "i_out", 1), ("soc", "ev_soc", 1)):
            v = _num(d.get(src))
            if v is not None:
                out[key] = round(v * scale, 1)
        return out

    def _item(self, kind: str, tx: dict[str, Any], epoch: float | None = None) -> dict[str, Any]:
        # Timestamps never go back within a transaction (a bill's stop time
        # is whole seconds, earlier than the meter value sent just before).
        t = max(time.time() if epoch is None else epoch, tx.get("t_last", 0.0))
        tx["t_last"] = t
        item = {"t": kind, "tx": tx["id"], "ts": iso(t), "seq": tx["seq"]}
        tx["seq"] += 1
        return item

    def _evt(self, d: dict[str, Any]) -> None:
        stamp = [d.get("boot"), d.get("seq")]
        if not all(isinstance(x, int) for x in stamp):
            log.warning("%s: evt without boot/seq stamp dropped: %r", self.pile, d)
            return
        if stamp <= self.st["evt"]:
            return  # a redelivery of one already handled
        self.st["evt"] = stamp
        kind = d.get("kind")
        items: list[dict[str, Any]] = []
        if kind == "session_start":
            items = self._start(stamp[0], d.get("a"), d.get("b"))
        elif kind == "session_stop":
            tx = self.active_tx()
            if tx is not None:
                tx["stopped"] = str(d.get("b") or "stopped")
                self.wake.set()
        self._commit(items)

    def _start(self, boot: int, n: object, auth: object) -> list[dict[str, Any]]:
        old = self.active_tx()
        if old is not None:  # its session_stop was lost: the pile runs one session at a time
            old["stopped"] = "superseded"
        token = auth if isinstance(auth, str) and auth else None
        # The register after every session before this one, billed or not yet.
        reg0 = self.st["reg_wh"]
        for t in self.st["txs"]:
            reg0 = max(reg0, t["reg0"] + t.get("e", 0.0))
        tx: dict[str, Any] = {"id": "%d-%s" % (boot, n), "boot": boot, "n": n if isinstance(n, int) else 0,
                              "token": token, "rsid": None, "reg0": round(reg0, 1), "e": 0.0, "seq": 0,
                              "stopped": None}
        p = self.st["pending"]
        if p is not None and p.get("token") == (token or ""):
            tx["rsid"] = p.get("rsid")
        self.st["pending"] = None
        self.st["txs"].append(tx)
        self.last_meter = time.monotonic()
        item = self._item("started", tx)
        item.update({"token": token, "rsid": tx["rsid"], "reg": tx["reg0"]})
        log.info("%s: transaction %s started (token %s)", self.pile, tx["id"], token)
        return [item]

    def _bill(self, d: dict[str, Any]) -> None:
        bid = d.get("id")
        key = bill_key(bid, self.pile)
        energy = _num(d.get("energy_wh"))
        if key is None or energy is None:
            log.warning("%s: bill without a valid id or energy_wh dropped: %r", self.pile, bid)
            return
        if bid in self.st["bills"]:
            return  # a re-send, or a redelivery
        self.st["bills"] = (self.st["bills"] + [bid])[-BILLS_KEPT:]
        tx = self._tx_for(key)
        if tx is None:
            log.info("%s: bill %s is for no transaction the gateway saw start: not sent to the CSMS", self.pile,
                     bid)
            self._commit([])
            return
        self.st["txs"].remove(tx)
        stop = d.get("stop")
        item = self._item("ended", tx, stop if isinstance(stop, int) and stop > 1_600_000_000 else None)
        tx["e"] = energy
        item.update(self._meter(tx, None))
        item["reg"] = round(tx["reg0"] + energy, 1)
        item.update({"reason": d.get("reason"), "token": tx["token"], "energy_wh": energy, "bill": bid,
                     "soc": _num(d.get("soc1"))})
        if item["soc"] is None:
            del item["soc"]
        self.st["reg_wh"] = max(self.st["reg_wh"], item["reg"])
        log.info("%s: transaction %s ended by bill %s: %.1f Wh, %s", self.pile, tx["id"], bid, energy,
                 d.get("reason"))
        self._commit([item])

    def _tx_for(self, key: tuple[int, int]) -> dict[str, Any] | None:
        """The transaction a bill (boot, seq) closes: the one of that boot and
        session number; else the oldest stopped one of that boot whose number
        is not below the bill's (the session numbers drift from the bill's
        when the pile refused a session it could not bill)."""
        boot, seq = key
        for tx in self.st["txs"]:
            if tx["boot"] == boot and tx["n"] == seq:
                return tx
        for tx in self.st["txs"]:
            if tx["boot"] == boot and tx["stopped"] is not None and tx["n"] >= seq:
                return tx
        return None

    # ---- from the CSMS ----------------------------------------------------------
    def remote_start(self, token: str | None, rsid: int | None) -> None:
        """A remote start sent to the pile: its next session with this token
        is this one (token None: the pile refused it, forget it)."""
        self.st["pending"] = None if token is None else {"token": token, "rsid": rsid}
        self.store.commit(self.pile, self.st, [])

    def meter_now(self) -> None:
        """Meter values of the running transaction now (TriggerMessage)."""
        tx = self.active_tx()
        if tx is not None:
            item = self._item("updated", tx)
            item.update(self._meter(tx, self.tele))
            item["trigger"] = True
            self._commit([item])

    def set_inoperative(self, value: bool) -> None:
        self.st["inoperative"] = value
        self.store.commit(self.pile, self.st, [])
        self._changed()
