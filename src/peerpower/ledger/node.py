"""Making blocks: the validator's duties and one validator producing blocks alone (solo mode).

:func:`build_block` is what any proposer runs, and what consensus will call: on top of a state,
at a time, it seals slots, adds the proposer's own duties (clear every slot that is sealed and
has its seed; settle every slot past its meter deadline) and then as many of the given
transactions as the rules accept, and returns the unsigned block, the state it produces and the
transactions it left out with their errors.

:class:`SoloNode` is one validator that is also the whole network: it keeps a mempool, makes a
block when asked, signs the commit certificate itself and stores each block with its state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peerpower.crypto import KeyPair
from peerpower.errors import ClearingError, InvalidBlock, InvalidTransaction, PeerpowerError
from peerpower.ledger.blocks import Block, Header, check_commit, sign_commit, tx_root
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.mempool import Mempool
from peerpower.ledger.rules import (
    BlockContext,
    apply_block,
    apply_tx,
    begin_block,
    genesis_state,
    signer_key,
    slot_book,
    slot_times,
)
from peerpower.ledger.state import Draft, SlotRec, State
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer, Tx, decode_tx
from peerpower.market.clear import clear
from peerpower.market.verify import verify


@dataclass(frozen=True, slots=True)
class Built:
    """A block as built (unsigned), the state it produces and what was left out."""

    block: Block
    state: State
    rejected: tuple[tuple[dict[str, Any], InvalidTransaction], ...] = ()


def duties(
    draft: Draft,
    genesis: Genesis,
    ctx: BlockContext,
    signer: Signer,
    decisions: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] | None = None,
) -> list[dict[str, Any]]:
    """The clearing and settlement transactions the proposer owes at this block.

    Slots to clear: sealed, seed known, not cleared, with orders (cleared by the market's own
    mechanism, goal and pricing). Slots to settle: past their meter deadline. With
    ``decisions`` (slot → best result and a quorum of claims, on a chain of several validators)
    a slot is recorded by a ``decide`` transaction when it has one, and waits otherwise.
    """
    out: list[dict[str, Any]] = []
    market = genesis.market
    deadline_ms = genesis.params.meter_deadline_minutes * 60_000
    for key, rec in sorted(draft.items("slots")):
        assert isinstance(rec, SlotRec)
        end_ms = slot_times(key, market.gate_minutes).end_ms
        if ctx.time_ms > end_ms + deadline_ms:
            out.append(signer.settle(key))
        elif (
            rec.status == "sealed"
            and rec.seed
            and ctx.time_ms < slot_times(key, market.gate_minutes).start_ms
        ):
            if decisions is not None:
                if key in decisions:
                    result_json, claims = decisions[key]
                    out.append(signer.decide(key, result_json, claims))
                continue
            book = slot_book(draft, genesis, key, bytes.fromhex(rec.seed))
            if book.orders:
                try:
                    result = clear(
                        book, market.mechanism, market.goal, market.pricing, market.maxmin_budget
                    )
                except ClearingError:
                    continue  # e.g. a call auction over unequal fees: settled void later
                if not verify(book, result).ok:
                    continue  # e.g. a call auction ignoring a line capacity: settled void
                recorded = result.to_json()
                # A maxmin LP bound is a float estimate beside the clearing, not part of it,
                # and floats are not canonical: it stays off the chain.
                recorded.pop("bound", None)
                out.append(signer.clear(key, recorded))
    return out


def build_block(
    state: State,
    genesis: Genesis,
    proposer: str,
    key: KeyPair | None,
    time_ms: int,
    txs: Sequence[dict[str, Any]],
    verified: Mapping[tuple[bytes, bytes], bytes] | None = None,
    decisions: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] | None = None,
    max_txs: int | None = None,
    max_bytes: int | None = None,
) -> Built:
    """Build the next block on ``state`` (see the module notes). With ``key`` (the proposer's)
    the proposer's duties are added first. ``verified`` maps ``(message, signature)`` pairs
    already checked (on submission) to the key that checked them. At most ``max_txs`` of ``txs`` are
    taken (the rest wait for a later block)."""
    height = state.height + 1
    ctx = BlockContext(height, time_ms, state.head_hash, proposer)
    draft = state.draft()
    begin_block(draft, genesis, ctx)
    chosen: list[dict[str, Any]] = []
    rejected: list[tuple[dict[str, Any], InvalidTransaction]] = []
    own: list[dict[str, Any]] = []
    if key is not None:
        acct = draft.account(proposer)
        assert acct is not None
        own = duties(
            draft,
            genesis,
            ctx,
            Signer(genesis.tx_chain, proposer, key, acct.nonce + 1),
            decisions,
        )
    for obj in own:  # the proposer's own duties must pass: a failure here is a bug
        apply_tx(draft, decode_tx(obj, genesis.tx_chain), genesis, ctx)
        chosen.append(obj)
    taken = 0
    size = 0
    for obj in txs:
        if max_txs is not None and taken >= max_txs:
            break
        try:
            tx = decode_tx(obj, genesis.tx_chain)
            if max_bytes is not None and size + len(tx.encoded()) > max_bytes:
                break
            # A signature checked on submission holds if the signer's key here is the same.
            known = None
            if verified:
                checked_by = verified.get((tx.message, tx.sig))
                if checked_by is not None and checked_by == signer_key(draft, tx):
                    known = True
            apply_tx(draft, tx, genesis, ctx, known)
        except InvalidTransaction as err:
            rejected.append((obj, err))
            continue
        chosen.append(obj)
        taken += 1
        size += len(tx.encoded())
    new = draft.freeze()
    header = Header(
        genesis.chain_id,
        height,
        state.head_hash,
        time_ms,
        proposer,
        tx_root(chosen),
        len(chosen),
        new.root,
    )
    block = Block(header, tuple(chosen))
    return Built(block, new.with_head(block.hash), tuple(rejected))


def starting_state(genesis: Genesis, store: Store | None) -> State:
    """Where a validator starts: its store's last committed state, or the genesis state."""
    return genesis_state(genesis) if store is None else store.initialise(genesis)


@dataclass
class SoloNode:
    """One validator producing and committing every block (solo mode).

    ``submit`` checks a transaction against the state and the mempool at a given time and keeps
    it (or raises ``InvalidTransaction``, keeping nothing); ``produce`` makes, signs, stores and
    returns the next block. With a ``store`` every block is committed to SQLite with its state.
    """

    genesis: Genesis
    validator: str
    key: KeyPair
    store: Store | None = None
    state: State = field(init=False)
    pool: Mempool = field(init=False)
    dropped: list[tuple[dict[str, Any], InvalidTransaction]] = field(
        init=False, default_factory=list
    )

    def __post_init__(self) -> None:
        if self.validator not in {v.id for v in self.genesis.validators}:
            raise PeerpowerError(f"{self.validator!r} is not a validator of this genesis")
        self.pool = Mempool(self.genesis, self.validator)
        self.state = starting_state(self.genesis, self.store)

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def mempool(self) -> list[dict[str, Any]]:
        """The transactions waiting for the next block."""
        return self.pool.txs

    def submit(self, obj: dict[str, Any], time_ms: int | None = None) -> Tx:
        """Accept a transaction into the mempool if the rules take it at ``time_ms`` (default:
        the last block's time) on top of the state and the transactions already waiting."""
        when = self.state.meta.time_ms if time_ms is None else time_ms
        return self.pool.submit(self.state, obj, when)

    def produce(self, time_ms: int) -> Block:
        """Make, sign, store and return the next block at ``time_ms``."""
        if time_ms <= self.state.meta.time_ms:
            raise InvalidBlock(
                self.state.height + 1, "time", f"time {time_ms} is not after the last block's"
            )
        built = build_block(
            self.state,
            self.genesis,
            self.validator,
            self.key,
            time_ms,
            self.pool.txs,
            self.pool.verified,
        )
        block = built.block.with_commit((sign_commit(self.key, self.validator, built.block.hash),))
        self.dropped.extend(built.rejected)
        self._commit(block, built.state)
        return block

    def accept(self, block: Block) -> State:
        """Check a block made elsewhere (rules, roots, commit certificate) and commit it."""
        check_commit(block, self.genesis)
        state = apply_block(self.state, block, self.genesis)
        self._commit(block, state)
        return state

    def _commit(self, block: Block, state: State) -> None:
        if self.store is not None:
            self.store.append(block, state)
        self.state = state
        # what the block left out was refused at this block's time and is in ``dropped``
        self.pool.clear()
