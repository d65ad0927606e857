"""The mempool: nonces in order across blocks, waiting transactions brought back lazily, and
what a block makes invalid dropped."""

from __future__ import annotations

import pytest

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidBlock, InvalidTransaction
from peerpower.ledger.mempool import Mempool
from peerpower.ledger.node import build_block
from peerpower.ledger.rules import apply_block
from peerpower.ledger.transactions import Signer
from tests.ledger.chain_helpers import (
    DEPOSIT,
    KEYS,
    SLOT,
    SLOT2,
    START,
    T0,
    Chain,
    new_chain,
    raw_block,
    signer,
)

T1 = T0 + 2000


@pytest.fixture
def chain() -> Chain:
    return new_chain()


def test_mempool_after_a_block_keeps_the_rest_in_nonce_order(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    a1 = chain.signer("a").order(SLOT, "sell", 100, 1000)
    a2 = chain.signer("a", skip=1).order(SLOT, "sell", 200, 1100)
    b1 = chain.signer("b").order(SLOT, "buy", 100, 2000)
    for tx in (a1, a2, b1):
        pool.submit(chain.state, tx, T1)
    chain.accept_built(T1 + 1000, a1)  # another validator's block took a's first only
    pool.committed(chain.state, [a1], T1 + 1000)
    assert pool.txs == [a2, b1]
    # a's waiting nonce 2 still counts: a different nonce-2 transaction is refused ...
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(chain.state, chain.signer("a", skip=0).order(SLOT, "sell", 300, 900), T1)
    assert info.value.rule == "nonce"
    # ... and nonce 3 follows it
    a3 = chain.signer("a", skip=1).order(SLOT, "sell", 300, 900)
    pool.submit(chain.state, a3, T1 + 1500)
    assert pool.txs == [a2, b1, a3]


def test_mempool_drops_what_the_committed_block_replaced(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    order = chain.signer("a").order(SLOT, "sell", 100, 1000)
    pool.submit(chain.state, order, T1)
    # a's nonce 1 went into a block as something else (sent to another validator)
    other = chain.signer("a").withdraw(10**6)
    chain.accept_built(T1 + 1000, other)
    pool.committed(chain.state, [other], T1 + 1000)
    assert pool.txs == []
    assert pool.verified == {}


def test_mempool_drops_a_waiting_order_the_gate_has_closed_on(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    late = chain.signer("a").order(SLOT, "sell", 100, 1000)
    pool.submit(chain.state, late, T1)
    # past SLOT's gate (and SLOT2 open): the waiting order can no longer go in
    chain.accept_built(START + 1000)
    pool.committed(chain.state, [], START + 1000)
    # a submits again: its waiting order is brought back, refused, and dropped; the new
    # transaction must then take nonce 1
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(
            chain.state, chain.signer("a", skip=1).order(SLOT2, "sell", 100, 1000), START + 1500
        )
    assert info.value.rule == "nonce"
    assert pool.txs == []
    fresh = chain.signer("a").order(SLOT2, "sell", 100, 1000)
    pool.submit(chain.state, fresh, START + 2000)
    assert pool.txs == [fresh]


def test_mempool_site_registered_by_a_waiting_transaction_can_trade(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    op = chain.signer("op")
    pool.submit(
        chain.state, op.register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "pv"), T1
    )
    pool.submit(chain.state, op.deposit("x", 10**9), T1)
    chain.accept_built(T1 + 500)  # an empty block: the registration is still waiting
    pool.committed(chain.state, [], T1 + 500)
    x = signer(chain.state, "x").order(SLOT, "buy", 100, 2000)
    pool.submit(chain.state, x, T1 + 1000)
    assert len(pool) == 3
    # without the operator's waiting transactions the site would be unknown
    bare = Mempool(chain.genesis, "val")
    with pytest.raises(InvalidTransaction) as info:
        bare.submit(chain.state, x, T1 + 1000)
    assert info.value.rule == "account"


def test_mempool_drop_forgets_transactions(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    a1 = chain.signer("a").order(SLOT, "sell", 100, 1000)
    b1 = chain.signer("b").order(SLOT, "buy", 100, 2000)
    pool.submit(chain.state, a1, T1)
    pool.submit(chain.state, b1, T1)
    pool.drop([a1])
    assert pool.txs == [b1]
    pool.submit(chain.state, a1, T1)  # no longer a duplicate
    assert pool.txs == [b1, a1]


def test_mempool_operator_deposit_funded_by_a_waiting_withdrawal_survives_a_block(
    chain: Chain,
) -> None:
    # a's withdrawal (waiting) pays the operator back; the operator's deposit to b needs it
    pool = Mempool(chain.genesis, "val")
    pool.submit(chain.state, chain.signer("a").withdraw(DEPOSIT), T1)
    op = chain.signer("op")
    big = op.deposit("b", chain.acct("op").balance_microyen + DEPOSIT - 10)
    pool.submit(chain.state, big, T1)
    small = op.deposit("c", 1)
    pool.submit(chain.state, small, T1)
    chain.accept_built(T1 + 500)  # an empty block from another validator
    pool.committed(chain.state, [], T1 + 500)
    # b's next submission brings the draft back: everything waiting still stands, in order
    pool.submit(chain.state, chain.signer("b").order(SLOT, "buy", 100, 2000), T1 + 1000)
    assert big in pool.txs and small in pool.txs
    built = build_block(chain.state, chain.genesis, "val", None, T1 + 1500, pool.txs)
    assert built.rejected == ()


def test_mempool_trusts_a_signature_only_under_the_key_that_checked_it(chain: Chain) -> None:
    # x is registered with key K1 while waiting, and its order signed with K1 is checked; then
    # the chain registers x with another key K2 (the operator sent two registrations)
    k1, k2 = KEYS["x"], KeyPair.derive("x-second-key")
    pool = Mempool(chain.genesis, "val")
    op = chain.signer("op")
    pool.submit(
        chain.state, op.register("x", k1.public_hex, KEYS["xm"].public_hex, "root", "pv"), T1
    )
    order = Signer(chain.genesis.tx_chain, "x", k1).order(SLOT, "buy", 100, 2000)
    pool.submit(chain.state, op.deposit("x", 10**9), T1)
    pool.submit(chain.state, order, T1)
    other = chain.signer("op").register("x", k2.public_hex, KEYS["xm"].public_hex, "root", "pv")
    chain.accept_built(T1 + 500, other)
    pool.committed(chain.state, [other], T1 + 500)
    assert order in pool.txs  # its nonce is still ahead
    built = build_block(chain.state, chain.genesis, "val", None, T1 + 1000, pool.txs, pool.verified)
    assert [err.rule for obj, err in built.rejected if obj == order] == ["signature"]
    block = raw_block(chain.state, chain.genesis, [order], T1 + 1000)
    with pytest.raises(InvalidBlock) as info:
        apply_block(chain.state, block, chain.genesis, pool.verified)
    assert info.value.rule == "signature"


def test_a_full_block_lets_the_sites_take_turns(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    a = chain.signer("a")
    many = [a.order(SLOT, "sell", 100, 1000 + k) for k in range(6)]  # a bids a lot
    b1 = chain.signer("b").order(SLOT, "buy", 100, 2000)
    c = chain.signer("c")
    c1, c2 = c.order(SLOT, "buy", 100, 2000), c.order(SLOT, "buy", 100, 2001)
    for tx in [*many, b1, c1, c2]:
        pool.submit(chain.state, tx, T1)
    # everything fits: arrival order
    assert pool.for_block(9) == pool.txs == [*many, b1, c1, c2]
    # a block with room for 4: every site's first, then the seconds — b's and c's bids are
    # not held back behind a's six
    turns = pool.for_block(4)
    assert turns[:4] == [many[0], b1, c1, many[1]]
    assert turns == [many[0], b1, c1, many[1], c2, *many[2:]]
    # and the block built from them is valid, with each site's nonces in order
    built = build_block(chain.state, chain.genesis, "val", None, T1 + 1000, turns, max_txs=4)
    assert list(built.block.txs) == turns[:4] and not built.rejected
    apply_block(chain.state, built.block, chain.genesis)


def test_a_waiting_withdrawal_keeps_arrival_order(chain: Chain) -> None:
    pool = Mempool(chain.genesis, "val")
    a = chain.signer("a")
    txs = [a.order(SLOT, "sell", 100, 1000), a.withdraw(10**6)]
    txs.append(chain.signer("b").order(SLOT, "buy", 100, 2000))
    for tx in txs:
        pool.submit(chain.state, tx, T1)
    assert pool.for_block(1) == txs


def test_invalid_self_cross_against_a_waiting_order(chain: Chain) -> None:
    # the rules judge an order on the committed state and what waits: a's waiting sell counts,
    # in a later block too; its waiting cancel frees the price again
    pool = Mempool(chain.genesis, "val")
    sell = chain.signer("a").order(SLOT, "sell", 100, 1500)  # a#1
    pool.submit(chain.state, sell, T1)
    pool.submit(chain.state, chain.signer("b").order(SLOT, "buy", 100, 2000), T1)
    crossing = chain.signer("a", skip=1).order(SLOT, "buy", 100, 1500)
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(chain.state, crossing, T1)
    assert info.value.rule == "self-cross"
    assert "'a#2' (buy, bid 1500 sen/kWh) would cross the open sell 'a#1'" in str(info.value)
    assert len(pool) == 2
    chain.accept_built(T1 + 1000, sell)  # the sell is now in the state
    pool.committed(chain.state, [sell], T1 + 1000)
    with pytest.raises(InvalidTransaction) as info:
        pool.submit(chain.state, crossing, T1 + 1000)
    assert info.value.rule == "self-cross"
    cancel = chain.signer("a").cancel("a#1")  # nonce 2
    pool.submit(chain.state, cancel, T1 + 1000)
    after_cancel = chain.signer("a", skip=1).order(SLOT, "buy", 100, 1500)  # a#3
    pool.submit(chain.state, after_cancel, T1 + 1000)
    assert pool.txs[-2:] == [cancel, after_cancel]
