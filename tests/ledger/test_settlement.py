"""Margins, clearing and settlement in exact money, computed by hand from the documented rules.

With the default parameters (``peerpower.ledger.genesis``): a buy locks bid × E plus the
imbalance charge 3000 sen/kWh × E × 100 %; a sell locks 3000 × E × 100 %; money [µ¥] =
price [sen/kWh] × energy [Wh] × 10. ``Chain.produce`` also checks after every block that the
money held (balance + locked over all accounts) is the genesis supply and that each account's
lock is its open orders' margin plus its contracts' locks.
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
    # one unit a#1 → b#1, 800 Wh at the midpoint 1500 + (2500 − 1500) // 2 = 2000
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    seller_lock = money(IMB, 800)  # 24 000 000
    buyer_lock = money(2000 + 0 + IMB, 800)  # 40 000 000
    assert contracts.units == (
        Contract("a#1", "b#1", "a", "b", 800, 2000, 0, seller_lock, buyer_lock),
    )
    # a: the 200 Wh not sold are released; b: the bid above price (500 × 800 × 10) is released;
    # c: everything
    assert balances(chain, "a", "b", "c") == {
        "a": (DEPOSIT - 24_000_000, 24_000_000),
        "b": (DEPOSIT - 40_000_000, 40_000_000),
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
    # midpoints: with b 1500 + 1000 // 2 = 2000, with c 1500 + 500 // 2 = 1750
    assert sorted(contracts.units, key=lambda c: c.buyer) == [
        Contract("a#1", "b#1", "a", "b", 400, 2000, 0, money(IMB, 400), money(2000 + IMB, 400)),
        Contract("a#1", "c#1", "a", "c", 400, 1750, 0, money(IMB, 400), money(1750 + IMB, 400)),
    ]
    assert balances(chain, "a", "b", "c") == {
        "a": (DEPOSIT - 24_000_000, 24_000_000),
        "b": (DEPOSIT - 20_000_000, 20_000_000),
        "c": (DEPOSIT - 19_000_000, 19_000_000),
    }


# -- settlement ----------------------------------------------------------------------------------


def test_settlement_pays_seller_and_grid_fee() -> None:
    chain = new_chain(grid=FEE_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    trade_and_clear(chain)
    # fee far → root: 100 sen/kWh; midpoint 1500 + (2500 − 100 − 1500) // 2 = 1950
    contracts = chain.state.get("contracts", SLOT)
    assert isinstance(contracts, Contracts)
    (unit,) = contracts.units
    assert (unit.energy_wh, unit.price_sen_per_kwh, unit.fee_sen_per_kwh) == (800, 1950, 100)
    assert unit.buyer_lock_microyen == money(1950 + 100 + IMB, 800)  # 40 400 000
    assert chain.acct("b").balance_microyen == DEPOSIT - 40_400_000
    rec = settle(chain, reading("a", SLOT, 0, 1000), reading("b", SLOT, 800, 0))
    price = money(1950, 800)  # 15 600 000
    fee = money(100, 800)  # 800 000
    assert balances(chain, "a", "b", "grid", "retail") == {
        "a": (DEPOSIT + price, 0),
        "b": (DEPOSIT - price - fee, 0),
        "grid": (fee, 0),
        "retail": (0, 0),
    }
    assert rec == Settled(SLOT, 800, price, fee, 0, 0, 0, (), False)
    assert chain.state.meta.settled_microyen == price + fee
    assert (chain.acct("a").defaults, chain.acct("b").defaults) == (0, 0)


def test_settlement_shortfalls_charged_at_imbalance_price() -> None:
    chain = new_chain(grid=FEE_GRID, nodes={"a": "far", "b": "root", "c": "root"})
    trade_and_clear(chain)
    # a sold 800 Wh and exported 500; b bought 800 Wh and imported 600
    rec = settle(chain, reading("a", SLOT, 0, 500), reading("b", SLOT, 600, 0))
    price, fee = money(1950, 800), money(100, 800)
    a_penalty = money(IMB, 300)  # 9 000 000
    b_penalty = money(IMB, 200)  # 6 000 000
    assert balances(chain, "a", "b", "grid", "retail") == {
        "a": (DEPOSIT + price - a_penalty, 0),
        "b": (DEPOSIT - price - fee - b_penalty, 0),
        "grid": (fee, 0),
        "retail": (a_penalty + b_penalty, 0),
    }
    assert rec == Settled(SLOT, 800, price, fee, 15_000_000, 0, 500, ("a", "b"), False)
    assert (chain.acct("a").defaults, chain.acct("b").defaults) == (1, 1)
    assert chain.acct("a").status == chain.acct("b").status == "active"


def test_settlement_missing_reading_is_a_full_shortfall() -> None:
    chain = new_chain()
    trade_and_clear(chain)
    rec = settle(chain, reading("b", SLOT, 800, 0))  # a never reports
    assert rec.shortfall_wh == 800
    assert rec.defaulters == ("a",)
    assert chain.acct("a").balance_microyen == DEPOSIT + money(2000, 800) - money(IMB, 800)
    assert chain.acct("retail").balance_microyen == money(IMB, 800)


def test_settlement_more_than_sold_is_no_shortfall() -> None:
    chain = new_chain()
    trade_and_clear(chain)
    rec = settle(chain, reading("a", SLOT, 5000, 9000), reading("b", SLOT, 900, 100))
    assert (rec.penalties_microyen, rec.shortfall_wh, rec.defaulters) == (0, 0, ())
    assert balances(chain, "a", "b") == {
        "a": (DEPOSIT + money(2000, 800), 0),
        "b": (DEPOSIT - money(2000, 800), 0),
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
    proceeds = 2 * money(2000, 800)
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
    balance = money(sell_rate, 200) + money(2000, 800)  # 600 000 + 16 000 000, taken next
    unpaid = penalty - margin - balance
    assert unpaid == 5_000_000
    assert rec.penalties_microyen == margin + balance
    assert rec.unpaid_microyen == unpaid
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (0, 0, unpaid)
    assert chain.acct("retail").balance_microyen == margin + balance
    assert chain.acct("b").balance_microyen == DEPOSIT - money(2000, 800)
    # a later deposit pays the retail provider first: part of the debt, then the rest
    t = DEADLINE + 2000
    chain.produce(t, chain.signer("op").deposit("a", 3_000_000))
    a = chain.acct("a")
    assert (a.balance_microyen, a.unpaid_microyen) == (0, 2_000_000)
    assert chain.acct("retail").balance_microyen == margin + balance + 3_000_000
    chain.produce(t + 1000, chain.signer("op").deposit("a", 7_000_000))
    a = chain.acct("a")
    assert (a.balance_microyen, a.unpaid_microyen) == (5_000_000, 0)
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
    assert chain.state.get("settled", SLOT) == Settled(SLOT, 0, 0, 0, 0, 0, 0, (), True)


def test_readings_without_orders_settle_void() -> None:
    chain = new_chain()
    chain.produce(END + 1000, reading("a", SLOT, 100, 200))
    assert chain.state.get("slots", SLOT).status == "sealed"  # type: ignore[union-attr]
    chain.produce(END + 2000)  # the slot gets its seed; nothing to clear
    block = chain.produce(DEADLINE + 1)
    assert [tx["body"]["type"] for tx in block.txs] == ["settle"]
    assert chain.state.get("settled", SLOT) == Settled(SLOT, 0, 0, 0, 0, 0, 0, (), True)
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
    trade_and_clear(chain)  # SLOT: a#1 → b#1, 800 Wh at 2000
    chain.produce(  # SLOT2 opened at 2026-08-18 00:00
        START + 1000,
        chain.signer("a").order(SLOT2, "sell", 100, 1500),
        chain.signer("b").order(SLOT2, "buy", 100, 2500),
    )
    settle(chain, reading("a", SLOT, 0, 0), reading("b", SLOT, 800, 0))
    # a delivered nothing: penalty 24 000 000 from margin 2 400 000 and balance
    # 600 000 (released) + 16 000 000 (proceeds): 5 000 000 unpaid; SLOT2's margin stays locked
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        money(sell_rate, 100),
        5_000_000,
    )
    retail_before = chain.acct("retail").balance_microyen
    chain.produce(GATE2)
    chain.produce(GATE2 + 1000)  # SLOT2 cleared: 100 Wh at (1500 + 2500) / 2 = 2000
    chain.produce(END2 + 1000, reading("a", SLOT2, 0, 100), reading("b", SLOT2, 100, 0))
    chain.produce(DEADLINE2 + 1000)
    # proceeds 2000 × 100 × 10 = 2 000 000 and the released margin 300 000 repay the debt
    repaid = money(2000, 100) + money(sell_rate, 100)
    a = chain.acct("a")
    assert (a.balance_microyen, a.locked_microyen, a.unpaid_microyen) == (
        0,
        0,
        5_000_000 - repaid,
    )
    assert chain.acct("retail").balance_microyen == retail_before + repaid
    assert a.defaults == 1


def test_settlement_nets_a_sites_buys_and_sells_in_one_slot() -> None:
    # a sells 1000 Wh to b and buys 1000 Wh from c in the same slot (never from itself): its
    # contracts net to nothing, so a meter showing no exchange is no shortfall for a
    chain = new_chain()
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1000),
        chain.signer("b").order(SLOT, "buy", 1000, 2000),
    )
    chain.produce(
        T1 + 1000,
        chain.signer("c").order(SLOT, "sell", 1000, 1200),
        chain.signer("a", skip=0).order(SLOT, "buy", 1000, 1500),
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
