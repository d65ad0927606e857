"""Nodal pricing: one price per grid node, the competitive equilibrium of the book (issue 15).

Given the fills of a clearing and the energy its trades move across each edge of the grid tree,
a vector of node prices π [sen/kWh] is a *competitive equilibrium* when

* every filled sell has ``ask ≤ π(node)`` and every sell left (partly) unfilled ``ask ≥ π``;
* every filled buy has ``bid ≥ π(node)`` and every buy left (partly) unfilled ``bid ≤ π``;
* on the edge from child ``c`` to parent ``p`` with fee ``f``, ``Δ = π(p) − π(c)``: energy
  moving up forces ``Δ ≥ f``, energy moving down ``Δ ≤ −f``, and ``|Δ| ≤ f`` unless the edge's
  capacity binds in that direction (net energy up equal to the capacity allows ``Δ > f``; down,
  ``Δ < −f``) — the excess over the fee is congestion rent;
* every price lies in the market's band (0–100,000 sen/kWh).

These are the complementary-slackness conditions of the welfare LP with π its dual: prices that
satisfy them prove the clearing welfare-optimal, and the set of such prices is the same for every
optimal clearing of the book. They are difference constraints ``π(b) − π(a) ≤ w``, so the set is
a lattice with a least element ``lo`` and a greatest ``hi``, found as shortest paths (Bellman–Ford)
from and to a virtual node that carries the bounds. The rule takes ``floor((lo + hi) / 2)`` per
node: the midpoint of each node's interval, itself an equilibrium (the floor of the mean of two
solutions of integer difference constraints is one), and a function of the book alone — never of
how a clearing pairs its units.

Every sale at a node is paid its node's price and every purchase pays its node's price; the fee of
the trade's path and the rent (buyer's node price − seller's − fee) go to the grid operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from peerpower.market.orders import Book, BookArrays
from peerpower.units import PRICE_MAX_SEN_PER_KWH, PRICE_MIN_SEN_PER_KWH

I64 = npt.NDArray[np.int64]
_INF = 2**62


@dataclass(frozen=True, slots=True)
class Flows:
    """What a clearing moves: lots filled per order and lots crossing each edge (named by its
    child node) upward and downward, gross."""

    filled: I64
    up: I64
    down: I64


def edge_flows(book: Book, arr: BookArrays, sell: I64, buy: I64, lots: I64) -> Flows:
    """:class:`Flows` of units ``(sell order, buy order, lots)`` (book indexes)."""
    grid, node = book.grid, arr.node
    filled = np.zeros(len(arr.lots), dtype=np.int64)
    np.add.at(filled, sell, lots)
    np.add.at(filled, buy, lots)
    u, v = node[sell], node[buy]
    meet = grid.lcas(u, v)
    # A unit climbs from the seller's node to the meeting node, then descends to the buyer's:
    # +lots at its start and −lots at the meeting node, summed over subtrees, is what it moves
    # across each edge.
    up = np.zeros(grid.size, dtype=np.int64)
    down = np.zeros(grid.size, dtype=np.int64)
    np.add.at(up, u, lots)
    np.subtract.at(up, meet, lots)
    np.add.at(down, v, lots)
    np.subtract.at(down, meet, lots)
    return Flows(filled, grid.subtree_sums(up), grid.subtree_sums(down))


def _constraints(book: Book, arr: BookArrays, flows: Flows) -> tuple[I64, I64, I64]:
    """Arcs ``(a, b, w)`` meaning ``π(b) − π(a) ≤ w`` over the grid nodes and a virtual node
    ``n`` with ``π(n) = 0``."""
    grid, lot_wh = book.grid, book.lot_wh
    is_sell, lots, price, node = arr.is_sell, arr.lots, arr.price, arr.node
    n = grid.size
    low = np.full(n, PRICE_MIN_SEN_PER_KWH, dtype=np.int64)
    high = np.full(n, PRICE_MAX_SEN_PER_KWH, dtype=np.int64)
    filled = flows.filled
    some = filled > 0
    short = filled < lots
    # ask ≤ π where a sell is filled, ask ≥ π where it is not (fully); bids the other way.
    np.maximum.at(low, node[is_sell & some], price[is_sell & some])
    np.minimum.at(high, node[is_sell & short], price[is_sell & short])
    np.minimum.at(high, node[~is_sell & some], price[~is_sell & some])
    np.maximum.at(low, node[~is_sell & short], price[~is_sell & short])
    tails = [np.full(n, n), np.arange(n)]
    heads = [np.arange(n), np.full(n, n)]
    weights = [high, -low]
    child = np.array([c for c in range(n) if grid.parent[c] >= 0], dtype=np.int64)
    if len(child):
        par = np.array([grid.parent[c] for c in child.tolist()], dtype=np.int64)
        fee = np.array([grid.fee_sen_per_kwh[c] for c in child.tolist()], dtype=np.int64)
        cap = np.array([grid.capacity_wh[c] for c in child.tolist()], dtype=np.int64)
        limit = np.where(cap >= 0, cap // lot_wh, -1)
        up, down = flows.up[child], flows.down[child]
        net = up - down
        full_up = (limit >= 0) & (net == limit)
        full_down = (limit >= 0) & (-net == limit)
        for mask, a, b, w in (
            (~full_up, child, par, fee),  # Δ ≤ f
            (~full_down, par, child, fee),  # Δ ≥ −f
            (up > 0, par, child, -fee),  # Δ ≥ f
            (down > 0, child, par, -fee),  # Δ ≤ −f
        ):
            tails.append(a[mask])
            heads.append(b[mask])
            weights.append(w[mask])
    return np.concatenate(tails), np.concatenate(heads), np.concatenate(weights)


def _shortest(n_nodes: int, source: int, tail: I64, head: I64, w: I64) -> I64 | None:
    """Shortest distances from ``source`` (Bellman–Ford, vectorised over arcs); ``None`` when
    a negative cycle makes the constraints infeasible."""
    d = np.full(n_nodes, _INF, dtype=np.int64)
    d[source] = 0
    for _ in range(n_nodes + 1):
        reach = d[tail] < _INF
        nd = d.copy()
        np.minimum.at(nd, head[reach], d[tail[reach]] + w[reach])
        if np.array_equal(nd, d):
            return d
        d = nd
    return None


def price_bounds(book: Book, arr: BookArrays, flows: Flows) -> tuple[I64, I64] | None:
    """The least and the greatest equilibrium price of every node [sen/kWh], or ``None`` when
    no prices make the clearing an equilibrium (it is not welfare-optimal)."""
    tail, head, w = _constraints(book, arr, flows)
    n = book.grid.size
    greatest = _shortest(n + 1, n, tail, head, w)
    if greatest is None:
        return None
    to_root = _shortest(n + 1, n, head, tail, w)  # distances to the virtual node
    assert to_root is not None  # the same arcs reversed: no negative cycle either
    return -to_root[:n], greatest[:n]


def nodal_prices(book: Book, arr: BookArrays, flows: Flows) -> I64 | None:
    """The rule's node prices ``floor((lo + hi) / 2)`` [sen/kWh], or ``None`` (see
    :func:`price_bounds`)."""
    bounds = price_bounds(book, arr, flows)
    if bounds is None:
        return None
    lo, hi = bounds
    mid: I64 = (lo + hi) // 2
    return mid


def equilibrium_problems(
    book: Book, arr: BookArrays, flows: Flows, prices: I64, limit: int = 5
) -> list[str]:
    """What keeps ``prices`` from being a competitive equilibrium of the clearing (at most
    ``limit`` messages; empty when they are one)."""
    grid, lot_wh, ids = book.grid, book.lot_wh, book.ids
    is_sell, lots, price, node = arr.is_sell, arr.lots, arr.price, arr.node
    out: list[str] = []
    pi = prices[node]
    filled = flows.filled
    checks = (
        (is_sell & (filled > 0) & (price > pi), "sell {o!r} is filled at ask {x} above"),
        (is_sell & (filled < lots) & (price < pi), "sell {o!r} is left unfilled at ask {x} below"),
        (~is_sell & (filled > 0) & (price < pi), "buy {o!r} is filled at bid {x} below"),
        (~is_sell & (filled < lots) & (price > pi), "buy {o!r} is left unfilled at bid {x} above"),
    )
    for mask, text in checks:
        for k in np.flatnonzero(mask)[:limit].tolist():
            msg = text.format(o=ids[k], x=int(price[k]))
            out.append(f"{msg} its node {grid.ids[int(node[k])]!r}'s price {int(pi[k])}")
    for v in range(grid.size):
        if not PRICE_MIN_SEN_PER_KWH <= int(prices[v]) <= PRICE_MAX_SEN_PER_KWH:
            out.append(
                f"node {grid.ids[v]!r}: price {int(prices[v])} is outside "
                f"{PRICE_MIN_SEN_PER_KWH}–{PRICE_MAX_SEN_PER_KWH}"
            )
        p = grid.parent[v]
        if p < 0:
            continue
        fee = grid.fee_sen_per_kwh[v]
        cap = grid.capacity_wh[v]
        limit_lots = cap // lot_wh if cap >= 0 else -1
        up, down = int(flows.up[v]), int(flows.down[v])
        net = up - down
        delta = int(prices[p] - prices[v])
        where = f"edge {grid.ids[v]!r}→{grid.ids[p]!r} (fee {fee})"
        if up > 0 and delta < fee:
            out.append(f"{where}: energy moves up but the prices differ by {delta} < the fee")
        if down > 0 and -delta < fee:
            out.append(f"{where}: energy moves down but the prices differ by {-delta} < the fee")
        if delta > fee and not (limit_lots >= 0 and net == limit_lots):
            out.append(
                f"{where}: the parent's price is {delta} above, more than the fee, yet the "
                "edge is not full upward"
            )
        if -delta > fee and not (limit_lots >= 0 and -net == limit_lots):
            out.append(
                f"{where}: the child's price is {-delta} above, more than the fee, yet the "
                "edge is not full downward"
            )
    return out[:limit]
