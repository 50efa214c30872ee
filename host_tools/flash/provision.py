"""`h2pile provision`: give a board its identity: a validated config.json
(pile id, MQTT broker and the pile's derived password and command key, WiFi,
SNTP server, site settings) and the fleet CA certificate. The fleet secret
the keys are derived from never leaves this computer.

Everything that can be checked without the board is checked before
connecting, with the firmware's own checks (h2p.config): the config's
values and key formats, and the files it names (the fleet CA with TLS) as
they will be on the board (the one installed now, else the one there), so
a config the pile would refuse at boot is never written (the board's file
is read once connected). Each file is written beside the old one, read back
and checked, then renamed over it (the old one kept as NAME.prev), so a
cut-off write never leaves a half config that stops the pile at the next
boot.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TextIO

from host_tools.exitcodes import MISMATCH, USAGE
from host_tools.flash.layout import finish_switch
from host_tools.flash.session import Board, FlashError


def make_config(base: dict, pile_id: str, secret: str, wifi: str | None, broker: str | None,
                tls: bool, ca_name: str | None, has_wifi: bool, ntp: str | None = None) -> tuple[dict, dict]:
    """The pile's config.json, validated like the firmware validates it."""
    from h2p import config, keys
    from h2p.schema import ConfigError

    try:
        password = keys.mqtt_password(secret, pile_id)
        cmd_key = keys.cmd_key(secret, pile_id)
    except ValueError as e:
        raise FlashError(str(e), USAGE)
    cfg = json.loads(json.dumps(base))
    cfg["pile_id"] = pile_id
    m = cfg.setdefault("mqtt", {})
    if not isinstance(m, dict):
        raise FlashError("config: 'mqtt' must be an object", USAGE)
    if broker:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            raise FlashError(f"--broker {broker!r}: expected HOST:PORT, e.g. mqtt.example.net:8883", USAGE)
        m["host"], m["port"] = host, int(port)
        m["server_hostname"] = host
    m["user"] = pile_id
    m["password"] = password
    m["cmd_key"] = cmd_key
    if tls:
        m["tls"] = True
        m["ca_file"] = ca_name or m.get("ca_file", "ca.der")
    if wifi is not None:
        ssid, sep, pw = wifi.partition(":")
        if not sep or not ssid:
            raise FlashError("--wifi: expected SSID:PASSWORD", USAGE)
        if not has_wifi:
            raise FlashError("WiFi settings given (--wifi, --wifi-file or $H2PILE_WIFI) but this board "
                             "has no WiFi (board.json has_wifi false)", USAGE)
        cfg["wifi"] = dict(cfg.get("wifi") or {}, ssid=ssid, password=pw)
    if ntp is not None:
        n = cfg.setdefault("ntp", {})
        if not isinstance(n, dict):
            raise FlashError("config: 'ntp' must be an object", USAGE)
        host, _, port = ntp.rpartition(":") if ":" in ntp else (ntp, "", "")
        if not host or (port and not port.isdigit()):
            raise FlashError(f"--ntp {ntp!r}: expected HOST or HOST:PORT, e.g. 192.168.1.1 or pool.ntp.org",
                             USAGE)
        n["server"] = host
        if port:
            n["port"] = int(port)
    try:
        full = config.from_dict(cfg, "config.json")
    except ConfigError as e:
        raise FlashError(str(e), USAGE)
    return cfg, full


def _ca_der(path: str) -> bytes:
    import ssl

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FlashError(f"--ca {path}: cannot read ({e.strerror})", USAGE)
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return ssl.PEM_cert_to_DER_cert(data.decode())
        except ValueError as e:
            raise FlashError(f"--ca {path}: not a PEM certificate ({e})", USAGE)
    if not data.startswith(b"\x30"):
        raise FlashError(f"--ca {path}: neither a PEM nor a DER certificate", USAGE)
    return data


def check_files(full: dict, bundle: dict[str, bytes], board: Board | None = None) -> None:
    """The firmware's own boot check (h2p.config.check_file) of every file the
    config names (the fleet CA with TLS), against the file provision is about
    to install (`bundle`), else the one already on the board; board None (not
    connected yet): files not in the bundle are checked later. A failure is a
    FlashError naming the key and the file, before anything is written."""
    from h2p import config
    from h2p.schema import ConfigError

    named = list(config.named_files(full))
    ca = full["mqtt"]["ca_file"]
    if ca in bundle and ("mqtt.ca_file", ca) not in named:
        named.append(("mqtt.ca_file", ca))  # installed with TLS off: still a certificate
    for key, name in named:
        if name in bundle:
            data = bundle[name]
        elif board is None:
            continue
        else:
            try:
                data = board.read_bytes(name)
            except FlashError as e:
                raise FlashError(f"config.json: key '{key}' names '{name}': cannot read it on the board ({e})",
                                 USAGE)
        try:
            config.check_file(key, name, data)
        except ConfigError as e:
            hint = " (give the fleet CA with --ca FILE)" if data is None else ""
            raise FlashError(f"{e}{hint}", USAGE)


def provision(port: str, pile_id: str, secret: str, wifi: str | None = None,
              broker: str | None = None, tls: bool = False, ca: str | None = None,
              base_config: str | None = None, fresh: bool = False, baud: int = 115200,
              out: TextIO | None = None, ntp: str | None = None) -> dict:
    """Write config.json (and ca.der with `ca`) to the board on `port`; returns the config."""
    out = out or sys.stdout
    from h2p.schema import ident

    # Everything that can be checked without the board is checked first.
    msg = ident(pile_id) if isinstance(pile_id, str) else "must be a string"
    if msg:
        raise FlashError(f"bad pile id {pile_id!r}: {msg}", USAGE)
    if tls and not ca:
        raise FlashError("--tls needs --ca FILE (the fleet CA certificate, PEM or DER)", USAGE)
    ca_der = _ca_der(ca) if ca else None
    base: dict = {}
    if base_config:
        try:
            with open(base_config) as f:
                base = json.load(f)
        except OSError as e:
            raise FlashError(f"--config {base_config}: cannot read ({e.strerror})", USAGE)
        except ValueError as e:
            raise FlashError(f"--config {base_config}: not valid JSON ({e})", USAGE)
        if not isinstance(base, dict):
            raise FlashError(f"--config {base_config}: not a JSON object", USAGE)
    # Validate once without the board to fail before connecting: the config,
    # and the files it names that are installed with it.
    _, full = make_config(base, pile_id, secret, wifi, broker, tls, "ca.der" if ca else None, True, ntp)
    if ca_der:
        check_files(full, {full["mqtt"]["ca_file"]: ca_der})
    b = Board(port, baud)
    try:
        finish_switch(b)
        desc_text = b.read_text("board.json")
        if desc_text is None:
            raise FlashError(f"{port}: no firmware on the board (no board.json): run `h2pile flash` first",
                             USAGE)
        try:
            desc = json.loads(desc_text)
        except ValueError:
            raise FlashError(f"{port}: board.json on the board is not valid JSON: reflash", USAGE)
        if not base_config and not fresh:
            old = b.read_text("config.json")
            if old:
                try:
                    base = json.loads(old)
                except ValueError:
                    base = {}
                if not isinstance(base, dict):
                    base = {}
        cfg, full = make_config(base, pile_id, secret, wifi, broker, tls, "ca.der" if ca else None,
                                bool(desc.get("has_wifi")), ntp)
        data = (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode()
        files = [("config.json", data)]
        if ca_der:
            files.append((full["mqtt"]["ca_file"], ca_der))
        # The boot check of the files the config names, on what the board
        # will hold: nothing is written if the pile would refuse to boot.
        check_files(full, dict(files[1:]), b)
        for name, blob in files:
            # Write beside, check, then rename over: a cut-off write never
            # leaves a half config that stops the pile at the next boot.
            tmp = name + ".new"
            b.write_file(tmp, blob)
            if b.hashes([tmp])[0] != hashlib.sha256(blob).hexdigest():
                b.run("agent_remove(%r)" % tmp, "cleaning up")
                raise FlashError(f"{port}: {name} read back from the board does not match: not installed",
                                 MISMATCH)
            b.run("agent_remove(%r)\nif agent_exists(%r): os.rename(%r, %r)\nos.rename(%r, %r)"
                  % (name + ".prev", name, name, name + ".prev", tmp, name), f"installing {name}")
        # The journal and counters live here; the firmware expects it.
        b.run("agent_makedirs(%r)" % full["data_dir"], "creating the data directory")
        m = full["mqtt"]
        print(f"{port}: provisioned pile {pile_id}: config.json written and checked "
              f"(mqtt {m['host'] or 'off'}{':%d' % m['port'] if m['host'] else ''}"
              f"{' tls' if m['tls'] else ''}, user {m['user']}, derived password and command key"
              f"{', wifi ' + full['wifi']['ssid'] if full['wifi']['ssid'] else ''}); "
              f"the fleet secret stays on this computer", file=out)
        return cfg
    finally:
        b.close()
