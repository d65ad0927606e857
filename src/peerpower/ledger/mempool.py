"""The mempool: transactions waiting for a block.

A transaction is taken only if the rules accept it on top of the committed state and the
transactions already waiting, at the time given (so nonces are in order per account: a skipped
or repeated nonce is refused); the same transaction twice is refused (rule ``duplicate``), and
so is any beyond ``limit`` waiting (rule ``mempool-full``). After a block is committed the
transactions it holds leave, and so do those whose nonce the new state has passed.

Checking against "the transactions already waiting" means a draft of the committed state with
them applied. Rebuilding it in full after every block would cost every waiting transaction's
rules at every block (a second a block at 10,000 waiting). Instead the draft is rebuilt lazily:
the transactions of accounts other than participants (the operator registering and funding
sites) are applied at once, with those of participants that have a withdrawal waiting (a
withdrawal pays the operator back, and the operator's deposits may count on it); any other
participant's waiting transactions only when that participant submits again — its orders,
cancels and readings touch only its own account, orders and readings, so no other check depends
on them. A waiting transaction the new state refuses (e.g. an order past its gate) is dropped
then, or when a block is built without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from peerpower.crypto import canonical_unchecked
from peerpower.errors import InvalidTransaction
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.rules import BlockContext, apply_tx, signer_key
from peerpower.ledger.state import Draft, State
from peerpower.ledger.transactions import Tx, decode_tx

MEMPOOL_LIMIT = 100_000
_TAKING_TURNS = frozenset({"order", "cancel", "meter"})  # a site's own transactions


class Mempool:
    """Transactions waiting for a block, in arrival order (see the module notes)."""

    def __init__(self, genesis: Genesis, validator: str, limit: int = MEMPOOL_LIMIT) -> None:
        self.genesis = genesis
        self.validator = validator
        self.limit = limit
        self.txs: list[dict[str, Any]] = []
        # (message, signature) pairs checked on submission → the key that checked them
        self.verified: dict[tuple[bytes, bytes], bytes] = {}
        self._seen: set[bytes] = set()
        # canonical bytes → the decoded transaction and the key that checked its signature
        self._decoded: dict[bytes, tuple[Tx, bytes | None]] = {}
        self._draft: Draft | None = None
        self._base: State | None = None
        self._applied: set[str] = set()  # participants whose waiting txs are in the draft
        self._time = 0
        self._key_of: dict[int, bytes] = {}  # id(obj) → canonical bytes, for waiting objs
        self._index: dict[str, list[dict[str, Any]]] | None = None  # sender → its waiting txs
        self._last_ctx: BlockContext | None = None
        self._ids: dict[bytes, str] = {}  # canonical bytes → transaction id, for find

    def _by_sender(self, sender: str) -> list[dict[str, Any]]:
        if self._index is None:
            self._index = {}
            for obj in self.txs:
                self._index.setdefault(self._entry(obj)[1].sender, []).append(obj)
        return self._index.get(sender, [])

    def _key(self, obj: dict[str, Any]) -> bytes:
        key = self._key_of.get(id(obj))
        if key is not None:
            return key
        try:
            tx = decode_tx(obj, self.genesis.tx_chain)
        except InvalidTransaction:
            return canonical_unchecked(obj)
        return tx.encoded() if obj["sig"] == tx.sig.hex() else canonical_unchecked(obj)

    def __len__(self) -> int:
        return len(self.txs)

    def find(self, tx_id: str) -> dict[str, Any] | None:
        """The waiting transaction whose id (:attr:`Tx.id`) is ``tx_id``, if any (ids are
        kept between calls: a lookup hashes only what arrived since the last)."""
        ids = self._ids
        if len(ids) > 2 * len(self.txs) + 1000:  # most are gone: keep those still waiting
            ids.clear()
        found = None
        for obj in self.txs:
            key, tx, _ = self._entry(obj)
            got = ids.get(key)
            if got is None:
                got = ids[key] = tx.id
            if got == tx_id and found is None:
                found = obj
        return found

    def _ctx(self, state: State, time_ms: int) -> BlockContext:
        ctx = self._last_ctx
        if ctx is None or ctx.time_ms != time_ms or ctx.prev_hash != state.head_hash:
            ctx = BlockContext(state.height + 1, time_ms, state.head_hash, self.validator)
            self._last_ctx = ctx
        return ctx

    def _entry(self, obj: dict[str, Any]) -> tuple[bytes, Tx, bytes | None]:
        key = self._key(obj)
        got = self._decoded.get(key)
        if got is None:
            got = (decode_tx(obj, self.genesis.tx_chain), None)
        return key, got[0], got[1]

    def _participant(self, state: State, sender: str) -> bool:
        acct = state.account(sender)
        return acct is None or acct.kind == "participant"

    def _apply(self, draft: Draft, state: State, objs: list[dict[str, Any]]) -> None:
        """Apply waiting transactions to ``draft``; drop from the pool those refused."""
        refused = set()
        ctx = self._ctx(state, self._time)
        for obj in objs:
            key, tx, checked_by = self._entry(obj)
            same_key = checked_by is not None and checked_by == signer_key(draft, tx)
            try:
                apply_tx(draft, tx, self.genesis, ctx, True if same_key else None)
            except InvalidTransaction:
                refused.add(key)
        self._forget(refused)

    def _draft_for(self, state: State) -> Draft:
        """The committed state with the waiting transactions of every non-participant applied,
        and those of every participant with a waiting withdrawal (which pays the operator,
        whose deposits may need it), in arrival order; other participants' come in
        :meth:`_bring_in`."""
        if self._draft is None or self._base is not state:
            draft = state.draft()
            self._draft, self._base, self._applied = draft, state, set()
            entries = [(o, self._entry(o)[1]) for o in self.txs]
            tied = {tx.sender for _, tx in entries if tx.type == "withdraw"}
            first = [
                o
                for o, tx in entries
                if tx.sender in tied or not self._participant(state, tx.sender)
            ]
            self._applied |= tied
            self._apply(draft, state, first)
        return self._draft

    def _bring_in(self, draft: Draft, state: State, sender: str) -> None:
        """Apply ``sender``'s waiting transactions to the draft, once per draft."""
        if sender in self._applied or not self._participant(state, sender):
            return
        self._applied.add(sender)
        self._apply(draft, state, list(self._by_sender(sender)))

    def submit(self, state: State, obj: dict[str, Any], time_ms: int) -> Tx:
        """Take ``obj`` if the rules accept it at ``time_ms``; else raise
        ``InvalidTransaction`` and keep nothing."""
        if len(self.txs) >= self.limit:
            raise InvalidTransaction(
                "mempool-full",
                f"{len(self.txs)} transactions are waiting, the limit is {self.limit}",
            )
        tx = decode_tx(obj, self.genesis.tx_chain)
        # the canonical bytes of obj, at hand once decoded (the signature as written in hex)
        key = tx.encoded() if obj["sig"] == tx.sig.hex() else canonical_unchecked(obj)
        if key in self._seen:
            raise InvalidTransaction("duplicate", "this transaction is already waiting")
        self._time = max(self._time, time_ms)
        draft = self._draft_for(state)
        self._bring_in(draft, state, tx.sender)
        apply_tx(draft, tx, self.genesis, self._ctx(state, time_ms))
        self.txs.append(obj)
        if self._index is not None:
            self._index.setdefault(tx.sender, []).append(obj)
        self._key_of[id(obj)] = key
        self._seen.add(key)
        checked_by = signer_key(draft, tx)
        self._decoded[key] = (tx, checked_by)
        if checked_by is not None:
            self.verified[(tx.message, tx.sig)] = checked_by
        return tx

    def waiting_from(self, sender: str) -> list[Tx]:
        """``sender``'s waiting transactions, in arrival order."""
        return [self._entry(obj)[1] for obj in self._by_sender(sender)]

    def for_block(self, room: int | None = None) -> list[dict[str, Any]]:
        """The waiting transactions in the order a block with ``room`` for that many takes
        them: in arrival order if all fit; else each sender's in arrival (nonce) order, with
        the sites taking turns — every site's first waiting order, cancel
        or reading, then every site's second, and so on — so a site with many waiting (bidding
        for a whole day) does not keep others' out of full blocks until their gates pass. The
        operator's transactions (registering and funding sites, which sites' transactions may
        need) keep their place in the first turn; while a withdrawal waits (the operator's
        deposits may count on it) the order is simply that of arrival."""
        if room is None or len(self.txs) <= room:
            return list(self.txs)
        turn: dict[str, int] = {}
        keyed = []
        for k, obj in enumerate(self.txs):
            tx = self._entry(obj)[1]
            if tx.type == "withdraw":
                return list(self.txs)
            n = 0
            if tx.type in _TAKING_TURNS:
                n = turn.get(tx.sender, 0)
                turn[tx.sender] = n + 1
            keyed.append((n, k))
        keyed.sort()
        return [self.txs[k] for _, k in keyed]

    def clear(self) -> None:
        """Forget every waiting transaction."""
        self.txs, self.verified, self._seen, self._decoded = [], {}, set(), {}
        self._key_of = {}
        self._index = None
        self._draft = None

    def _forget(self, keys: set[bytes]) -> None:
        if not keys:
            return
        kept = []
        for obj in self.txs:
            key = self._key(obj)
            if key in keys:
                self._key_of.pop(id(obj), None)
                self._seen.discard(key)
                got = self._decoded.pop(key, None)
                if got is not None:
                    self.verified.pop((got[0].message, got[0].sig), None)
            else:
                kept.append(obj)
        self.txs = kept
        self._index = None

    def drop(self, objs: Sequence[dict[str, Any]]) -> None:
        """Forget ``objs`` (e.g. refused when a block was built: invalid at its time)."""
        self._forget({canonical_unchecked(obj) for obj in objs})
        self._draft = None

    def committed(self, state: State, included: Sequence[dict[str, Any]], time_ms: int) -> None:
        """A block holding ``included`` made ``state``: they leave, and so does every waiting
        transaction whose nonce ``state`` has passed (only the block's senders' nonces moved)."""
        gone = set()
        senders = set()
        for obj in included:
            key = self._key(obj)
            gone.add(key)
            got = self._decoded.get(key)
            if got is not None:
                senders.add(got[0].sender)
            else:
                with contextlib.suppress(InvalidTransaction):
                    senders.add(decode_tx(obj, self.genesis.tx_chain).sender)
        for sender in senders:
            acct = state.account(sender)
            if acct is None:
                continue
            for obj in self._by_sender(sender):
                key, tx, _ = self._entry(obj)
                if tx.nonce is not None and tx.nonce <= acct.nonce:
                    gone.add(key)
        self._forget(gone)
        self._time = max(self._time, time_ms)
        self._draft = None
