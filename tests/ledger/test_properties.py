"""Conservation laws of the exchange contract under random streams of transactions (Hypothesis).

A stream mixes valid and invalid transactions — orders with prices in and out of the band and
wrong lots, replays, skipped nonces, bad signatures, cancels of other participants' orders,
deposits and withdrawals beyond the funds, meter readings early, late, duplicated or signed by
the wrong key — with time advancing across gates, clearings, meter deadlines and settlements,
the blocks made by ``SoloNode.produce``.

The market prices by ``nodal`` (the default of ``optimal``/``welfare``) on a grid whose one line
carries a fee and a capacity, so units pay congestion rent when the line is full.

Each block is mirrored by a shadow draft built exactly as the proposer builds it (begin, the
proposer's duties, then the transactions), so every transaction is judged on the state it will
really meet. After every step:

* money (balance + locked over all accounts) is the genesis supply;
* no balance, lock or debt is negative;
* each account's lock is the margin of its open orders plus the locks of its contracts;
* no account's open orders in a slot cross, and the state's indexes of open orders (by slot, by
  slot and account) are its table's;
* the grid operator holds exactly the fees and rent of the settled slots;
* a rejected transaction leaves the root unchanged, and one built to be invalid is rejected
  under the rule it breaks (an order meeting its account's open order on the other side:
  ``self-cross``);
* the block the node makes holds exactly the duties and the accepted transactions, and its
  state is the shadow's.

At the end every slot is settled, nothing is locked, and replaying the exported blocks from
genesis gives the node's state root.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from peerpower.errors import InvalidTransaction
from peerpower.ledger.blocks import Block
from peerpower.ledger.genesis import Params
from peerpower.ledger.node import duties
from peerpower.ledger.replay import replay
from peerpower.ledger.rules import BlockContext, apply_tx, begin_block, slot_orders
from peerpower.ledger.state import Account, Contracts, Draft, OrderRec, Settled, SlotRec, State
from peerpower.ledger.store import block_line
from peerpower.ledger.transactions import Signer, decode_tx
from tests.ledger.chain_helpers import (
    KEYS,
    OP_SUPPLY,
    Chain,
    check_locks,
    jst,
    new_chain,
    reading,
)

PARTICIPANTS = ("a", "b", "c")
NODES = {"a": "far", "b": "root", "c": "far"}
# the line far → root: a fee, and room for 500 Wh a slot (full: the prices split, rent is paid)
GRID = {
    "nodes": [
        {"id": "root", "parent": None},
        {"id": "far", "parent": "root", "fee_sen_per_kwh": 100, "capacity_wh": 500},
    ]
}
# gates 23:55, 00:25, 00:55; ends 00:30, 01:00, 01:30; meter deadlines 01:30, 02:00, 02:30 JST
SLOTS = ("2026-08-18#00", "2026-08-18#01", "2026-08-18#02")
FIRST_BLOCK = jst(2026, 8, 17, 23, 35)
AFTER_ALL = jst(2026, 8, 18, 2, 30) + 1

ORDER_ONLY_RULES = {"status", "unsettled-default", "order-window", "gate"}
BAD_ORDER_RULES = ORDER_ONLY_RULES | {"price-band", "lot", "order-size"}


def check_state(state: State) -> None:
    """Money, signs and locks (see the module notes), and every order and contract belongs to
    a slot in the matching stage."""
    assert state.money_microyen() == OP_SUPPLY
    check_locks(state)
    slots = state.table("slots")
    by_slot: dict[str, set[str]] = {}
    for key, rec in state.table("orders").items():
        assert isinstance(rec, OrderRec)
        slot = slots.get(rec.slot)
        assert isinstance(slot, SlotRec) and slot.status in ("open", "sealed"), rec
        by_slot.setdefault(rec.slot, set()).add(key)
    # the state's indexes of open orders by slot, and by slot and account, are the table's
    for name in by_slot.keys() | slots.keys():
        assert state.order_ids(name) == by_slot.get(name, set()), name
        for who in PARTICIPANTS:
            mine = {k for k in by_slot.get(name, set()) if k.startswith(who + "#")}
            assert state.own_order_ids(name, who) == mine, (name, who)
    for key, rec in state.table("contracts").items():
        assert isinstance(rec, Contracts)
        slot = slots.get(key)
        assert isinstance(slot, SlotRec) and slot.status == "cleared", key
    # the grid operator is paid the fees and the congestion rent, and nothing else
    settled = [r for r in state.table("settled").values() if isinstance(r, Settled)]
    grid = state.account("grid")
    assert grid is not None
    assert grid.balance_microyen == sum(r.fees_microyen + r.rent_microyen for r in settled)


@dataclass
class Run:
    chain: Chain
    time_ms: int = FIRST_BLOCK
    shadow: Draft = field(init=False)
    ctx: BlockContext = field(init=False)
    duties: list[dict[str, Any]] = field(init=False)
    pending: list[dict[str, Any]] = field(init=False)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    rules: Counter[str] = field(default_factory=Counter)
    voided: bool = False
    reported: set[tuple[str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.open_block()

    @property
    def genesis(self) -> Any:
        return self.chain.genesis

    def open_block(self) -> None:
        """Start the shadow of the next block, as ``build_block`` does: begin, then duties."""
        state = self.chain.state
        self.ctx = BlockContext(state.height + 1, self.time_ms, state.head_hash, "val")
        self.shadow = state.draft()
        begin_block(self.shadow, self.genesis, self.ctx)
        val = self.shadow.account("val")
        assert val is not None
        proposer = Signer(self.genesis.tx_chain, "val", KEYS["val"], val.nonce + 1)
        self.duties = duties(self.shadow, self.genesis, self.ctx, proposer)
        for tx in self.duties:
            body = tx["body"]
            if body["type"] == "settle" and slot_orders(self.shadow, body["slot"]):
                self.voided = True  # a slot with orders that was never cleared
        for tx in self.duties:
            apply_tx(self.shadow, decode_tx(tx, self.genesis.tx_chain), self.genesis, self.ctx)
        self.accepted.extend(self.duties)
        self.pending = []
        check_state(self.shadow.freeze())

    def signer(self, who: str, skip: int = 0, key: str | None = None) -> Signer:
        acct = self.shadow.account(who)
        nonce = (acct.nonce if acct is not None else 0) + 1 + skip
        return Signer(self.genesis.tx_chain, who, KEYS[key or who], nonce)

    def balance(self, who: str) -> int:
        acct = self.shadow.account(who)
        assert acct is not None
        return acct.balance_microyen

    def submit(self, tx: dict[str, Any], expect: set[str] | None = None) -> bool:
        """Apply ``tx`` to the shadow. A rejection must leave its root as it was; a transaction
        built to be invalid (``expect``: the rules it may break) must be rejected by one of
        them."""
        before = self.shadow.freeze().root
        decoded = decode_tx(tx, self.genesis.tx_chain)
        rejected: InvalidTransaction | None = None
        try:
            apply_tx(self.shadow, decoded, self.genesis, self.ctx)
        except InvalidTransaction as err:
            rejected = err
        if rejected is not None:
            assert self.shadow.freeze().root == before
            rule = rejected.rule
            assert expect is None or rule in expect, (rule, expect, rejected.message)
            self.rules[rule] += 1
            return False
        assert expect is None, f"accepted an invalid transaction: {tx['body']}"
        self.rules["accepted " + decoded.type] += 1
        self.pending.append(tx)
        self.accepted.append(tx)
        check_state(self.shadow.freeze())
        return True

    def produce(self, next_time_ms: int) -> Block:
        """Make the block at the current time with ``SoloNode.produce`` and check it is the
        shadow; the block after it comes at ``next_time_ms``."""
        node = self.chain.node
        # the mempool is fed directly: ``SoloNode.submit`` judges a transaction before the
        # block's own clearing and settlement, the shadow after them, as the block will
        node.mempool.extend(self.pending)
        block = node.produce(self.time_ms)
        assert node.dropped == []
        assert list(block.txs) == self.duties + self.pending
        assert node.state.root == self.shadow.freeze().root
        check_state(node.state)
        self.chain.blocks.append(block)
        self.time_ms = next_time_ms
        self.open_block()
        return block

    # -- the actions ---------------------------------------------------------------------------

    def step(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        getattr(self, "do_" + kind)(*args)

    def do_advance(self, seconds: int) -> None:
        self.produce(self.time_ms + seconds * 1000)

    def do_order(self, who: str, slot: int, side: str, energy: int, price: int) -> None:
        tx = self.signer(who).order(SLOTS[slot], side, energy, price)
        g = self.genesis.market
        bad = (
            not g.price_min_sen_per_kwh <= price <= g.price_max_sen_per_kwh
            or energy <= 0
            or energy % g.lot_wh
            or energy > g.max_order_wh
        )
        oid = f"{who}#{tx['body']['nonce']}"
        expect = BAD_ORDER_RULES if bad else None
        if not bad and self.crosses(who, SLOTS[slot], side, price):
            expect = ORDER_ONLY_RULES | {"self-cross"}
        if self.submit(tx, expect):
            self.orders.append(oid)

    def crosses(self, who: str, slot: str, side: str, price: int) -> bool:
        """Whether an order would meet an open order of ``who`` on the other side of ``slot``
        (bid ≥ ask), from the shadow's table of orders."""
        for _, rec in self.shadow.items("orders"):
            assert isinstance(rec, OrderRec)
            if rec.account != who or rec.slot != slot or rec.side == side:
                continue
            bid, ask = (
                (price, rec.price_sen_per_kwh) if side == "buy" else (rec.price_sen_per_kwh, price)
            )
            if bid >= ask:
                return True
        return False

    def do_pair(self, sites: list[str], slot: int, energy: int, ask: int, spread: int) -> None:
        self.do_order(sites[0], slot, "sell", energy, ask)
        self.do_order(sites[1], slot, "buy", energy, ask + spread)

    def do_cancel(self, who: str, pick: int) -> None:
        if not self.orders:
            return
        oid = self.orders[pick % len(self.orders)]
        mine = oid.startswith(who + "#")
        self.submit(self.signer(who).cancel(oid), None if mine else {"owner", "unknown-order"})

    def do_deposit(self, who: str, amount: int) -> None:
        self.submit(self.signer("op").deposit(who, amount))

    def do_overdeposit(self, who: str) -> None:
        amount = self.balance("op") + 1
        self.submit(self.signer("op").deposit(who, amount), {"funds"})

    def do_withdraw(self, who: str, amount: int, over: bool) -> None:
        if over:
            amount += self.balance(who)
        self.submit(self.signer(who).withdraw(amount), {"funds"} if over else None)

    def do_meter(self, who: str, slot: int, imp: int, exp: int, own_key: bool) -> None:
        tx = reading(who, SLOTS[slot], imp, exp, key=None if own_key else who)
        if not own_key:
            self.submit(tx, {"signature"})
        elif (who, slot) in self.reported:
            self.submit(tx, {"duplicate-reading", "meter-deadline"})
        elif self.submit(tx):
            self.reported.add((who, slot))

    def do_replay(self, pick: int) -> None:
        if not self.accepted:
            return
        tx = self.accepted[pick % len(self.accepted)]
        is_meter = tx["body"]["type"] == "meter"
        self.submit(tx, {"duplicate-reading", "meter-deadline"} if is_meter else {"nonce"})

    def do_skip(self, who: str) -> None:
        self.submit(self.signer(who, skip=1).withdraw(1), {"nonce"})

    def do_badsig(self, who: str, other: str) -> None:
        key = other if other != who else "x"
        tx = self.signer(who, key=key).order(SLOTS[0], "sell", 100, 1000)
        self.submit(tx, {"signature"})

    def do_stranger(self) -> None:
        self.submit(self.signer("x").order(SLOTS[1], "buy", 100, 1000), {"account"})

    def do_reinstate(self, who: str) -> None:
        self.submit(self.signer("op").reinstate(who))

    def do_forged_clear(self, slot: int, energy: int) -> None:
        # a unit between two orders nobody placed
        trade = {
            "sell_order": "a#999",
            "buy_order": "b#999",
            "seller": "a",
            "buyer": "b",
            "energy_wh": energy,
            "price_sen_per_kwh": 1000,
            "fee_sen_per_kwh": 100,
            "buyer_price_sen_per_kwh": 1100,
        }
        result = {
            "mechanism": "optimal",
            "goal": "welfare",
            "pricing": "nodal",
            "trades": [trade],
            "totals": {
                "volume_wh": energy,
                "welfare_microyen": 0,
                "fees_microyen": 0,
                "rent_microyen": 0,
            },
            "node_prices_sen_per_kwh": {"root": 1100, "far": 1000},
        }
        self.submit(
            self.signer("val").clear(SLOTS[slot], result), {"slot-state", "clear-late", "clearing"}
        )


who = st.sampled_from(PARTICIPANTS)
slot = st.sampled_from([0, 1, 1, 2])  # most blocks fall before the gate of #01
# mostly whole lots; sometimes none, a fraction of one, or more than max_order_wh
energy = st.one_of(
    st.sampled_from([100, 200, 300, 400, 500, 800, 1000]),
    st.sampled_from([100, 200, 300, 400, 500, 800, 1000]),
    st.sampled_from([100, 200, 300, 400, 500, 800, 1000]),
    st.sampled_from([0, 150, -100, 100_100]),
)
out_of_band = st.sampled_from([-1, 10_001])
sell_price = st.one_of(*[st.integers(500, 2500)] * 4, out_of_band)
buy_price = st.one_of(*[st.integers(1500, 3500)] * 4, out_of_band)
order = st.one_of(
    st.tuples(st.just("order"), who, slot, st.just("sell"), energy, sell_price),
    st.tuples(st.just("order"), who, slot, st.just("buy"), energy, buy_price),
    # a sell and a buy that can trade: different sites, the bid above the ask by 100–1000
    st.tuples(
        st.just("pair"),
        st.permutations(PARTICIPANTS),
        slot,
        st.sampled_from([100, 300, 500, 1000]),
        st.integers(500, 2500),
        st.integers(100, 1000),
    ),
)
meter_wh = st.sampled_from([0, 300, 800, 1000, 3000])
meter = st.tuples(st.just("meter"), who, slot, meter_wh, meter_wh, st.booleans())
noise = st.one_of(
    st.tuples(st.just("cancel"), who, st.integers(0, 100)),
    st.tuples(st.just("deposit"), who, st.integers(1, 5 * 10**8)),
    st.tuples(st.just("overdeposit"), who),
    st.tuples(st.just("withdraw"), who, st.integers(1, 10**8), st.booleans()),
    st.tuples(st.just("replay"), st.integers(0, 100)),
    st.tuples(st.just("skip"), who),
    st.tuples(st.just("badsig"), who, who),
    st.tuples(st.just("stranger")),
    st.tuples(st.just("reinstate"), who),
    st.tuples(st.just("forged_clear"), slot, st.sampled_from([100, 1000])),
)
# one block's worth: orders, other transactions and readings, then time moves on 1 s – 15 min
round_ = st.tuples(
    st.lists(order, min_size=1, max_size=6),
    st.lists(noise, max_size=4),
    st.lists(meter, max_size=3),
    st.tuples(st.just("advance"), st.integers(1, 900)),
).map(lambda r: [*r[0], *r[1], *r[2], r[3]])
streams = st.lists(round_, min_size=2, max_size=14).map(lambda rs: [a for r in rs for a in r])
params = st.builds(
    Params,
    buy_margin_percent=st.sampled_from([0, 100]),
    sell_margin_percent=st.sampled_from([0, 0, 20, 100]),
    default_limit=st.integers(1, 3),
    default_tolerance_wh=st.sampled_from([0, 200]),
)
deposits = st.fixed_dictionaries(
    {p: st.sampled_from([0, 10**7, 10**8, 10**9, 10**9, 10**9, 10**10]) for p in PARTICIPANTS}
)


# what each site's meter reports for every slot while the clock runs out: (import, export) [Wh]
delivery = st.fixed_dictionaries({p: st.tuples(meter_wh, meter_wh) for p in PARTICIPANTS})


@settings(max_examples=80, deadline=None)
@given(params, deposits, streams, delivery, st.sampled_from([False, False, True]))
def test_contract_conserves_money_and_rejects_cleanly(
    params: Params,
    deposits: dict[str, int],
    steps: list[tuple[Any, ...]],
    delivery: dict[str, tuple[int, int]],
    jump: bool,
) -> None:
    chain = new_chain(params, GRID, NODES, deposits)
    run = Run(chain)
    for action in steps:
        run.step(action)
    if jump and run.time_ms < AFTER_ALL:
        # no block after this one until every meter deadline has passed: slots sealed but not
        # cleared (and slots whose gate has not come) settle void then
        run.produce(AFTER_ALL)
    # run out the clock a block every 2 minutes (so a slot whose gate comes now is sealed,
    # then cleared before it starts): the meters report (each reading is taken or refused by
    # the rules, too early, too late or already given), every slot settles in the first block
    # past its meter deadline
    while run.time_ms <= AFTER_ALL:
        for site, (imp, exp) in delivery.items():
            for k in range(len(SLOTS)):
                run.do_meter(site, k, imp, exp, own_key=True)
        run.produce(run.time_ms + 2 * 60_000)
    run.produce(run.time_ms + 1000)
    state = chain.state
    assert not state.table("slots")
    assert not state.table("orders")
    assert not state.table("contracts")
    assert not state.table("readings")
    accounts = [a for a in state.table("accounts").values() if isinstance(a, Account)]
    assert all(a.locked_microyen == 0 for a in accounts)
    assert {k for k, _ in state.table("settled").items()} <= set(SLOTS)
    settled = [r for r in state.table("settled").values() if isinstance(r, Settled)]
    event(f"units settled: {min(3, sum(r.volume_wh > 0 for r in settled))}")
    event(f"penalties: {any(r.penalties_microyen for r in settled)}")
    event(f"rent: {any(r.rent_microyen for r in settled)}")
    event(f"unpaid: {any(r.unpaid_microyen for r in settled)}")
    event(f"void with orders: {any(r.void for r in settled) and run.voided}")
    event(f"suspended: {any(a.status == 'suspended' for a in accounts)}")
    for rule in run.rules:
        event(f"rule {rule}")
    replayed, summary = replay(chain.genesis, [block_line(b) for b in chain.blocks])
    assert replayed.root == state.root
    assert summary.blocks == state.height == len(chain.blocks)
    assert summary.settled_microyen == state.meta.settled_microyen
