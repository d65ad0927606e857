"""Block rules: the header checks of ``apply_block`` and the commit certificate.

Every rejection names the block's height and the rule, and leaves the state and the node as
they were.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidBlock
from peerpower.ledger.blocks import Block, check_commit, sign_commit
from peerpower.ledger.node import build_block
from peerpower.ledger.rules import apply_block, genesis_state
from tests.ledger.chain_helpers import KEYS, SLOT, T0, Chain, make_genesis, new_chain

T1 = T0 + 2000


@pytest.fixture
def chain() -> Chain:
    return new_chain()


def good_block(chain: Chain, time_ms: int = T1) -> Block:
    """A valid block 2: a places an order, c withdraws."""
    txs = [
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("c").withdraw(7),
    ]
    built = build_block(chain.state, chain.genesis, "val", None, time_ms, txs)
    assert built.rejected == ()
    return built.block


def refused(chain: Chain, block: Block, rule: str, *needles: str) -> InvalidBlock:
    """``apply_block`` and ``SoloNode.accept`` (with a valid commit) refuse ``block`` at its
    height for ``rule``; state and node are unchanged."""
    state = chain.state
    before = state.to_json()
    root = state.root
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, block, chain.genesis)
    err = info.value
    assert err.rule == rule
    assert err.height == block.height
    assert str(err).startswith(f"height {block.height}: {rule}: ")
    for needle in needles:
        assert needle in err.message, (needle, err.message)
    signed = block.with_commit((sign_commit(KEYS["val"], "val", block.hash),))
    with pytest.raises(InvalidBlock) as again:
        chain.node.accept(signed)
    assert (again.value.rule, again.value.height) == (rule, block.height)
    assert state.root == root
    assert state.to_json() == before
    assert chain.state is state
    return err


def with_header(block: Block, **fields: Any) -> Block:
    return Block(replace(block.header, **fields), block.txs)


def test_block_valid_is_accepted(chain: Chain) -> None:
    block = good_block(chain)
    signed = block.with_commit((sign_commit(KEYS["val"], "val", block.hash),))
    state = chain.node.accept(signed)
    assert state.height == 2
    assert state.root == block.header.state_root
    assert state.account("c").balance_microyen == 10**9 - 7  # type: ignore[union-attr]


def test_invalid_block_state_root(chain: Chain) -> None:
    block = good_block(chain)
    wrong = bytes.fromhex("ab" * 32)
    refused(chain, with_header(block, state_root=wrong), "state-root", "ab" * 32)


def test_invalid_block_state_root_of_other_content(chain: Chain) -> None:
    # the header's root is that of a block withdrawing 7 µ¥; the transactions withdraw 8
    block = good_block(chain)
    other = build_block(
        chain.state,
        chain.genesis,
        "val",
        None,
        T1,
        [chain.signer("a").order(SLOT, "sell", 1000, 1500), chain.signer("c").withdraw(8)],
    ).block
    forged = Block(replace(other.header, state_root=block.header.state_root), other.txs)
    refused(chain, forged, "state-root", block.header.state_root.hex())


def test_invalid_block_parent(chain: Chain) -> None:
    block = good_block(chain)
    wrong = bytes(32)
    refused(
        chain,
        with_header(block, prev_hash=wrong),
        "parent",
        f"prev_hash {wrong.hex()} is not the hash of block 1",
        chain.state.head_hash.hex(),
    )


@pytest.mark.parametrize("height", [1, 3, 0])
def test_invalid_block_height(chain: Chain, height: int) -> None:
    block = with_header(good_block(chain), height=height)
    refused(chain, block, "height", f"block {height} does not follow block 1")


@pytest.mark.parametrize("delta_ms", [0, -1])
def test_invalid_block_time_not_after_previous(chain: Chain, delta_ms: int) -> None:
    previous = chain.state.meta.time_ms
    assert previous == T0 + 1000
    block = good_block(chain, previous + delta_ms)
    refused(chain, block, "time", "2026-08-17T12:00:01", "is not after block 1")


def test_invalid_block_proposer(chain: Chain) -> None:
    refused(chain, with_header(good_block(chain), proposer="a"), "proposer", "'a'")
    refused(chain, with_header(good_block(chain), proposer="x"), "proposer", "'x'")


def test_invalid_block_chain(chain: Chain) -> None:
    refused(chain, with_header(good_block(chain), chain="other"), "chain", "'other'", "'test'")


def test_invalid_block_tx_count(chain: Chain) -> None:
    block = good_block(chain)
    refused(chain, with_header(block, tx_count=3), "tx-count", "header says 3", "block has 2")
    dropped = Block(block.header, block.txs[:1])  # a transaction left out after signing
    refused(chain, dropped, "tx-count", "header says 2", "block has 1")


def test_invalid_block_tx_root(chain: Chain) -> None:
    block = good_block(chain)
    swapped = Block(block.header, (block.txs[1], block.txs[0]))  # same count, another order
    refused(chain, swapped, "tx-root", block.header.tx_root.hex())


# -- commit certificate --------------------------------------------------------------------------


def test_commit_of_the_validator_passes(chain: Chain) -> None:
    block = good_block(chain)
    check_commit(block.with_commit((sign_commit(KEYS["val"], "val", block.hash),)), chain.genesis)


def test_invalid_commit_missing(chain: Chain) -> None:
    block = good_block(chain)
    with pytest.raises(InvalidBlock) as info:
        check_commit(block, chain.genesis)
    assert (info.value.rule, info.value.height) == ("commit", 2)
    assert "0 of 1 validators signed, 1 needed" in info.value.message
    state = chain.state
    with pytest.raises(InvalidBlock) as again:
        chain.node.accept(block)
    assert again.value.rule == "commit"
    assert chain.state is state


def test_invalid_commit_by_non_validator(chain: Chain) -> None:
    block = good_block(chain)
    forged = block.with_commit((sign_commit(KEYS["a"], "a", block.hash),))
    with pytest.raises(InvalidBlock) as info:
        check_commit(forged, chain.genesis)
    assert (info.value.rule, info.value.height) == ("commit", 2)
    assert "commit[0] is signed by 'a', not a validator" in info.value.message
    with pytest.raises(InvalidBlock):
        chain.node.accept(forged)
    assert chain.state.height == 1


def test_invalid_commit_validator_name_with_other_key(chain: Chain) -> None:
    block = good_block(chain)
    forged = block.with_commit((sign_commit(KEYS["a"], "val", block.hash),))
    with pytest.raises(InvalidBlock) as info:
        check_commit(forged, chain.genesis)
    assert info.value.rule == "commit"
    assert "commit[0]: bad signature by 'val'" in info.value.message


def test_invalid_commit_for_another_block(chain: Chain) -> None:
    block = good_block(chain)
    other = good_block(chain, T1 + 1)
    forged = block.with_commit((sign_commit(KEYS["val"], "val", other.hash),))
    with pytest.raises(InvalidBlock) as info:
        check_commit(forged, chain.genesis)
    assert "bad signature by 'val'" in info.value.message


def test_invalid_commit_quorum() -> None:
    # 4 validators: more than two thirds is 3
    names = ("val", "v2", "v3", "v4")
    keys = {n: KEYS["val"] if n == "val" else KeyPair.derive(n) for n in names}
    genesis = make_genesis(validators=names)
    block = build_block(
        genesis_state(genesis),
        genesis,
        "v2",
        None,
        T0 + 1,
        [],
    ).block
    two = tuple(sign_commit(keys[n], n, block.hash) for n in ("val", "v3"))
    with pytest.raises(InvalidBlock) as info:
        check_commit(block.with_commit(two), genesis)
    assert "2 of 4 validators signed, 3 needed" in info.value.message
    twice = (*two, sign_commit(keys["v3"], "v3", block.hash))
    with pytest.raises(InvalidBlock) as info:
        check_commit(block.with_commit(twice), genesis)
    assert "commit[2]: 'v3' signed twice" in info.value.message
    three = (*two, sign_commit(keys["v4"], "v4", block.hash))
    check_commit(block.with_commit(three), genesis)
