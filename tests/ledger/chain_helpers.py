"""Shared fixtures of the ledger tests: keys, a genesis, a chain driven by a solo node, and the
checks every rejection test makes (rule, message, state unchanged).

Times are written out by hand from the slot rules (DESIGN.md §2): slot ``2026-08-18#00`` starts
2026-08-18 00:00 JST, opens for orders 24 h earlier, closes at its gate 5 min before its start,
ends at 00:30 and takes meter readings until 01:30 (60 min, ``meter_deadline_minutes``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidBlock, InvalidTransaction
from peerpower.grid.tree import GridTree
from peerpower.ledger.blocks import Block, Header, sign_commit, tx_root
from peerpower.ledger.genesis import Genesis, GenesisAccount, MarketRules, Params
from peerpower.ledger.node import SoloNode, build_block
from peerpower.ledger.rules import BlockContext, apply_block, apply_tx, begin_block, to_ms
from peerpower.ledger.state import Account, Contracts, Draft, OrderRec, State
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer, decode_tx, meter_reading
from peerpower.market.result import Goal
from peerpower.timeslots import JST

CHAIN_ID = "test"
NAMES = ("op", "grid", "retail", "val", "a", "b", "c", "am", "bm", "cm", "x", "xm")
KEYS = {name: KeyPair.derive(name) for name in NAMES}
METER = {"a": "am", "b": "bm", "c": "cm", "x": "xm"}
OP_SUPPLY = 10**12  # µ¥, all the money there is: the operator's founding balance
DEPOSIT = 10**9  # µ¥ each participant gets in block 1


def jst(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
    """A JST wall-clock moment [ms since the epoch]."""
    return to_ms(datetime(year, month, day, hour, minute, second, tzinfo=JST))


T0 = jst(2026, 8, 17, 12, 0)  # genesis
SLOT = "2026-08-18#00"
OPENS = jst(2026, 8, 17, 0, 0)
GATE = jst(2026, 8, 17, 23, 55)
START = jst(2026, 8, 18, 0, 0)
END = jst(2026, 8, 18, 0, 30)
DEADLINE = jst(2026, 8, 18, 1, 30)
# the next day's first slot: opens 2026-08-18 00:00, gate 2026-08-18 23:55
SLOT2 = "2026-08-19#00"
GATE2 = jst(2026, 8, 18, 23, 55)
END2 = jst(2026, 8, 19, 0, 30)
DEADLINE2 = jst(2026, 8, 19, 1, 30)

FEE_GRID = {
    "nodes": [
        {"id": "root", "parent": None},
        {"id": "far", "parent": "root", "fee_sen_per_kwh": 100},
    ]
}


def make_genesis(
    params: Params | None = None,
    grid: dict[str, Any] | None = None,
    validators: tuple[str, ...] = ("val",),
    goal: Goal = "welfare",
    pricing: str | None = None,
) -> Genesis:
    """A genesis of an ``optimal`` market with ``goal`` and ``pricing`` (default: the goal's
    default, ``nodal`` for welfare) on ``grid`` (default: one node, ``root``)."""
    accounts = [
        GenesisAccount("op", "operator", KEYS["op"].public_hex, OP_SUPPLY),
        GenesisAccount("grid", "grid", KEYS["grid"].public_hex),
        GenesisAccount("retail", "retail", KEYS["retail"].public_hex),
    ]
    for v in validators:
        key = KEYS[v] if v in KEYS else KeyPair.derive(v)
        accounts.append(GenesisAccount(v, "validator", key.public_hex))
    tree = None if grid is None else GridTree.from_json(grid)
    market = MarketRules(goal=goal, grid=tree, pricing=pricing)
    genesis = Genesis(CHAIN_ID, T0, tuple(accounts), market, params or Params())
    _CURRENT[0] = genesis.tx_chain
    return genesis


# Transactions name their chain by its genesis hash, which depends on the test's parameters;
# the helpers below sign for the genesis made last (each test makes its chain first).
_CURRENT = [""]


def tx_chain() -> str:
    """The ``chain`` of the genesis made last by :func:`make_genesis`."""
    return _CURRENT[0]


def state_chain(state: State | Draft) -> str:
    """The ``chain`` of the genesis ``state`` grew from (its meta records the genesis hash)."""
    return state.meta.genesis


def signer(state: State | Draft, name: str, skip: int = 0, key: str | None = None) -> Signer:
    """A signer for ``name`` whose next nonce is the account's next one (+ ``skip``), signing
    with ``key`` (default: the account's own key)."""
    acct = state.account(name)
    nonce = (acct.nonce if acct is not None else 0) + 1 + skip
    return Signer(state_chain(state), name, KEYS[key or name], nonce)


def reading(site: str, slot: str, import_wh: int, export_wh: int, key: str | None = None) -> Any:
    """A meter reading of ``site`` signed by its meter key (or by ``key``)."""
    return meter_reading(tx_chain(), KEYS[key or METER[site]], site, slot, import_wh, export_wh)


@dataclass
class Chain:
    """A solo-node chain with participants a, b (and c) registered and funded in block 1."""

    genesis: Genesis
    node: SoloNode
    blocks: list[Block] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.node.state

    def acct(self, name: str) -> Account:
        a = self.state.account(name)
        assert a is not None
        return a

    def signer(self, name: str, skip: int = 0, key: str | None = None) -> Signer:
        return signer(self.state, name, skip, key)

    def produce(self, time_ms: int, *txs: dict[str, Any]) -> Block:
        """Submit ``txs`` (each must be accepted) and make the block at ``time_ms``; money is
        checked to equal the genesis supply after it."""
        for tx in txs:
            self.node.submit(tx, time_ms)
        block = self.node.produce(time_ms)
        assert self.node.dropped == []
        assert self.state.money_microyen() == self.genesis.supply_microyen == OP_SUPPLY
        check_locks(self.state)
        self.blocks.append(block)
        return block

    def accept_built(self, time_ms: int, *txs: dict[str, Any]) -> Block:
        """A block of exactly ``txs`` (no clearing or settlement duties), built, signed and
        accepted as if another validator had proposed it."""
        built = build_block(self.state, self.genesis, "val", None, time_ms, txs)
        assert built.rejected == ()
        block = built.block.with_commit((sign_commit(KEYS["val"], "val", built.block.hash),))
        self.node.accept(block)
        assert self.state.money_microyen() == OP_SUPPLY
        check_locks(self.state)
        self.blocks.append(block)
        return block

    def ctx(self, time_ms: int) -> BlockContext:
        return BlockContext(self.state.height + 1, time_ms, self.state.head_hash, "val")


def new_chain(
    params: Params | None = None,
    grid: dict[str, Any] | None = None,
    nodes: dict[str, str] | None = None,
    deposits: dict[str, int] | None = None,
    validators: tuple[str, ...] = ("val",),
    store: Store | None = None,
    goal: Goal = "welfare",
    pricing: str | None = None,
) -> Chain:
    """Genesis (see :func:`make_genesis`), then block 1 at T0 + 1 s registering the participants
    (at ``nodes``, default a, b, c at ``root``) and depositing ``deposits`` (default DEPOSIT
    each); blocks are kept in ``store`` if one is given."""
    genesis = make_genesis(params, grid, validators, goal, pricing)
    chain = Chain(genesis, SoloNode(genesis, validators[0], KEYS[validators[0]], store))
    nodes = nodes if nodes is not None else {"a": "root", "b": "root", "c": "root"}
    deposits = deposits if deposits is not None else dict.fromkeys(nodes, DEPOSIT)
    op = chain.signer("op")
    txs = [
        op.register(p, KEYS[p].public_hex, KEYS[METER[p]].public_hex, node, "pv")
        for p, node in nodes.items()
    ]
    txs += [op.deposit(p, amount) for p, amount in deposits.items() if amount]
    chain.produce(T0 + 1000, *txs)
    return chain


def check_locks(state: State) -> None:
    """Each account's locked margin is the margin of its open orders plus the locks of its
    contracts; no balance, lock or debt is negative; every contract's buyer pays at least the
    seller's price and the fee (the rest is rent); and no account's open orders in a slot cross
    (its highest bid is below its lowest ask: self-trade prevention)."""
    expected: dict[str, int] = defaultdict(int)
    bids: dict[tuple[str, str], int] = {}
    asks: dict[tuple[str, str], int] = {}
    for rec in state.table("orders").values():
        assert isinstance(rec, OrderRec)
        expected[rec.account] += rec.margin_microyen
        group = (rec.slot, rec.account)
        if rec.side == "buy":
            bids[group] = max(bids.get(group, -1), rec.price_sen_per_kwh)
        else:
            asks[group] = min(asks.get(group, 10**9), rec.price_sen_per_kwh)
    for group, bid in bids.items():
        assert bid < asks.get(group, 10**9), group
    for rec in state.table("contracts").values():
        assert isinstance(rec, Contracts)
        for c in rec.units:
            assert c.buyer_price_sen_per_kwh >= c.price_sen_per_kwh + c.fee_sen_per_kwh, c
            expected[c.seller] += c.seller_lock_microyen
            expected[c.buyer] += c.buyer_lock_microyen
    for rec in state.table("accounts").values():
        assert isinstance(rec, Account)
        assert rec.balance_microyen >= 0, rec
        assert rec.locked_microyen >= 0, rec
        assert rec.unpaid_microyen >= 0, rec
        assert rec.locked_microyen == expected.get(rec.id, 0), rec


def raw_block(
    state: State,
    genesis: Genesis,
    txs: list[dict[str, Any]],
    time_ms: int,
    state_root: bytes = bytes(32),
    **header: Any,
) -> Block:
    """A block on ``state`` holding ``txs`` as given (nothing checked or added); header fields
    may be overridden."""
    h = Header(
        genesis.chain_id,
        state.height + 1,
        state.head_hash,
        time_ms,
        "val",
        tx_root(txs),
        len(txs),
        state_root,
    )
    return Block(replace(h, **header), tuple(txs))


def assert_block_rejected(
    chain: Chain, time_ms: int, txs: list[dict[str, Any]], rule: str, *needles: str
) -> InvalidBlock:
    """``apply_block`` and ``SoloNode.accept`` refuse a block of ``txs`` naming the next height
    and ``rule``; the state (root and every table) and the node are left as they were."""
    state = chain.state
    before = state.to_json()
    root = state.root
    height = state.height + 1
    block = raw_block(state, chain.genesis, txs, time_ms)
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, block, chain.genesis)
    err = info.value
    assert err.rule == rule
    assert err.height == height
    assert str(err).startswith(f"height {height}: {rule}: ")
    for needle in needles:
        assert needle in err.message
    assert state.root == root
    assert state.to_json() == before
    signed = block.with_commit((sign_commit(KEYS["val"], "val", block.hash),))
    with pytest.raises(InvalidBlock) as again:
        chain.node.accept(signed)
    assert again.value.rule == rule
    assert chain.state is state
    assert chain.state.height == height - 1
    return err


def assert_rejected(
    chain: Chain,
    time_ms: int,
    bad: dict[str, Any],
    rule: str,
    *needles: str,
    valid: dict[str, Any] | None = None,
) -> InvalidTransaction:
    """The full check of one rejection.

    1. ``apply_tx`` of ``bad`` on a draft that already holds the ``valid`` transaction (default:
       c withdraws 1 µ¥) raises ``InvalidTransaction`` with ``rule`` and a message containing
       every needle, and the draft's root is the root with only the valid transaction;
    2. a block of [valid, bad] is refused by ``apply_block`` and ``SoloNode.accept`` naming the
       height, ``rule`` and ``txs[1]``, leaving the state as it was.
    """
    genesis = chain.genesis
    state = chain.state
    if valid is None:
        valid = signer(state, "c").withdraw(1)
    ctx = chain.ctx(time_ms)

    def with_valid() -> Draft:
        draft = state.draft()
        begin_block(draft, genesis, ctx)
        apply_tx(draft, decode_tx(valid, genesis.tx_chain), genesis, ctx)
        return draft

    only_valid = with_valid().freeze().root
    assert only_valid != state.root  # the valid transaction changes something
    draft = with_valid()
    with pytest.raises(InvalidTransaction) as info:
        apply_tx(draft, decode_tx(bad, genesis.tx_chain), genesis, ctx)
    err = info.value
    assert err.rule == rule
    for needle in needles:
        assert needle in err.message, (needle, err.message)
    assert draft.freeze().root == only_valid
    block_err = assert_block_rejected(chain, time_ms, [valid, bad], rule, "txs[1]", *needles)
    assert block_err.message.startswith("txs[1] ")
    return err
