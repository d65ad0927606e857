"""Single-price call auction: the textbook vector and its rules."""

from __future__ import annotations

import pytest

from peerpower.errors import ClearingError
from peerpower.grid.tree import GridTree
from peerpower.market import clear, parse_book, verify
from peerpower.market.orders import Book, Order, Side


def test_call_textbook_vector() -> None:
    book = parse_book(
        {
            "orders": [
                {
                    "id": "b1",
                    "participant": "A",
                    "side": "buy",
                    "energy_wh": 200,
                    "price_sen_per_kwh": 1000,
                },
                {
                    "id": "b2",
                    "participant": "B",
                    "side": "buy",
                    "energy_wh": 200,
                    "price_sen_per_kwh": 650,
                },
                {
                    "id": "s1",
                    "participant": "C",
                    "side": "sell",
                    "energy_wh": 200,
                    "price_sen_per_kwh": 650,
                },
                {
                    "id": "s2",
                    "participant": "D",
                    "side": "sell",
                    "energy_wh": 200,
                    "price_sen_per_kwh": 1100,
                },
            ]
        }
    )
    result = clear(book, "call")
    assert result.clearing_price_sen_per_kwh == 825
    assert result.totals.volume_wh == 200
    assert [(t.sell_order, t.buy_order) for t in result.trades] == [("s1", "b1")]
    assert verify(book, result).ok


def test_call_uniform_fee_is_charged_and_required() -> None:
    grid = GridTree(("r", "a", "b"), (-1, 0, 0), (0, 100, 100), (-1, -1, -1))
    orders = [
        Order("s", "S", Side.SELL, 100, 1000, "a", 0),
        Order("b", "B", Side.BUY, 100, 1500, "b", 1),
    ]
    result = clear(Book.build(orders, grid), "call")
    # fee 200: S(p) reaches 100 at 1000, D(p) while 1500 − 200 ≥ p: price (1000 + 1300) // 2
    assert result.clearing_price_sen_per_kwh == 1150
    assert result.trades[0].fee_sen_per_kwh == 200
    orders.append(Order("c", "C", Side.BUY, 100, 1500, "a", 2))
    with pytest.raises(ClearingError, match="one fee for every pair"):
        clear(Book.build(orders, grid), "call")


def test_call_never_pairs_a_participant_with_itself() -> None:
    orders = [
        Order("s1", "A", Side.SELL, 200, 1000, "root", 0),
        Order("s2", "B", Side.SELL, 200, 1000, "root", 1),
        Order("b1", "A", Side.BUY, 200, 2000, "root", 2),
        Order("b2", "C", Side.BUY, 200, 2000, "root", 3),
    ]
    book = Book.build(orders)
    result = clear(book, "call")
    assert all(t.seller != t.buyer for t in result.trades)
    assert result.totals.volume_wh == 400
    assert verify(book, result).ok
