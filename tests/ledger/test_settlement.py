"""Margins, clearing and settlement in exact money, computed by hand from the documented rules.

With the default parameters (``peerpower.ledger.genesis``): a buy locks bid × E plus the
imbalance charge 3000 sen/kWh × E × 100 %; a sell locks 3000 × E × 100 %; money [µ¥] =
price [sen/kWh] × energy [Wh] × 10. ``Chain.produce`` also checks after every block that the
money held (balance + locked over all accounts) is the genesis supply and that each account's
lock is its open orders' margin plus its contracts' locks.

The market is ``optimal``/``welfare`` with its default pricing, ``nodal``: one price per grid
node, the book's competitive equilibrium (the midpoint of each node's interval of equilibrium
prices, rounded down). In the book most tests use — a sells 1000 Wh at 1500, b buys 800 Wh at
2500 — a is left partly unfilled, so its node's price is its ask: 1500 sen/kWh (at the midpoint
rule it was 2000).
"""

from __future__ import annotations

from typing import Any

import pytest

from peerpower.ledger.genesis import Params
from peerpower.ledger.state import Contract, Contracts, Settled
from tests.ledger.chain_helpers import (
    DEADLINE,
    DEADLINE2,
    DEPOSIT,
    END,
    END2,
    FEE_GRID,
    GATE,
    GATE2,
    OP_SUPPLY,
    SLOT,
    SLOT2,
    START,
    T0,
    Chain,
    jst,
    new_chain,
    reading,
)

T1 = T0 + 2000
IMB = 3000  # imbalance price [sen/kWh]


def money(price_sen_per_kwh: int, energy_wh: int) -> int:
    """[µ¥] — written out here rather than imported, the test's own arithmetic."""
    return price_sen_per_kwh * energy_wh * 10


def balances(chain: Chain, *names: str) -> dict[str, tuple[int, int]]:
    return {n: (chain.acct(n).balance_microyen, chain.acct(n).locked_microyen) for n in names}


def trade_and_clear(chain: Chain, *extra: dict[str, Any]) -> None:
    """a sells 1000 Wh at 1500 (a#1), b buys 800 Wh at 2500 (b#1), plus ``extra``; the gate
    block seals the slot and the next one clears it."""
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
        *extra,
    )
    chain.produce(GATE)
    block = chain.produce(GATE + 1000)
    assert [tx["body"]["type"] for tx in block.txs] == ["clear"]


def settle(chain: Chain, *readings: dict[str, Any]) -> Settled:
    chain.produce(END + 1000, *readings)
    block = chain.produce(DEADLINE + 1000)
    assert [tx["body"]["type"] for tx in block.txs] == ["settle"]
    rec = chain.state.get("settled", SLOT)
    assert isinstance(rec, Settled)
    assert chain.state.get("contracts", SLOT) is None
    assert chain.state.get("slots", SLOT) is None
    assert not chain.state.table("readings")
    return rec


# -- margin on orders ------------------------------------------------------------------------


def test_margin_locked_on_order() -> None:
    chain = new_chain()
    sell_margin = money(IMB, 1000)  # 30 000 000
    buy_margin = money(2500, 800) + money(IMB, 800)  # 20 000 000 + 24 000 000
    assert (sell_margin, buy_margin) == (30_000_000, 44_000_000)
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    assert balances(chain, "a", "b") == {
        "a": (DEPOSIT - sell_margin, sell_margin),
        "b": (DEPOSIT - buy_margin, buy_margin),
    }
    assert chain.state.get("orders", "a#1").margin_microyen == sell_margin  # type: ignore[union-attr]


def test_margin_with_other_percentages() -> None:
    chain = new_chain(Params(buy_margin_percent=50, sell_margin_percent=20))
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    # sell: 3000 × 20 % = 600 sen/kWh; buy: 2500 + 3000 × 50 % = 4000 sen/kWh
    assert chain.acct("a").locked_microyen == 600 * 1000 * 10
    assert chain.acct("b").locked_microyen == 4000 * 800 * 10


def test_margin_released_on_cancel() -> None:
    chain = new_chain()
    a = chain.signer("a")
    chain.produce(T1, a.order(SLOT, "sell", 1000, 1500), a.order(SLOT, "buy", 300, 900))
    locked = money(IMB, 1000) + money(900 + IMB, 300)
    assert balances(chain, "a") == {"a": (DEPOSIT - locked, locked)}
    chain.produce(T1 + 1000, a.cancel("a#1"))
    assert balances(chain, "a") == {"a": (DEPOSIT - money(900 + IMB, 300), money(900 + IMB, 300))}
    assert chain.state.get("orders", "a#1") is None
    chain.produce(T1 + 2000, a.cancel("a#2"))
    assert balances(chain, "a") == {"a": (DEPOSIT, 0)}
    assert not chain.state.table("orders")


# -- clearing ----------------------------------------------------------------------------------


def test_clearing_partial_fill_keeps_only_contract_locks() -> None:
    chain = new_chain()
    # c's buy at 1000 is below a's ask 1500: it trades with nobody
    trade_and_clear(chain, chain.signer("c").order(SLOT, "buy", 500, 1000))
    # one unit a#1 → b#1, 800 Wh at the node price 1500 (a#1 is partly unfilled: its ask)
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    seller_lock = money(IMB, 800)  # 24 000 000
    buyer_lock = money(1500 + IMB, 800)  # 36 000 000
    assert contracts.units == (
        Contract("a#1", "b#1", "a", "b", 800, 1500, 0, 1500, seller_lock, buyer_lock),
    )
    # a: the 200 Wh not sold are released; b: the bid above its price (1000 × 800 × 10) is
    # released; c: everything
    assert balances(chain, "a", "b", "c") == {
        "a": (DEPOSIT - 24_000_000, 24_000_000),
        "b": (DEPOSIT - 36_000_000, 36_000_000),
        "c": (DEPOSIT, 0),
    }
    assert not chain.state.table("orders")
    assert chain.state.get("slots", SLOT).status == "cleared"  # type: ignore[union-attr]


def test_clearing_one_sell_against_two_buys() -> None:
    chain = new_chain()
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 400, 2500),
        chain.signer("c").order(SLOT, "buy", 400, 2000),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    # a#1 is partly unfilled (800 of 1000 Wh), so the node's price is its ask, 1500, and both
    # buyers pay it whatever they bid (at midpoint prices b paid 2000 and c 1750)
    assert sorted(contracts.units, key=lambda c: c.buyer) == [
        Contract("a#1", "b#1", "a", "b", 400, 1500, 0, 1500, money(IMB, 400), money(4500, 400)),
        Contract("a#1", "c#1", "a", "c", 400, 1500, 0, 1500, money(IMB, 400), money(4500, 400)),
    ]
    assert balances(chain, "a", "b", "c") == {
        "a": (DEPOSIT - 24_000_000, 24_000_000),
        "b": (DEPOSIT - 18_000_000, 18_000_000),
        "c": (DEPOSIT - 18_000_000, 18_000_000),
    }


# -- settlement ----------------------------------------------------------------------------------


def test_settlement_pays_seller_and_grid_fee() -> None:
    chain = new_chain(grid=FEE_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    trade_and_clear(chain)
    # fee far → root: 100 sen/kWh. far's price is a#1's ask, 1500 (a is partly unfilled); the
    # energy moving up an edge with room to spare makes root's price far's + the fee: 1600
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    (unit,) = contracts.units
    assert (unit.energy_wh, unit.price_sen_per_kwh, unit.fee_sen_per_kwh) == (800, 1500, 100)
    assert (unit.buyer_price_sen_per_kwh, unit.rent_sen_per_kwh) == (1600, 0)
    assert unit.buyer_lock_microyen == money(1600 + IMB, 800)  # 36 800 000
    assert chain.acct("b").balance_microyen == DEPOSIT - 36_800_000
    rec = settle(chain, reading("a", SLOT, 0, 1000), reading("b", SLOT, 800, 0))
    price = money(1500, 800)  # 12 000 000
    fee = money(100, 800)  # 800 000
    assert balances(chain, "a", "b", "grid", "retail") == {
        "a": (DEPOSIT + price, 0),
        "b": (DEPOSIT - price - fee, 0),
        "grid": (fee, 0),
        "retail": (0, 0),
    }
    assert rec == Settled(SLOT, 800, price, fee, 0, 0, 0, 0, (), False)
    assert chain.state.meta.settled_microyen == price + fee
    assert (chain.acct("a").defaults, chain.acct("b").defaults) == (0, 0)


CONGESTED_GRID = {
    "nodes": [
        {"id": "root", "parent": None},
        {"id": "far", "parent": "root", "fee_sen_per_kwh": 100, "capacity_wh": 500},
    ]
}


def test_settlement_congestion_rent_to_the_grid_operator() -> None:
    """A congested line: the buyer pays its node's price, each seller receives its own node's,
    and the difference beyond the fee — the congestion rent — goes to the grid operator with
    the fee. Every account's money is worked out by hand."""
    chain = new_chain(grid=CONGESTED_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    # a sells 1000 Wh at 1500 behind a 500 Wh line (fee 100); c sells 400 Wh at 2000 at the root;
    # b buys 800 Wh at 2500 at the root. Welfare takes a's cheaper energy as far as the line
    # allows: a → b 500 Wh (spread 2500 − 100 − 1500 = 900), then c → b 300 Wh (spread 500).
    trade_and_clear(chain, chain.signer("c").order(SLOT, "sell", 400, 2000))
    # a and c are both left partly unfilled, so each node's price is its seller's ask: far
    # 1500, root 2000. They differ by 500, more than the fee 100: the line is full, and the
    # 400 above the fee is rent. b pays root's 2000 for all 800 Wh.
    (clearing,) = chain.blocks[-1].txs
    result = clearing["body"]["result"]
    assert result["pricing"] == "nodal"
    assert result["node_prices_sen_per_kwh"] == {"root": 2000, "far": 1500}
    assert result["totals"]["rent_microyen"] == money(400, 500)
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    units = sorted(contracts.units, key=lambda c: c.seller)
    assert units == [
        Contract("a#1", "b#1", "a", "b", 500, 1500, 100, 2000, money(IMB, 500), money(5000, 500)),
        Contract("c#1", "b#1", "c", "b", 300, 2000, 0, 2000, money(IMB, 300), money(5000, 300)),
    ]
    assert [u.rent_sen_per_kwh for u in units] == [400, 0]
    # locked: b its buyer price 2000 + the imbalance share 3000 on 800 Wh (of the 44 000 000 its
    # bid locked, 4 000 000 came back); a and c the imbalance charge on what they sold
    assert balances(chain, "a", "b", "c") == {
        "a": (DEPOSIT - 15_000_000, 15_000_000),
        "b": (DEPOSIT - 40_000_000, 40_000_000),
        "c": (DEPOSIT - 9_000_000, 9_000_000),
    }
    rec = settle(
        chain, reading("a", SLOT, 0, 500), reading("b", SLOT, 800, 0), reading("c", SLOT, 0, 300)
    )
    a_gets = 1500 * 500 * 10  # 7 500 000
    c_gets = 2000 * 300 * 10  # 6 000 000
    b_pays = 2000 * 800 * 10  # 16 000 000
    fee = 100 * 500 * 10  # 500 000
    rent = 400 * 500 * 10  # 2 000 000
    assert b_pays == a_gets + c_gets + fee + rent
    assert balances(chain, "a", "b", "c", "grid", "retail") == {
        "a": (DEPOSIT + 7_500_000, 0),
        "b": (DEPOSIT - 16_000_000, 0),
        "c": (DEPOSIT + 6_000_000, 0),
        "grid": (2_500_000, 0),
        "retail": (0, 0),
    }
    assert rec == Settled(SLOT, 800, a_gets + c_gets, fee, rent, 0, 0, 0, (), False)
    assert chain.state.meta.settled_microyen == b_pays


def test_settlement_shortfalls_charged_at_imbalance_price() -> None:
    chain = new_chain(grid=FEE_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    trade_and_clear(chain)
    # a sold 800 Wh and exported 500; b bought 800 Wh and imported 600
    rec = settle(chain, reading("a", SLOT, 0, 500), reading("b", SLOT, 600, 0))
    price, fee = money(1500, 800), money(100, 800)  # b pays 1600 = 1500 + the fee
    a_penalty = money(IMB, 300)  # 9 000 000
    b_penalty = money(IMB, 200)  # 6 000 000
    assert balances(chain, "a", "b", "grid", "retail") == {
        "a": (DEPOSIT + price - a_penalty, 0),
        "b": (DEPOSIT - price - fee - b_penalty, 0),
        "grid": (fee, 0),
        "retail": (a_penalty + b_penalty, 0),
    }
    assert rec == Settled(SLOT, 800, price, fee, 0, 15_000_000, 0, 500, ("a", "b"), False)
    assert (chain.acct("a").defaults, chain.acct("b").defaults) == (1, 1)
    assert chain.acct("a").status == chain.acct("b").status == "active"


def test_settlement_missing_reading_is_a_full_shortfall() -> None:
    chain = new_chain()
    trade_and_clear(chain)
    rec = settle(chain, reading("b", SLOT, 800, 0))  # a never reports
    assert rec.shortfall_wh == 800
    assert rec.defaulters == ("a",)
    assert chain.acct("a").balance_microyen == DEPOSIT + money(1500, 800) - money(IMB, 800)
    assert chain.acct("retail").balance_microyen == money(IMB, 800)


def test_settlement_more_than_sold_is_no_shortfall() -> None:
    chain = new_chain()
    trade_and_clear(chain)
    rec = settle(chain, reading("a", SLOT, 5000, 9000), reading("b", SLOT, 900, 100))
    assert (rec.penalties_microyen, rec.shortfall_wh, rec.defaulters) == (0, 0, ())
    assert balances(chain, "a", "b") == {
        "a": (DEPOSIT + money(1500, 800), 0),
        "b": (DEPOSIT - money(1500, 800), 0),
    }


def test_settlement_tolerance_charges_but_does_not_count() -> None:
    chain = new_chain(Params(default_tolerance_wh=100))
    trade_and_clear(chain)
    rec = settle(chain, reading("a", SLOT, 0, 700), reading("b", SLOT, 600, 0))
    # a is 100 Wh short (within tolerance), b 200 Wh (beyond): both pay
    assert rec.penalties_microyen == money(IMB, 300)
    assert rec.defaulters == ("b",)
    assert (chain.acct("a").defaults, chain.acct("b").defaults) == (0, 1)


SLOT_B = "2026-08-18#01"  # gate 00:25, end 01:00, meter deadline 02:00


def test_default_limit_suspends_and_reinstate_lifts() -> None:
    chain = new_chain(Params(default_limit=2))
    a, b = chain.signer("a"), chain.signer("b")
    chain.produce(
        T1,
        a.order(SLOT, "sell", 1000, 1500),
        b.order(SLOT, "buy", 800, 2500),
        a.order(SLOT_B, "sell", 1000, 1500),
        b.order(SLOT_B, "buy", 800, 2500),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)  # clears SLOT
    chain.produce(jst(2026, 8, 18, 0, 25))
    chain.produce(jst(2026, 8, 18, 0, 25, 1))  # clears SLOT_B
    assert {k for k, _ in chain.state.table("contracts").items()} == {SLOT, SLOT_B}
    chain.produce(
        jst(2026, 8, 18, 1, 0, 1),
        reading("a", SLOT, 0, 0),
        reading("b", SLOT, 800, 0),
        reading("a", SLOT_B, 0, 700),
        reading("b", SLOT_B, 800, 0),
    )
    chain.produce(DEADLINE + 1000)  # settles SLOT: a's first default
    assert (chain.acct("a").defaults, chain.acct("a").status) == (1, "active")
    chain.produce(jst(2026, 8, 18, 2, 0, 1))  # settles SLOT_B: the second
    assert (chain.acct("a").defaults, chain.acct("a").status) == (2, "suspended")
    # both shortfalls were charged: 800 Wh and 100 Wh at 3000 sen/kWh
    proceeds = 2 * money(1500, 800)  # each slot at the node price, a's ask
    assert chain.acct("a").balance_microyen == DEPOSIT + proceeds - money(IMB, 900)
    assert chain.acct("retail").balance_microyen == money(IMB, 900)
    chain.produce(jst(2026, 8, 18, 2, 1), chain.signer("op").reinstate("a"))
    assert (chain.acct("a").defaults, chain.acct("a").status) == (0, "active")
    chain.produce(jst(2026, 8, 18, 2, 2), chain.signer("a").order("2026-08-19#00", "sell", 100, 1))
    assert chain.state.get("orders", "a#3") is not None  # a's third transaction


def test_penalty_beyond_margin_and_balance_becomes_unpaid() -> None:
    # a sell margin of 10 %: 300 sen/kWh; a deposits only what its order locks
    sell_rate = IMB * 10 // 100
    a_deposit = money(sell_rate, 1000)  # 3 000 000
    chain = new_chain(
        Params(sell_margin_percent=10), deposits={"a": a_deposit, "b": DEPOSIT, "c": DEPOSIT}
    )
    trade_and_clear(chain)
    assert balances(chain, "a") == {"a": (money(sell_rate, 200), money(sell_rate, 800))}
    rec = settle(chain, reading("a", SLOT, 0, 0), reading("b", SLOT, 800, 0))
    penalty = money(IMB, 800)  # 24 000 000
    margin = money(sell_rate, 800)  # 2 400 000, taken first
    balance = money(sell_rate, 200) + money(1500, 800)  # 600 000 + 12 000 000, taken next
    unpaid = penalty - margin - balance
    assert unpaid == 9_000_000  # (5 000 000 when the unit paid the midpoint 2000)
    assert rec.penalties_microyen == margin + balance
    assert rec.unpaid_microyen == unpaid
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (0, 0, unpaid)
    assert chain.acct("retail").balance_microyen == margin + balance
    assert chain.acct("b").balance_microyen == DEPOSIT - money(1500, 800)
    # a later deposit pays the retail provider first: part of the debt, then the rest
    t = DEADLINE + 2000
    chain.produce(t, chain.signer("op").deposit("a", 3_000_000))
    a = chain.acct("a")
    assert (a.balance_microyen, a.unpaid_microyen) == (0, 6_000_000)
    assert chain.acct("retail").balance_microyen == margin + balance + 3_000_000
    chain.produce(t + 1000, chain.signer("op").deposit("a", 7_000_000))
    a = chain.acct("a")
    assert (a.balance_microyen, a.unpaid_microyen) == (1_000_000, 0)
    assert chain.acct("retail").balance_microyen == penalty
    assert chain.acct("op").balance_microyen == OP_SUPPLY - a_deposit - 2 * DEPOSIT - 10_000_000


@pytest.mark.parametrize("with_readings", [False, True])
def test_slot_never_cleared_settles_void(with_readings: bool) -> None:
    chain = new_chain()
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)  # sealed
    if with_readings:
        # a proposer that does not clear (nothing obliges it to): the readings settle nothing
        chain.accept_built(END + 1000, reading("a", SLOT, 0, 1000), reading("b", SLOT, 800, 0))
        assert chain.state.get("slots", SLOT).status == "sealed"  # type: ignore[union-attr]
    block = chain.produce(DEADLINE + 1000)
    assert [tx["body"]["type"] for tx in block.txs] == ["settle"]
    assert balances(chain, "a", "b") == {"a": (DEPOSIT, 0), "b": (DEPOSIT, 0)}
    assert not chain.state.table("orders")
    assert not chain.state.table("readings")
    assert chain.state.get("settled", SLOT) == Settled(SLOT, 0, 0, 0, 0, 0, 0, 0, (), True)


def test_readings_without_orders_settle_void() -> None:
    chain = new_chain()
    chain.produce(END + 1000, reading("a", SLOT, 100, 200))
    assert chain.state.get("slots", SLOT).status == "sealed"  # type: ignore[union-attr]
    chain.produce(END + 2000)  # the slot gets its seed; nothing to clear
    block = chain.produce(DEADLINE + 1)
    assert [tx["body"]["type"] for tx in block.txs] == ["settle"]
    assert chain.state.get("settled", SLOT) == Settled(SLOT, 0, 0, 0, 0, 0, 0, 0, (), True)
    assert not chain.state.table("readings")


def test_money_conserved_through_a_slot() -> None:
    chain = new_chain(grid=FEE_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    trade_and_clear(chain, chain.signer("c").order(SLOT, "sell", 300, 1200))
    settle(chain, reading("a", SLOT, 0, 100), reading("b", SLOT, 300, 0), reading("c", SLOT, 0, 0))
    for name in ("a", "b", "c"):
        chain.produce(chain.state.meta.time_ms + 1, chain.signer(name).withdraw(1_000))
    total = sum(chain.acct(n).balance_microyen for n in ("op", "grid", "retail", "a", "b", "c"))
    assert total == OP_SUPPLY
    assert chain.acct("grid").balance_microyen > 0
    assert chain.acct("retail").balance_microyen > 0


def test_settlement_proceeds_pay_an_earlier_debt_first() -> None:
    sell_rate = IMB * 10 // 100  # 300 sen/kWh
    deposit = money(sell_rate, 1000) + money(sell_rate, 100)  # both sells' margins
    chain = new_chain(
        Params(sell_margin_percent=10), deposits={"a": deposit, "b": DEPOSIT, "c": DEPOSIT}
    )
    trade_and_clear(chain)  # SLOT: a#1 → b#1, 800 Wh at 1500
    chain.produce(  # SLOT2 opened at 2026-08-18 00:00
        START + 1000,
        chain.signer("a").order(SLOT2, "sell", 100, 1500),
        chain.signer("b").order(SLOT2, "buy", 100, 2500),
    )
    settle(chain, reading("a", SLOT, 0, 0), reading("b", SLOT, 800, 0))
    # a delivered nothing: penalty 24 000 000 from margin 2 400 000 and balance
    # 600 000 (released) + 12 000 000 (proceeds): 9 000 000 unpaid; SLOT2's margin stays locked
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        money(sell_rate, 100),
        9_000_000,
    )
    retail_before = chain.acct("retail").balance_microyen
    chain.produce(GATE2)
    # SLOT2 cleared: 100 Wh, both orders filled, so any price from 1500 to 2500 is an
    # equilibrium; the rule takes the middle, 2000
    chain.produce(GATE2 + 1000)
    chain.produce(END2 + 1000, reading("a", SLOT2, 0, 100), reading("b", SLOT2, 100, 0))
    chain.produce(DEADLINE2 + 1000)
    # proceeds 2000 × 100 × 10 = 2 000 000 and the released margin 300 000 repay the debt
    repaid = money(2000, 100) + money(sell_rate, 100)
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        0,
        9_000_000 - repaid,
    )
    assert chain.acct("retail").balance_microyen == retail_before + repaid
    assert a.defaults == 1


def test_settlement_nets_a_sites_buys_and_sells_in_one_slot() -> None:
    # a sells 1000 Wh to b and buys 1000 Wh from c in the same slot (never from itself): its
    # contracts net to nothing, so a meter showing no exchange is no shortfall for a. a's orders
    # may not cross (rule self-cross): it buys at 900, below its ask of 1000. A welfare clearing
    # would then pair c with b directly (it gains a's ask − a's bid); the volume goal, which
    # counts each unit's energy, trades both.
    chain = new_chain(goal="volume")
    assert chain.genesis.market.pricing == "midpoint"
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1000),
        chain.signer("b").order(SLOT, "buy", 1000, 2000),
    )
    chain.produce(
        T1 + 1000,
        chain.signer("c").order(SLOT, "sell", 1000, 800),
        chain.signer("a", skip=0).order(SLOT, "buy", 1000, 900),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)
    rec = chain.state.get("contracts", SLOT)
    assert isinstance(rec, Contracts)
    pairs = sorted((u.seller, u.buyer, u.energy_wh) for u in rec.units)
    assert pairs == [("a", "b", 1000), ("c", "a", 1000)]
    settled = settle(
        chain,
        reading("a", SLOT, 0, 0),
        reading("b", SLOT, 1000, 0),
        reading("c", SLOT, 0, 1000),
    )
    assert settled.shortfall_wh == 0 and settled.penalties_microyen == 0
    assert settled.defaulters == ()
    # a net buyer that exports instead is short by its purchase and its export
    chain2 = new_chain()
    chain2.produce(T1, chain2.signer("c").order(SLOT, "sell", 1000, 1200))
    chain2.produce(T1 + 1000, chain2.signer("a").order(SLOT, "buy", 1000, 1500))
    chain2.produce(GATE)
    chain2.produce(GATE + 1000)
    settled = settle(chain2, reading("a", SLOT, 0, 300), reading("c", SLOT, 0, 1000))
    assert settled.shortfall_wh == 1300
    assert settled.penalties_microyen == money(IMB, 1300)
