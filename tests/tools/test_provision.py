"""`h2pile provision` builds config.json on the host and validates it with the
firmware's own validator before anything is written to a board: the SNTP
server the board sets its clock from (`--ntp`), and bad values named."""

import pytest

from host_tools.flash.provision import make_config
from host_tools.flash.session import FlashError

SECRET = "00" * 32


def _cfg(**kw):
    args = dict(base={}, pile_id="p-1", secret=SECRET, wifi="depot:password", broker="10.0.0.1:1883", tls=False,
                ca_name=None, has_wifi=True)
    args.update(kw)
    return make_config(**args)


def test_ntp_server_and_port_go_to_the_config():
    cfg, full = _cfg(ntp="10.0.0.1:1123")
    assert full["ntp"]["server"] == "10.0.0.1" and full["ntp"]["port"] == 1123
    cfg, full = _cfg(ntp="pool.ntp.org")
    assert full["ntp"]["server"] == "pool.ntp.org" and full["ntp"]["port"] == 123


def test_wifi_settings_of_the_base_config_are_kept():
    cfg, full = _cfg(base={"wifi": {"join_s": 30}})
    assert full["wifi"] == dict(full["wifi"], ssid="depot", password="password", join_s=30)


@pytest.mark.parametrize("ntp, word", [(":123", "--ntp"), ("host:port", "--ntp"), ("10.0.0.1:99999", "ntp.port")])
def test_bad_ntp_is_refused_naming_it(ntp, word):
    with pytest.raises(FlashError) as e:
        _cfg(ntp=ntp)
    assert word in str(e.value) and e.value.code == 2
