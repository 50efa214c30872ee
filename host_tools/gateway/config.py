"""The gateway's configuration: one TOML file, checked whole at start.

    [mqtt]
    broker = "127.0.0.1:1883"        # HOST:PORT
    user = "gateway"                 # a `gateway` account (h2pile broker-config --gateway)
    password_file = "/etc/h2pile/gateway-mqtt.pw"
    tls_ca = "/etc/h2pile/broker-ca.pem"      # optional: TLS to the broker
    client_id = "h2pile-gateway"     # fixed: the broker keeps the session while we are down

    [csms]
    url = "wss://csms.example.com/ocpp"       # each pile connects to <url>/<pile id>
    ocpp = "2.0.1"                   # or "1.6"
    security_profile = 2             # 1: ws:// + basic auth; 2: wss:// (TLS) + basic auth
    password_file = "/etc/h2pile/csms.pw"     # lines "<pile id> <password>" ("*" = every pile)
    ca_file = "/etc/h2pile/csms-ca.pem"       # profile 2: the CSMS's CA (default: the system's)
    heartbeat_s = 0                  # 0: the interval the CSMS gives in BootNotification
    meter_interval_s = 60            # meter values during a transaction at most this often
    backoff_max_s = 60               # reconnect back-off ceiling (doubles from 1 s)

    [keys]
    fleet_secret_file = "/etc/h2pile/fleet.secret"   # command keys as `h2pile keys` derives them

    [queue]
    path = "/var/lib/h2pile/gateway.db"
    max_per_pile = 10000             # queued events per pile (meter values go first when full)

    piles = ["P1", "P2"]             # top level, before any [table]

Every error names the file, the key and what was wrong (GatewayConfigError).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from h2p import topics

OCPP_VERSIONS = ("2.0.1", "1.6")
# OCPP identifierString (2.0.1 part 2, and the 1.6 security whitepaper), at
# most 48 characters; no ':' since the id is the basic-auth user name.
_CP_ID = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")
PASSWORD_LEN = (16, 40)  # OCPP's BasicAuthPassword / AuthorizationKey


class GatewayConfigError(ValueError):
    """A bad configuration: the message says which file, key and why."""


@dataclass(frozen=True)
class Config:
    path: str
    piles: tuple[str, ...]
    broker_host: str
    broker_port: int
    csms_url: str
    ocpp: str
    security_profile: int
    csms_passwords: dict[str, str]  # pile id -> basic-auth password
    fleet_secret: str
    queue_path: str
    mqtt_user: str | None = None
    mqtt_password: str | None = None
    mqtt_tls_ca: str | None = None
    client_id: str = "h2pile-gateway"
    csms_ca: str | None = None
    heartbeat_s: int = 0
    meter_interval_s: float = 60.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    max_per_pile: int = 10000
    cmd_timeout_s: float = 10.0
    call_timeout_s: float = 30.0
    vendor: str = "h2pile"
    model: str = "h2pile"

    def url_for(self, pile: str) -> str:
        return self.csms_url.rstrip("/") + "/" + pile


def charge_point_id_error(pile: object) -> str | None:
    """Why `pile` cannot be both an h2pile pile id and an OCPP charge point
    id, or None if it can."""
    if not isinstance(pile, str):
        return "not a string"
    if not _CP_ID.match(pile):
        return ("not a valid charge point id (OCPP identifierString: 1-48 of letters, digits and "
                "*-_=+|@., no ':')")
    if not topics.valid_pile_id(pile):
        return "not a valid pile id (1-%d letters, digits, '_' or '-')" % topics.PILE_ID_MAX
    return None


def _read_secret(path: object, where: str, base: str) -> str:
    if not isinstance(path, str) or not path:
        raise GatewayConfigError("%s must be a file path" % where)
    p = os.path.join(base, path)
    try:
        with open(p) as f:
            text = f.read().strip()
    except OSError as e:
        raise GatewayConfigError("%s: cannot read %s: %s" % (where, p, e.strerror or e))
    if not text:
        raise GatewayConfigError("%s: %s is empty" % (where, p))
    return text


def _passwords(text: str, where: str, piles: tuple[str, ...]) -> dict[str, str]:
    """'<pile> <password>' lines ('*' for every pile) -> pile -> password."""
    table: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise GatewayConfigError("%s line %d: expected '<pile id> <password>'" % (where, n))
        who, pw = parts
        if not PASSWORD_LEN[0] <= len(pw) <= PASSWORD_LEN[1]:
            raise GatewayConfigError("%s line %d: the password of %s must be %d-%d characters (OCPP basic "
                                     "auth), not %d" % (where, n, who, PASSWORD_LEN[0], PASSWORD_LEN[1], len(pw)))
        table[who] = pw
    out = {}
    for p in piles:
        pw = table.get(p, table.get("*"))
        if pw is None:
            raise GatewayConfigError("%s: no password for pile %s (and no '*' line)" % (where, p))
        out[p] = pw
    return out


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None,
         required: bool = False) -> Any:
    if key not in d:
        if required:
            raise GatewayConfigError("%s.%s is missing" % (where, key))
        return default
    v = d[key]
    if isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise GatewayConfigError("%s.%s must be %s, got %r" % (where, key, _kind(kind), v))
    if not isinstance(v, kind):
        raise GatewayConfigError("%s.%s must be %s, got %r" % (where, key, _kind(kind), v))
    return v


def _kind(kind: type | tuple[type, ...]) -> str:
    ks = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "list": "a list",
                        "dict": "a table"}.get(k.__name__, k.__name__) for k in ks)


_KNOWN = {"": {"piles", "mqtt", "csms", "keys", "queue"},
          "mqtt": {"broker", "user", "password_file", "tls_ca", "client_id"},
          "csms": {"url", "ocpp", "security_profile", "password_file", "ca_file", "heartbeat_s",
                   "meter_interval_s", "backoff_max_s", "backoff_min_s", "vendor", "model", "cmd_timeout_s",
                   "call_timeout_s"},
          "keys": {"fleet_secret_file"},
          "queue": {"path", "max_per_pile"}}


def parse(doc: dict[str, Any], path: str = "<config>") -> Config:
    """A parsed TOML document -> Config; GatewayConfigError naming the key."""
    base = os.path.dirname(os.path.abspath(path))
    w = path + ": "
    for sect, keys in _KNOWN.items():
        d = doc if not sect else doc.get(sect, {})
        if not isinstance(d, dict):
            raise GatewayConfigError(w + "[%s] must be a table" % sect)
        for k in d:
            if k not in keys:
                raise GatewayConfigError(w + "unknown key %s%s (known: %s)" % (sect + "." if sect else "", k,
                                                                              ", ".join(sorted(keys))))
    piles_raw = doc.get("piles")
    if not isinstance(piles_raw, list) or not piles_raw:
        raise GatewayConfigError(w + "piles must be a non-empty list of pile ids (top level, before any table)")
    seen: set[str] = set()
    for i, p in enumerate(piles_raw):
        why = charge_point_id_error(p)
        if why:
            raise GatewayConfigError(w + "piles[%d] %r: %s" % (i, p, why))
        if p in seen:
            raise GatewayConfigError(w + "piles[%d] %r is listed twice" % (i, p))
        seen.add(p)
    piles = tuple(piles_raw)

    m = doc.get("mqtt", {})
    from host_tools.cmd import parse_broker

    try:
        host, port = parse_broker(_get(m, "broker", str, w + "mqtt", "127.0.0.1:1883"))
    except ValueError as e:
        raise GatewayConfigError(w + "mqtt.broker: %s" % str(e).replace("--broker ", ""))
    mqtt_pw = _read_secret(m["password_file"], w + "mqtt.password_file", base) if "password_file" in m else None
    tls_ca = _get(m, "tls_ca", str, w + "mqtt")
    if tls_ca is not None:
        tls_ca = os.path.join(base, tls_ca)
        if not os.path.isfile(tls_ca):
            raise GatewayConfigError(w + "mqtt.tls_ca: no file %s" % tls_ca)

    c = doc.get("csms")
    if not isinstance(c, dict):
        raise GatewayConfigError(w + "[csms] is missing")
    url = _get(c, "url", str, w + "csms", required=True)
    version = _get(c, "ocpp", str, w + "csms", "2.0.1")
    if version == "1.6J":
        version = "1.6"
    if version not in OCPP_VERSIONS:
        raise GatewayConfigError(w + "csms.ocpp must be one of %s, got %r" % (", ".join(OCPP_VERSIONS), version))
    prof = _get(c, "security_profile", int, w + "csms", 1)
    if prof not in (1, 2):
        raise GatewayConfigError(w + "csms.security_profile must be 1 (basic auth) or 2 (TLS + basic auth), "
                                 "got %r" % prof)
    scheme = "ws://" if prof == 1 else "wss://"
    if not url.startswith(scheme):
        raise GatewayConfigError(w + "csms.url %r: security profile %d needs a %s URL" % (url, prof, scheme))
    pw_text = _read_secret(c.get("password_file"), w + "csms.password_file", base)
    passwords = _passwords(pw_text, w + "csms.password_file", piles)
    ca = _get(c, "ca_file", str, w + "csms")
    if ca is not None:
        if prof != 2:
            raise GatewayConfigError(w + "csms.ca_file is for security profile 2 (wss://)")
        ca = os.path.join(base, ca)
        if not os.path.isfile(ca):
            raise GatewayConfigError(w + "csms.ca_file: no file %s" % ca)
    nums = {}
    for key, lo, hi, default in (("heartbeat_s", 0, 86400, 0), ("meter_interval_s", 0, 86400, 60.0),
                                 ("backoff_min_s", 0.05, 3600, 1.0), ("backoff_max_s", 0.05, 86400, 60.0),
                                 ("cmd_timeout_s", 0.5, 300, 10.0), ("call_timeout_s", 1, 600, 30.0)):
        v = _get(c, key, (int, float), w + "csms", default)
        if not lo <= v <= hi:
            raise GatewayConfigError(w + "csms.%s=%r out of range %s..%s" % (key, v, lo, hi))
        nums[key] = v
    if nums["backoff_max_s"] < nums["backoff_min_s"]:
        raise GatewayConfigError(w + "csms.backoff_max_s is below csms.backoff_min_s")

    k = doc.get("keys")
    if not isinstance(k, dict) or "fleet_secret_file" not in k:
        raise GatewayConfigError(w + "keys.fleet_secret_file is missing (the gateway signs its commands with "
                                 "the piles' command keys)")
    secret = _read_secret(k["fleet_secret_file"], w + "keys.fleet_secret_file", base)

    q = doc.get("queue", {})
    qpath = os.path.join(base, _get(q, "path", str, w + "queue", "gateway.db"))
    if not os.path.isdir(os.path.dirname(qpath) or "."):
        raise GatewayConfigError(w + "queue.path: directory %s does not exist" % os.path.dirname(qpath))
    maxq = _get(q, "max_per_pile", int, w + "queue", 10000)
    if not 10 <= maxq <= 10_000_000:
        raise GatewayConfigError(w + "queue.max_per_pile=%r out of range 10..10000000" % maxq)

    return Config(path=path, piles=piles, broker_host=host, broker_port=port, csms_url=url, ocpp=version,
                  security_profile=prof, csms_passwords=passwords, fleet_secret=secret, queue_path=qpath,
                  mqtt_user=_get(m, "user", str, w + "mqtt"), mqtt_password=mqtt_pw, mqtt_tls_ca=tls_ca,
                  client_id=_get(m, "client_id", str, w + "mqtt", "h2pile-gateway"), csms_ca=ca,
                  heartbeat_s=int(nums["heartbeat_s"]), meter_interval_s=float(nums["meter_interval_s"]),
                  backoff_min_s=float(nums["backoff_min_s"]), backoff_max_s=float(nums["backoff_max_s"]),
                  max_per_pile=maxq, cmd_timeout_s=float(nums["cmd_timeout_s"]),
                  call_timeout_s=float(nums["call_timeout_s"]),
                  vendor=_get(c, "vendor", str, w + "csms", "h2pile"), model=_get(c, "model", str, w + "csms", "h2pile"))


def load(path: str) -> Config:
    """Read and check the TOML file at path."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise GatewayConfigError("%s: %s" % (path, e.strerror or e))
    except tomllib.TOMLDecodeError as e:
        raise GatewayConfigError("%s: not valid TOML: %s" % (path, e))
    return parse(doc, path)
