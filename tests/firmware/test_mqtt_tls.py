"""TLS: MicroPython client with CERT_REQUIRED against a mosquitto TLS listener."""
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.mqtt_broker import Broker, Pile

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.micropython, pytest.mark.broker,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")]


def _ssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d, name):
    """CA + server cert (SAN localhost, 127.0.0.1) signed by it. -> paths."""
    d = Path(d)
    ca_key, ca_crt, ca_der = d / (name + "-ca.key"), d / (name + "-ca.crt"), d / (name + "-ca.der")
    key, csr, crt = d / (name + "-srv.key"), d / (name + "-srv.csr"), d / (name + "-srv.crt")
    ext = d / (name + "-ext.cnf")
    _ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "30", "-subj", "/CN=h2pile test CA " + name,
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=d)
    _ssl("x509", "-in", str(ca_crt), "-outform", "DER", "-out", str(ca_der), cwd=d)
    _ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost", cwd=d)
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    _ssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(crt), "-days", "30", "-extfile", str(ext), cwd=d)
    return {"ca": ca_crt, "ca_der": ca_der, "crt": crt, "key": key}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return make_pki(d, "good"), make_pki(d, "other")


def test_tls_verified_connect(pki, tmp_path):
    good, _ = pki
    with Broker(tmp_path, tls=(good["ca"], good["crt"], good["key"])) as b, \
            Pile(tmp_path, b.port, ca=str(good["ca_der"]), sni="localhost", duration=6, evt_every=1) as pile:
        up = pile.wait(lambda e: e["ev"] == "up", 8)
        assert up, (pile.last_stat(), pile.stderr)
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["acked"] >= 3, 5)
        assert st, pile.last_stat()


def test_tls_rejects_server_from_other_ca(pki, tmp_path):
    good, other = pki
    # broker presents a cert from "other" CA; the pile trusts only "good"
    with Broker(tmp_path, tls=(other["ca"], other["crt"], other["key"])) as b, \
            Pile(tmp_path, b.port, ca=str(good["ca_der"]), sni="localhost", duration=4) as pile:
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["conn_fails"] >= 2, 5)
        assert st, pile.last_stat()
        assert st["stats"]["connects"] == 0 and not any(e["ev"] == "up" for e in pile.events)
        print("\nother-CA server refused: %s" % st["stats"]["last_error"])


def test_tls_rejects_wrong_hostname(pki, tmp_path):
    good, _ = pki
    with Broker(tmp_path, tls=(good["ca"], good["crt"], good["key"])) as b, \
            Pile(tmp_path, b.port, ca=str(good["ca_der"]), sni="broker.example.com", duration=4) as pile:
        st = pile.wait(lambda e: e["ev"] == "stat" and e["stats"]["conn_fails"] >= 2, 5)
        assert st, pile.last_stat()
        assert st["stats"]["connects"] == 0
        print("\nwrong host name refused: %s" % st["stats"]["last_error"])


def test_tls_same_code_on_cpython(pki, tmp_path):
    import asyncio

    from h2p.mqtt import MQTTClient, make_tls_context
    good, other = pki

    async def attempt(ca_der, host):
        c = MQTTClient("cpy-tls", "127.0.0.1", b.port, tls=make_tls_context(cadata=ca_der.read_bytes()),
                       server_hostname=host, connect_timeout=3)
        t = asyncio.create_task(c.run())
        t_end = time.monotonic() + 3
        while not c.connected and c.stats["conn_fails"] < 1 and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        t.cancel()
        return c.connected, c.stats["last_error"]

    with Broker(tmp_path, tls=(good["ca"], good["crt"], good["key"])) as b:
        assert asyncio.run(attempt(good["ca_der"], "localhost"))[0] is True
        ok, err = asyncio.run(attempt(other["ca_der"], "localhost"))
        assert ok is False and "CERTIFICATE_VERIFY_FAILED" in err
        ok, err = asyncio.run(attempt(good["ca_der"], "broker.example.com"))
        assert ok is False and "CERTIFICATE_VERIFY_FAILED" in err
