"""`h2pile gateway`: one host process that connects a fleet of piles to a
charge-point operator's CSMS over OCPP (2.0.1, or 1.6J).

    config      the TOML file, checked whole before anything starts
    store       SQLite: the per-pile queue of transaction events and meter
                values (kept while the CSMS is unreachable) and each pile's state
    agent       one pile as the gateway sees it on MQTT: its status for the CSMS,
                its transactions, the events queued for the CSMS
    bridge      CSMS requests -> signed h2pile commands, answered by cmd/ack
    mqtt        the broker side: subscriptions, redelivery-safe acks
    link        one OCPP-J websocket per pile: connect, boot, deliver, back off
    ocpp201, ocpp16   the OCPP adapters (the `ocpp` package does the framing)
    variables   the few settings a CSMS may read and write
    cli         `h2pile gateway CONFIG`

docs/operators.md says what each OCPP message carries and what the pile does.
"""
