"""The canonical midpoint pairing (market/pairing.py): compatible, fee-minimal, complete.

Completeness is checked against an independent MILP (scipy's HiGHS): fills that some compatible
pairing pairs without energy crossing an edge both ways must be paired by the rule, and fills the
rule refuses must admit no such pairing.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from helpers import random_book, stp_kept
from peerpower.grid.tree import GridTree
from peerpower.market import clear
from peerpower.market.orders import Book, Order, Side, book_arrays
from peerpower.market.pairing import midpoint_units
from peerpower.market.stp import prevent_self_trade


def _subtree(grid: GridTree, c: int, v: int) -> bool:
    while v >= 0:
        if v == c:
            return True
        v = grid.parent[v]
    return False


def _one_way_pairing_exists(book: Book, filled: list[int]) -> bool:
    """Whether compatible pairs of different participants pair exactly ``filled`` (lots per
    order) with no edge crossed both ways: a MILP with one direction binary per edge."""
    grid = book.grid
    orders = book.orders
    node = [grid.index[o.node] for o in orders]
    pairs = [
        (i, j)
        for i, s in enumerate(orders)
        if s.side is Side.SELL and filled[i]
        for j, b in enumerate(orders)
        if b.side is Side.BUY
        and filled[j]
        and s.participant != b.participant
        and b.price_sen_per_kwh - grid.fee(node[i], node[j]) >= s.price_sen_per_kwh
    ]
    edges = [c for c in range(grid.size) if grid.parent[c] >= 0]
    m, ne = len(pairs), len(edges)
    if not any(filled):
        return True
    if m == 0:
        return False
    big = sum(filled) + 1
    rows, lo, hi = [], [], []
    for k in range(len(orders)):
        if filled[k]:
            row = np.zeros(m + ne)
            for p, (i, j) in enumerate(pairs):
                if k in (i, j):
                    row[p] = 1
            rows.append(row)
            lo.append(filled[k])
            hi.append(filled[k])
    for e, c in enumerate(edges):
        up, down = np.zeros(m + ne), np.zeros(m + ne)
        for p, (i, j) in enumerate(pairs):
            si, bj = _subtree(grid, c, node[i]), _subtree(grid, c, node[j])
            if si and not bj:
                up[p] = 1
            if bj and not si:
                down[p] = 1
        up[m + e] = -big  # up ≤ big · z
        down[m + e] = big  # down ≤ big · (1 − z)
        rows += [up, down]
        lo += [-np.inf, -np.inf]
        hi += [0, big]
    res = milp(
        np.zeros(m + ne),
        constraints=[LinearConstraint(np.array(rows), lo, hi)],
        integrality=np.ones(m + ne),
        bounds=Bounds(np.zeros(m + ne), np.concatenate([np.full(m, np.inf), np.ones(ne)])),
    )
    return bool(res.success)


def _filled_of(book: Book, units: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    sell, buy, lots = units
    filled = np.zeros(len(book.orders), dtype=np.int64)
    np.add.at(filled, sell, lots)
    np.add.at(filled, buy, lots)
    return filled


@pytest.mark.parametrize("case", range(150))
def test_midpoint_pairing_is_complete_compatible_and_fee_minimal(case: int) -> None:
    rng = random.Random(5000 + case)
    book = random_book(rng, n_orders=rng.randint(2, 10), n_nodes=rng.randint(1, 5))
    book, _ = prevent_self_trade(book)
    arr = book_arrays(book)
    grid = book.grid
    # fills: what a volume or maxmin clearing filled, or a random subset of it
    goal = rng.choice(["volume", "maxmin", "welfare"])
    result = clear(book, "optimal", goal, "midpoint")
    filled = np.zeros(len(book.orders), dtype=np.int64)
    for t in result.trades:
        filled[book.by_id[t.sell_order]] += t.energy_wh // book.lot_wh
        filled[book.by_id[t.buy_order]] += t.energy_wh // book.lot_wh
    units = midpoint_units(grid, arr.is_sell, arr.node, arr.price, filled)
    assert (units is not None) == _one_way_pairing_exists(book, filled.tolist())
    if units is None:
        return
    sell, buy, lots = units
    assert (_filled_of(book, units) == filled).all()
    fee = grid.fees_between(arr.node[sell], arr.node[buy])
    assert (arr.price[buy] - fee >= arr.price[sell]).all()
    assert (arr.participant[sell] != arr.participant[buy]).all()
    # the least fee any pairing of these fills can pay: each edge carries its subtree's net
    balance = np.zeros(grid.size, dtype=np.int64)
    np.add.at(balance, arr.node, np.where(arr.is_sell, filled, -filled))
    net = grid.subtree_sums(balance)
    least = sum(grid.fee_sen_per_kwh[c] * abs(int(net[c])) for c in range(grid.size))
    assert int((fee * lots).sum()) == least


def test_midpoint_pairing_takes_the_dearest_sell_each_buy_can_pay() -> None:
    # One node: buys 30 and 20, sells 10, 15 and 25 (one lot each), two of the sells filled.
    # The dearest buy (30) takes the dearest sell it can pay (25); 20 takes 15; 10 is left.
    orders = [
        Order("s10", "A", Side.SELL, 100, 10, "root", 0),
        Order("s15", "B", Side.SELL, 100, 15, "root", 1),
        Order("s25", "C", Side.SELL, 100, 25, "root", 2),
        Order("b30", "D", Side.BUY, 100, 30, "root", 3),
        Order("b20", "E", Side.BUY, 100, 20, "root", 4),
    ]
    book = Book.build(orders)
    arr = book_arrays(book)
    filled = np.array([0, 1, 1, 1, 1], dtype=np.int64)
    units = midpoint_units(book.grid, arr.is_sell, arr.node, arr.price, filled)
    assert units is not None
    pairs = sorted((book.ids[s], book.ids[b]) for s, b in zip(units[0], units[1], strict=True))
    assert pairs == [("s15", "b20"), ("s25", "b30")]
    # the same book with the cheap sell filled instead of 15: 30 takes 25, 20 takes 10
    filled = np.array([1, 0, 1, 1, 1], dtype=np.int64)
    units = midpoint_units(book.grid, arr.is_sell, arr.node, arr.price, filled)
    assert units is not None
    pairs = sorted((book.ids[s], book.ids[b]) for s, b in zip(units[0], units[1], strict=True))
    assert pairs == [("s10", "b20"), ("s25", "b30")]


def test_midpoint_pairing_refuses_fills_that_need_energy_both_ways() -> None:
    # Child c (fee 1 to the root) holds sell A (ask 0) and buy B (bid 10); the root holds sell
    # E (ask 8) and buy D (bid 2). A–B at c leaves E (8) and D (2) incompatible; the only
    # pairing of all four is A → D and E → B, crossing c's edge both ways.
    grid = GridTree(("root", "c"), (-1, 0), (0, 1), (-1, -1))
    orders = [
        Order("A", "A", Side.SELL, 100, 0, "c", 0),
        Order("B", "B", Side.BUY, 100, 10, "c", 1),
        Order("E", "E", Side.SELL, 100, 8, "root", 2),
        Order("D", "D", Side.BUY, 100, 2, "root", 3),
    ]
    book = Book.build(orders, grid)
    arr = book_arrays(book)
    filled = np.ones(4, dtype=np.int64)
    assert midpoint_units(grid, arr.is_sell, arr.node, arr.price, filled) is None
    assert not _one_way_pairing_exists(book, filled.tolist())
    assert stp_kept(book) == {0, 1, 2, 3}
