"""Objective values of a set of trades, computed exactly from the trades (DESIGN.md §3).

* ``volume`` — traded energy [Wh], then welfare;
* ``welfare`` — total profit of all participants Σ spread × energy [µ¥], then volume;
* ``maxmin`` — the lowest participant's profit per Wh it offered [µ¥/Wh], then welfare.

Ties between equally good clearings are broken by the seeded score Σ r_k · filled_k [Wh].
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import numpy as np

from peerpower.market.orders import Book, book_arrays
from peerpower.market.result import Goal, Objective, Trade


def midpoint_price(ask: int, bid: int, fee: int) -> int:
    """Price of an optimal unit: ``ask + floor(spread / 2)``, spread = bid − fee − ask [sen/kWh]."""
    return ask + (bid - fee - ask) // 2


def maxmin_participants(book: Book) -> dict[str, int]:
    """Participants with an order in at least one compatible pair → energy of those orders [Wh].

    A pair (sell i, buy j) is compatible when the participants differ and bid_j − fee_ij ≥ ask_i.
    """
    arr = book_arrays(book)
    sells = np.flatnonzero(arr.is_sell)
    buys = np.flatnonzero(~arr.is_sell)
    in_pair = np.zeros(len(book.orders), dtype=bool)
    if len(sells) and len(buys):
        grid = book.grid
        s_nodes, s_inv = np.unique(arr.node[sells], return_inverse=True)
        b_nodes, b_inv = np.unique(arr.node[buys], return_inverse=True)
        uu, vv = np.meshgrid(s_nodes, b_nodes, indexing="ij")
        fee_nodes = grid.fees_between(uu.ravel(), vv.ravel()).reshape(uu.shape)
        # Chunk over sells so that memory stays bounded on large books.
        chunk = max(1, 4_000_000 // max(1, len(buys)))
        for start in range(0, len(sells), chunk):
            part = slice(start, start + chunk)
            fee = fee_nodes[s_inv[part]][:, b_inv]
            ok = (arr.price[buys][None, :] - fee) >= arr.price[sells[part]][:, None]
            ok &= arr.participant[sells[part]][:, None] != arr.participant[buys][None, :]
            in_pair[sells[part]] |= ok.any(axis=1)
            in_pair[buys] |= ok.any(axis=0)
    offered: dict[str, int] = {}
    for k in np.flatnonzero(in_pair).tolist():
        o = book.orders[k]
        offered[o.participant] = offered.get(o.participant, 0) + o.energy_wh
    return offered


def profits_microyen(book: Book, trades: Iterable[Trade]) -> dict[str, int]:
    """What each participant gains from its trades at their prices [µ¥]: a seller its price
    above its ask, a buyer its bid above what it pays (fee and rent included)."""
    orders = book.orders
    by_id = book.by_id
    profit: dict[str, int] = {}
    for t in trades:
        ask = orders[by_id[t.sell_order]].price_sen_per_kwh
        bid = orders[by_id[t.buy_order]].price_sen_per_kwh
        gain_s = (t.price_sen_per_kwh - ask) * t.energy_wh * 10
        gain_b = (bid - t.buyer_price_sen_per_kwh) * t.energy_wh * 10
        profit[t.seller] = profit.get(t.seller, 0) + gain_s
        profit[t.buyer] = profit.get(t.buyer, 0) + gain_b
    return profit


def score_of(book: Book, trades: Iterable[Trade], scores: list[int] | None = None) -> int:
    """Seeded tie-break score Σ r_k · filled_k [Wh] over sells and buys."""
    r = scores if scores is not None else book.scores()
    by_id = book.by_id
    total = 0
    for t in trades:
        total += (r[by_id[t.sell_order]] + r[by_id[t.buy_order]]) * t.energy_wh
    return total


def objective_of(goal: Goal, volume: int, welfare: int, score: int) -> Objective:
    """Objective for the ``volume`` or ``welfare`` goal from the totals of the trades: volume
    [Wh], welfare [µ¥] and score [Wh] (as :func:`evaluate` computes them)."""
    if goal == "volume":
        return Objective(Fraction(volume), welfare, score)
    if goal == "welfare":
        return Objective(Fraction(welfare), volume, score)
    raise ValueError(f"objective_of takes volume or welfare, not {goal!r}")


def evaluate(
    book: Book,
    trades: tuple[Trade, ...],
    goal: Goal,
    offered: dict[str, int] | None = None,
    scores: list[int] | None = None,
) -> Objective:
    """Exact objective of ``trades`` for ``goal`` (see the module notes)."""
    orders = book.orders
    by_id = book.by_id
    volume = 0
    welfare = 0
    for t in trades:
        ask = orders[by_id[t.sell_order]].price_sen_per_kwh
        bid = orders[by_id[t.buy_order]].price_sen_per_kwh
        volume += t.energy_wh
        welfare += (bid - t.fee_sen_per_kwh - ask) * t.energy_wh * 10
    score = score_of(book, trades, scores)
    if goal == "volume":
        return Objective(Fraction(volume), welfare, score)
    if goal == "welfare":
        return Objective(Fraction(welfare), volume, score)
    if offered is None:
        offered = maxmin_participants(book)
    profit = profits_microyen(book, trades)
    lowest = min((Fraction(profit.get(p, 0), e) for p, e in offered.items()), default=Fraction(0))
    return Objective(lowest, welfare, score)
