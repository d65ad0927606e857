"""The ledger as the application of consensus: blocks are the values agreed on.

A validator proposes the block :func:`peerpower.ledger.node.build_block` makes on its committed
state (its mempool, plus its duties: clearing sealed slots and settling due ones); it accepts a
proposal only if :func:`peerpower.ledger.rules.apply_block` does (every rule, the state root);
and when consensus decides a block it stores it with its commit certificate — the quorum of
precommit signatures over the block hash — together with the state it produces.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from peerpower.consensus.tendermint import Application, Decide
from peerpower.crypto import KeyPair, canonical_unchecked
from peerpower.errors import InvalidBlock, InvalidTransaction
from peerpower.ledger.blocks import Block, Signature, check_commit
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.node import build_block
from peerpower.ledger.rules import BlockContext, apply_block, apply_tx, genesis_state
from peerpower.ledger.state import Draft, State
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Tx, decode_tx

# A proposal whose time is this far ahead of the validator's clock is refused [ms].
MAX_CLOCK_AHEAD_MS = 30_000


@dataclass
class LedgerApp(Application):
    """One validator's ledger under consensus.

    ``now_ms`` is the validator's clock, set by whoever drives it (virtual time in simulation,
    the wall clock on a real node) before each input to the consensus machine.
    """

    genesis: Genesis
    validator: str
    key: KeyPair | None
    store: Store | None = None
    now_ms: int = 0
    state: State = field(init=False)
    mempool: list[dict[str, Any]] = field(init=False, default_factory=list)
    blocks: list[Block] = field(init=False, default_factory=list)
    refused: list[tuple[int, str]] = field(init=False, default_factory=list)
    _checked: dict[bytes, State] = field(init=False, default_factory=dict)
    _pending: Draft | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.store is None:
            self.state = genesis_state(self.genesis)
        else:
            self.state = self.store.initialise(self.genesis)

    @property
    def height(self) -> int:
        return self.state.height

    def submit(self, obj: dict[str, Any]) -> Tx:
        """Keep a transaction for a later block if the rules take it now on top of the
        committed state and the transactions already waiting; else raise
        ``InvalidTransaction``."""
        if self._pending is None:
            self._pending = self.state.draft()
            for waiting in self.mempool:
                with contextlib.suppress(InvalidTransaction):
                    self._apply_pending(waiting)
        tx = self._apply_pending(obj)
        self.mempool.append(obj)
        return tx

    def _apply_pending(self, obj: dict[str, Any]) -> Tx:
        assert self._pending is not None
        tx = decode_tx(obj, self.genesis.tx_chain)
        ctx = BlockContext(
            self.state.height + 1,
            max(self.now_ms, self.state.meta.time_ms + 1),
            self.state.head_hash,
            self.validator,
        )
        apply_tx(self._pending, tx, self.genesis, ctx)
        return tx

    # -- Application -------------------------------------------------------------------------
    def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
        time_ms = max(self.now_ms, self.state.meta.time_ms + 1)
        built = build_block(
            self.state, self.genesis, self.validator, self.key, time_ms, self.mempool
        )
        self._checked[built.block.hash] = built.state
        return built.block.hash, built.block

    def validate(self, height: int, value: Any) -> bytes | None:
        if not isinstance(value, Block) or value.height != self.state.height + 1:
            return None
        block_hash = value.hash
        if block_hash in self._checked:
            return block_hash
        if value.header.time_ms > self.now_ms + MAX_CLOCK_AHEAD_MS:
            self.refused.append((value.height, "time: too far ahead of this validator's clock"))
            return None
        try:
            state = apply_block(self.state, value, self.genesis)
        except InvalidBlock as err:
            self.refused.append((value.height, f"{err.rule}: {err.message}"))
            return None
        self._checked[block_hash] = state
        return block_hash

    def commit(self, decision: Decide) -> Block:
        """Store the decided block with its commit certificate and move to its state."""
        block = decision.value
        assert isinstance(block, Block) and block.hash == decision.value_id
        certificate = tuple(
            Signature(v.validator, v.sig)
            for v in sorted(decision.commit, key=lambda v: v.validator)
        )
        block = block.with_commit(certificate)
        check_commit(block, self.genesis)
        state = self._checked.get(block.hash)
        if state is None:
            state = apply_block(self.state, block, self.genesis)
        state = state.with_head(block.hash)
        if self.store is not None:
            self.store.append(block, state)
        self.state = state
        self.blocks.append(block)
        done = {canonical_unchecked(tx) for tx in block.txs}
        waiting = [tx for tx in self.mempool if canonical_unchecked(tx) not in done]
        self._checked = {}
        self._pending = self.state.draft()
        self.mempool = []
        for tx in waiting:  # what the new state no longer takes is dropped
            try:
                self._apply_pending(tx)
            except InvalidTransaction:
                continue
            self.mempool.append(tx)
        return block
