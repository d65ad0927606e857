"""Rules added after a review of the ledger for holes: each test fails without its rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from peerpower.errors import ClearingError, InvalidBlock, InvalidInput, InvalidTransaction
from peerpower.grid.tree import GridTree
from peerpower.ledger import node as node_module
from peerpower.ledger.blocks import Block, Header
from peerpower.ledger.example import write_example
from peerpower.ledger.genesis import MAX_TIME_MS, Genesis, MarketRules, Params
from peerpower.ledger.node import SoloNode
from peerpower.ledger.replay import verify_path
from peerpower.ledger.rules import check_header
from peerpower.ledger.state import Settled
from peerpower.ledger.transactions import decode_tx
from peerpower.market.orders import Book
from peerpower.market.result import ClearingResult, Totals, Trade
from tests.ledger.chain_helpers import (
    DEADLINE,
    DEPOSIT,
    END,
    GATE,
    KEYS,
    METER,
    SLOT,
    SLOT2,
    START,
    T0,
    Chain,
    make_genesis,
    new_chain,
    reading,
)

T1 = T0 + 2000


@pytest.fixture
def chain() -> Chain:
    return new_chain()


@pytest.mark.parametrize("flaw", ["fails-verify", "cannot-clear"])
def test_duties_leave_out_a_clearing_that_fails_verify(
    monkeypatch: pytest.MonkeyPatch, flaw: str
) -> None:
    # A proposer whose solver's clearing verify refuses — here one pushing 300 Wh through an
    # edge of capacity 0, as the call auction did before it split the market at full lines —
    # or which cannot clear the book at all leaves the slot out instead of stalling the chain;
    # the slot settles void.
    grid = GridTree.from_json(
        {
            "nodes": [
                {"id": "root", "parent": None},
                {"id": "n1", "parent": "root", "capacity_wh": 0},
                {"id": "n2", "parent": "root"},
            ]
        }
    )
    real = node_module.clear

    def flawed(
        book: Book,
        mechanism: str,
        goal: str | None = None,
        pricing: str | None = None,
        maxmin_budget: int | None = None,
    ) -> ClearingResult:
        honest = real(book, mechanism, goal, pricing, maxmin_budget)
        assert honest.trades == ()  # the call auction splits the market at the full line
        if flaw == "cannot-clear":
            raise ClearingError("mechanism", "this solver cannot clear the book")
        unit = Trade("a#1", "b#1", "a", "b", 300, 1500, 0, 1500)
        welfare = (2000 - 1000) * 300 * 10
        return dataclasses.replace(
            honest,
            trades=(unit,),
            totals=Totals(300, welfare, 0, 0),
            clearing_price_sen_per_kwh=1500,
        )

    monkeypatch.setattr(node_module, "clear", flawed)
    base = make_genesis()
    genesis = dataclasses.replace(base, market=MarketRules("call", None, grid=grid))
    assert genesis.market.pricing == "nodal"  # the call auction's one rule
    chain = Chain(genesis, SoloNode(genesis, "val", KEYS["val"]))
    op = chain.signer("op")
    chain.produce(
        T0 + 1000,
        op.register("a", KEYS["a"].public_hex, KEYS[METER["a"]].public_hex, "n1", "pv"),
        op.register("b", KEYS["b"].public_hex, KEYS[METER["b"]].public_hex, "n2", "consumer"),
        op.deposit("a", DEPOSIT),
        op.deposit("b", DEPOSIT),
    )
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 300, 1000),
        chain.signer("b").order(SLOT, "buy", 300, 2000),
    )
    chain.produce(GATE)
    block = chain.produce(GATE + 1000)  # the seed is known: a clearing would come here
    assert block.txs == ()
    chain.produce(DEADLINE + 1000)  # settled void: every margin back
    assert chain.state.get("settled", SLOT) == Settled(SLOT, 0, 0, 0, 0, 0, 0, 0, (), True)
    assert chain.acct("a").locked_microyen == chain.acct("b").locked_microyen == 0


@pytest.mark.parametrize("slot", ["9999-12-31#47", "0001-01-01#00", "1970-01-01#00"])
def test_invalid_format_slot_outside_the_years(chain: Chain, slot: str) -> None:
    bad = chain.signer("a").order(slot, "sell", 100, 1000)
    with pytest.raises(InvalidTransaction) as info:
        decode_tx(bad, chain.genesis.tx_chain)
    assert info.value.rule == "format"
    assert slot in info.value.message
    assert "1971–9998" in info.value.message


def test_invalid_time_beyond_year_9998(chain: Chain) -> None:
    state = chain.state
    header = Header(
        chain.genesis.chain_id,
        state.height + 1,
        state.head_hash,
        MAX_TIME_MS + 1,
        "val",
        bytes(32),
        0,
        bytes(32),
    )
    with pytest.raises(InvalidBlock) as info:
        check_header(state, Block(header, ()), chain.genesis)
    assert (info.value.height, info.value.rule) == (state.height + 1, "time")
    assert str(MAX_TIME_MS + 1) in info.value.message


@pytest.mark.parametrize("gate", [0, 1440])
def test_invalid_genesis_gate_minutes(gate: int) -> None:
    obj = make_genesis().to_json()
    obj["market"]["gate_minutes"] = gate
    with pytest.raises(InvalidInput) as info:
        Genesis.from_json(obj)
    assert info.value.field == "genesis.market.gate_minutes"
    assert str(gate) in info.value.message


def test_invalid_genesis_two_accounts_with_one_key() -> None:
    obj = make_genesis(validators=("val", "val2")).to_json()
    obj["accounts"][-1]["key"] = obj["accounts"][-2]["key"]
    with pytest.raises(InvalidInput) as info:
        Genesis.from_json(obj)
    assert info.value.field == f"genesis.accounts[{len(obj['accounts']) - 1}].key"
    assert "another account's key" in info.value.message


def test_released_margin_repays_a_debt_first() -> None:
    sell_rate = 3000 * 10 // 100  # 300 sen/kWh with sell_margin_percent = 10
    slot2_margin = sell_rate * 100 * 10  # a sell of 100 Wh: 300 000 µ¥
    chain = new_chain(
        Params(sell_margin_percent=10),
        deposits={"a": sell_rate * 1000 * 10 + slot2_margin, "b": DEPOSIT, "c": DEPOSIT},
    )
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)  # 800 Wh a#1 → b#1 at the node price 1500 (a#1's ask)
    chain.produce(START + 1000, chain.signer("a").order(SLOT2, "sell", 100, 1500))  # a#2
    chain.produce(END + 1000, reading("a", SLOT, 0, 0), reading("b", SLOT, 800, 0))
    chain.produce(DEADLINE + 1000)
    # penalty 3000 × 800 × 10 = 24 000 000 against margin 2 400 000 + released 600 000 +
    # proceeds 12 000 000: 9 000 000 unpaid; a#2's margin stays locked
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        slot2_margin,
        9_000_000,
    )
    retail = chain.acct("retail").balance_microyen
    chain.produce(DEADLINE + 2000, chain.signer("a").cancel("a#2"))
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        0,
        9_000_000 - slot2_margin,
    )
    assert chain.acct("retail").balance_microyen == retail + slot2_margin


def test_invalid_canonical_block_line(tmp_path: Path) -> None:
    _db, jsonl, _node = write_example(tmp_path / "chain")
    lines = jsonl.read_text().splitlines()
    # the same block written with spaces: same data, not the canonical text
    lines[1] = json.dumps(json.loads(lines[1]), sort_keys=True)
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidBlock) as info:
        verify_path(spaced)
    assert (info.value.height, info.value.rule) == (1, "canonical")
    # a duplicate key that json keeps the last of: also refused
    block = json.loads(jsonl.read_text().splitlines()[1])
    canonical_line = json.dumps(block, sort_keys=True, separators=(",", ":"))
    lines[1] = '{"commit":[],' + canonical_line[1:]
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidBlock) as info:
        verify_path(twice)
    assert (info.value.height, info.value.rule) == (1, "canonical")


def test_mempool_refuses_duplicates_and_overflow(chain: Chain) -> None:
    from peerpower.ledger.mempool import Mempool

    pool = Mempool(chain.genesis, "val", limit=2)
    state = chain.state
    first = chain.signer("a").order(SLOT, "sell", 100, 1000)
    pool.submit(state, first, T1)
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(state, first, T1)
    assert info.value.rule == "duplicate"
    # the next nonce after a waiting one is accepted; one beyond the limit is refused
    pool.submit(state, chain.signer("a", skip=1).order(SLOT, "sell", 100, 1000), T1)
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(state, chain.signer("b").order(SLOT, "buy", 100, 2000), T1)
    assert info.value.rule == "mempool-full"
    assert len(pool) == 2
    # a skipped nonce is refused with the nonce rule, and nothing is kept
    big = Mempool(chain.genesis, "val")
    with pytest.raises(InvalidTransaction) as info:
        big.submit(state, chain.signer("a", skip=3).order(SLOT, "sell", 100, 1000), T1)
    assert info.value.rule == "nonce"
    assert len(big) == 0
