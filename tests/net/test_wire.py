"""Consensus messages on the wire: round trips, and bad messages refused naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peerpower.consensus.tendermint import Proposal, SyncRequest, Vote
from peerpower.crypto import KeyPair
from peerpower.errors import InvalidInput
from peerpower.ledger.node import build_block
from peerpower.ledger.rules import genesis_state
from peerpower.net import wire
from tests.ledger.chain_helpers import KEYS, T0, make_genesis

KEY = KeyPair.derive("wire")


def block() -> Any:
    genesis = make_genesis(None, None, ("val",))
    return build_block(genesis_state(genesis), genesis, "val", KEYS["val"], T0 + 1000, []).block


def proposal() -> Proposal:
    b = block()
    p = Proposal(3, 1, b.hash, b, -1, "val")
    return Proposal(3, 1, b.hash, b, -1, "val", KEY.sign(b"", p.signed_bytes()))


def through(obj: Any) -> Any:
    return wire.decode(json.loads(json.dumps(obj)))


def test_wire_round_trips() -> None:
    p = proposal()
    assert through(wire.encode(p)) == p
    for vote in (
        Vote("prevote", 3, 1, None, "val", b"\x01" * 64),
        Vote("precommit", 3, 1, b"\x02" * 32, "val", b"\x03" * 64),
    ):
        assert through(wire.encode(vote)) == vote
    assert through(wire.encode(SyncRequest(7, "val"))) == SyncRequest(7, "val")
    got = through(wire.encode_blocks([p.value]))
    assert got == wire.Blocks((p.value,))
    assert through(wire.encode_app([{"tx": 1}])) == wire.AppMessages(({"tx": 1},))


def test_invalid_wire_proposal_with_another_block() -> None:
    obj = wire.encode(proposal())
    obj["value_id"] = "00" * 32  # the signature covers the id only: the block must hash to it
    with pytest.raises(InvalidInput) as info:
        through(obj)
    assert info.value.field == "value"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"t": "nonsense"}, "t"),
        ({"kind": "maybe"}, "kind"),
        ({"height": 0}, "height"),
        ({"height": "3"}, "height"),
        ({"round": -1}, "round"),
        ({"value_id": "zz"}, "value_id"),
        ({"validator": ""}, "validator"),
        ({"sig": "00"}, "sig"),
    ],
)
def test_invalid_wire_vote(change: dict[str, Any], field: str) -> None:
    obj = wire.encode(Vote("prevote", 3, 1, None, "val", b"\x01" * 64))
    obj.update(change)
    with pytest.raises(InvalidInput) as info:
        through(obj)
    assert info.value.field == field


def test_invalid_wire_shapes() -> None:
    for bad, field in (
        ([1, 2], "message"),
        ({"t": "blocks", "blocks": "x"}, "blocks"),
        ({"t": "blocks", "blocks": [{}]}, "blocks[0]"),
        ({"t": "app", "payloads": {}}, "payloads"),
        ({"t": "sync", "height": 1, "requester": 5}, "requester"),
    ):
        with pytest.raises(InvalidInput) as info:
            through(bad)
        assert info.value.field == field
