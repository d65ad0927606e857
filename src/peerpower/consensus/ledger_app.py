"""The ledger as the application of consensus: blocks are the values agreed on.

A validator proposes the block :func:`peerpower.ledger.node.build_block` makes on its committed
state (its mempool, plus its duties: clearing sealed slots and settling due ones); it accepts a
proposal only if :func:`peerpower.ledger.rules.apply_block` does (every rule, the state root);
and when consensus decides a block it stores it with its commit certificate — the quorum of
precommit signatures over the block hash — together with the state it produces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peerpower.consensus.tendermint import Application, Decide
from peerpower.crypto import KeyPair
from peerpower.errors import InvalidBlock, InvalidInput, InvalidTransaction
from peerpower.ledger.blocks import Block, Signature, check_commit, quorum
from peerpower.ledger.claims import Claim, claim_from_json, make_claim
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.mempool import Mempool
from peerpower.ledger.node import build_block, starting_state
from peerpower.ledger.rules import apply_block, market_mismatch, slot_book
from peerpower.ledger.state import SlotRec, State
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Tx
from peerpower.market.clear import clear
from peerpower.market.optimal import certifiable
from peerpower.market.orders import Book
from peerpower.market.result import ClearingResult
from peerpower.market.verify import result_from_json, verify

# A proposal whose time is this far ahead of the validator's clock is refused [ms].
MAX_CLOCK_AHEAD_MS = 30_000
# Transactions a validator puts in one block at most (besides its duties), and their size
# [bytes of canonical JSON]: a block must fit well inside a network frame.
MAX_BLOCK_TXS = 5_000
MAX_BLOCK_BYTES = 8 << 20
# Refusals kept for inspection (the latest)
MAX_REFUSALS_KEPT = 10_000
# Relayed transactions kept unchecked at most (then they are checked at once)
MAX_RELAYED_UNCHECKED = 50_000


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
    max_block_txs: int = MAX_BLOCK_TXS
    keep_blocks: bool = True  # keep committed blocks in memory too (simulations, tests)
    # Blocks already built or checked by validators sharing this process (the simulator's, all
    # honest), by hash, with the state each produces: a block's hash fixes its parent, so its
    # state is the same for every validator; one reuses it instead of applying the block again
    # (building a block applies every rule to it, as checking it does).
    shared_checked: dict[bytes, State] | None = None
    # the time of the next block after a block decided at a time [ms] (None: commit_ms later)
    next_block_at: Callable[[int], int] | None = None
    state: State = field(init=False)
    pool: Mempool = field(init=False)
    blocks: list[Block] = field(init=False, default_factory=list)
    refused: list[tuple[int, str]] = field(init=False, default_factory=list)
    _checked: dict[bytes, State] = field(init=False, default_factory=dict)
    # proof of optimal clearing: slot → validator → (its claim, its result as JSON)
    claims: dict[str, dict[str, tuple[Claim, dict[str, Any]]]] = field(
        init=False, default_factory=dict
    )
    refused_claims: list[tuple[str, str]] = field(init=False, default_factory=list)
    outbox: list[dict[str, Any]] = field(init=False, default_factory=list)
    _early: list[dict[str, Any]] = field(init=False, default_factory=list)
    # sealed books by (slot, seed): a sealed slot's orders no longer change
    _books: dict[tuple[str, str], Book] = field(init=False, default_factory=dict)
    # transactions relayed by other validators, not yet checked (see on_app_message)
    _relayed: list[dict[str, Any]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.pool = Mempool(self.genesis, self.validator)
        self.state = starting_state(self.genesis, self.store)

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def mempool(self) -> list[dict[str, Any]]:
        return self.pool.txs

    def _time(self) -> int:
        return max(self.now_ms, self.state.meta.time_ms + 1)

    def submit(self, obj: dict[str, Any]) -> Tx:
        """Keep a transaction for a later block if the rules take it now on top of the
        committed state and the transactions already waiting; else raise
        ``InvalidTransaction`` (see :mod:`peerpower.ledger.mempool`)."""
        tx = self.pool.submit(self.state, obj, self._time())
        self.outbox.append({"tx": obj})  # relayed to the other validators
        return tx

    def on_app_message(self, message: dict[str, Any]) -> None:
        """A message from another validator's application: a relayed transaction (taken if
        the rules accept it here too) or a claim."""
        if not isinstance(message, dict):
            return
        if "tx" in message:
            # Checked only when this validator needs it, to propose: most are in a block
            # someone else proposed first, and leave unchecked (the block was checked).
            self._relayed.append(message["tx"])
            if len(self._relayed) > MAX_RELAYED_UNCHECKED:
                self._admit_relayed()
        elif "claim" in message:
            self.on_claim(message)

    def _admit_relayed(self) -> None:
        """Take into the mempool the relayed transactions the rules accept now."""
        relayed, self._relayed = self._relayed, []
        time_ms = self._time()
        for obj in relayed:
            with contextlib.suppress(InvalidTransaction):
                self.pool.submit(self.state, obj, time_ms)

    def waiting(self) -> int:
        """Transactions waiting here for a block: in the mempool, or relayed and unchecked."""
        return len(self.pool) + len(self._relayed)

    # -- Application -------------------------------------------------------------------------
    @property
    def _by_claims(self) -> bool:
        """Whether slots are recorded by a quorum of claims (optimal, several validators)."""
        return self.genesis.market.mechanism == "optimal" and len(self.genesis.validators) > 1

    def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
        if height != self.state.height + 1:
            raise InvalidBlock(
                height, "height", f"asked to propose, but the ledger is at {self.state.height}"
            )
        self._admit_relayed()
        time_ms = max(self.now_ms, self.state.meta.time_ms + 1)
        built = build_block(
            self.state,
            self.genesis,
            self.validator,
            self.key,
            time_ms,
            self.pool.for_block(self.max_block_txs),
            self.pool.verified,
            decisions=self.decisions() if self._by_claims else None,
            max_txs=self.max_block_txs,
            max_bytes=MAX_BLOCK_BYTES,
        )
        self._checked[built.block.hash] = built.state
        self._share(built.block.hash, built.state)
        self.pool.drop([obj for obj, _ in built.rejected])  # refused at this block's time
        return built.block.hash, built.block

    def block_interval_ms(self, default_ms: int) -> int:
        if self.next_block_at is None:
            return default_ms
        return max(0, self.next_block_at(self.now_ms) - self.now_ms)

    def validate(self, height: int, value: Any) -> bytes | None:
        if (
            not isinstance(value, Block)
            or value.height != height
            or height != self.state.height + 1
        ):
            return None
        block_hash = value.hash
        if block_hash in self._checked:
            return block_hash
        if value.header.time_ms > self.now_ms + MAX_CLOCK_AHEAD_MS:
            self.refused.append((value.height, "time: too far ahead of this validator's clock"))
            return None
        try:
            state = self._apply(value)
        except InvalidBlock as err:
            self.refused.append((value.height, f"{err.rule}: {err.message}"))
            del self.refused[:-MAX_REFUSALS_KEPT]
            return None
        self._checked[block_hash] = state
        return block_hash

    def _apply(self, block: Block) -> State:
        """:func:`apply_block` on the committed state, or the state another validator of this
        process found for the same block (see :attr:`shared_checked`)."""
        shared = self.shared_checked
        if shared is not None:
            found = shared.get(block.hash)
            if found is not None and found.height == self.state.height + 1:
                return found
        state = apply_block(self.state, block, self.genesis, self.pool.verified)
        self._share(block.hash, state)
        return state

    def _share(self, block_hash: bytes, state: State) -> None:
        shared = self.shared_checked
        if shared is not None:
            if len(shared) >= 256:
                shared.clear()
            shared[block_hash] = state

    def commit(self, decision: Decide) -> Block:
        """Store the decided block with its commit certificate and move to its state."""
        block = decision.value
        assert isinstance(block, Block) and block.hash == decision.value_id
        certificate = tuple(
            Signature(v.validator, v.sig)
            for v in sorted(decision.commit, key=lambda v: v.validator)
        )
        return self.accept(block.with_commit(certificate))

    def accept(self, block: Block) -> Block:
        """Store a committed ``block`` (its commit certificate is checked here: a block from a
        peer's storage is trusted only with a quorum of signatures) and move to its state.
        Raises ``InvalidBlock`` and changes nothing if the certificate or the block is bad."""
        if block.height != self.state.height + 1:
            raise InvalidBlock(block.height, "height", f"the next block is {self.state.height + 1}")
        check_commit(block, self.genesis)
        state = self._checked.get(block.hash)
        if state is None:
            state = self._apply(block)
        state = state.with_head(block.hash)
        if self.store is not None:
            self.store.append(block, state)
        self.state = state
        if self.keep_blocks:
            self.blocks.append(block)
        self._checked = {}
        self._claim_sealed()
        self.pool.committed(self.state, block.txs, self._time())
        if self._relayed:
            included = {obj.get("sig") for obj in block.txs}
            self._relayed = [
                obj
                for obj in self._relayed
                if not isinstance(obj, dict) or obj.get("sig") not in included
            ]
        return block

    # -- proof of optimal clearing ------------------------------------------------------------
    def take_outbox(self) -> list[dict[str, Any]]:
        """Claims (with their results) to share with the other validators."""
        out, self.outbox = self.outbox, []
        return out

    def _claim_sealed(self) -> None:
        """Clear every sealed slot with its seed that this validator has not claimed yet, sign
        a claim, and share it again after every block until the slot is recorded."""
        if not self._by_claims:
            return
        sealed = {}
        for slot, rec in self.state.table("slots").items():
            if isinstance(rec, SlotRec) and rec.status == "sealed" and rec.seed:
                sealed[slot] = rec.seed
        for slot in list(self.claims):
            if slot not in sealed:
                del self.claims[slot]
        for slot_seed in list(self._books):
            if sealed.get(slot_seed[0]) != slot_seed[1]:
                del self._books[slot_seed]
        for slot, seed in sorted(sealed.items()):
            pool = self.claims.setdefault(slot, {})
            if self.validator not in pool and self.key is not None:
                book = self._sealed_book(slot, seed)
                if not book.orders:
                    continue
                result = self.clearing(book)
                recorded = result.to_json()
                recorded.pop("bound", None)  # a float estimate, not part of the clearing
                pool[self.validator] = (
                    make_claim(self.key, self.validator, slot, seed, result),
                    recorded,
                )
            mine = pool.get(self.validator)
            if mine is not None:
                self.outbox.append({"claim": mine[0].to_json(), "result": mine[1]})
        early, self._early = self._early, []
        for message in early:
            self.on_claim(message)

    def clearing(self, book: Book) -> ClearingResult:
        """This validator's clearing of a sealed book, by the market's rules."""
        market = self.genesis.market
        return clear(book, "optimal", market.goal, market.pricing, market.maxmin_budget)

    def _sealed_book(self, slot: str, seed: str) -> Book:
        """The book of ``slot``, sealed with ``seed`` in the committed state."""
        book = self._books.get((slot, seed))
        if book is None:
            book = slot_book(self.state, self.genesis, slot, bytes.fromhex(seed))
            self._books[(slot, seed)] = book
        return book

    def on_claim(self, message: dict[str, Any]) -> None:
        """Take another validator's claim after checking it in full: its signature, the slot
        and seed, and its result verified against this validator's own sealed book."""
        try:
            claim = claim_from_json(message.get("claim"), "claim")
            result = result_from_json(message.get("result"))
        except (InvalidInput, AttributeError) as err:
            self.refused_claims.append(("?", f"format: {err}"))
            return
        keys = {v.id: bytes.fromhex(v.key) for v in self.genesis.validators}
        key = keys.get(claim.validator)
        if key is None or not claim.check_signature(key):
            self.refused_claims.append((claim.validator, "signature"))
            return
        rec = self.state.get("slots", claim.slot)
        if not isinstance(rec, SlotRec) or rec.status != "sealed" or rec.seed != claim.seed:
            if len(self._early) < 10_000 and (
                rec is None or (isinstance(rec, SlotRec) and rec.status == "open")
            ):
                self._early.append(message)  # this validator has not sealed the slot yet
            return
        pool = self.claims.setdefault(claim.slot, {})
        if claim.validator in pool:
            return
        mismatch = market_mismatch(self.genesis.market, result)
        if mismatch is not None:
            self.refused_claims.append((claim.validator, f"{mismatch[0]}: {mismatch[1]}"))
            return
        book = self._sealed_book(claim.slot, claim.seed)
        checked = verify(book, result)
        why = ""
        if not checked.ok:
            why = f"clearing: {checked.problems[0][0]}"
        elif checked.objective != claim.objective or result.digest() != claim.digest:
            why = "the claim's objective or digest is not its result's"
        elif not checked.proven_optimal and certifiable(book, self.genesis.market.goal or ""):
            why = "optimality: no certificate"
        if why:
            self.refused_claims.append((claim.validator, why))
            return
        pool[claim.validator] = (claim, message["result"])

    def decisions(self) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Slot → (the best result, every claim) for slots claimed by a quorum."""
        need = quorum(len(self.genesis.validators))
        out = {}
        for slot, pool in sorted(self.claims.items()):
            if len(pool) >= need:
                best = max(pool.values(), key=lambda cr: cr[0].rank())
                claims = [c.to_json() for _, (c, _) in sorted(pool.items())]
                out[slot] = (best[1], claims)
        return out
