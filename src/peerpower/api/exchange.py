"""What the HTTP API reads and writes: one node's chain, behind a lock.

:class:`Exchange` holds a node (a :class:`~peerpower.ledger.node.SoloNode`) and answers in
JSON-ready dicts: transactions submitted (already signed by the client — the API never holds a
participant's key), the chain's status, blocks, accounts with their orders, contracts and
settlements, and the ladder of a slot's open orders. Every call takes the lock, so the HTTP
server's threads and the block producer see one state at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from peerpower.errors import InvalidInput
from peerpower.ledger.node import SoloNode
from peerpower.ledger.state import Account, Contracts, OrderRec, Settled
from peerpower.ledger.transactions import Tx
from peerpower.market.depth import ladder
from peerpower.market.orders import Order, Side
from peerpower.timeslots import Slot


class Exchange:
    """A node's chain for the API; ``clock`` gives the time [ms] blocks are made at."""

    def __init__(self, node: SoloNode, clock: Callable[[], int]) -> None:
        self.node = node
        self.clock = clock
        self.lock = threading.RLock()
        self.blocks: dict[int, dict[str, Any]] = {}

    # -- writes --------------------------------------------------------------------------------
    def submit(self, obj: dict[str, Any]) -> Tx:
        """Take a signed transaction into the mempool, or raise ``InvalidTransaction`` naming
        the rule (the state is left as it was)."""
        with self.lock:
            now = max(self.clock(), self.node.state.meta.time_ms)
            return self.node.submit(obj, now)

    def produce(self) -> dict[str, Any]:
        """Make the next block at the clock's time; returns its header."""
        with self.lock:
            t = max(self.clock(), self.node.state.meta.time_ms + 1)
            block = self.node.produce(t)
            self.blocks[block.height] = block.to_json()
            return block.to_json()["header"]  # type: ignore[no-any-return]

    # -- reads ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            meta = self.node.state.meta
            return {
                "chain": self.node.genesis.chain_id,
                "tx_chain": self.node.genesis.tx_chain,  # what transactions must carry
                "height": meta.height,
                "time_ms": meta.time_ms,
                "mempool": len(self.node.pool),
                "state_root": self.node.state.root.hex(),
            }

    def block(self, height: int) -> dict[str, Any] | None:
        with self.lock:
            return self.blocks.get(height)

    def account(self, account_id: str) -> dict[str, Any] | None:
        with self.lock:
            state = self.node.state
            acct = state.account(account_id)
            if not isinstance(acct, Account):
                return None
            orders = [
                rec.to_json()
                for rec in state.table("orders").values()
                if isinstance(rec, OrderRec) and rec.account == account_id
            ]
            contracts = []
            for slot, rec in state.table("contracts").items():
                if isinstance(rec, Contracts):
                    for u in rec.units:
                        if account_id in (u.seller, u.buyer):
                            contracts.append({"slot": slot, **u.to_json()})
            settled = [
                rec.to_json()
                for rec in state.table("settled").values()
                if isinstance(rec, Settled) and account_id in rec.defaulters
            ]
            return {
                "id": acct.id,
                "kind": acct.kind,
                "balance_microyen": acct.balance_microyen,
                "margin_microyen": acct.locked_microyen,
                "nonce": acct.nonce,
                "status": acct.status,
                "defaults": acct.defaults,
                "unpaid_microyen": acct.unpaid_microyen,
                "orders": sorted(orders, key=lambda o: o["seq"]),
                "contracts": contracts,
                "defaulted_in": settled,
            }

    def ladder(self, slot: str, depth: int | None = None) -> dict[str, Any]:
        """The SELL | PRICE | BUY ladder of ``slot``'s open orders, highest price first."""
        try:
            Slot.parse(slot)
        except InvalidInput as err:
            raise InvalidInput("slot", err.message) from None
        with self.lock:
            state = self.node.state
            orders = []
            for key in state.order_ids(slot):
                rec = state.get("orders", key)
                assert isinstance(rec, OrderRec)
                side = Side.SELL if rec.side == "sell" else Side.BUY
                orders.append(
                    Order(
                        rec.id,
                        rec.account,
                        side,
                        rec.energy_wh,
                        rec.price_sen_per_kwh,
                        rec.node,
                        rec.seq,
                    )
                )
            status = state.get("slots", slot)
        rows = [
            {
                "label": r.label,
                "price_sen_per_kwh": r.price_sen_per_kwh,
                "sell_wh": r.sell_wh,
                "buy_wh": r.buy_wh,
            }
            for r in ladder(orders, depth)
        ]
        return {
            "slot": slot,
            "status": getattr(status, "status", "open"),
            "orders": len(orders),
            "rows": rows,
        }
