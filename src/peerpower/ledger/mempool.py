"""The mempool: transactions waiting for a block.

A transaction is taken only if the rules accept it on top of the committed state and the
transactions already waiting, at the time given (so nonces are in order per account: a skipped
or repeated nonce is refused); the same transaction twice is refused (rule ``duplicate``), and
so is any beyond ``limit`` waiting (rule ``mempool-full``). After a block is committed the
transactions it holds leave, and those the new state no longer accepts are dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

from peerpower.crypto import canonical_unchecked
from peerpower.errors import InvalidTransaction
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.rules import BlockContext, apply_tx, signer_key
from peerpower.ledger.state import Draft, State
from peerpower.ledger.transactions import Tx, decode_tx

MEMPOOL_LIMIT = 50_000


class Mempool:
    """Transactions waiting for a block, in arrival order (see the module notes)."""

    def __init__(self, genesis: Genesis, validator: str, limit: int = MEMPOOL_LIMIT) -> None:
        self.genesis = genesis
        self.validator = validator
        self.limit = limit
        self.txs: list[dict[str, Any]] = []
        # (message, signature) pairs whose signatures were checked on submission
        self.verified: set[tuple[bytes, bytes]] = set()
        self._seen: set[bytes] = set()
        self._draft: Draft | None = None
        self._base: State | None = None
        self._time = 0

    def __len__(self) -> int:
        return len(self.txs)

    def _ctx(self, state: State, time_ms: int) -> BlockContext:
        return BlockContext(state.height + 1, time_ms, state.head_hash, self.validator)

    def _draft_for(self, state: State) -> Draft:
        """The committed state with every waiting transaction applied. Kept between
        submissions (the time of each new one is its own: a waiting transaction that a later
        time makes invalid, e.g. an order past its gate, is left out when a block is built)."""
        if self._draft is None or self._base is not state:
            draft = state.draft()
            for waiting in self.txs:
                tx = decode_tx(waiting, self.genesis.tx_chain)
                known = True if (tx.message, tx.sig) in self.verified else None
                with contextlib.suppress(InvalidTransaction):
                    apply_tx(draft, tx, self.genesis, self._ctx(state, self._time), known)
            self._draft, self._base = draft, state
        return self._draft

    def submit(
        self,
        state: State,
        obj: dict[str, Any],
        time_ms: int,
        trusted: Collection[tuple[bytes, bytes]] = (),
    ) -> Tx:
        """Take ``obj`` if the rules accept it at ``time_ms``; else raise
        ``InvalidTransaction`` and keep nothing. ``trusted``: ``(message, signature)`` pairs
        already checked against the signer's key in ``state``."""
        if len(self.txs) >= self.limit:
            raise InvalidTransaction(
                "mempool-full",
                f"{len(self.txs)} transactions are waiting, the limit is {self.limit}",
            )
        key = canonical_unchecked(obj)
        if key in self._seen:
            raise InvalidTransaction("duplicate", "this transaction is already waiting")
        draft = self._draft_for(state)
        self._time = time_ms
        tx = decode_tx(obj, self.genesis.tx_chain)
        known = None
        if trusted and (tx.message, tx.sig) in trusted and signer_key(state, tx) is not None:
            known = True  # the committed key checked it before and cannot have changed
        apply_tx(draft, tx, self.genesis, self._ctx(state, time_ms), known)
        self.txs.append(obj)
        self._seen.add(key)
        self.verified.add((tx.message, tx.sig))
        return tx

    def clear(self) -> None:
        """Forget every waiting transaction."""
        self.txs, self.verified, self._seen = [], set(), set()
        self._draft = None

    def committed(self, state: State, included: Sequence[dict[str, Any]], time_ms: int) -> None:
        """A block holding ``included`` made ``state``: they leave, and what ``state`` no longer
        accepts is dropped."""
        done = {canonical_unchecked(tx) for tx in included}
        waiting = [tx for tx in self.txs if canonical_unchecked(tx) not in done]
        checked = self.verified
        self.txs, self.verified, self._seen = [], set(), set()
        self._draft = None
        for tx in waiting:
            with contextlib.suppress(InvalidTransaction):
                self.submit(state, tx, time_ms, checked)
