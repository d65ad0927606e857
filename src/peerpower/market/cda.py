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

from peerpower.market.orders import Book, book_arrays
from peerpower.market.result import ClearingResult, Trade, totals_of


def clear_cda(book: Book) -> ClearingResult:
    """Clear ``book`` as a continuous double auction; see the module notes."""
    arr = book_arrays(book)
    grid = book.grid
    orders = book.orders
    n = len(orders)
    lot = book.lot_wh
    dist = grid.dist_sen_per_kwh
    ancestors: list[list[int]] = []
    for v in range(grid.size):
        chain = [v]
        while grid.parent[chain[-1]] >= 0:
            chain.append(grid.parent[chain[-1]])
        ancestors.append(chain)
    is_sell = arr.is_sell.tolist()
    price = arr.price.tolist()
    node = arr.node.tolist()
    seq = arr.seq.tolist()
    part = arr.participant.tolist()
    neg_score = [-s for s in arr.score]
    remaining = arr.lots.tolist()
    capacity_lots = [c // lot if c >= 0 else -1 for c in grid.capacity_wh]
    has_caps = grid.has_capacities
    up_flow = [0] * grid.size  # net lots crossing edge k child → parent

    # heaps[anc] entries: (key, seq, -score, index); key = ask + D(node) for sells,
    # -(bid - D(node)) for buys.
    sell_heaps: list[list[tuple[int, int, int, int]]] = [[] for _ in range(grid.size)]
    buy_heaps: list[list[tuple[int, int, int, int]]] = [[] for _ in range(grid.size)]

    arrival = sorted(range(n), key=lambda k: (seq[k], neg_score[k], orders[k].id))
    trades: list[Trade] = []

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
        chain = ancestors[v]
        incoming_sell = is_sell[k]
        heaps = buy_heaps if incoming_sell else sell_heaps
        stash: list[tuple[int, tuple[int, int, int, int]]] = []
        while remaining[k] > 0:
            best: tuple[int, int, int, int] | None = None
            best_heap = -1
            for anc in chain:
                heap = heaps[anc]
                while heap and remaining[heap[0][3]] == 0:
                    heapq.heappop(heap)
                if not heap:
                    continue
                top = heap[0]
                cand = (top[0] - 2 * dist[anc], top[1], top[2], top[3])
                if best is None or cand < best:
                    best = cand
                    best_heap = anc
            if best is None:
                break
            r = best[3]
            if incoming_sell:
                # best[0] = -(bid - fee) + D(v) ... undo the shift: bid - fee = -(key) - ... see doc
                eff = -best[0] - dist[v]
                compatible = eff >= price[k]
            else:
                eff = best[0] + dist[v]
                compatible = price[k] >= eff
            if not compatible:
                break
            entry = heapq.heappop(heaps[best_heap])
            if part[r] == part[k]:
                stash.append((best_heap, entry))
                continue
            s, b = (k, r) if incoming_sell else (r, k)
            fill = min(remaining[k], remaining[r])
            up: list[int] = []
            down: list[int] = []
            if has_caps:
                room, up, down = path_room(s, b)
                if room == 0:
                    stash.append((best_heap, entry))
                    continue
                if room > 0:
                    fill = min(fill, room)
                for e in up:
                    up_flow[e] += fill
                for e in down:
                    up_flow[e] -= fill
            fee = grid.fee(node[s], node[b])
            trade_price = eff if incoming_sell else price[r]
            trades.append(
                Trade(
                    orders[s].id,
                    orders[b].id,
                    orders[s].participant,
                    orders[b].participant,
                    fill * lot,
                    trade_price,
                    fee,
                )
            )
            remaining[k] -= fill
            remaining[r] -= fill
            if remaining[r] > 0:
                heapq.heappush(heaps[best_heap], entry)
        for anc, entry in stash:
            heapq.heappush(heaps[anc], entry)
        if remaining[k] > 0:
            if incoming_sell:
                key = price[k] + dist[v]
                target = sell_heaps
            else:
                key = -(price[k] - dist[v])
                target = buy_heaps
            for anc in chain:
                heapq.heappush(target[anc], (key, seq[k], neg_score[k], k))
    limit = {o.id: o.price_sen_per_kwh for o in orders}
    result_trades = tuple(trades)
    return ClearingResult("cda", result_trades, totals_of(result_trades, limit))
