"""Single-price call auction at the gate (Itayose), for a market with one flat fee.

Every (sell, buy) pair of different participants must have the same fee ``f``. With
``S(p)`` = energy of asks ≤ p and ``D(p)`` = energy of bids with ``bid − f ≥ p``, the matched
volume is ``V = max_p min(S(p), D(p))`` over integer prices, and the price is
``floor((lo + hi) / 2)`` over the interval ``[lo, hi]`` of prices reaching ``V``.

Sellers are ranked by (ask, seq, −score) and buyers by (−bid, seq, −score); units are formed by
walking both lists until ``V`` is reached. The seller receives the price; the buyer pays price + f.
A participant never trades with itself: where the walk would pair a participant with itself the
unit is re-paired with another one, and energy that only the same participant could take is
left unfilled (so the volume can fall short of ``V`` in that corner case).
"""

from __future__ import annotations

import bisect

from peerpower.errors import ClearingError
from peerpower.market.orders import Book, Side
from peerpower.market.result import ClearingResult, Trade, totals_of


def uniform_fee(book: Book) -> int:
    """The fee shared by every pair of different participants, or :class:`ClearingError`."""
    grid = book.grid
    if grid.size == 1:
        return 0
    sell_nodes = {grid.index[o.node] for o in book.orders if o.side is Side.SELL}
    buy_nodes = {grid.index[o.node] for o in book.orders if o.side is Side.BUY}
    fees: dict[int, tuple[int, int]] = {}
    for s in sell_nodes:
        for b in buy_nodes:
            fees.setdefault(grid.fee(s, b), (s, b))
            if len(fees) > 1:
                (f1, (s1, b1)), (f2, (s2, b2)) = sorted(fees.items())[:2]
                raise ClearingError(
                    "mechanism",
                    "call auction needs one fee for every pair, but "
                    f"{grid.ids[s1]}→{grid.ids[b1]} costs {f1} and {grid.ids[s2]}→{grid.ids[b2]} "
                    f"costs {f2} sen/kWh; use --mechanism optimal or cda",
                )
    return next(iter(fees), 0)


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
    """Clear ``book`` as a single-price call auction; see the module notes."""
    fee = uniform_fee(book)
    volume, lo, hi = call_volume(book, fee)
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    if volume == 0:
        return ClearingResult("call", (), totals_of((), limit), clearing_price_sen_per_kwh=None)
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
    pairs = _pair(book, sell_fill, buy_fill)
    trades = tuple(
        Trade(
            book.orders[s].id,
            book.orders[b].id,
            book.orders[s].participant,
            book.orders[b].participant,
            e,
            price,
            fee,
        )
        for s, b, e in pairs
    )
    return ClearingResult(
        "call", trades, totals_of(trades, limit), clearing_price_sen_per_kwh=price
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


def _pair(book: Book, sells: list[list[int]], buys: list[list[int]]) -> list[tuple[int, int, int]]:
    """Walk both ranked fill lists into units, never pairing a participant with itself."""
    who = [o.participant for o in book.orders]
    units: list[list[int]] = []
    first = 0  # sells before this index are used up
    for b, need in buys:
        k = first
        while need and k < len(sells):
            cand = sells[k]
            k += 1
            if cand[1] == 0 or who[cand[0]] == who[b]:
                continue
            take = min(cand[1], need)
            units.append([cand[0], b, take])
            cand[1] -= take
            need -= take
        while first < len(sells) and sells[first][1] == 0:
            first += 1
        # Only the buyer's own sells are left: re-pair with earlier units whose two sides are
        # other participants, (s2 → b2) + (own → b) becoming (s2 → b) + (own → b2).
        for pos in range(first, len(sells)):
            cand = sells[pos]
            if not need:
                break
            if cand[1] == 0 or who[cand[0]] != who[b]:
                continue
            for unit in list(units):
                s2, b2, e2 = unit
                if e2 == 0 or who[s2] == who[b] or who[b2] == who[b]:
                    continue
                move = min(e2, need, cand[1])
                unit[2] -= move
                units.append([s2, b, move])
                units.append([cand[0], b2, move])
                cand[1] -= move
                need -= move
                if not need or not cand[1]:
                    break
    merged: dict[tuple[int, int], int] = {}
    for s, b, e in units:
        if e:
            merged[(s, b)] = merged.get((s, b), 0) + e
    return [(s, b, e) for (s, b), e in merged.items()]
