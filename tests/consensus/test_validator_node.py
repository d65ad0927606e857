"""One validator node in-process: robust to a failing action; sync answers bounded in bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peerpower.consensus.localnet import homes, init
from peerpower.consensus.validator import Home, ValidatorNode
from peerpower.ledger.store import Store
from tests.ledger.chain_helpers import SLOT, T0, new_chain


def test_node_keeps_its_timers_when_a_broadcast_fails(tmp_path: Path) -> None:
    init(tmp_path / "net", 4)
    node = ValidatorNode(Home.load(homes(tmp_path / "net")[1]))  # val1 proposes height 1
    ticks: list[int] = []

    async def run() -> None:
        gossip = node.machine._gossip

        def counted() -> list:  # type: ignore[type-arg]
            ticks.append(1)
            return gossip()

        node.machine._gossip = counted  # type: ignore[method-assign]
        node.transport.max_frame = 700  # its proposal is bigger: broadcasting it fails
        await node.start()
        await asyncio.sleep(3.5)
        await node.stop()

    asyncio.run(run())
    assert len(ticks) >= 3  # one a second: the gossip timer survived the failed broadcast


def test_store_sync_lines_bounded_in_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", create=True)
    chain = new_chain(store=store)
    for k in range(5):
        chain.produce(T0 + 10_000 + k * 1000, chain.signer("a").order(SLOT, "sell", 100, 1000))
    lines = list(store.block_lines())
    assert len(lines) == 6
    sizes = [len(x) for x in lines]
    # a budget of two blocks' bytes gives two (from block 2), at least one even if too small
    got = store.block_lines_between(2, 6, sizes[1] + sizes[2])
    assert got == lines[1:3]
    assert store.block_lines_between(2, 6, 1) == lines[1:2]
    assert store.block_lines_between(7, 9, 10**9) == []
    store.close()
