"""Uniform-price call auction at the gate (Itayose), split by grid node on a grid.

Orders that cross an earlier order of their own participant are left out first (self-trade
prevention, :mod:`.stp`).

On one grid node (the textbook case): with ``S(p)`` = energy of asks ≤ p and ``D(p)`` = energy
of bids ≥ p, the matched volume is ``V = max_p min(S(p), D(p))`` over integer prices, and the
price is ``floor((lo + hi) / 2)`` over the interval ``[lo, hi]`` of prices reaching ``V``.

On a grid (market splitting, as JEPX splits its areas when an interconnector is congested):
one price per node, the competitive equilibrium of the book under the grid's fees and
capacities (:mod:`.pricing`) — the welfare-maximising fills, orders of equal merit taken in
time priority ``(seq, −score)``, priced at the rule's point of the equilibrium prices. A sale
is paid its node's price and a purchase pays its node's; the path fee and any congestion rent
go to the grid operator. With no fees and no binding capacity every node has the same price.

Sellers are ranked by (ask, seq, −score) and buyers by (−bid, seq, −score); units are formed by
walking both lists until ``V`` is reached. A participant never meets itself in the walk: its
filled sell and filled buy would cross (``ask ≤ price ≤ bid``), which self-trade prevention
has ruled out.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

from peerpower.market.orders import Book, BookArrays, Side, book_arrays
from peerpower.market.result import ClearingResult, Trade, totals_from_columns, totals_of
from peerpower.market.stp import prevent_self_trade


def call_volume(book: Book, fee: int) -> tuple[int, int, int]:
    """``(V, lo, hi)``: matched volume [Wh] and the interval of prices reaching it [sen/kWh]."""
    asks = sorted((o.price_sen_per_kwh, o.energy_wh) for o in book.orders if o.side is Side.SELL)
    bids = sorted(
        ((o.price_sen_per_kwh - fee, o.energy_wh) for o in book.orders if o.side is Side.BUY),
        reverse=True,
    )
    # Cumulative supply at each ask, demand at each net bid; V = max over p of min(S, D).
    candidates = sorted({p for p, _ in asks} | {p for p, _ in bids})
    best = 0
    s_cum = [0]
    for _, e in asks:
        s_cum.append(s_cum[-1] + e)
    d_cum = [0]
    for _, e in bids:
        d_cum.append(d_cum[-1] + e)
    ask_prices = [p for p, _ in asks]
    neg_bid_prices = [-p for p, _ in bids]
    for p in candidates:
        supply = s_cum[bisect.bisect_right(ask_prices, p)]
        demand = d_cum[bisect.bisect_right(neg_bid_prices, -p)]
        best = max(best, min(supply, demand))
    if best == 0:
        return 0, 0, 0
    # lo: the smallest p with S(p) ≥ V is the ask at which supply reaches V;
    # hi: the largest p with D(p) ≥ V is the net bid at which demand reaches V.
    lo = ask_prices[bisect.bisect_left(s_cum, best) - 1]
    hi = -neg_bid_prices[bisect.bisect_left(d_cum, best) - 1]
    return best, lo, hi


def clear_call(book: Book) -> ClearingResult:
    """Clear ``book`` as a call auction; see the module notes."""
    book, excluded = prevent_self_trade(book)
    if book.grid.size > 1:
        return _split(book, excluded)
    fee = 0
    volume, lo, hi = call_volume(book, fee)
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    if volume == 0:
        return ClearingResult(
            "call",
            (),
            totals_of((), limit),
            clearing_price_sen_per_kwh=None,
            pricing="nodal",
            excluded=excluded,
        )
    price = (lo + hi) // 2
    scores = book.scores()
    ranked = sorted(range(len(book.orders)), key=lambda k: (book.orders[k].seq, -scores[k]))
    rank = {k: r for r, k in enumerate(ranked)}
    sells = sorted(
        (k for k, o in enumerate(book.orders) if o.side is Side.SELL),
        key=lambda k: (book.orders[k].price_sen_per_kwh, rank[k]),
    )
    buys = sorted(
        (k for k, o in enumerate(book.orders) if o.side is Side.BUY),
        key=lambda k: (-book.orders[k].price_sen_per_kwh, rank[k]),
    )
    sell_fill = _take(book, sells, volume)
    buy_fill = _take(book, buys, volume)
    pairs = _pair(sell_fill, buy_fill)
    trades = tuple(
        Trade(
            book.orders[s].id,
            book.orders[b].id,
            book.orders[s].participant,
            book.orders[b].participant,
            e,
            price,
            fee,
            price + fee,
        )
        for s, b, e in pairs
    )
    return ClearingResult(
        "call",
        trades,
        totals_of(trades, limit),
        clearing_price_sen_per_kwh=price,
        pricing="nodal",
        node_prices={book.grid.ids[0]: price},
        excluded=excluded,
    )


def time_priority(arr: BookArrays) -> npt.NDArray[np.uint64]:
    """A rank per order for the flow's tie-break, highest first by ``(seq, −score, index)``,
    spread over 64 bits so that the flow keeps the order in its top bits."""
    n = len(arr.lots)
    score_desc = np.iinfo(np.uint64).max - arr.score_u64
    by_rank = np.lexsort((np.arange(n), score_desc, arr.seq))
    rank = np.empty(n, dtype=np.uint64)
    rank[by_rank] = np.arange(n, 0, -1, dtype=np.uint64)
    step = np.uint64((2**64 - 1) // (n + 1))
    out: npt.NDArray[np.uint64] = rank * step
    return out


def _split(book: Book, excluded: tuple[tuple[str, str], ...]) -> ClearingResult:
    """Market splitting on a grid (see the module notes)."""
    from peerpower.market.optimal import _nodal, _trades, _welfare_flow
    from peerpower.market.pairing import tree_units

    arr = book_arrays(book)
    everyone = np.ones(len(arr.lots), dtype=bool)
    filled, _ = _welfare_flow(book, arr, everyone, time_priority(arr))
    units = tree_units(book.grid, arr.is_sell, arr.node, filled)
    sell, buy, lots = units
    pi = _nodal(book, arr, units)
    fee = book.grid.fees_between(arr.node[sell], arr.node[buy])
    price, buyer_price = pi[arr.node[sell]], pi[arr.node[buy]]
    energy = lots * book.lot_wh
    trades = _trades(book, arr, sell, buy, energy, price, fee, buyer_price)
    totals = totals_from_columns(
        energy.tolist(),
        arr.price[sell].tolist(),
        arr.price[buy].tolist(),
        fee.tolist(),
        (buyer_price - price - fee).tolist(),
    )
    prices = dict(zip(book.grid.ids, pi.tolist(), strict=True))
    uniform = set(prices.values())
    return ClearingResult(
        "call",
        trades,
        totals,
        clearing_price_sen_per_kwh=uniform.pop() if len(uniform) == 1 and trades else None,
        pricing="nodal",
        node_prices=prices,
        excluded=excluded,
    )


def _take(book: Book, ranked: list[int], volume: int) -> list[list[int]]:
    fills: list[list[int]] = []
    left = volume
    for k in ranked:
        if left == 0:
            break
        e = min(left, book.orders[k].energy_wh)
        fills.append([k, e])
        left -= e
    return fills


def _pair(sells: list[list[int]], buys: list[list[int]]) -> list[tuple[int, int, int]]:
    """Walk both ranked fill lists into units."""
    units: dict[tuple[int, int], int] = {}
    k = 0
    for b, need in buys:
        while need:
            s, left = sells[k]
            take = min(left, need)
            units[(s, b)] = units.get((s, b), 0) + take
            sells[k][1] -= take
            need -= take
            if sells[k][1] == 0:
                k += 1
    return [(s, b, e) for (s, b), e in units.items()]
