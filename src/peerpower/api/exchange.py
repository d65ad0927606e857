"""What the HTTP API reads and writes: one validator's chain, behind a lock.

:class:`Exchange` holds a node — a consensus validator's :class:`~peerpower.consensus.
ledger_app.LedgerApp` (``peerpower serve --devnet``) or a :class:`~peerpower.ledger.node.
SoloNode` — and answers in JSON-ready dicts: transactions submitted (already signed by the
client: the API never holds a participant's key), the chain's status and market rules, blocks
and transactions, accounts with their orders, contracts, settlements and defaults, the ladder
of a slot's open orders, the clearing of a slot and the price history.

Every call takes the lock, so the HTTP server's threads and whatever drives the validator see
one state at a time. As blocks are committed the exchange indexes them (transaction ids, the
contracts each clearing made — the ledger drops them once the slot is settled) and keeps a
numbered list of events for the WebSocket stream: new blocks, trades (a slot's balanced units)
and book changes (a slot's ladder after a block changed its open orders).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from peerpower.consensus.ledger_app import LedgerApp
from peerpower.errors import InvalidInput
from peerpower.ledger.blocks import Block
from peerpower.ledger.node import SoloNode
from peerpower.ledger.rules import as_order, from_ms, slot_orders, to_ms
from peerpower.ledger.state import Account, Contract, Contracts, OrderRec, Settled, SlotRec, State
from peerpower.ledger.transactions import Tx, parse_slot, tx_id_of
from peerpower.market.depth import ladder
from peerpower.timeslots import JST, Slot
from peerpower.units import money_microyen

KEEP_BLOCKS = 5_000  # blocks kept for /blocks (their transactions are indexed as long)
KEEP_CLEARINGS = 48 * 30  # cleared slots kept for /slots/{slot}/clearing and /prices
KEEP_EVENTS = 5_000


class Exchange:
    """A validator's chain for the API; ``clock`` gives the time [ms] a solo node makes blocks
    at and checks transactions against."""

    def __init__(self, node: SoloNode | LedgerApp, clock: Callable[[], int]) -> None:
        self.node = node
        self.genesis = node.genesis
        self.clock = clock
        self.lock = threading.RLock()
        self.blocks: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.tx_heights: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.cleared: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.event_seq = 0
        self._books: dict[str, tuple[frozenset[str], str]] = {}
        self._cleared_at: dict[str, int] = {}  # slot → the block that cleared it
        # slot → the clearing's pricing rule and node prices (nodal pricing)
        self._priced_at: dict[str, tuple[str, dict[str, int] | None]] = {}
        self._height = 0
        self.fault: str | None = None  # what stopped the node's driver, if anything
        self._sync()

    # -- writes --------------------------------------------------------------------------------
    def submit(self, obj: dict[str, Any]) -> Tx:
        """Take a signed transaction into the mempool, or raise ``InvalidTransaction`` naming
        the rule (the state is left as it was)."""
        with self.lock:
            node = self.node
            if isinstance(node, SoloNode):
                return node.submit(obj, max(self.clock(), node.state.meta.time_ms))
            return node.submit(obj)

    def produce(self) -> dict[str, Any]:
        """Make the next block at the clock's time (solo node only); returns its header."""
        with self.lock:
            node = self.node
            if not isinstance(node, SoloNode):
                raise TypeError("blocks of a consensus validator are made by consensus")
            block = node.produce(max(self.clock(), node.state.meta.time_ms + 1))
            self._add_block(block)
            self._sync()
            return block.to_json()["header"]  # type: ignore[no-any-return]

    # -- following the chain -------------------------------------------------------------------
    def follow(self) -> None:
        """Index what was committed since the last call: whatever drives the node calls it
        after each block (a slot's contracts are on the chain only until it settles)."""
        with self.lock:
            self._sync()

    def _sync(self) -> None:
        """Index what was committed since the last call and record its events."""
        node = self.node
        if isinstance(node, LedgerApp) and node.blocks:
            first = node.blocks[0].height
            for block in node.blocks[max(0, self._height + 1 - first) :]:
                self._add_block(block)
        state = node.state
        if state.height == self._height:
            return
        self._height = state.height
        self._follow_clearings(state)
        self._follow_books(state)

    def _event(self, kind: str, **data: Any) -> None:
        self.event_seq += 1
        self.events.append({"seq": self.event_seq, "type": kind, **data})

    def _add_block(self, block: Block) -> None:
        if block.height in self.blocks:
            return
        obj = block.to_json()
        self.blocks[block.height] = obj
        ids = []
        for i, raw in enumerate(block.txs):
            ids.append(tid := tx_id_of(raw))
            self.tx_heights[tid] = (block.height, i)
            if raw["body"]["type"] in ("clear", "decide"):
                slot = str(raw["body"]["slot"])
                self._cleared_at[slot] = block.height
                result = raw["body"]["result"]
                self._priced_at[slot] = (
                    str(result.get("pricing")),
                    result.get("node_prices_sen_per_kwh"),
                )
        obj["tx_ids"] = ids
        while len(self.blocks) > KEEP_BLOCKS:
            _, old = self.blocks.popitem(last=False)
            for tx_id in old["tx_ids"]:
                self.tx_heights.pop(tx_id, None)
        header = obj["header"]
        self._event(
            "block",
            height=block.height,
            hash=obj["hash"],
            time_ms=header["time_ms"],
            proposer=header.get("proposer"),
            txs=len(block.txs),
        )

    def _follow_clearings(self, state: State) -> None:
        for slot, rec in state.table("contracts").items():
            if slot in self.cleared or not isinstance(rec, Contracts):
                continue
            height = self._cleared_at.pop(slot, self._height)
            pricing, node_prices = self._priced_at.pop(slot, (self.genesis.market.pricing, None))
            summary = clearing_summary(slot, rec.units, height, rec.digest, pricing, node_prices)
            self.cleared[slot] = summary
            while len(self.cleared) > KEEP_CLEARINGS:
                self.cleared.popitem(last=False)
            self._event("trade", **summary)

    def _follow_books(self, state: State) -> None:
        slots = {}
        for slot, rec in state.table("slots").items():
            if isinstance(rec, SlotRec) and rec.status != "cleared":
                slots[slot] = (state.order_ids(slot), rec.status)
        for slot in list(self._books):
            if slot not in slots:
                del self._books[slot]
                self._event("book", **self._ladder(state, slot, None))
        for slot, seen in slots.items():
            if self._books.get(slot) != seen:
                self._books[slot] = seen
                self._event("book", **self._ladder(state, slot, None))

    def events_since(self, seq: int) -> list[dict[str, Any]]:
        """The events numbered after ``seq`` that are still kept (oldest first)."""
        with self.lock:
            self._sync()
            if not self.events or self.events[-1]["seq"] <= seq:
                return []
            return [e for e in self.events if e["seq"] > seq]

    # -- reads ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            self._sync()
            node = self.node
            meta = node.state.meta
            waiting = len(node.pool) if isinstance(node, SoloNode) else node.waiting()
            return {
                "chain": self.genesis.chain_id,
                "tx_chain": self.genesis.tx_chain,  # what transactions must carry
                "validator": node.validator,
                "validators": [v.id for v in self.genesis.validators],
                "height": meta.height,
                "time_ms": meta.time_ms,
                "time": from_ms(meta.time_ms).isoformat() if meta.height else None,
                "mempool": waiting,
                "state_root": node.state.root.hex(),
                "events": self.event_seq,
                "error": self.fault,
            }

    def market(self) -> dict[str, Any]:
        """The market's rules and parameters, from the genesis."""
        g = self.genesis.to_json()
        return {"chain": self.genesis.chain_id, "market": g["market"], "params": g["params"]}

    def slots(self, days: int = 2) -> list[dict[str, Any]]:
        """Every slot the chain holds (open, sealed, or cleared and not yet settled), and the
        settled and void slots of the last ``days`` days, in time order."""
        with self.lock:
            self._sync()
            state = self.node.state
            since = from_ms(state.meta.time_ms) - timedelta(days=days)

            def recent(slot: str) -> bool:
                return Slot.parse(slot).start >= since

            out: dict[str, dict[str, Any]] = {}
            for slot, c in self.cleared.items():
                if not recent(slot):
                    continue
                out[slot] = {
                    "slot": slot,
                    "status": self._status(state, slot),
                    "orders": 0,
                    "volume_wh": c["volume_wh"],
                }
            for slot, settled in state.table("settled").items():
                if isinstance(settled, Settled) and settled.void and recent(slot):
                    out[slot] = {"slot": slot, "status": "void", "orders": 0, "volume_wh": 0}
            for slot, rec in state.table("slots").items():
                if not isinstance(rec, SlotRec):
                    continue
                row = out.setdefault(slot, {"slot": slot, "volume_wh": 0})
                row["status"] = rec.status
                row["orders"] = len(state.order_ids(slot))
            return sorted(out.values(), key=lambda r: Slot.parse(r["slot"]).start)

    def block(self, height: int) -> dict[str, Any] | None:
        with self.lock:
            self._sync()
            return self.blocks.get(height)

    def recent_blocks(self, limit: int) -> list[dict[str, Any]]:
        """The headers of the last ``limit`` blocks kept, newest first."""
        with self.lock:
            self._sync()
            out = []
            for height in reversed(self.blocks):
                b = self.blocks[height]
                out.append(
                    {
                        "height": height,
                        "hash": b["hash"],
                        "txs": len(b["txs"]),
                        "time_ms": b["header"]["time_ms"],
                        "proposer": b["header"].get("proposer"),
                    }
                )
                if len(out) >= limit:
                    break
            return out

    def transaction(self, tx_id: str) -> dict[str, Any] | None:
        """A transaction by id: committed (with its block) or waiting in the mempool."""
        with self.lock:
            self._sync()
            where = self.tx_heights.get(tx_id)
            if where is not None:
                height, index = where
                raw = self.blocks[height]["txs"][index]
                return {
                    "id": tx_id,
                    "status": "committed",
                    "height": height,
                    "index": index,
                    "tx": raw,
                }
            raw = self.node.pool.find(tx_id)
            if raw is not None:
                return {"id": tx_id, "status": "pending", "tx": raw}
            return None

    def account(self, account_id: str) -> dict[str, Any] | None:
        with self.lock:
            self._sync()
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
            settlements = []
            defaulted = []
            for slot, rec in state.table("settled").items():
                if not isinstance(rec, Settled):
                    continue
                if account_id in rec.defaulters:
                    defaulted.append(rec.to_json())
                mine = self._settlement(slot, account_id)
                if mine is not None:
                    mine["defaulted"] = account_id in rec.defaulters
                    settlements.append(mine)
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
                "settlements": settlements,
                "defaulted_in": defaulted,
            }

    def _settlement(self, slot: str, account_id: str) -> dict[str, Any] | None:
        """What ``account_id``'s contracts in a settled slot were worth: energy sold and
        bought, money received for sales and paid for purchases with their grid fees."""
        c = self.cleared.get(slot)
        if c is None:
            return None
        sold = bought = received = paid = 0
        for u in c["balanced_units"]:
            if u["seller"] == account_id:
                sold += u["energy_wh"]
                received += money_microyen(u["price_sen_per_kwh"], u["energy_wh"])
            if u["buyer"] == account_id:
                bought += u["energy_wh"]
                paid += money_microyen(u["buyer_price_sen_per_kwh"], u["energy_wh"])
        if not sold and not bought:
            return None
        return {
            "slot": slot,
            "sold_wh": sold,
            "bought_wh": bought,
            "received_microyen": received,
            "paid_microyen": paid,
        }

    def ladder(self, slot: str, depth: int | None = None) -> dict[str, Any]:
        """The SELL | PRICE | BUY ladder of ``slot``'s open orders, highest price first."""
        check_slot(slot)
        with self.lock:
            self._sync()
            return self._ladder(self.node.state, slot, depth)

    def _ladder(self, state: State, slot: str, depth: int | None) -> dict[str, Any]:
        orders = [as_order(rec) for rec in slot_orders(state, slot)]
        status = self._status(state, slot)
        rows = [
            {
                "label": r.label,
                "price_sen_per_kwh": r.price_sen_per_kwh,
                "sell_wh": r.sell_wh,
                "buy_wh": r.buy_wh,
            }
            for r in ladder(orders, depth)
        ]
        return {"slot": slot, "status": status, "orders": len(orders), "rows": rows}

    def _status(self, state: State, slot: str) -> str:
        """``open`` | ``sealed`` | ``cleared`` (on the chain), ``settled`` or ``void`` (never
        cleared, margins released), or ``closed``: past its gate with no orders."""
        rec = state.get("slots", slot)
        if isinstance(rec, SlotRec):
            return rec.status
        settled = state.get("settled", slot)
        if isinstance(settled, Settled):
            return "void" if settled.void else "settled"
        if slot in self.cleared:
            return "cleared"
        gate = Slot.parse(slot).start - timedelta(minutes=self.genesis.market.gate_minutes)
        return "closed" if state.meta.time_ms >= to_ms(gate) else "open"

    def clearing(self, slot: str) -> dict[str, Any] | None:
        """The balanced units a slot's clearing made, with their prices."""
        check_slot(slot)
        with self.lock:
            self._sync()
            return self.cleared.get(slot)

    def prices(self, day: date | None) -> dict[str, Any]:
        """Per cleared slot of ``day`` (default: the chain's day): volume, volume-weighted mean
        price, lowest and highest."""
        with self.lock:
            self._sync()
            if day is None:
                day = from_ms(self.node.state.meta.time_ms).astimezone(JST).date()
            points = []
            for slot, c in self.cleared.items():
                if Slot.parse(slot).start.astimezone(JST).date() == day:
                    points.append({k: c[k] for k in PRICE_KEYS})
        points.sort(key=lambda p: Slot.parse(p["slot"]).start)
        return {"day": day.isoformat(), "points": points}


PRICE_KEYS = (
    "slot",
    "volume_wh",
    "mean_buyer_price_sen_per_kwh",
    "mean_price_sen_per_kwh",
    "min_price_sen_per_kwh",
    "max_price_sen_per_kwh",
    "units",
)


def check_slot(slot: str) -> None:
    """``slot`` is a slot written as the chain writes it (``2026-08-18#01``, not ``…#1``)."""
    try:
        parse_slot(slot)
    except InvalidInput as err:
        raise InvalidInput("slot", err.message) from None


def clearing_summary(
    slot: str,
    units: tuple[Contract, ...],
    height: int,
    digest: str,
    pricing: str,
    node_prices: dict[str, int] | None,
) -> dict[str, Any]:
    """A cleared slot: how it was priced, the node prices (nodal pricing), its balanced units
    and their prices — what sellers get (mean weighted by energy, lowest, highest) and what
    buyers pay, fees and congestion rent included."""
    volume = sum(u.energy_wh for u in units)
    prices = [u.price_sen_per_kwh for u in units]
    mean = sum(u.price_sen_per_kwh * u.energy_wh for u in units) // volume if volume else None
    paid = sum(u.buyer_price_sen_per_kwh * u.energy_wh for u in units) // volume if volume else None
    return {
        "slot": slot,
        "height": height,
        "digest": digest,
        "pricing": pricing,
        "node_prices_sen_per_kwh": node_prices,
        "units": len(units),
        "volume_wh": volume,
        "mean_price_sen_per_kwh": mean,
        "min_price_sen_per_kwh": min(prices) if prices else None,
        "max_price_sen_per_kwh": max(prices) if prices else None,
        "mean_buyer_price_sen_per_kwh": paid,
        "balanced_units": [
            {
                "seller": u.seller,
                "buyer": u.buyer,
                "sell_order": u.sell_order,
                "buy_order": u.buy_order,
                "energy_wh": u.energy_wh,
                "price_sen_per_kwh": u.price_sen_per_kwh,
                "fee_sen_per_kwh": u.fee_sen_per_kwh,
                "buyer_price_sen_per_kwh": u.buyer_price_sen_per_kwh,
                "rent_sen_per_kwh": (
                    u.buyer_price_sen_per_kwh - u.price_sen_per_kwh - u.fee_sen_per_kwh
                ),
            }
            for u in units
        ],
    }


def day_of(text: str) -> date:
    """``YYYY-MM-DD`` → a date, or ``InvalidInput`` naming ``day``."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise InvalidInput("day", f"{text!r} is not a date YYYY-MM-DD") from None
