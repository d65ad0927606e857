"""Proof of optimal clearing in the ledger: a ``decide`` carries a quorum of validators' signed
claims, none beating the recorded clearing."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import pytest

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidTransaction
from peerpower.ledger import rules
from peerpower.ledger.blocks import sign_commit
from peerpower.ledger.claims import Claim, make_claim
from peerpower.ledger.node import build_block
from peerpower.ledger.rules import BlockContext, apply_tx, begin_block, slot_book
from peerpower.ledger.state import Account, Contracts, Draft
from peerpower.ledger.transactions import Signer, decode_tx
from peerpower.market.clear import clear
from peerpower.market.orders import Book
from peerpower.market.result import ClearingResult, Objective
from peerpower.market.verify import Verification, verify
from tests.ledger.chain_helpers import (
    DEADLINE,
    DEPOSIT,
    END,
    GATE,
    KEYS,
    SLOT,
    T0,
    Chain,
    new_chain,
    reading,
)

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
    return draft, ctx, seed, clear(book, "optimal", "welfare", chain.genesis.market.pricing)


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


def test_invalid_pricing_mismatch_decide(sealed: Chain) -> None:
    # a quorum of validators agreeing on a midpoint clearing, honest for its rule, cannot record
    # it on a chain whose market prices nodal
    assert sealed.genesis.market.pricing == "nodal"
    draft, ctx, seed, _nodal = setting(sealed)
    book = slot_book(draft, sealed.genesis, SLOT, bytes.fromhex(seed))
    midpoint = clear(book, "optimal", "welfare", "midpoint")
    assert verify(book, midpoint).ok
    claims = [make_claim(VKEYS[v], v, SLOT, seed, midpoint) for v in ("val", "v2", "v3")]
    tx = decide(sealed, midpoint.to_json(), claims)
    before = draft.freeze().root
    with pytest.raises(InvalidTransaction) as info:
        apply_tx(draft, decode_tx(tx, sealed.genesis.tx_chain), sealed.genesis, ctx)
    assert info.value.rule == "pricing"
    assert "the result is priced 'midpoint'" in info.value.message
    assert "the market (genesis.market.pricing) prices 'nodal'" in info.value.message
    assert draft.freeze().root == before


# -- re-pairing: same fills, another pairing --------------------------------------------------

FOUR = {"a": "root", "b": "root", "c": "root", "x": "root"}


@pytest.fixture
def sealed_four() -> Chain:
    """a sells 500 Wh at 1000 and c 500 Wh at 1200; b buys 500 Wh at 2500 and x 500 Wh at 2000,
    all on one node. Every order fills; the node's equilibrium prices are 1200 (the highest ask
    filled) to 2000 (the lowest bid filled), and the rule takes 1600."""
    chain = new_chain(validators=VALIDATORS, nodes=FOUR)
    chain.produce(
        T0 + 2000,
        chain.signer("a").order(SLOT, "sell", 500, 1000),
        chain.signer("c").order(SLOT, "sell", 500, 1200),
        chain.signer("b").order(SLOT, "buy", 500, 2500),
        chain.signer("x").order(SLOT, "buy", 500, 2000),
    )
    chain.produce(GATE)
    return chain


def repairings(result: ClearingResult) -> list[ClearingResult]:
    """Every clearing with the same fills, made by moving k lots between two units of different
    sellers and buyers onto the crossed pairs (on one node: same prices, fees and totals)."""
    out = []
    units = result.trades
    for i, t in enumerate(units):
        for u in units[i + 1 :]:
            if t.seller == u.seller or t.buyer == u.buyer:
                continue
            if t.seller == u.buyer or u.seller == t.buyer:
                continue
            for k in range(100, min(t.energy_wh, u.energy_wh) + 1, 100):
                moved = [
                    dataclasses.replace(t, energy_wh=t.energy_wh - k),
                    dataclasses.replace(u, energy_wh=u.energy_wh - k),
                    dataclasses.replace(t, buy_order=u.buy_order, buyer=u.buyer, energy_wh=k),
                    dataclasses.replace(u, buy_order=t.buy_order, buyer=t.buyer, energy_wh=k),
                ]
                rest = [w for w in units if w is not t and w is not u]
                trades = tuple(rest + [w for w in moved if w.energy_wh])
                out.append(dataclasses.replace(result, trades=trades))
    return out


def record(chain: Chain, result: ClearingResult, claims: list[Claim]) -> None:
    """A block holding only the decide of ``result``, committed by a quorum of validators."""
    tx = decide(chain, result.to_json(), claims)
    built = build_block(chain.state, chain.genesis, "val", None, GATE + 1000, [tx])
    assert built.rejected == ()
    signatures = tuple(sign_commit(VKEYS[v], v, built.block.hash) for v in ("val", "v2", "v3"))
    chain.node.accept(built.block.with_commit(signatures))
    chain.blocks.append(built.block)


def settle_all(chain: Chain) -> dict[str, int]:
    """Every site delivers what it traded; the slot settles. Each account's balance [µ¥]."""
    chain.produce(
        END + 1000,
        reading("a", SLOT, 0, 500),
        reading("c", SLOT, 0, 500),
        reading("b", SLOT, 500, 0),
        reading("x", SLOT, 500, 0),
    )
    chain.produce(DEADLINE + 1000)
    assert chain.state.get("settled", SLOT) is not None
    accounts = chain.state.table("accounts").values()
    return {a.id: a.balance_microyen for a in accounts if isinstance(a, Account)}


def test_invalid_clearing_byzantine_repairing(
    sealed_four: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Byzantine validator re-pairs the best clearing's units — the same fills, so the same
    objective and tie-break score — choosing the pairing whose digest wins the last tie-break.
    Its claim outranks the honest ones, but verify refuses the pairing (rule ``pairing``), so
    the ledger never records it; and under nodal pricing it would not have moved one µ¥."""
    chain = sealed_four
    draft, ctx, seed, honest = setting(chain)
    book = slot_book(draft, chain.genesis, SLOT, bytes.fromhex(seed))
    assert honest.pricing == "nodal" and honest.node_prices == {"root": 1600}
    assert verify(book, honest).ok
    others = repairings(honest)
    assert others
    forged = min(others, key=lambda r: r.digest())  # the tie-break favours the lower digest
    assert forged.objective == honest.objective
    assert forged.totals == honest.totals
    claims = [
        make_claim(VKEYS["val"], "val", SLOT, seed, forged),  # the Byzantine proposer
        make_claim(VKEYS["v2"], "v2", SLOT, seed, honest),
        make_claim(VKEYS["v3"], "v3", SLOT, seed, honest),
    ]
    # the claims alone would let it through: it ranks above every honest claim
    assert claims[0].rank() > claims[1].rank()
    checked = verify(book, forged)
    assert [rule for rule, _ in checked.problems] == ["pairing"]
    assert "not the canonical pairing of their fills" in checked.problems[0][1]
    before = draft.freeze().root
    tx = decode_tx(decide(chain, forged.to_json(), claims), chain.genesis.tx_chain)
    with pytest.raises(InvalidTransaction) as info:
        apply_tx(draft, tx, chain.genesis, ctx)
    assert info.value.rule == "pairing"
    assert "slot 2026-08-18#00: pairing: the units are not the canonical pairing" in str(info.value)
    assert draft.freeze().root == before

    # With the pairing rule switched off the forged clearing would be recorded; settled, every
    # account ends with the same money as after the honest one: each sale is paid its node's
    # price and each purchase pays it, whoever the counterparty.
    honest_chain = new_chain(validators=VALIDATORS, nodes=FOUR)
    assert honest_chain.state.root == chain.blocks[0].header.state_root
    honest_chain.produce(
        T0 + 2000,
        honest_chain.signer("a").order(SLOT, "sell", 500, 1000),
        honest_chain.signer("c").order(SLOT, "sell", 500, 1200),
        honest_chain.signer("b").order(SLOT, "buy", 500, 2500),
        honest_chain.signer("x").order(SLOT, "buy", 500, 2000),
    )
    honest_chain.produce(GATE)
    assert honest_chain.state.root == chain.state.root
    honest_claims = [make_claim(VKEYS[v], v, SLOT, seed, honest) for v in ("val", "v2", "v3")]
    record(honest_chain, honest, honest_claims)
    honest_money = settle_all(honest_chain)

    real_verify = rules.verify

    def without_pairing(book: Book, result: ClearingResult) -> Verification:
        out = real_verify(book, result)
        out.problems = [p for p in out.problems if p[0] != "pairing"]
        return out

    monkeypatch.setattr(rules, "verify", without_pairing)
    record(chain, forged, claims)
    forged_contracts = chain.state.get("contracts", SLOT)
    assert isinstance(forged_contracts, Contracts)
    assert sorted((u.seller, u.buyer, u.energy_wh) for u in forged_contracts.units) == sorted(
        (t.seller, t.buyer, t.energy_wh) for t in forged.trades
    )
    forged_money = settle_all(chain)
    assert forged_money == honest_money
    # a and c were paid 1600 × 500 × 10 each, b and x paid it
    assert forged_money["a"] - DEPOSIT == forged_money["c"] - DEPOSIT == 8_000_000
    assert DEPOSIT - forged_money["b"] == DEPOSIT - forged_money["x"] == 8_000_000
