"""Shared test helpers: random books and an independent pairwise MILP oracle (scipy)."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from peerpower.grid.tree import GridTree
from peerpower.market.orders import Book, Order, Side


def random_book(
    rng: random.Random,
    n_orders: int = 10,
    n_nodes: int = 4,
    n_participants: int = 6,
    capacities: bool = True,
    price_range: tuple[int, int] = (10, 30),
) -> Book:
    """A small random book on a random tree; few participants and prices, so ties and
    participants on both sides occur."""
    ids = [f"n{k}" for k in range(n_nodes)]
    parent = [-1] + [rng.randrange(k) for k in range(1, n_nodes)]
    fee = [0] + [rng.choice([0, 0, 1, 2, 3]) for _ in range(1, n_nodes)]
    cap = [-1] + [
        rng.choice([-1, -1, 100, 200, 300]) if capacities else -1 for _ in range(1, n_nodes)
    ]
    grid = GridTree(tuple(ids), tuple(parent), tuple(fee), tuple(cap))
    orders = []
    for k in range(n_orders):
        orders.append(
            Order(
                id=f"o{k}",
                participant=f"p{rng.randrange(n_participants)}",
                side=rng.choice([Side.BUY, Side.SELL]),
                energy_wh=100 * rng.randint(1, 4),
                price_sen_per_kwh=rng.randint(*price_range),
                node=rng.choice(ids),
                seq=rng.randrange(n_orders),
            )
        )
    seed = bytes(rng.randrange(256) for _ in range(8))
    return Book.build(orders, grid, 100, seed)


def stp_kept(book: Book) -> set[int]:
    """Self-trade prevention written plainly: orders in (seq, position) order; one whose price
    meets (bid ≥ ask) an earlier kept order of its participant on the other side is left out."""
    kept: list[int] = []
    for k in sorted(range(len(book.orders)), key=lambda k: (book.orders[k].seq, k)):
        o = book.orders[k]
        crosses = False
        for e in kept:
            other = book.orders[e]
            if other.participant != o.participant or other.side is o.side:
                continue
            ask, bid = (
                (o.price_sen_per_kwh, other.price_sen_per_kwh)
                if o.side is Side.SELL
                else (other.price_sen_per_kwh, o.price_sen_per_kwh)
            )
            crosses = crosses or bid >= ask
        if not crosses:
            kept.append(k)
    return set(kept)


def _pairs(book: Book) -> list[tuple[int, int, int]]:
    grid = book.grid
    out = []
    kept = stp_kept(book)
    for i, s in enumerate(book.orders):
        if s.side is not Side.SELL or i not in kept:
            continue
        for j, b in enumerate(book.orders):
            if b.side is not Side.BUY or b.participant == s.participant or j not in kept:
                continue
            fee = grid.fee(grid.index[s.node], grid.index[b.node])
            if b.price_sen_per_kwh - fee >= s.price_sen_per_kwh:
                out.append((i, j, fee))
    return out


def _subtree(grid: GridTree, c: int, v: int) -> bool:
    while v >= 0:
        if v == c:
            return True
        v = grid.parent[v]
    return False


def oracle(book: Book, goal: str) -> dict[str, Any]:
    """Lexicographic optimum (primary, secondary) by a plain pairwise MILP through scipy.

    Independent of peerpower.market.optimal: its own self-trade prevention and pair enumeration,
    capacity rows built from explicit subtree tests, scipy's HiGHS rather than OR-tools.
    """
    pairs = _pairs(book)
    lot = book.lot_wh
    if not pairs:
        return {"primary": Fraction(0), "secondary": 0}
    m = len(pairs)
    ask = [book.orders[i].price_sen_per_kwh for i, _, _ in pairs]
    bid = [book.orders[j].price_sen_per_kwh for _, j, _ in pairs]
    spread = np.array([bid[k] - pairs[k][2] - ask[k] for k in range(m)], dtype=float)
    rows, lo, hi = [], [], []
    for o, order in enumerate(book.orders):
        row = np.array([1.0 if (i == o or j == o) else 0.0 for i, j, _ in pairs])
        if row.any():
            rows.append(row)
            lo.append(0)
            hi.append(order.energy_wh // lot)
    grid = book.grid
    node = {k: grid.index[o.node] for k, o in enumerate(book.orders)}
    for c in range(grid.size):
        if grid.parent[c] < 0 or grid.capacity_wh[c] < 0:
            continue
        row = np.zeros(m)
        for k, (i, j, _) in enumerate(pairs):
            si, bj = _subtree(grid, c, node[i]), _subtree(grid, c, node[j])
            row[k] = 1.0 if si and not bj else (-1.0 if bj and not si else 0.0)
        if row.any():
            cap = grid.capacity_wh[c] // lot
            rows.append(row)
            lo.append(-cap)
            hi.append(cap)
    volume = np.ones(m)
    extra_rows: list[np.ndarray] = []
    extra_lo: list[float] = []
    n_vars = m
    integrality = np.ones(m)
    bounds = Bounds(np.zeros(m), np.full(m, np.inf))

    def solve(objective: np.ndarray) -> np.ndarray:
        a = np.array(rows + extra_rows)
        pad = n_vars - a.shape[1]
        if pad:
            a = np.hstack([a, np.zeros((a.shape[0], pad))])
        cons = LinearConstraint(a, np.array(lo + extra_lo), np.array(hi + [np.inf] * len(extra_lo)))
        res = milp(
            -objective,
            constraints=[cons],
            integrality=integrality,
            bounds=bounds,
            options={"mip_rel_gap": 0},
        )
        assert res.success, res.message
        return np.round(res.x).astype(int)

    if goal in ("volume", "welfare"):
        first, second = (volume, spread) if goal == "volume" else (spread, volume)
        x = solve(first)
        extra_rows.append(first)
        extra_lo.append(float(first @ x) - 0.5)
        x = solve(second)
        vol = int(volume @ x) * lot
        wel = int(spread @ x) * lot * 10
        return {
            "primary": Fraction(vol if goal == "volume" else wel),
            "secondary": wel if goal == "volume" else vol,
        }
    # maxmin: variables x then t
    offered: dict[str, int] = {}
    in_pair = set()
    for i, j, _ in pairs:
        in_pair.update((i, j))
    for k in in_pair:
        o = book.orders[k]
        offered[o.participant] = offered.get(o.participant, 0) + o.energy_wh
    gain = {p: np.zeros(m) for p in offered}
    for k, (i, j, _) in enumerate(pairs):
        s_gain = int(spread[k]) // 2
        gain[book.orders[i].participant][k] += s_gain
        gain[book.orders[j].participant][k] += int(spread[k]) - s_gain
    n_vars = m + 1
    integrality = np.concatenate([np.ones(m), [0]])
    bounds = Bounds(np.zeros(m + 1), np.full(m + 1, np.inf))
    rows = [np.concatenate([r, [0.0]]) for r in rows]
    for p, e in offered.items():
        rows.append(np.concatenate([gain[p], [-(e // lot)]]))
        lo.append(0)
        hi.append(np.inf)
    obj_t = np.concatenate([np.zeros(m), [1.0]])
    x = solve(obj_t)[:m]
    t = min(Fraction(int(gain[p] @ x) * lot * 10, e) for p, e in offered.items())
    for p, e in offered.items():
        rows.append(np.concatenate([gain[p], [0.0]]))
        lo.append(math.ceil(t * e / (lot * 10)))
        hi.append(np.inf)
    x = solve(np.concatenate([spread, [0.0]]))[:m]
    return {"primary": t, "secondary": int(spread @ x) * lot * 10}
