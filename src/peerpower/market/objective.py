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
import numpy.typing as npt

from peerpower.market.orders import Book, BookArrays, book_arrays
from peerpower.market.result import Goal, Objective, Trade


def midpoint_price(ask: int, bid: int, fee: int) -> int:
    """Price of an optimal unit: ``ask + floor(spread / 2)``, spread = bid − fee − ask [sen/kWh]."""
    return ask + (bid - fee - ask) // 2


def maxmin_participants(book: Book) -> dict[str, int]:
    """Participants with an order in at least one compatible pair → energy of those orders [Wh].

    A pair (sell i, buy j) is compatible when the participants differ and bid_j − fee_ij ≥ ask_i.
    Per grid node, not per pair: each node keeps its best two prices of different participants
    on each side, and each order's node the best two (of different participants) it can reach.
    """
    arr = book_arrays(book)
    in_pair = np.zeros(len(book.orders), dtype=bool)
    sells = np.flatnonzero(arr.is_sell)
    buys = np.flatnonzero(~arr.is_sell)
    if len(sells) and len(buys):
        # a sell reaches bid − fee; a buy reaches −(ask + fee): compatible when ≥ ask / ≥ −bid
        in_pair[sells] = _reach(book, arr, sells, buys, arr.price[buys]) >= arr.price[sells]
        in_pair[buys] = _reach(book, arr, buys, sells, -arr.price[sells]) >= -arr.price[buys]
    offered: dict[str, int] = {}
    for k in np.flatnonzero(in_pair).tolist():
        o = book.orders[k]
        offered[o.participant] = offered.get(o.participant, 0) + o.energy_wh
    return offered


I64 = npt.NDArray[np.int64]
_NONE = -(2**60)  # below every value a node can reach


def _reach(book: Book, arr: BookArrays, own: I64, other: I64, value: I64) -> I64:
    """For each order of ``own``: the best ``value − fee`` over the ``other`` orders (``value``
    per order of ``other``) of another participant, or far below every price if none."""
    # each other-side node's best value (participant p1) and best of another participant
    node, part = arr.node[other], arr.participant[other]
    by = np.lexsort((-value, node))  # by node, best value first
    node, part, value = node[by], part[by], value[by]
    nodes, first = np.unique(node, return_index=True)
    at = np.searchsorted(nodes, node)
    a1, p1 = value[first], part[first]
    a2 = np.full(len(nodes), _NONE, dtype=np.int64)
    rest = np.flatnonzero(part != p1[at])  # still by node, best first
    n2, f2 = np.unique(at[rest], return_index=True)
    a2[n2] = value[rest[f2]]
    # each own-side node's best reach (participant P) and best reach of another participant
    own_nodes, own_at = np.unique(arr.node[own], return_inverse=True)
    t1 = np.empty(len(own_nodes), dtype=np.int64)
    t2 = np.empty(len(own_nodes), dtype=np.int64)
    big_p = np.empty(len(own_nodes), dtype=np.int64)
    chunk = max(1, 4_000_000 // len(nodes))
    for start in range(0, len(own_nodes), chunk):
        u = own_nodes[start : start + chunk]
        uu, vv = np.meshgrid(u, nodes, indexing="ij")
        fee = book.grid.fees_between(uu.ravel(), vv.ravel()).reshape(uu.shape)
        m1 = a1[None, :] - fee
        best = np.argmax(m1, axis=1)
        rows = np.arange(len(u))
        t1[start : start + len(u)] = m1[rows, best]
        pb = p1[best]
        big_p[start : start + len(u)] = pb
        m2 = np.where(p1[None, :] == pb[:, None], a2[None, :] - fee, m1)
        t2[start : start + len(u)] = m2.max(axis=1)
    mine = arr.participant[own]
    return np.where(mine != big_p[own_at], t1[own_at], t2[own_at])


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
