"""Proof of optimal clearing in the ledger: a ``decide`` carries a quorum of validators' signed
claims, none beating the recorded clearing."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import pytest

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidTransaction
from peerpower.ledger.claims import Claim, make_claim
from peerpower.ledger.rules import BlockContext, apply_tx, begin_block, slot_book
from peerpower.ledger.state import Draft
from peerpower.ledger.transactions import Signer, decode_tx
from peerpower.market.clear import clear
from peerpower.market.result import ClearingResult, Objective
from tests.ledger.chain_helpers import GATE, KEYS, SLOT, T0, Chain, new_chain

VALIDATORS = ("val", "v2", "v3", "v4")  # quorum 3
VKEYS = {v: KEYS[v] if v in KEYS else KeyPair.derive(v) for v in VALIDATORS}


@pytest.fixture
def sealed() -> Chain:
    chain = new_chain(validators=VALIDATORS)
    chain.produce(
        T0 + 2000,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)  # seals SLOT; the next block knows its seed
    return chain


def setting(chain: Chain) -> tuple[Draft, BlockContext, str, ClearingResult]:
    ctx = chain.ctx(GATE + 1000)
    draft = chain.state.draft()
    begin_block(draft, chain.genesis, ctx)
    seed = chain.state.head_hash.hex()
    book = slot_book(draft, chain.genesis, SLOT, bytes.fromhex(seed))
    return draft, ctx, seed, clear(book, "optimal", "welfare")


def decide(chain: Chain, result: dict[str, Any], claims: list[Claim]) -> dict[str, Any]:
    acct = chain.state.account("val")
    assert acct is not None
    signer = Signer(chain.genesis.tx_chain, "val", VKEYS["val"], acct.nonce + 1)
    return signer.decide(SLOT, result, [c.to_json() for c in claims])


def rejected(chain: Chain, draft: Draft, ctx: BlockContext, tx: dict[str, Any]) -> str:
    before = draft.freeze().root
    with pytest.raises(InvalidTransaction) as info:
        apply_tx(draft, decode_tx(tx, chain.genesis.tx_chain), chain.genesis, ctx)
    assert draft.freeze().root == before
    assert info.value.rule in ("claims", "format")
    return str(info.value)


def test_decide_with_a_quorum_of_claims(sealed: Chain) -> None:
    draft, ctx, seed, result = setting(sealed)
    claims = [make_claim(VKEYS[v], v, SLOT, seed, result) for v in ("val", "v2", "v3")]
    tx = decide(sealed, result.to_json(), claims)
    apply_tx(draft, decode_tx(tx, sealed.genesis.tx_chain), sealed.genesis, ctx)
    assert draft.get("slots", SLOT).status == "cleared"  # type: ignore[union-attr]


def test_invalid_claims_clear_on_a_chain_of_validators(sealed: Chain) -> None:
    draft, ctx, _seed, result = setting(sealed)
    acct = sealed.state.account("val")
    assert acct is not None
    tx = Signer(sealed.genesis.tx_chain, "val", VKEYS["val"], acct.nonce + 1).clear(
        SLOT, result.to_json()
    )
    assert "a chain of 4 validators records an optimal clearing with a decide" in rejected(
        sealed, draft, ctx, tx
    )


def test_invalid_claims_short_of_a_quorum(sealed: Chain) -> None:
    draft, ctx, seed, result = setting(sealed)
    claims = [make_claim(VKEYS[v], v, SLOT, seed, result) for v in ("val", "v2")]
    message = rejected(sealed, draft, ctx, decide(sealed, result.to_json(), claims))
    assert "2 of 4 validators claimed slot 2026-08-18#00, 3 needed" in message


def test_invalid_claims_a_better_claim_is_hidden(sealed: Chain) -> None:
    # v4 claims more welfare than the recorded result: the result cannot be the best
    draft, ctx, seed, result = setting(sealed)
    assert result.objective is not None
    better = dataclasses.replace(
        result, objective=Objective(result.objective.primary + Fraction(1), 0, 0)
    )
    claims = [make_claim(VKEYS[v], v, SLOT, seed, result) for v in ("val", "v2", "v3")]
    claims.append(make_claim(VKEYS["v4"], "v4", SLOT, seed, better))
    message = rejected(sealed, draft, ctx, decide(sealed, result.to_json(), claims))
    assert "claims[3] by 'v4' beats the recorded clearing" in message


@pytest.mark.parametrize("flaw", ["signature", "seed", "twice", "stranger"])
def test_invalid_claims_each_checked(sealed: Chain, flaw: str) -> None:
    draft, ctx, seed, result = setting(sealed)
    claims = [make_claim(VKEYS[v], v, SLOT, seed, result) for v in ("val", "v2", "v3")]
    if flaw == "signature":
        claims[1] = dataclasses.replace(claims[1], sig=claims[0].sig)
        needle = "claims[1]: bad signature by 'v2'"
    elif flaw == "seed":
        claims[2] = make_claim(VKEYS["v3"], "v3", SLOT, "00" * 32, result)
        needle = "claims[2] is for slot 2026-08-18#00 with seed 000000000000"
    elif flaw == "twice":
        claims[2] = claims[1]
        needle = "claims[2]: 'v2' claims twice"
    else:
        stranger = KeyPair.derive("stranger")
        claims[2] = make_claim(stranger, "stranger", SLOT, seed, result)
        needle = "claims[2] is by 'stranger', not a validator"
    assert needle in rejected(sealed, draft, ctx, decide(sealed, result.to_json(), claims))
