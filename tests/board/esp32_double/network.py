# `network` as on an ESP32 (see machine.py here for why and how strict):
# network.WLAN(network.STA_IF) with the port's status codes and its
# reconnect behaviour (ports/esp32/network_wlan.c):
#   - connect() needs active(True) first ("Wifi Not Started" otherwise);
#   - status(): STAT_GOT_IP once associated; after a failed attempt
#     STAT_NO_AP_FOUND or STAT_WRONG_PASSWORD (the last failure's reason
#     stays until the next attempt ends, even across connect()); STAT_IDLE
#     after disconnect(); else STAT_CONNECTING while a connect is requested
#     (after losing the AP too: beacon timeout is not reported as such);
#   - a requested connection is retried by the port itself after every
#     failure or loss, forever unless config(reconnects=n) limits it.
# The "access point" is esp32_double.json in the board directory:
#   "ap": {"ssid": "pilenet", "password": "...", "ip": "10.0.0.20",
#          "attempt_ms": 300, "wrong_password_reason": 202}
#   "link_down_file": "wifi_down"   while this file exists the AP is gone
# The host's own network carries the traffic: dropping the link here changes
# what WLAN reports, not the TCP sockets the firmware has open.
import json as _json
import os as _os
import time as _time

import _surface

_S = _surface.load("network", (None, "WLAN"))
_MOD = _surface.Surface("network", _S[None])
# Every constant now, not on first use: the double must not read its file
# (or allocate much) while the firmware runs in a full heap.
_MOD.set_consts(globals())


def _c(name):
    # A module constant, for the double's own use.
    return globals()[name]


def __getattr__(name):
    _MOD.missing(name)

try:
    with open("esp32_double.json") as _f:
        _CFG = _json.load(_f)
except OSError:
    _CFG = {}
_AP = _CFG.get("ap", {})
_DOWN = _CFG.get("link_down_file", "wifi_down")
_ATTEMPT_MS = _AP.get("attempt_ms", 300)

# esp_wifi reason codes that are not STAT_* constants
_REASON_ASSOC_LEAVE = 8
_REASON_CONNECTION_FAIL = 205
_NO_AP = (_c("STAT_NO_AP_FOUND"), _c("STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD"),
          _c("STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD"), _c("STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY"))
# What a wrong key ends an attempt with. ESP-IDF says AUTH_FAIL (202) or,
# often for WPA2-PSK, a handshake timeout (15, or 204 = STAT_HANDSHAKE_TIMEOUT),
# which the port reports as STAT_CONNECTING while it retries.
_WRONG_KEY = _AP.get("wrong_password_reason", _c("STAT_WRONG_PASSWORD"))


def _ap_up():
    try:
        _os.stat(_DOWN)
        return False
    except OSError:
        return True


class WLAN:
    _sta = None

    def __new__(cls, *args):
        # The port returns one object per interface.
        _SW.check_call(args, {})
        idx = args[0] if args else _c("STA_IF")
        if idx == _c("AP_IF"):
            raise NotImplementedError("esp32 double: WLAN(AP_IF) is not implemented")
        if idx != _c("STA_IF"):
            raise ValueError("invalid WLAN interface identifier")
        if WLAN._sta is None:
            o = object.__new__(cls)
            o._active = False
            o._requested = False
            o._connected = False
            o._reason = 0
            o._t = 0
            o._tries = 0
            o._max = 0  # reconnects: 0 = forever
            o._ssid = ""
            o._key = ""
            WLAN._sta = o
        return WLAN._sta

    def __init__(self, *args):
        pass

    def _advance(self):
        # Play the association forward to now (called from every query).
        if not self._active:
            return
        now = _time.ticks_ms()
        if self._connected:
            if not _ap_up():
                self._connected = False
                self._reason = _c("STAT_BEACON_TIMEOUT")
                self._t = now
                print("esp32 double: WLAN lost the AP (beacon timeout)")
            return
        if not self._requested or _time.ticks_diff(now, self._t) < _ATTEMPT_MS:
            return
        if self._max and self._tries >= self._max:
            return
        self._tries += 1
        self._t = now
        was = self._reason
        if not _ap_up() or self._ssid != _AP.get("ssid"):
            self._reason = _c("STAT_NO_AP_FOUND")
        elif self._key != _AP.get("password", ""):
            self._reason = _WRONG_KEY
        else:
            self._connected = True
            self._reason = 0
            self._tries = 0
            print("esp32 double: WLAN connected to %s, %s" % (self._ssid, _AP.get("ip", "10.0.0.20")))
        if self._reason and self._reason != was:
            # once per kind of failure, not per retry
            print("esp32 double: WLAN cannot connect to %s: status %d" % (self._ssid, self._reason))

    def active(self, *is_active):
        if not is_active:
            return self._active
        self._active = bool(is_active[0])
        if not self._active:
            self._connected = False
            self._requested = False
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            self._ssid = ssid
        if key is not None:
            self._key = key
        self._connected = False
        self._requested = True
        self._tries = 0
        self._t = _time.ticks_ms()

    def disconnect(self):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._requested = False
        self._connected = False
        self._reason = _REASON_ASSOC_LEAVE

    def status(self, *param):
        if param:
            if param[0] == "rssi":
                self._advance()
                if not self._connected:
                    raise OSError("Wifi Not Connected")
                return -55
            raise ValueError("unknown status param")
        self._advance()
        # The order of network_wlan_status() in ports/esp32/network_wlan.c.
        if self._connected:
            return _c("STAT_GOT_IP")
        r = self._reason
        if r in _NO_AP:
            return r
        if r == _c("STAT_WRONG_PASSWORD") or r == _REASON_CONNECTION_FAIL:
            return _c("STAT_WRONG_PASSWORD")
        if r == _REASON_ASSOC_LEAVE:
            return _c("STAT_IDLE")
        if self._requested and (self._max == 0 or self._tries < self._max):
            return _c("STAT_CONNECTING")  # any other reason while it keeps retrying
        return _c("STAT_IDLE") if r == 0 else r

    def isconnected(self):
        self._advance()
        return self._connected

    def ifconfig(self, *cfg):
        if cfg:
            raise NotImplementedError("esp32 double: setting a static address is not implemented")
        self._advance()
        if not self._connected:
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        return (_AP.get("ip", "10.0.0.20"), "255.255.255.0", _AP.get("gw", "10.0.0.1"),
                _AP.get("dns", "10.0.0.1"))

    def config(self, *args, **kw):
        if args and kw:
            raise TypeError("either pos or kw args are allowed")
        allowed = _SW.config_kw
        for k, v in kw.items():
            if k not in allowed:
                raise ValueError("unknown config param '%s' (not in the ESP32 stubs)" % k)
            if k == "reconnects":
                self._max = 0 if v == -1 else v + 1
            # pm, txpower, hostname, ...: accepted, no effect here
        if args:
            p = args[0]
            if p == "mac":
                import machine

                return machine.unique_id()
            if p == "ssid":
                return self._ssid
            if p == "reconnects":
                return -1 if self._max == 0 else self._max - 1
            if p not in allowed:
                raise ValueError("unknown config param")
            raise NotImplementedError("esp32 double: WLAN.config(%r) is not implemented" % p)
        return None

    def __getattr__(self, name):
        _SW.missing(name)

    def __setattr__(self, name, v):
        if name[0] != "_":
            raise AttributeError("'WLAN' object has no attribute '%s'" % name)
        object.__setattr__(self, name, v)


_SW = _surface.Surface("network.WLAN", _S["WLAN"])
_SW.config_kw = tuple(_S["WLAN"]["methods"]["config"]["kw"])
_SW.set_consts(WLAN)
_SW.check_class(WLAN)


_S = None
_surface.check_module(_MOD, globals())

import gc as _gc  # noqa: E402

_gc.collect()  # the parsed surface is garbage now; not left to fragment the heap
