"""The exchange contract: the state transition ``apply_block(state, block) -> state``.

Every transaction is checked in full before it writes anything, so a rejected transaction leaves
the state exactly as it was. A block is applied in four steps:

1. header: chain id, height = previous + 1, parent hash, time after the previous block's, a
   genesis validator as proposer, transaction count and Merkle root;
2. begin: the slot sealed by the previous block receives its seed (that block's hash); every
   slot whose gate has come (gate ≤ block time) is sealed at this height;
3. the transactions in order, each by the rules of its type (below);
4. the state root of the result must equal the header's.

Rules, by the name an error carries
-----------------------------------
format, chain       the transaction's shape and field types; its chain id
account             the sender (or the named account) is registered
role                the sender may send this type (operator, participant, validator)
signature           signed by the sender's key (a meter reading: by the site's meter key)
nonce               the sender's last nonce + 1: a replayed, repeated or skipped nonce is refused
duplicate-account   register: the id is free
node                register: the grid node exists
status              order: the participant is not suspended for defaults
unsettled-default   order, withdraw: the participant owes nothing from an earlier default
order-window        order: the slot opens for orders 24 h before it starts
gate                order, cancel: the slot's gate has not passed (block time < gate)
price-band, lot,    order: price within the market's band; energy a whole number of lots, at
order-size          most max_order_wh
self-cross          order: it does not meet an open order of the same account on the other side
                    of the same slot (a bid at or above its own ask, an ask at or below its own
                    bid): self-trade prevention, as exchanges do; the message names both orders
margin              order: free balance covers the margin the order locks
funds               deposit: the operator's balance covers it; withdraw: the free balance does
unknown-order,      cancel: the order is open and the sender's
owner
not-suspended       reinstate: the participant is suspended
slot-state          clear: the slot is sealed, has its seed, is not cleared; settle: it exists
clear-late          clear: the slot has not begun delivery (block time < slot start)
mechanism           clear: the result's mechanism and goal are the market's
pricing             clear: the result's pricing rule is the market's (``genesis.market.pricing``)
clearing            clear: the result passes ``market.verify`` against the sealed book; the
                    message names the rule of verify it breaks (e.g. ``pricing``: node prices
                    not the book's equilibrium, ``pairing``: units not the canonical pairing
                    of their fills, ``self-cross``: an order self-trade prevention leaves out)
claims              decide (an optimal market with more than one validator must use it, not
                    clear): a quorum of distinct validators' claims for the slot and its seed,
                    each validly signed, none beating the recorded result (ledger/claims.py)
optimality          clear, optimal market: the result states its objective (recomputed exactly),
                    and is proven optimal wherever the book admits a proof: under nodal pricing
                    by its node prices (a competitive equilibrium of the book), under midpoint
                    by an LP certificate (welfare, and volume without line capacities); the
                    secondary objective, the tie-break score and maxmin are compared among
                    validators' claims by consensus
meter-early,        meter: after the slot's end, until its meter deadline
meter-deadline
duplicate-reading   meter: one reading per site and slot
settle-early        settle: not before the slot's meter deadline

Money
-----
Placing an order locks its margin: a buy locks ``bid × energy`` (it pays at most its bid,
fee and rent included) plus ``buy_margin_percent`` of the imbalance charge on its energy; a sell
locks ``sell_margin_percent`` of the imbalance charge. Clearing turns balanced units into
contracts and releases the margin of what was not filled (and, for a buy, the part of its bid
above the contract's buyer price). A contract carries the seller's price and the buyer's price:
under ``nodal`` pricing each is its node's price, and the buyer's exceeds the seller's by the
path's fee plus the congestion rent; otherwise the buyer's price is the seller's plus the fee.
Settling a cleared slot: each buyer pays ``buyer price × energy``; each seller receives
``price × energy``; the grid operator receives the rest, fee and rent (recorded apart in
:class:`Settled`); each site's contracts in the slot net out (sold − bought), and a
net seller whose meter shows less net export than that, or a net buyer less net import, pays
``imbalance_price × shortfall`` to the retail provider, first
from their locked margin, then from their balance; what is still missing is recorded as unpaid
and paid to the retail provider first out of the next deposit, released margin or settlement
proceeds (until
then the participant can neither order nor withdraw). A slot's clearing must be recorded before
the slot starts; a slot not cleared by then settles void. A shortfall above
``default_tolerance_wh`` counts one default; ``default_limit`` defaults
suspend. A slot never cleared is settled void: its orders' margin is released. No rule creates
or destroys money.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from peerpower.crypto import canonical, merkle_root, verify_many, verify_signature
from peerpower.errors import InvalidBlock, InvalidInput, InvalidTransaction, PeerpowerError
from peerpower.ledger.blocks import Block, quorum, tx_root
from peerpower.ledger.claims import claim_from_json, rank
from peerpower.ledger.genesis import MAX_TIME_MS, Genesis, MarketRules
from peerpower.ledger.state import (
    Account,
    Contract,
    Contracts,
    Draft,
    Meta,
    OrderRec,
    Reading,
    Record,
    Settled,
    SlotRec,
    State,
    evolve,
)
from peerpower.ledger.transactions import TX_DOMAIN, Tx, decode_tx, order_id, parse_slot
from peerpower.market.optimal import certifiable
from peerpower.market.orders import Book, Order, Side
from peerpower.market.result import ClearingResult, Objective
from peerpower.market.verify import verify
from peerpower.units import money_microyen

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware moment."""
    return (moment - _EPOCH) // _MS


def from_ms(time_ms: int) -> datetime:
    from peerpower.timeslots import JST

    return (_EPOCH + time_ms * _MS).astimezone(JST)


@dataclass(frozen=True, slots=True)
class SlotTimes:
    """A slot's moments [ms since the epoch]."""

    opens_ms: int
    gate_ms: int
    start_ms: int
    end_ms: int


@functools.lru_cache(maxsize=4096)
def slot_times(slot: str, gate_minutes: int) -> SlotTimes:
    s = parse_slot(slot)
    return SlotTimes(to_ms(s.opens), to_ms(s.gate(gate_minutes)), to_ms(s.start), to_ms(s.end))


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a transaction may read of the block it is in."""

    height: int
    time_ms: int
    prev_hash: bytes
    proposer: str


def genesis_state(genesis: Genesis) -> State:
    """The state before block 1: the genesis accounts and zero counters."""
    accounts: dict[str, Record] = {
        a.id: Account(a.id, a.kind, a.key, balance_microyen=a.balance_microyen)
        for a in genesis.accounts
    }
    meta = Meta(0, genesis.time_ms, 1, 0, genesis.hash.hex())
    return State.build({"meta": {"chain": meta}, "accounts": accounts}, genesis.hash)


def _reject(rule: str, message: str) -> InvalidTransaction:
    return InvalidTransaction(rule, message)


_ROLE = {
    "register": "operator",
    "reinstate": "operator",
    "deposit": "operator",
    "withdraw": "participant",
    "order": "participant",
    "cancel": "participant",
    "clear": "validator",
    "decide": "validator",
    "settle": "validator",
}


def signer_key(draft: Draft | State, tx: Tx) -> bytes | None:
    """The public key that must have signed ``tx``, if its sender is known."""
    acct = draft.account(tx.sender)
    if acct is None:
        return None
    if tx.type == "meter":
        return None if acct.meter_key is None else bytes.fromhex(acct.meter_key)
    return bytes.fromhex(acct.key)


def apply_tx(
    draft: Draft, tx: Tx, genesis: Genesis, ctx: BlockContext, sig_ok: bool | None = None
) -> None:
    """Apply one decoded transaction to ``draft``, or raise ``InvalidTransaction`` having
    changed nothing. ``sig_ok`` is the signature check if it was already made."""
    acct = draft.account(tx.sender)
    if acct is None:
        who = "site" if tx.type == "meter" else "sender"
        raise _reject("account", f"{who} {tx.sender!r} is not registered")
    if tx.type == "meter":
        if acct.kind != "participant" or acct.meter_key is None:
            raise _reject("role", f"{tx.sender!r} is not a site with a meter")
    elif acct.kind != _ROLE[tx.type]:
        raise _reject(
            "role", f"{tx.type} must be sent by the {_ROLE[tx.type]}, {tx.sender!r} is {acct.kind}"
        )
    if sig_ok is None:
        key = signer_key(draft, tx)
        sig_ok = key is not None and verify_signature(key, TX_DOMAIN, tx.message, tx.sig)
    if not sig_ok:
        signer = "the meter key of" if tx.type == "meter" else "the key of"
        raise _reject("signature", f"{tx.type} is not signed by {signer} {tx.sender!r}")
    if tx.nonce is not None and tx.nonce != acct.nonce + 1:
        what = "replays or repeats an earlier one" if tx.nonce <= acct.nonce else "skips ahead"
        raise _reject(
            "nonce",
            f"nonce {tx.nonce} {what}: {tx.sender!r} last used {acct.nonce}, "
            f"the next must be {acct.nonce + 1}",
        )
    _HANDLERS[tx.type](draft, tx, acct, genesis, ctx)


def _bump(acct: Account) -> Account:
    return evolve(acct, nonce=acct.nonce + 1)


def _register(draft: Draft, tx: Tx, op: Account, genesis: Genesis, ctx: BlockContext) -> None:
    b = tx.body
    if draft.account(b["account"]) is not None:
        raise _reject("duplicate-account", f"account {b['account']!r} is already registered")
    if b["node"] not in genesis.market.grid.index:
        raise _reject("node", f"grid node {b['node']!r} is not in the genesis grid")
    draft.set_account(_bump(op))
    draft.set_account(
        Account(
            b["account"],
            "participant",
            b["key"],
            node=b["node"],
            meter_key=b["meter_key"],
            site_type=b["site_type"],
        )
    )


def _participant(draft: Draft, account_id: str) -> Account:
    acct = draft.account(account_id)
    if acct is None or acct.kind != "participant":
        raise _reject("account", f"{account_id!r} is not a registered participant")
    return acct


def _reinstate(draft: Draft, tx: Tx, op: Account, genesis: Genesis, ctx: BlockContext) -> None:
    target = _participant(draft, tx.body["account"])
    if target.status != "suspended":
        raise _reject("not-suspended", f"{target.id!r} is {target.status}, not suspended")
    draft.set_account(_bump(op))
    draft.update_account(target, status="active", defaults=0)


def _deposit(draft: Draft, tx: Tx, op: Account, genesis: Genesis, ctx: BlockContext) -> None:
    amount = tx.body["amount_microyen"]
    target = _participant(draft, tx.body["account"])
    if amount > op.balance_microyen:
        raise _reject(
            "funds", f"deposit of {amount} µ¥ exceeds the operator's {op.balance_microyen} µ¥"
        )
    draft.set_account(_bump(evolve(op, balance_microyen=op.balance_microyen - amount)))
    # A debt from an earlier default is paid first, to the retail provider who is owed it.
    debt = min(amount, target.unpaid_microyen)
    draft.update_account(
        target,
        balance_microyen=target.balance_microyen + amount - debt,
        unpaid_microyen=target.unpaid_microyen - debt,
    )
    if debt:
        _credit(draft, genesis.retail, debt)


def _credit(draft: Draft, account_id: str, amount: int) -> None:
    acct = draft.account(account_id)
    assert acct is not None
    draft.update_account(acct, balance_microyen=acct.balance_microyen + amount)


def _withdraw(draft: Draft, tx: Tx, acct: Account, genesis: Genesis, ctx: BlockContext) -> None:
    amount = tx.body["amount_microyen"]
    if acct.unpaid_microyen:
        raise _reject(
            "unsettled-default",
            f"{acct.id!r} owes {acct.unpaid_microyen} µ¥ from a default and cannot withdraw "
            "until it is paid",
        )
    if amount > acct.balance_microyen:
        raise _reject(
            "funds",
            f"withdrawal of {amount} µ¥ exceeds the free balance {acct.balance_microyen} µ¥ "
            f"of {acct.id!r} ({acct.locked_microyen} µ¥ locked as margin)",
        )
    draft.set_account(_bump(evolve(acct, balance_microyen=acct.balance_microyen - amount)))
    _credit(draft, genesis.operator, amount)


def order_margin(genesis: Genesis, side: str, energy_wh: int, price_sen_per_kwh: int) -> int:
    """Margin [µ¥] an order locks (see the module notes)."""
    p = genesis.params
    rate = p.buy_rate(price_sen_per_kwh) if side == "buy" else p.sell_rate()
    return money_microyen(rate, energy_wh)  # type: ignore[arg-type]


def _order(draft: Draft, tx: Tx, acct: Account, genesis: Genesis, ctx: BlockContext) -> None:
    b = tx.body
    market = genesis.market
    if acct.status != "active":
        raise _reject("status", f"{acct.id!r} is {acct.status} after {acct.defaults} defaults")
    if acct.unpaid_microyen:
        raise _reject(
            "unsettled-default",
            f"{acct.id!r} owes {acct.unpaid_microyen} µ¥ from a default; a deposit pays it",
        )
    slot = b["slot"]
    times = slot_times(slot, market.gate_minutes)
    if ctx.time_ms < times.opens_ms:
        raise _reject(
            "order-window",
            f"slot {slot} opens for orders at {from_ms(times.opens_ms).isoformat()}, "
            f"the block is at {from_ms(ctx.time_ms).isoformat()}",
        )
    if ctx.time_ms >= times.gate_ms:
        raise _reject(
            "gate",
            f"the gate of slot {slot} closed at {from_ms(times.gate_ms).isoformat()}, "
            f"the block is at {from_ms(ctx.time_ms).isoformat()}",
        )
    price = b["price_sen_per_kwh"]
    if not market.price_min_sen_per_kwh <= price <= market.price_max_sen_per_kwh:
        raise _reject(
            "price-band",
            f"price_sen_per_kwh {price} is outside the band "
            f"{market.price_min_sen_per_kwh}–{market.price_max_sen_per_kwh}",
        )
    energy = b["energy_wh"]
    if energy <= 0 or energy % market.lot_wh:
        raise _reject(
            "lot", f"energy_wh {energy} is not a whole positive number of {market.lot_wh} Wh lots"
        )
    if energy > market.max_order_wh:
        raise _reject("order-size", f"energy_wh {energy} exceeds {market.max_order_wh} Wh")
    assert tx.nonce is not None
    oid = order_id(acct.id, tx.nonce)
    _check_self_cross(draft, acct.id, slot, oid, b["side"], price)
    margin = order_margin(genesis, b["side"], energy, price)
    if margin > acct.balance_microyen:
        raise _reject(
            "margin",
            f"the order locks {margin} µ¥ of margin, "
            f"{acct.id!r} has {acct.balance_microyen} µ¥ free",
        )
    meta = draft.meta
    assert acct.node is not None
    draft.put(
        OrderRec(oid, acct.id, slot, b["side"], energy, price, acct.node, meta.next_seq, margin),
        oid,
    )
    draft.put(evolve(meta, next_seq=meta.next_seq + 1), "chain")
    draft.set_account(
        evolve(
            acct,
            nonce=acct.nonce + 1,
            balance_microyen=acct.balance_microyen - margin,
            locked_microyen=acct.locked_microyen + margin,
        )
    )
    if draft.get("slots", slot) is None:
        draft.put(SlotRec(slot), slot)


def _check_self_cross(
    draft: Draft, account: str, slot: str, oid: str, side: str, price: int
) -> None:
    """Self-trade prevention (rule ``self-cross``): a new order may not meet an open order of
    the same account on the other side of the same slot — a buy whose bid is at or above one of
    its own asks, a sell whose ask is at or below one of its own bids. The open order named is
    the one crossed furthest (the lowest ask or highest bid; the earliest among equals). Reads
    only the account's own open orders in the slot."""
    sign = 1 if side == "buy" else -1  # a buy crosses asks ≤ its bid, a sell bids ≥ its ask
    crossing = []
    for key in draft.own_order_ids(slot, account):
        rec = draft.get("orders", key)
        assert isinstance(rec, OrderRec)
        if rec.side != side and sign * rec.price_sen_per_kwh <= sign * price:
            crossing.append(rec)
    crossed = min(crossing, key=lambda o: (sign * o.price_sen_per_kwh, o.seq), default=None)
    if crossed is not None:
        mine, theirs = ("bid", "ask") if side == "buy" else ("ask", "bid")
        relation = "at or above" if side == "buy" else "at or below"
        raise _reject(
            "self-cross",
            f"order {oid!r} ({side}, {mine} {price} sen/kWh) would cross the open "
            f"{crossed.side} {crossed.id!r} ({theirs} {crossed.price_sen_per_kwh} sen/kWh) of "
            f"the same account {account!r} in slot {slot}: a {mine} {relation} the account's own "
            f"{theirs} could trade with itself; cancel {crossed.id!r} first or change the price",
        )


def _cancel(draft: Draft, tx: Tx, acct: Account, genesis: Genesis, ctx: BlockContext) -> None:
    oid = tx.body["order"]
    order = draft.get("orders", oid)
    if not isinstance(order, OrderRec):
        raise _reject("unknown-order", f"order {oid!r} is not open")
    if order.account != acct.id:
        raise _reject("owner", f"order {oid!r} belongs to {order.account!r}, not {acct.id!r}")
    times = slot_times(order.slot, genesis.market.gate_minutes)
    if ctx.time_ms >= times.gate_ms:
        raise _reject(
            "gate",
            f"the gate of slot {order.slot} closed at {from_ms(times.gate_ms).isoformat()}; "
            f"order {oid!r} can no longer be cancelled",
        )
    draft.delete("orders", oid)
    _release(draft, genesis, _bump(acct), order.margin_microyen)


def _release(draft: Draft, genesis: Genesis, acct: Account, amount: int) -> None:
    """Unlock ``amount`` of margin; a debt from an earlier default is paid from it first."""
    balance = acct.balance_microyen + amount
    repaid = min(balance, acct.unpaid_microyen)
    draft.set_account(
        evolve(
            acct,
            balance_microyen=balance - repaid,
            locked_microyen=acct.locked_microyen - amount,
            unpaid_microyen=acct.unpaid_microyen - repaid,
        )
    )
    if repaid:
        _credit(draft, genesis.retail, repaid)


def slot_orders(draft: Draft | State, slot: str) -> list[OrderRec]:
    """The open orders of ``slot``, in arrival order."""
    found = []
    for key in draft.order_ids(slot):
        rec = draft.get("orders", key)
        assert isinstance(rec, OrderRec)
        found.append(rec)
    found.sort(key=lambda o: o.seq)
    return found


def slot_book(draft: Draft | State, genesis: Genesis, slot: str, seed: bytes) -> Book:
    """The sealed book of ``slot``: its open orders on the genesis grid with the slot's seed."""
    return _book(slot_orders(draft, slot), genesis, seed)


def as_order(rec: OrderRec) -> Order:
    """An open order on the chain as the market sees it."""
    side = Side.SELL if rec.side == "sell" else Side.BUY
    return Order(rec.id, rec.account, side, rec.energy_wh, rec.price_sen_per_kwh, rec.node, rec.seq)


def _book(records: list[OrderRec], genesis: Genesis, seed: bytes) -> Book:
    orders = tuple(as_order(o) for o in records)
    return Book(orders, genesis.market.grid, genesis.market.lot_wh, seed)


def market_mismatch(market: MarketRules, result: ClearingResult) -> tuple[str, str] | None:
    """``(rule, message)`` if ``result`` was not cleared by the market's rules: its mechanism
    and goal (rule ``mechanism``) or its pricing (rule ``pricing``); ``None`` if it was."""
    if result.mechanism != market.mechanism or result.goal != market.goal:
        return (
            "mechanism",
            f"the result is {result.mechanism}/{result.goal}, the market clears by "
            f"{market.mechanism}/{market.goal}",
        )
    if result.pricing != market.pricing:
        return (
            "pricing",
            f"the result is priced {result.pricing!r}, the market (genesis.market.pricing) "
            f"prices {market.pricing!r}",
        )
    return None


def _clear(draft: Draft, tx: Tx, acct: Account, genesis: Genesis, ctx: BlockContext) -> None:
    slot = tx.body["slot"]
    rec = draft.get("slots", slot)
    if not isinstance(rec, SlotRec):
        raise _reject("slot-state", f"slot {slot} has no orders to clear")
    if rec.status != "sealed" or not rec.seed:
        why = {
            "open": "its gate has not come yet",
            "cleared": "it is already cleared",
            "sealed": f"its seed, the hash of block {rec.sealed_height}, is known from the "
            "next block on",
        }[rec.status]
        raise _reject("slot-state", f"slot {slot} cannot be cleared: {why}")
    start_ms = slot_times(slot, genesis.market.gate_minutes).start_ms
    if ctx.time_ms >= start_ms:
        raise _reject(
            "clear-late",
            f"slot {slot} began delivery at {from_ms(start_ms).isoformat()}, the block is at "
            f"{from_ms(ctx.time_ms).isoformat()}: contracts made now could not be delivered; "
            "the slot settles void",
        )
    result = tx.result
    assert result is not None
    market = genesis.market
    optimal_quorum = market.mechanism == "optimal" and len(genesis.validators) > 1
    if tx.type == "clear" and optimal_quorum:
        raise _reject(
            "claims",
            f"slot {slot}: a chain of {len(genesis.validators)} validators records an optimal "
            "clearing with a decide transaction carrying a quorum of validators' claims",
        )
    if tx.type == "decide" and market.mechanism != "optimal":
        raise _reject("claims", f"decide is for optimal markets; this one is {market.mechanism}")
    mismatch = market_mismatch(market, result)
    if mismatch is not None:
        raise _reject(*mismatch)
    try:
        canonical(tx.body)
    except InvalidInput as err:
        raise _reject("format", f"result: {err}") from None
    orders = slot_orders(draft, slot)
    book = _book(orders, genesis, bytes.fromhex(rec.seed))
    try:
        checked = verify(book, result)
    except PeerpowerError as err:
        raise _reject("clearing", f"slot {slot}: {err}") from None
    if not checked.ok:
        rule, message = checked.problems[0]
        # The market's pricing rules keep their own names; any other broken rule of the
        # clearing is named inside the message.
        named = rule if rule in ("pricing", "pairing", "self-cross") else "clearing"
        raise _reject(named, f"slot {slot}: {rule}: {message}")
    if market.mechanism == "optimal":
        if result.objective is None:
            raise _reject(
                "optimality", f"slot {slot}: an optimal clearing must state its objective"
            )
        if not checked.proven_optimal and certifiable(book, market.goal or "welfare"):
            raise _reject(
                "optimality",
                f"slot {slot}: the result carries no certificate proving its {market.goal} "
                "optimal, and this book admits one",
            )
    if tx.type == "decide":
        _check_claims(tx, genesis, slot, rec.seed, result, checked.objective)
    # Checked: from here on nothing can fail.
    p = genesis.params
    by_id = {o.id: o for o in orders}
    units: list[Contract] = []
    held: dict[str, int] = defaultdict(int)  # order id → margin kept against its contracts
    for t in result.trades:
        e = t.energy_wh
        seller_lock = money_microyen(p.sell_rate(), e)  # type: ignore[arg-type]
        # verify proved buyer price ≤ bid: the lock kept is within the order's margin
        buyer_lock = money_microyen(p.buy_rate(t.buyer_price_sen_per_kwh), e)  # type: ignore[arg-type]
        units.append(
            Contract(
                t.sell_order,
                t.buy_order,
                t.seller,
                t.buyer,
                e,
                t.price_sen_per_kwh,
                t.fee_sen_per_kwh,
                t.buyer_price_sen_per_kwh,
                seller_lock,
                buyer_lock,
            )
        )
        held[t.sell_order] += seller_lock
        held[t.buy_order] += buyer_lock
    release: dict[str, int] = defaultdict(int)
    for o in orders:
        release[o.account] += o.margin_microyen - held[o.id]
        draft.delete("orders", o.id)
    for account_id in sorted(release):
        if release[account_id]:
            owner = draft.account(account_id)
            assert owner is not None
            _release(draft, genesis, owner, release[account_id])
    draft.set_account(_bump(draft.account(acct.id) or acct))
    draft.put(Contracts(slot, result.digest(), tuple(units)), slot)
    draft.put(evolve(rec, status="cleared"), slot)
    del by_id


def _check_claims(
    tx: Tx,
    genesis: Genesis,
    slot: str,
    seed: str,
    result: ClearingResult,
    objective: Objective | None,
) -> None:
    """Proof of optimal clearing: a quorum of distinct validators' signed claims for this slot
    and seed, none of which beats the recorded result (see ``ledger/claims.py``)."""
    keys = {v.id: bytes.fromhex(v.key) for v in genesis.validators}
    need = quorum(len(keys))
    raw = tx.body["claims"]
    assert objective is not None  # verify recomputes it for every optimal result
    mine = rank(objective, result.digest())
    seen: set[str] = set()
    for k, obj in enumerate(raw):
        where = f"claims[{k}]"
        try:
            claim = claim_from_json(obj, where)
        except InvalidInput as err:
            raise _reject("format", str(err)) from None
        if claim.validator not in keys:
            raise _reject("claims", f"{where} is by {claim.validator!r}, not a validator")
        if claim.validator in seen:
            raise _reject("claims", f"{where}: {claim.validator!r} claims twice")
        if claim.slot != slot or claim.seed != seed:
            raise _reject(
                "claims",
                f"{where} is for slot {claim.slot} with seed {claim.seed[:12]}…, not {slot} "
                f"with seed {seed[:12]}…",
            )
        if not claim.check_signature(keys[claim.validator]):
            raise _reject("claims", f"{where}: bad signature by {claim.validator!r}")
        if claim.rank() > mine:
            raise _reject(
                "claims",
                f"{where} by {claim.validator!r} beats the recorded clearing: objective "
                f"{claim.objective.to_json()} digest {claim.digest[:12]}… against "
                f"{objective.to_json()} digest {result.digest()[:12]}…",
            )
        seen.add(claim.validator)
    if len(seen) < need:
        raise _reject(
            "claims", f"{len(seen)} of {len(keys)} validators claimed slot {slot}, {need} needed"
        )


def _meter(draft: Draft, tx: Tx, site: Account, genesis: Genesis, ctx: BlockContext) -> None:
    b = tx.body
    slot = b["slot"]
    times = slot_times(slot, genesis.market.gate_minutes)
    deadline = times.end_ms + genesis.params.meter_deadline_minutes * 60_000
    if ctx.time_ms < times.end_ms:
        raise _reject(
            "meter-early",
            f"slot {slot} ends at {from_ms(times.end_ms).isoformat()}; "
            f"the block is at {from_ms(ctx.time_ms).isoformat()}",
        )
    if ctx.time_ms > deadline:
        raise _reject(
            "meter-deadline",
            f"readings of slot {slot} closed at {from_ms(deadline).isoformat()}; "
            f"the block is at {from_ms(ctx.time_ms).isoformat()}",
        )
    key = f"{slot}|{site.id}"
    if draft.get("readings", key) is not None:
        raise _reject("duplicate-reading", f"site {site.id!r} already reported slot {slot}")
    draft.put(Reading(site.id, slot, b["import_wh"], b["export_wh"]), key)
    if draft.get("slots", slot) is None:
        draft.put(SlotRec(slot, status="sealed", sealed_height=ctx.height), slot)


def _settle(draft: Draft, tx: Tx, acct: Account, genesis: Genesis, ctx: BlockContext) -> None:
    slot = tx.body["slot"]
    rec = draft.get("slots", slot)
    if not isinstance(rec, SlotRec):
        done = "is already settled" if draft.get("settled", slot) else "has no orders or readings"
        raise _reject("slot-state", f"slot {slot} {done}")
    times = slot_times(slot, genesis.market.gate_minutes)
    deadline = times.end_ms + genesis.params.meter_deadline_minutes * 60_000
    if ctx.time_ms <= deadline:
        raise _reject(
            "settle-early",
            f"slot {slot} settles after its meter deadline {from_ms(deadline).isoformat()}; "
            f"the block is at {from_ms(ctx.time_ms).isoformat()}",
        )
    draft.set_account(_bump(acct))
    readings: dict[str, Reading] = {}
    prefix = slot + "|"
    for key, r in draft.items("readings"):
        if key.startswith(prefix):
            assert isinstance(r, Reading)
            readings[r.site] = r
            draft.delete("readings", key)
    if rec.status == "cleared":
        summary = _settle_contracts(draft, genesis, slot, readings)
        draft.delete("contracts", slot)
    else:
        summary = _settle_void(draft, genesis, slot)
    draft.delete("slots", slot)
    draft.put(summary, slot)
    meta = draft.meta
    moved = (
        summary.paid_microyen
        + summary.fees_microyen
        + summary.rent_microyen
        + summary.penalties_microyen
    )
    draft.put(evolve(meta, settled_microyen=meta.settled_microyen + moved), "chain")


def _settle_void(draft: Draft, genesis: Genesis, slot: str) -> Settled:
    release: dict[str, int] = defaultdict(int)
    for o in slot_orders(draft, slot):
        release[o.account] += o.margin_microyen
        draft.delete("orders", o.id)
    for account_id in sorted(release):
        owner = draft.account(account_id)
        assert owner is not None
        _release(draft, genesis, owner, release[account_id])
    return Settled(slot, 0, 0, 0, 0, 0, 0, 0, (), True)


def _settle_contracts(
    draft: Draft, genesis: Genesis, slot: str, readings: dict[str, Reading]
) -> Settled:
    rec = draft.get("contracts", slot)
    assert isinstance(rec, Contracts)
    p = genesis.params
    sold: dict[str, int] = defaultdict(int)
    bought: dict[str, int] = defaultdict(int)
    lock: dict[str, int] = defaultdict(int)
    pays: dict[str, int] = defaultdict(int)
    gets: dict[str, int] = defaultdict(int)
    fees = rents = paid = volume = 0
    for c in rec.units:
        e = c.energy_wh
        price = money_microyen(c.price_sen_per_kwh, e)  # type: ignore[arg-type]
        fee = money_microyen(c.fee_sen_per_kwh, e)  # type: ignore[arg-type]
        # buyer price × E = (price + fee + rent) × E exactly: money is sen/kWh × Wh × 10
        rent = money_microyen(c.rent_sen_per_kwh, e)  # type: ignore[arg-type]
        sold[c.seller] += e
        bought[c.buyer] += e
        lock[c.seller] += c.seller_lock_microyen
        lock[c.buyer] += c.buyer_lock_microyen
        pays[c.buyer] += money_microyen(c.buyer_price_sen_per_kwh, e)  # type: ignore[arg-type]
        gets[c.seller] += price
        paid += price
        fees += fee
        rents += rent
        volume += e
    penalties = unpaid = shortfall_total = repaid_total = 0
    defaulters: list[str] = []
    for pid in sorted(lock):
        acct = draft.account(pid)
        assert acct is not None
        r = readings.get(pid)
        exported = r.export_wh if r else 0
        imported = r.import_wh if r else 0
        # A site's contracts in a slot net out (one that sold 1 kWh and bought 1 kWh owes the
        # grid nothing): the shortfall is its net position less what its meter shows net.
        net_sold = sold[pid] - bought[pid]
        net_out = exported - imported
        short = max(0, net_sold - net_out) if net_sold > 0 else max(0, net_out - net_sold)
        if net_sold == 0:
            short = 0
        penalty = money_microyen(p.imbalance_price_sen_per_kwh, short)  # type: ignore[arg-type]
        # Payments first (always covered: a buy locked its full buyer price), then the penalty
        # from what is left of the margin, then from the balance.
        left = lock[pid] - pays[pid]
        balance = acct.balance_microyen + gets[pid]
        from_margin = min(penalty, left)
        from_balance = min(penalty - from_margin, balance)
        missing = penalty - from_margin - from_balance
        defaults = acct.defaults
        status = acct.status
        if short > p.default_tolerance_wh:
            defaults += 1
            defaulters.append(pid)
            if defaults >= p.default_limit:
                status = "suspended"
        balance += left - from_margin - from_balance
        owed = acct.unpaid_microyen + missing
        # What the slot paid in settles an earlier debt to the retail provider first.
        repaid = min(balance, owed)
        draft.set_account(
            evolve(
                acct,
                balance_microyen=balance - repaid,
                locked_microyen=acct.locked_microyen - lock[pid],
                unpaid_microyen=owed - repaid,
                defaults=defaults,
                status=status,
            )
        )
        penalties += from_margin + from_balance
        repaid_total += repaid
        unpaid += missing
        shortfall_total += short
    _credit(draft, genesis.grid_operator, fees + rents)
    _credit(draft, genesis.retail, penalties + repaid_total)
    return Settled(
        slot,
        volume,
        paid,
        fees,
        rents,
        penalties,
        unpaid,
        shortfall_total,
        tuple(defaulters),
        False,
    )


_HANDLERS = {
    "register": _register,
    "reinstate": _reinstate,
    "deposit": _deposit,
    "withdraw": _withdraw,
    "order": _order,
    "cancel": _cancel,
    "clear": _clear,
    "decide": _clear,
    "settle": _settle,
    "meter": _meter,
}


def begin_block(draft: Draft, genesis: Genesis, ctx: BlockContext) -> None:
    """Advance the clock: give the slot sealed by the previous block its seed, seal every slot
    whose gate has come, and record the height and time."""
    meta = draft.meta
    draft.put(evolve(meta, height=ctx.height, time_ms=ctx.time_ms), "chain")
    for key, rec in draft.items("slots"):
        assert isinstance(rec, SlotRec)
        if rec.status == "sealed" and not rec.seed and rec.sealed_height == ctx.height - 1:
            draft.put(evolve(rec, seed=ctx.prev_hash.hex()), key)
        elif (
            rec.status == "open"
            and ctx.time_ms >= slot_times(key, genesis.market.gate_minutes).gate_ms
        ):
            draft.put(evolve(rec, status="sealed", sealed_height=ctx.height), key)


def check_header(
    state: State, block: Block, genesis: Genesis, leaves: Sequence[bytes] | None = None
) -> None:
    """Raise ``InvalidBlock`` on the first header rule ``block`` breaks on top of ``state``.

    ``leaves`` are the transactions' canonical bytes if they are known already."""
    h = block.header
    height = h.height
    if h.chain != genesis.chain_id:
        raise InvalidBlock(
            height, "chain", f"block of chain {h.chain!r}, this is {genesis.chain_id!r}"
        )
    if height != state.height + 1:
        raise InvalidBlock(height, "height", f"block {height} does not follow block {state.height}")
    if h.prev_hash != state.head_hash:
        raise InvalidBlock(
            height,
            "parent",
            f"prev_hash {h.prev_hash.hex()} is not the hash of block {state.height} "
            f"({state.head_hash.hex()})",
        )
    if h.time_ms > MAX_TIME_MS:
        raise InvalidBlock(
            height, "time", f"time_ms {h.time_ms} is beyond {MAX_TIME_MS} (year 9998)"
        )
    if h.time_ms <= state.meta.time_ms:
        raise InvalidBlock(
            height,
            "time",
            f"time {from_ms(h.time_ms).isoformat()} is not after block {state.height}'s "
            f"{from_ms(state.meta.time_ms).isoformat()}",
        )
    if h.proposer not in {v.id for v in genesis.validators}:
        raise InvalidBlock(height, "proposer", f"{h.proposer!r} is not a genesis validator")
    if h.tx_count != len(block.txs):
        raise InvalidBlock(
            height, "tx-count", f"header says {h.tx_count} transactions, block has {len(block.txs)}"
        )
    root = tx_root(block.txs) if leaves is None else merkle_root(leaves)
    if h.tx_root != root:
        raise InvalidBlock(
            height, "tx-root", f"tx_root {h.tx_root.hex()} is not the Merkle root {root.hex()}"
        )


def decode_block_txs(block: Block, genesis: Genesis) -> list[Tx]:
    txs: list[Tx] = []
    for k, obj in enumerate(block.txs):
        try:
            txs.append(decode_tx(obj, genesis.tx_chain, f"txs[{k}]"))
        except InvalidTransaction as err:
            raise InvalidBlock(block.height, err.rule, err.message) from None
    return txs


def _decode_well_formed(block: Block, genesis: Genesis) -> list[Tx] | None:
    """The block's transactions decoded, or ``None`` if any one is not well formed (the
    header is checked first and :func:`decode_block_txs` then names the error)."""
    chain_id = genesis.tx_chain
    try:
        return [decode_tx(obj, chain_id) for obj in block.txs]
    except Exception:  # whatever the error, the checks in their order will raise it again
        return None


def presign(
    state: State, txs: Sequence[Tx], verified: Mapping[tuple[bytes, bytes], bytes] | None = None
) -> list[bool | None]:
    """Check in parallel the signatures of the transactions whose signer is already known.
    ``verified`` maps ``(message, signature)`` pairs checked before to the key that checked
    them: a pair holds still if that is the signer's key here."""
    checks = []
    where = []
    out: list[bool | None] = [None] * len(txs)
    for k, tx in enumerate(txs):
        key = signer_key(state, tx)
        if key is not None and verified and verified.get((tx.message, tx.sig)) == key:
            out[k] = True  # checked before against this same key
        elif key is not None:
            checks.append((key, TX_DOMAIN, tx.message, tx.sig))
            where.append(k)
    for k, ok in zip(where, verify_many(checks), strict=True):
        out[k] = ok
    return out


def apply_block(
    state: State,
    block: Block,
    genesis: Genesis,
    verified: Mapping[tuple[bytes, bytes], bytes] | None = None,
) -> State:
    """The state after ``block``; raises ``InvalidBlock`` naming the height and the first rule
    broken (header, a transaction, or the state root). ``state`` is not changed.
    ``verified``: signatures already checked (e.g. in the mempool), see :func:`presign`."""
    # A decoded transaction has its canonical bytes (the Merkle leaf) at hand: decoding first
    # encodes each transaction once instead of twice.
    decoded = _decode_well_formed(block, genesis)
    check_header(state, block, genesis, None if decoded is None else [t.encoded() for t in decoded])
    txs = decode_block_txs(block, genesis) if decoded is None else decoded
    sig_ok = presign(state, txs, verified)
    h = block.header
    ctx = BlockContext(h.height, h.time_ms, h.prev_hash, h.proposer)
    draft = state.draft()
    begin_block(draft, genesis, ctx)
    for k, tx in enumerate(txs):
        try:
            apply_tx(draft, tx, genesis, ctx, sig_ok[k])
        except InvalidTransaction as err:
            raise InvalidBlock(
                h.height, err.rule, f"txs[{k}] ({tx.type} from {tx.sender!r}): {err.message}"
            ) from None
    new = draft.freeze(block.hash)
    if new.root != h.state_root:
        raise InvalidBlock(
            h.height,
            "state-root",
            f"state_root {h.state_root.hex()} differs from the state the block produces "
            f"({new.root.hex()})",
        )
    return new
