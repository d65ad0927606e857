"""A chain kept in SQLite survives a restart, and its export verifies by replay from genesis;
a changed line does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerpower.errors import InvalidBlock
from peerpower.ledger.node import SoloNode
from peerpower.ledger.replay import export, replay, verify_path
from peerpower.ledger.store import Store
from tests.ledger.chain_helpers import (
    DEADLINE,
    END,
    FEE_GRID,
    GATE,
    KEYS,
    SLOT,
    T0,
    Chain,
    new_chain,
    reading,
)

NODES = {"a": "far", "b": "root", "c": "root"}


def lifecycle(chain: Chain) -> None:
    """Orders, clearing, readings, settlement: 800 Wh at far's node price 1500 sen/kWh (a#1's
    ask), root's 1600 = 1500 + the 100 fee for b; a exports 500 Wh of them (300 Wh short)."""
    chain.produce(
        T0 + 2000,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)
    chain.produce(END + 1000, reading("a", SLOT, 0, 500), reading("b", SLOT, 800, 0))
    chain.produce(DEADLINE + 1000)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, Chain]:
    path = tmp_path / "chain.db"
    store = Store(path, create=True)
    chain = new_chain(grid=FEE_GRID, nodes=NODES, store=store)
    lifecycle(chain)
    store.close()
    return path, chain


def test_store_restart_continues_at_the_last_block(stored: tuple[Path, Chain]) -> None:
    path, chain = stored
    with Store(path) as store:
        node = SoloNode(chain.genesis, "val", KEYS["val"], store)
        assert node.height == chain.state.height == 6
        assert node.state.root == chain.state.root
        assert node.state.to_json() == chain.state.to_json()
        node.submit(chain.signer("c").withdraw(5), DEADLINE + 2000)
        block = node.produce(DEADLINE + 2000)
        assert block.header.prev_hash == chain.blocks[-1].hash
        assert node.state.account("c").balance_microyen == 10**9 - 5  # type: ignore[union-attr]
    assert verify_path(path).blocks == 7


def test_export_verifies_by_replay(stored: tuple[Path, Chain], tmp_path: Path) -> None:
    path, chain = stored
    out = tmp_path / "chain.jsonl"
    with Store(path) as store:
        assert export(store, out) == 6
    summary = verify_path(out)
    # paid 1500 × 800 × 10, fee 100 × 800 × 10, no rent, penalty 3000 × 300 × 10
    assert summary.settled_microyen == 12_000_000 + 800_000 + 9_000_000
    assert summary.state_root == chain.state.root.hex()
    assert (summary.blocks, summary.transactions) == (6, 1 + 5 + 2 + 1 + 2 + 1)
    assert verify_path(path) == summary
    state, again = replay(chain.genesis, out.read_text().splitlines()[1:])
    assert state.root == chain.state.root
    assert again == summary


def _lines(path: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "chain.jsonl"
    with Store(path) as store:
        export(store, out)
    return out.read_text().splitlines()


def test_invalid_replay_changed_transaction(stored: tuple[Path, Chain], tmp_path: Path) -> None:
    path, chain = stored
    lines = _lines(path, tmp_path)
    block = json.loads(lines[1])
    deposit = next(tx for tx in block["txs"] if tx["body"]["type"] == "deposit")
    deposit["body"]["amount_microyen"] += 1  # the header still commits to the old one
    lines[1] = json.dumps(block, sort_keys=True, separators=(",", ":"))
    with pytest.raises(InvalidBlock) as info:
        replay(chain.genesis, lines[1:])
    assert (info.value.height, info.value.rule) == (1, "tx-root")


def test_invalid_replay_missing_block(stored: tuple[Path, Chain], tmp_path: Path) -> None:
    path, chain = stored
    lines = _lines(path, tmp_path)
    with pytest.raises(InvalidBlock) as info:
        replay(chain.genesis, [lines[1], lines[3]])
    assert (info.value.height, info.value.rule) == (3, "height")
    assert "block 3 does not follow block 1" in info.value.message


def test_invalid_replay_forged_commit(stored: tuple[Path, Chain], tmp_path: Path) -> None:
    path, chain = stored
    lines = _lines(path, tmp_path)
    block = json.loads(lines[2])
    block["commit"][0]["sig"] = KEYS["a"].sign(b"peerpower/commit/1\x00", bytes(32)).hex()
    lines[2] = json.dumps(block, sort_keys=True, separators=(",", ":"))
    with pytest.raises(InvalidBlock) as info:
        replay(chain.genesis, lines[1:])
    assert (info.value.height, info.value.rule) == (2, "commit")
