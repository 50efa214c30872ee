"""The host tools subscribe with filters built from the topic contract
(h2p.topics), never with hand-written "h2pile/v1/..." strings: each filter
matches exactly the topics it is meant to, by MQTT's own rules (paho)."""

import pytest
from paho.mqtt.client import topic_matches_sub

from h2p import topics
from host_tools import ledger
from host_tools.topic_filter import topic_filter


def test_filters_match_the_contracts_topics():
    assert topic_filter() == topics.PREFIX + "+/#"
    every = [topics.topic(p, t[topics.T_NAME]) for p in ("P1", "p-2_x") for t in topics.TOPICS]
    assert all(topic_matches_sub(topic_filter(), t) for t in every)
    one = topic_filter("P1")
    assert {t for t in every if topic_matches_sub(one, t)} == {t for t in every if topics.parse(t)[0] == "P1"}
    bills = topic_filter(name="bill")
    assert {t for t in every if topic_matches_sub(bills, t)} == {topics.topic("P1", "bill"),
                                                                    topics.topic("p-2_x", "bill")}
    assert not topic_matches_sub(bills, "elsewhere/v1/P1/bill")


@pytest.mark.parametrize("pile,name", [("a/b", "#"), ("#", "#"), ("", "tele"), ("P1", "nope"), ("+", "bil")])
def test_a_filter_outside_the_contract_is_refused(pile, name):
    with pytest.raises(ValueError):
        topic_filter(pile, name)


def test_ledger_subscribes_to_every_piles_bills():
    assert ledger.subscription() == topic_filter(name="bill")
    assert ledger.subscription("g1") == "$share/g1/" + topic_filter(name="bill")
    with pytest.raises(ledger.LedgerError):
        ledger.subscription("a/b")


def test_live_view_reads_a_piles_topics_by_the_contract():
    from host_tools.live import View

    v = View("P1")
    v.on_message(topics.topic("P1", "state"), b'{"state": "ready"}')
    v.on_message(topics.topic("P1", "cmd/ack"), b'{"id": "x", "ok": true}')
    v.on_message("elsewhere/P1/state", b'{"state": "fault"}')
    assert v.state == {"state": "ready"}
