"""Continuous double auction: the conventional method (DESIGN.md §3).

Orders arrive in ascending ``seq`` (ties: higher seeded score first). An incoming buy trades with
compatible resting sells by lowest ``ask + fee``, then earliest ``seq``, then higher score, at the
resting ask; an incoming sell trades with compatible resting buys by highest ``bid − fee``, then
``seq``, then score, at ``bid − fee``. Fills may be partial; the remainder rests.

On a grid tree the effective price of a resting order depends on the path to the incoming one.
Each resting order is kept in one heap per ancestor ``L`` of its node, keyed by its price moved
to the root, ``ask + D(node)`` (``D`` = fee distance from the root). For an incoming order at
``v`` the candidate from heap ``L`` costs ``ask + D(node) − 2·D(L) + D(v)``: exact when ``L``
is the lowest common ancestor and an over-estimate otherwise, so the minimum over the ancestors of
``v`` is the exact best. A query costs O(depth · log n).

A pair whose path has no spare capacity left on a capacitated edge is skipped, as is a resting
order of the incoming order's own participant.
"""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt

from peerpower.market.orders import Book, book_arrays
from peerpower.market.result import (
    ClearingResult,
    Totals,
    Trade,
    totals_from_columns,
    trades_from_columns,
)
from peerpower.units import PRICE_MAX_SEN_PER_KWH


def clear_cda(book: Book) -> ClearingResult:
    """Clear ``book`` as a continuous double auction; see the module notes.

    Orders are renumbered by their priority ``(seq, −score, index)``, so that a heap entry is
    one integer ``key · 2^B + rank`` that compares like the tuple ``(key, seq, −score, index)``.
    """
    arr = book_arrays(book)
    grid = book.grid
    n = len(arr.lots)
    lot = book.lot_wh
    dist = grid.dist_sen_per_kwh
    ancestors: list[list[int]] = []
    for v in range(grid.size):
        chain = [v]
        while grid.parent[chain[-1]] >= 0:
            chain.append(grid.parent[chain[-1]])
        ancestors.append(chain)
    # rank → book index, by (seq, −score, index)
    score_desc = np.iinfo(np.uint64).max - arr.score_u64
    by_rank = np.lexsort((np.arange(n), score_desc, arr.seq))
    arrival = _arrival(book, by_rank, score_desc)
    book_index: list[int] = by_rank.tolist()
    is_sell: list[bool] = arr.is_sell[by_rank].tolist()
    price: list[int] = arr.price[by_rank].tolist()
    node: list[int] = arr.node[by_rank].tolist()
    part: list[int] = arr.participant[by_rank].tolist()
    remaining: list[int] = arr.lots[by_rank].tolist()
    bits = max(1, n.bit_length())
    mask = (1 << bits) - 1
    capacity_lots = [c // lot if c >= 0 else -1 for c in grid.capacity_wh]
    has_caps = grid.has_capacities
    up_flow = [0] * grid.size  # net lots crossing edge k child → parent

    # heaps[anc] entries: key · 2^bits + rank; key = ask + D(node) for sells,
    # −(bid − D(node)) for buys. The candidate of heap anc for an order at v is the top minus
    # 2·D(anc) · 2^bits: paired with each heap, in ancestor order.
    sell_heaps: list[list[int]] = [[] for _ in range(grid.size)]
    buy_heaps: list[list[int]] = [[] for _ in range(grid.size)]
    sell_chains = [[(sell_heaps[a], 2 * dist[a] << bits) for a in c] for c in ancestors]
    buy_chains = [[(buy_heaps[a], 2 * dist[a] << bits) for a in c] for c in ancestors]
    own_sell_heaps = [[sell_heaps[a] for a in c] for c in ancestors]
    own_buy_heaps = [[buy_heaps[a] for a in c] for c in ancestors]
    heappush, heappop = heapq.heappush, heapq.heappop
    # Above every entry: |key| ≤ price + D(node) ≤ PRICE_MAX + max D.
    none_yet = (PRICE_MAX_SEN_PER_KWH + max(dist) + 1) << bits
    # (sell rank, buy rank, lots, price, fee) per trade
    done: list[tuple[int, int, int, int, int]] = []

    def path_room(s: int, b: int) -> tuple[int, list[int], list[int]]:
        up, down = grid.path(node[s], node[b])
        room = -1
        for e in up:
            c = capacity_lots[e]
            if c >= 0:
                r = c - up_flow[e]
                room = r if room < 0 else min(room, r)
        for e in down:
            c = capacity_lots[e]
            if c >= 0:
                r = c + up_flow[e]
                room = r if room < 0 else min(room, r)
        return room, up, down

    for k in arrival:
        v = node[k]
        incoming_sell = is_sell[k]
        tops = buy_chains[v] if incoming_sell else sell_chains[v]
        limit = price[k]
        who = part[k]
        dv = dist[v]
        left = remaining[k]
        stash: list[tuple[list[int], int]] | None = None
        while left > 0:
            best = none_yet
            best_heap: list[int] = []
            for heap, shift in tops:
                if not heap:
                    continue
                top = heap[0]
                while remaining[top & mask] == 0:  # drop filled orders
                    heappop(heap)
                    if not heap:
                        break
                    top = heap[0]
                else:
                    cand = top - shift
                    if cand < best:
                        best = cand
                        best_heap = heap
            if best == none_yet:
                break
            # The best candidate is exact (its heap is at the lowest common ancestor, or ties
            # with it), so the effective price also gives the fee of the path.
            r = best & mask
            if incoming_sell:
                eff = -(best >> bits) - dv  # bid − fee
                if eff < limit:
                    break
                fee = price[r] - eff
            else:
                eff = (best >> bits) + dv  # ask + fee
                if limit < eff:
                    break
                fee = eff - price[r]
            if part[r] == who:  # set aside until this order is done
                stash = stash or []
                stash.append((best_heap, heappop(best_heap)))
                continue
            s, b = (k, r) if incoming_sell else (r, k)
            rest = remaining[r]
            fill = left if left < rest else rest
            if has_caps:
                room, up, down = path_room(s, b)
                if room == 0:
                    stash = stash or []
                    stash.append((best_heap, heappop(best_heap)))
                    continue
                if room > 0:
                    fill = min(fill, room)
                for e in up:
                    up_flow[e] += fill
                for e in down:
                    up_flow[e] -= fill
            done.append((s, b, fill, eff if incoming_sell else price[r], fee))
            left -= fill
            # r stays in its heaps: if filled, it is dropped when next found on top
            remaining[r] = rest - fill
        remaining[k] = left
        if stash:
            for heap, entry in stash:
                heappush(heap, entry)
        if left > 0:
            if incoming_sell:
                entry = ((limit + dv) << bits) | k
                for heap in own_sell_heaps[v]:
                    heappush(heap, entry)
            else:
                entry = ((dv - limit) << bits) | k
                for heap in own_buy_heaps[v]:
                    heappush(heap, entry)
    trades, totals = _trades(book, arr.participants, done, book_index, part, price)
    return ClearingResult("cda", trades, totals, pricing="resting")


def _arrival(
    book: Book, by_rank: npt.NDArray[np.intp], score_desc: npt.NDArray[np.uint64]
) -> list[int]:
    """Ranks in arrival order: ascending ``seq``, then higher score, then order id."""
    arr = book_arrays(book)
    seq, score = arr.seq[by_rank], score_desc[by_rank]
    tied = (seq[1:] == seq[:-1]) & (score[1:] == score[:-1])
    if not tied.any():  # rank order is arrival order unless (seq, score) ties
        return list(range(len(by_rank)))
    ids = book.ids
    order = by_rank.tolist()
    return sorted(range(len(order)), key=lambda r: (int(seq[r]), int(score[r]), ids[order[r]]))


def _trades(
    book: Book,
    names: tuple[str, ...],
    done: list[tuple[int, int, int, int, int]],
    book_index: list[int],
    part: list[int],
    price: list[int],
) -> tuple[tuple[Trade, ...], Totals]:
    if not done:
        return (), totals_from_columns([], [], [], [])
    ids = book.ids
    lot = book.lot_wh
    sells, buys, lots, prices, fees = (list(column) for column in zip(*done, strict=True))
    energy = [x * lot for x in lots]
    trades = trades_from_columns(
        [ids[book_index[s]] for s in sells],
        [ids[book_index[b]] for b in buys],
        [names[part[s]] for s in sells],
        [names[part[b]] for b in buys],
        energy,
        prices,
        fees,
    )
    totals = totals_from_columns(energy, [price[s] for s in sells], [price[b] for b in buys], fees)
    return trades, totals
