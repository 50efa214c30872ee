"""MQTT subscription filters for the host tools, built from the topic
contract (h2p.topics): h2pile/v1/<pile>/<name> with `+` for every pile and
`#` for every topic. Host-side on purpose: the pile never subscribes with a
wildcard, so the board's copy of h2p.topics does not carry this."""

from __future__ import annotations

from h2p import topics


def topic_filter(pile: str = "+", name: str = "#") -> str:
    """topic_filter() -> "h2pile/v1/+/#"; topic_filter("P1") ->
    "h2pile/v1/P1/#"; topic_filter(name="bill") -> "h2pile/v1/+/bill".
    ValueError for a bad pile id or a topic the contract does not have."""
    if pile != "+" and not topics.valid_pile_id(pile):
        raise ValueError("bad pile id: %r" % (pile,))
    if name != "#":
        try:
            topics.spec(name)
        except KeyError:
            raise ValueError("unknown topic: %r" % (name,)) from None
    return topics.PREFIX + pile + "/" + name
