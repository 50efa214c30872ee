# Per-pile credentials derived from one fleet secret, so the back office
# stores one secret and every pile gets its own MQTT password and command
# key (a leaked pile exposes only itself). Used by host tools; kept in
# firmware/ so there is one source.
#   mqtt password = hex(HMAC-SHA256(fleet_secret, "mqtt:" + pile_id))
#   command key   = hex(HMAC-SHA256(fleet_secret, "cmd:" + pile_id))
from h2p.signer import hmac_hex
from h2p.topics import valid_pile_id


def _derive(fleet_secret, purpose, pile_id):
    if not valid_pile_id(pile_id):
        raise ValueError("bad pile id %r: use 1-32 letters, digits, '_' or '-'" % (pile_id,))
    if not fleet_secret:
        raise ValueError("empty fleet secret")
    if isinstance(fleet_secret, str):
        fleet_secret = fleet_secret.encode()
    return hmac_hex(fleet_secret, (purpose + ":" + pile_id).encode())


def mqtt_password(fleet_secret, pile_id):
    return _derive(fleet_secret, "mqtt", pile_id)


def cmd_key(fleet_secret, pile_id):
    # 64 hex chars = 32 key bytes (h2p.sign.key_bytes accepts the hex form).
    return _derive(fleet_secret, "cmd", pile_id)
