"""The ladder of the Urawa-Misono screen, and price-time priority of the live book."""

from __future__ import annotations

import json
from pathlib import Path

from peerpower.market.depth import OrderBook, ladder
from peerpower.market.orders import Order, Side, parse_book

VECTORS = Path(__file__).parents[1] / "vectors"
EXAMPLES = Path(__file__).parents[2] / "examples"


def test_misono_screen_ladder_matches_the_slide() -> None:
    vector = json.loads((VECTORS / "misono_screen_ladder.json").read_text())
    book = parse_book(json.loads((EXAMPLES / "misono_screen.json").read_text()))
    rows = ladder(book.orders, depth=vector["depth"])
    got = [[r.label or r.price_sen_per_kwh, r.sell_wh, r.buy_wh] for r in rows]
    assert got == vector["rows"]


def test_order_book_price_time_priority() -> None:
    book = OrderBook()
    book.add(Order("a", "A", Side.SELL, 100, 2000, "root", 2))
    book.add(Order("b", "B", Side.SELL, 100, 1900, "root", 3))
    book.add(Order("c", "C", Side.SELL, 100, 1900, "root", 1))
    book.add(Order("x", "X", Side.BUY, 100, 1800, "root", 0))
    book.add(Order("y", "Y", Side.BUY, 200, 1850, "root", 4))
    assert [o.id for o in book.sells()] == ["c", "b", "a"]
    assert [o.id for o in book.buys()] == ["y", "x"]
    assert (book.best_ask, book.best_bid) == (1900, 1850)
    book.cancel("c")
    assert [o.id for o in book.sells()] == ["b", "a"]
    rows = book.ladder()
    assert [(r.price_sen_per_kwh, r.sell_wh, r.buy_wh) for r in rows] == [
        (2000, 100, 0),
        (1900, 100, 0),
        (1850, 0, 200),
        (1800, 0, 100),
    ]
