"""A live order book with price-time priority, and its depth ladder (SELL | PRICE | BUY).

The ladder aggregates the energy offered and asked at each price level, best prices in the
middle, as on the Urawa-Misono trading screen; levels beyond the shown depth are summed into an
OVER row (sells above) and an UNDER row (buys below).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from peerpower.errors import InvalidOrder
from peerpower.market.orders import Order, Side


@dataclass(frozen=True, slots=True)
class LadderRow:
    """One row of the ladder; ``price_sen_per_kwh`` is ``None`` for the OVER and UNDER rows."""

    label: str
    price_sen_per_kwh: int | None
    sell_wh: int
    buy_wh: int


class OrderBook:
    """Resting orders of one slot, each side kept in price-time priority.

    Sells rank by (ask ascending, seq), buys by (bid descending, seq). Adding is O(log n) search
    plus a list insert; cancelling is O(n) in the worst case, which is fine for a slot's book.
    """

    def __init__(self, orders: Iterable[Order] = ()) -> None:
        self._sells: list[tuple[int, int, str]] = []
        self._buys: list[tuple[int, int, str]] = []
        self._orders: dict[str, Order] = {}
        for order in orders:
            self.add(order)

    def add(self, order: Order) -> None:
        if order.id in self._orders:
            raise InvalidOrder("id", f"order {order.id!r} is already in the book")
        self._orders[order.id] = order
        if order.side is Side.SELL:
            bisect.insort(self._sells, (order.price_sen_per_kwh, order.seq, order.id))
        else:
            bisect.insort(self._buys, (-order.price_sen_per_kwh, order.seq, order.id))

    def cancel(self, order_id: str) -> Order:
        order = self._orders.pop(order_id, None)
        if order is None:
            raise InvalidOrder("id", f"order {order_id!r} is not in the book")
        if order.side is Side.SELL:
            self._sells.remove((order.price_sen_per_kwh, order.seq, order.id))
        else:
            self._buys.remove((-order.price_sen_per_kwh, order.seq, order.id))
        return order

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def sells(self) -> Iterator[Order]:
        """Sells, best (lowest ask, earliest) first."""
        return (self._orders[k[2]] for k in self._sells)

    def buys(self) -> Iterator[Order]:
        """Buys, best (highest bid, earliest) first."""
        return (self._orders[k[2]] for k in self._buys)

    @property
    def best_ask(self) -> int | None:
        return self._sells[0][0] if self._sells else None

    @property
    def best_bid(self) -> int | None:
        return -self._buys[0][0] if self._buys else None

    def ladder(self, depth: int | None = None) -> list[LadderRow]:
        """The ladder, highest price first; see :func:`ladder`."""
        return ladder(self._orders.values(), depth)


def ladder(orders: Iterable[Order], depth: int | None = None) -> list[LadderRow]:
    """Aggregate energy per price level: rows from the highest price to the lowest.

    Parameters
    ----------
    orders
        The orders of one slot.
    depth
        Price levels shown per side (sells from the best ask up, buys from the best bid down);
        the rest is summed into an ``OVER`` row (sells) and an ``UNDER`` row (buys). ``None``
        shows every level.
    """
    sell: dict[int, int] = {}
    buy: dict[int, int] = {}
    for o in orders:
        side = sell if o.side is Side.SELL else buy
        side[o.price_sen_per_kwh] = side.get(o.price_sen_per_kwh, 0) + o.energy_wh
    sell_levels = sorted(sell)
    buy_levels = sorted(buy, reverse=True)
    over = under = 0
    if depth is not None:
        over = sum(sell[p] for p in sell_levels[depth:])
        under = sum(buy[p] for p in buy_levels[depth:])
        sell_levels = sell_levels[:depth]
        buy_levels = buy_levels[:depth]
    prices = sorted(set(sell_levels) | set(buy_levels), reverse=True)
    shown_sell = set(sell_levels)
    shown_buy = set(buy_levels)
    rows: list[LadderRow] = []
    if over:
        rows.append(LadderRow("OVER", None, over, 0))
    for p in prices:
        rows.append(
            LadderRow(
                "",
                p,
                sell[p] if p in shown_sell else 0,
                buy[p] if p in shown_buy else 0,
            )
        )
    if under:
        rows.append(LadderRow("UNDER", None, 0, under))
    return rows
