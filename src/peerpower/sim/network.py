"""The simulator's validators, in process and in virtual time: one (solo) or several agreeing by
Tendermint over the in-memory network (:class:`peerpower.net.memory.SimNetwork`), one block a
virtual minute — the same ledger and consensus code as ``peerpower node``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from peerpower.consensus.ledger_app import LedgerApp
from peerpower.consensus.tendermint import Decide, Tendermint, Timeouts
from peerpower.crypto import KeyPair, share_verified_signatures, verify_many
from peerpower.errors import InvalidTransaction
from peerpower.ledger.blocks import Block
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.mempool import Mempool
from peerpower.ledger.node import SoloNode
from peerpower.ledger.rules import signer_key
from peerpower.ledger.state import OrderRec, State
from peerpower.ledger.transactions import TX_DOMAIN, decode_tx, order_id
from peerpower.net.memory import SimNetwork

BLOCK_MS = 60_000
SLOT_MS = 30 * 60_000


def block_schedule(busy: tuple[int, int] | None) -> Callable[[int], int]:
    """When the block after one made at ``t`` [ms] comes: a minute later, or with ``busy =
    (before_ms, after_ms)`` a minute later only from ``before_ms`` before each slot boundary
    to ``after_ms`` after it (where bids, gates, clearings and settlements fall), and otherwise
    at the start of the next such stretch: no empty blocks in between."""

    def next_at(t: int) -> int:
        nxt = t + BLOCK_MS
        if busy is None:
            return nxt
        before, after = busy
        into = nxt % SLOT_MS  # slot boundaries fall on whole half hours (JST is UTC+9:00)
        if into <= after or into >= SLOT_MS - before:
            return nxt
        return nxt - into + SLOT_MS - before

    return next_at


class Validators:
    """``keys`` (validator id → key, genesis order) running the chain from ``genesis``; blocks
    follow :func:`block_schedule` with ``busy``."""

    def __init__(
        self,
        genesis: Genesis,
        keys: dict[str, KeyPair],
        seed: int,
        busy: tuple[int, int] | None = None,
    ) -> None:
        self.genesis = genesis
        self.next_block_at = block_schedule(busy)
        self.t0 = genesis.time_ms
        self.names = list(keys)
        self.refused: list[tuple[dict[str, Any], str]] = []
        self._solo: SoloNode | None = None
        self._apps: dict[str, LedgerApp] = {}
        self._net: SimNetwork | None = None
        self._now = self.t0
        self._solo_blocks: list[Block] = []
        if len(keys) == 1:
            name = self.names[0]
            self._solo = SoloNode(genesis, name, keys[name])
            return
        # The validators share this process: a signature one of them checked holds for all,
        # and so does the state a block produces (its hash fixes its parent).
        share_verified_signatures()
        checked: dict[bytes, State] = {}
        self._apps = {
            n: LedgerApp(
                genesis, n, keys[n], shared_checked=checked, next_block_at=self.next_block_at
            )
            for n in self.names
        }
        validators = [(n, keys[n].public) for n in self.names]
        timeouts = Timeouts(commit_ms=BLOCK_MS)
        machines = {
            n: Tendermint(validators, n, keys[n], self._apps[n], timeouts=timeouts)
            for n in self.names
        }

        def tick(v: str, now: int) -> None:
            self._apps[v].now_ms = self.t0 + now

        def decided(v: str, decision: Decide, now: int) -> None:
            self._apps[v].commit(decision)

        self._net = SimNetwork(
            machines,
            keys,
            seed,
            delay_ms=(1, 50),
            on_decide=decided,
            clock=tick,
            outbox=lambda v: self._apps[v].take_outbox(),
            on_app=lambda v, message: self._apps[v].on_app_message(message),
        )
        self._net.start()

    @property
    def state(self) -> State:
        if self._solo is not None:
            return self._solo.state
        return self._apps[self.names[0]].state

    @property
    def blocks(self) -> list[Block]:
        if self._solo is not None:
            return self._solo_blocks
        return self._apps[self.names[0]].blocks

    def submit(self, txs: Sequence[dict[str, Any]]) -> int:
        """Hand ``txs`` to a validator (the first; it relays them); returns how many it
        refused (they are kept in :attr:`refused` with the rule)."""
        refused = 0
        if self._apps and len(txs) >= 512:
            self._check_signatures(txs)
        for tx in txs:
            try:
                if self._solo is not None:
                    self._solo.submit(tx, max(self._now, self._solo.state.meta.time_ms))
                else:
                    app = self._apps[self.names[0]]
                    app.now_ms = self._now
                    app.submit(tx)
            except InvalidTransaction as err:
                refused += 1
                if len(self.refused) < 10_000:
                    self.refused.append((tx, err.rule))
        return refused

    @property
    def front(self) -> SoloNode | LedgerApp:
        """The validator clients reach (it relays what they submit to the others)."""
        return self._solo if self._solo is not None else self._apps[self.names[0]]

    @property
    def now_ms(self) -> int:
        """Virtual time [ms]: how far the validators have run."""
        return self._now

    @property
    def _pool(self) -> Mempool:
        """The mempool of the validator clients reach."""
        return self._solo.pool if self._solo is not None else self._apps[self.names[0]].pool

    def next_nonce(self, account: str) -> int:
        """The nonce the account's next transaction must carry at the validator clients reach:
        its committed nonce, after those of its transactions waiting there."""
        acct = self.state.account(account)
        nonce = 0 if acct is None else acct.nonce
        waiting = [tx.nonce for tx in self._pool.waiting_from(account) if tx.nonce is not None]
        return max([nonce, *waiting]) + 1

    def open_orders(self, accounts: set[str]) -> dict[str, list[OrderRec]]:
        """The open orders of ``accounts``, committed or waiting at the validator clients
        reach, in nonce order."""
        out: dict[str, list[OrderRec]] = {a: [] for a in accounts}
        state = self.state
        for rec in state.table("orders").values():
            if isinstance(rec, OrderRec) and rec.account in out:
                out[rec.account].append(rec)
        pool = self._pool
        for account, recs in out.items():
            cancelled = set()
            for tx in pool.waiting_from(account):
                b = tx.body
                if tx.type == "cancel":
                    cancelled.add(b["order"])
                elif tx.type == "order" and tx.nonce is not None:
                    oid = order_id(account, tx.nonce)
                    recs.append(
                        OrderRec(
                            oid,
                            account,
                            b["slot"],
                            b["side"],
                            b["energy_wh"],
                            b["price_sen_per_kwh"],
                            "",
                            0,
                            0,
                        )
                    )
            recs[:] = [r for r in recs if r.id not in cancelled]
            recs.sort(key=lambda r: int(r.id.rsplit("#", 1)[1]))
        return out

    def _check_signatures(self, txs: Sequence[dict[str, Any]]) -> None:
        """Check the signatures of a batch on every core at once; the validators then find
        them among the signatures checked in this process."""
        state = self.state
        checks = []
        for obj in txs:
            try:
                tx = decode_tx(obj, self.genesis.tx_chain)
            except InvalidTransaction:
                continue  # the validator will say why
            key = signer_key(state, tx)
            if key is not None:
                checks.append((key, TX_DOMAIN, tx.message, tx.sig))
        verify_many(checks)

    def advance(self, time_ms: int) -> None:
        """Run the validators until virtual ``time_ms``."""
        if self._solo is not None:
            node = self._solo
            t = self.next_block_at(max(node.state.meta.time_ms, self.t0))
            while t <= time_ms:
                self._solo_blocks.append(node.produce(t))
                t = self.next_block_at(t)
        else:
            assert self._net is not None
            with contextlib.suppress(IndexError):
                self._net.run(lambda: False, time_ms - self.t0)
        self._now = max(self._now, time_ms)
