"""The scalable exact ``volume`` clearing (peerpower.market.volume) against independent checks.

* (volume, welfare) equal the plain pairwise MILP oracle's (tests/helpers.py) on hundreds of
  small random books, with and without edge capacities, after the oracle's own self-trade
  prevention;
* every unit is a compatible pair, no order is overfilled, every capacity holds, the units are
  one row per pair in (sell, buy) order, the same on every run;
* the ``volume-thresholds`` certificate (no capacities) is accepted by verify and its cover
  equals the volume;
* the seeded score is at least what a MILP maximising it (on truncated r) reaches, and no
  cycle of the residual face raises it;
* on larger books, the lexicographic optimum equals OR-tools' min-cost circulation on the same
  network (a different algorithm), also on deep trees with large fees, where the primal–dual
  falls back to cost scaling.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from helpers import oracle, random_book, stp_kept
from peerpower.bench import make_book
from peerpower.errors import ClearingError
from peerpower.grid.tree import GridTree
from peerpower.market import volume as vm
from peerpower.market.flow import Units
from peerpower.market.orders import Book, BookArrays, Order, Side, book_arrays, parse_book
from peerpower.market.verify import _volume_bound


def _reduced(book: Book) -> Book:
    """The book without the orders the oracle's self-trade prevention leaves out."""
    kept = stp_kept(book)
    return book.subset(np.array([k in kept for k in range(len(book.orders))], dtype=bool))


def _check(book: Book, arr: BookArrays, units: Units) -> tuple[int, int]:
    """Assert the units are valid; return (volume [Wh], welfare [µ¥])."""
    sell, buy, lots = units
    assert sell.dtype == buy.dtype == lots.dtype == np.int64
    assert (lots > 0).all()
    assert arr.is_sell[sell].all() and not arr.is_sell[buy].any()
    keys = list(zip(sell.tolist(), buy.tolist(), strict=True))
    assert keys == sorted(set(keys))  # one row per pair, sorted by (sell, buy)
    fee = book.grid.fees_between(arr.node[sell], arr.node[buy])
    spread = arr.price[buy] - fee - arr.price[sell]
    assert (spread >= 0).all()  # every unit compatible
    assert (arr.participant[sell] != arr.participant[buy]).all()
    n = len(arr.lots)
    filled = np.bincount(sell, lots, n) + np.bincount(buy, lots, n)
    assert (filled <= arr.lots).all()
    grid = book.grid
    balance = np.zeros(grid.size, dtype=np.int64)
    np.add.at(balance, arr.node[sell], lots)
    np.subtract.at(balance, arr.node[buy], lots)
    net = grid.subtree_sums(balance)
    for v in range(grid.size):
        if grid.parent[v] >= 0 and grid.capacity_wh[v] >= 0:
            assert abs(int(net[v])) * book.lot_wh <= grid.capacity_wh[v]
    return int(lots.sum()) * book.lot_wh, int((spread * lots).sum()) * book.lot_wh * 10


def _score(arr: BookArrays, units: Units) -> int:
    r = [int(x) for x in arr.score_u64.tolist()]
    return sum((r[s] + r[b]) * q for s, b, q in zip(*(u.tolist() for u in units), strict=True))


def _small(case: int, capacities: bool) -> Book:
    rng = random.Random(9000 + 7 * case + capacities)
    return _reduced(
        random_book(
            rng,
            n_orders=rng.randint(2, 14),
            n_nodes=rng.randint(1, 6),
            n_participants=rng.randint(2, 12),
            capacities=capacities,
            price_range=(10, rng.choice([14, 20, 30, 60])),
        )
    )


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
@pytest.mark.parametrize("block", range(8))
def test_volume_matches_oracle(block: int, capacities: bool) -> None:
    for case in range(25 * block, 25 * block + 25):
        book = _small(case, capacities)
        arr = book_arrays(book)
        units, certificate = vm.clear_volume(book, arr)
        volume, welfare = _check(book, arr, units)
        want = oracle(book, "volume")
        assert (volume, welfare) == (want["primary"], want["secondary"]), case
        if capacities and book.grid.has_capacities:
            assert certificate is None
        else:
            assert certificate is not None
            assert _volume_bound(book, certificate) == volume  # proven optimal


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
def test_volume_is_deterministic(capacities: bool) -> None:
    for case in range(30):
        book = _small(case, capacities)
        arr = book_arrays(book)
        first = vm.clear_volume(book, arr)
        parsed = parse_book(book.to_json())
        again = vm.clear_volume(parsed, book_arrays(parsed))
        for a, b in zip(first[0], again[0], strict=True):
            assert a.tolist() == b.tolist()
        assert first[1] == again[1]


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
def test_volume_shuffled_ids_same_objective(capacities: bool) -> None:
    for case in range(40):
        book = _small(case, capacities)
        rng = random.Random(case)
        orders = list(book.orders)
        rng.shuffle(orders)
        names = [f"x{k}" for k in range(len(orders))]
        rng.shuffle(names)
        renamed = [
            Order(name, o.participant, o.side, o.energy_wh, o.price_sen_per_kwh, o.node, o.seq)
            for name, o in zip(names, orders, strict=True)
        ]
        other = Book.build(renamed, book.grid, book.lot_wh, book.seed + b"x")
        a = _check(book, book_arrays(book), vm.clear_volume(book, book_arrays(book))[0])
        b = _check(other, book_arrays(other), vm.clear_volume(other, book_arrays(other))[0])
        assert a == b


def _best_score(book: Book, arr: BookArrays, volume_lots: int, welfare: int) -> int:
    """Σ r·filled [lots] of a clearing a pairwise MILP finds with the volume and welfare fixed
    and Σ (r >> 24)·filled maximised (exactly representable in floats)."""
    grid = book.grid
    pairs = []
    for i in np.flatnonzero(arr.is_sell).tolist():
        for j in np.flatnonzero(~arr.is_sell).tolist():
            fee = grid.fee(int(arr.node[i]), int(arr.node[j]))
            if arr.price[j] - fee >= arr.price[i]:
                pairs.append((i, j, int(arr.price[j] - fee - arr.price[i])))
    if not pairs:
        return 0
    m = len(pairs)
    rows: list[Any] = []
    lo: list[float] = []
    hi: list[float] = []
    for o in range(len(arr.lots)):
        row = np.array([1.0 if o in (i, j) else 0.0 for i, j, _ in pairs])
        if row.any():
            rows.append(row)
            lo.append(0)
            hi.append(float(arr.lots[o]))
    tin = _subtrees(grid)
    for c in range(grid.size):
        if grid.parent[c] < 0 or grid.capacity_wh[c] < 0:
            continue
        inside = tin[c]
        row = np.array(
            [
                float((arr.node[i] in inside) - (arr.node[j] in inside))
                if (arr.node[i] in inside) != (arr.node[j] in inside)
                else 0.0
                for i, j, _ in pairs
            ]
        )
        cap = grid.capacity_wh[c] // book.lot_wh
        rows.append(row)
        lo.append(-cap)
        hi.append(cap)
    rows.append(np.ones(m))
    lo.append(volume_lots)
    hi.append(volume_lots)
    rows.append(np.array([float(p[2]) for p in pairs]))
    lo.append(welfare / (book.lot_wh * 10))
    hi.append(welfare / (book.lot_wh * 10))
    r = [int(x) for x in arr.score_u64.tolist()]
    objective = np.array([-float((r[i] >> 24) + (r[j] >> 24)) for i, j, _ in pairs])
    res = milp(
        objective,
        constraints=[LinearConstraint(np.array(rows), np.array(lo), np.array(hi))],
        integrality=np.ones(m),
        bounds=Bounds(np.zeros(m), np.full(m, np.inf)),
        options={"mip_rel_gap": 0},
    )
    assert res.success, res.message
    x = np.round(res.x).astype(int)
    return sum((r[i] + r[j]) * int(x[k]) for k, (i, j, _) in enumerate(pairs))


def _subtrees(grid: GridTree) -> list[set[int]]:
    below: list[set[int]] = [{v} for v in range(grid.size)]
    for v in reversed(grid.order[1:]):
        below[grid.parent[v]] |= below[v]
    return below


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
def test_volume_score_not_beaten_by_milp(capacities: bool) -> None:
    for case in range(60):
        book = _small(case, capacities)
        arr = book_arrays(book)
        units, _ = vm.clear_volume(book, arr)
        volume, welfare = _check(book, arr, units)
        best = _best_score(book, arr, volume // book.lot_wh, welfare)
        assert _score(arr, units) >= best, case


def _face_after_welfare(book: Book, arr: BookArrays) -> tuple[Any, Any, Any]:
    net = vm._expand(book, arr)
    assert net is not None
    cost = vm._combined_costs(net)
    pi = vm._relaxed_potentials(book, arr, net, cost)
    flow, pi = vm._min_cost(net.n_nodes, net.tail, net.head, net.cap, cost, pi)
    face = cost + pi[net.tail] - pi[net.head] == 0
    return net, flow, face


def test_volume_rank_score_is_exact_without_capacities() -> None:
    # On the optimal face the free fills form a base polyhedron: the rank-weighted optimum is
    # the r-weighted one, so no residual cycle raises Σ r·filled (searched in exact integers).
    for case in range(80):
        book = _small(case, False)
        arr = book_arrays(book)
        if not arr.is_sell.any() or arr.is_sell.all():
            continue
        net, flow, face = _face_after_welfare(book, arr)
        scored = vm._score_stage(net, flow, face, arr)
        assert (vm._exact_score(net, scored, face, arr) == scored).all(), case


def test_volume_exact_score_cancels_a_losing_cycle() -> None:
    # Start the score search from the welfare optimum itself (no score stage): whatever it
    # changes raises Σ r·filled and keeps volume and welfare.
    changed = 0
    for case in range(120):
        book = _small(case, case % 2 == 0)
        arr = book_arrays(book)
        if not arr.is_sell.any() or arr.is_sell.all():
            continue
        net, flow, face = _face_after_welfare(book, arr)
        polished = vm._exact_score(net, flow, face, arr)
        before, after = vm._units(net, flow), vm._units(net, polished)
        assert _check(book, arr, before) == _check(book, arr, after)
        assert _score(arr, after) >= _score(arr, before)
        changed += _score(arr, after) > _score(arr, before)
    assert changed > 0


def _circulation_optimum(book: Book, arr: BookArrays) -> tuple[int, int]:
    """Min-cost circulation of the same network by OR-tools' cost scaling, and its M."""
    from ortools.graph.python import min_cost_flow

    net = vm._expand(book, arr)
    assert net is not None
    cost = vm._combined_costs(net)
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(
        net.tail.astype(np.int32), net.head.astype(np.int32), np.minimum(net.cap, 10**9), cost
    )
    assert solver.solve() == solver.OPTIMAL
    big = int(net.welfare[net.is_sell][0] - cost[net.is_sell][0])
    return int(solver.optimal_cost()), big


def _lexicographic_cost(arr: BookArrays, book: Book, units: Units, big: int) -> int:
    volume, welfare = _check(book, arr, units)
    return -big * (volume // book.lot_wh) - welfare // (book.lot_wh * 10)


@pytest.mark.parametrize("capped", [None, 3000], ids=["free", "transformers-3000Wh"])
def test_volume_bench_book_matches_circulation(capped: int | None) -> None:
    raw = make_book(1500, 300, 3)
    if capped is not None:
        for node in raw["grid"]["nodes"]:
            if node["id"].startswith("t"):
                node["capacity_wh"] = capped
    book = parse_book(raw)
    arr = book_arrays(book)
    units, certificate = vm.clear_volume(book, arr)
    optimum, big = _circulation_optimum(book, arr)
    assert _lexicographic_cost(arr, book, units, big) == optimum
    if capped is None:
        assert certificate is not None
        assert _volume_bound(book, certificate) == int(units[2].sum()) * book.lot_wh


def _deep_book(seed: int, n_orders: int, capacities: bool) -> Book:
    rng = random.Random(seed)
    n = 60
    ids = [f"n{k}" for k in range(n)]
    parent = [-1] + [rng.randrange(max(0, k - 3), k) for k in range(1, n)]
    fee = [0] + [rng.choice([0, 5, 50, 200, 500]) for _ in range(1, n)]
    cap = [-1] + [rng.choice([-1, -1, 0, 300, 2000]) if capacities else -1 for _ in range(1, n)]
    grid = GridTree(tuple(ids), tuple(parent), tuple(fee), tuple(cap))
    orders = [
        Order(
            f"o{k}",
            f"p{k}",
            rng.choice([Side.BUY, Side.SELL]),
            100 * rng.randint(1, 20),
            rng.randint(500, 3000),
            rng.choice(ids),
            k,
        )
        for k in range(n_orders)
    ]
    return Book.build(orders, grid, 100, bytes([seed]))


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
def test_volume_deep_tree_large_fees_matches_circulation(capacities: bool) -> None:
    # Compatibility binds everywhere: far from the relaxation's prices, cost scaling finishes.
    book = _deep_book(5, 1200, capacities)
    arr = book_arrays(book)
    units, certificate = vm.clear_volume(book, arr)
    optimum, big = _circulation_optimum(book, arr)
    assert _lexicographic_cost(arr, book, units, big) == optimum
    if not capacities:
        assert certificate is not None
        assert _volume_bound(book, certificate) == int(units[2].sum()) * book.lot_wh


def _order(oid: str, who: str, side: Side, wh: int, price: int, node: str = "root") -> Order:
    return Order(oid, who, side, wh, price, node, 0)


def test_volume_empty_and_one_sided_books() -> None:
    grid = GridTree(("r", "a"), (-1, 0), (0, 5), (-1, -1))
    for orders in (
        [],
        [_order("s", "p", Side.SELL, 200, 10, "a")],
        [_order("b", "p", Side.BUY, 200, 10, "a"), _order("b2", "q", Side.BUY, 100, 12, "r")],
    ):
        book = Book.build(orders, grid, 100)
        arr = book_arrays(book)
        units, certificate = vm.clear_volume(book, arr)
        assert all(len(u) == 0 for u in units)
        assert certificate is not None and _volume_bound(book, certificate) == 0


def test_volume_needs_crossing_an_edge_both_ways() -> None:
    # Inside: a dear sell and a cheap buy; outside: a cheap sell and a dear buy. Both trades
    # cross the edge, in opposite directions: the net is zero, so a zero capacity allows it.
    grid = GridTree(("r", "in"), (-1, 0), (0, 1), (-1, 0))
    orders = [
        _order("s_in", "a", Side.SELL, 100, 20, "in"),
        _order("b_in", "b", Side.BUY, 100, 10, "in"),
        _order("s_out", "c", Side.SELL, 100, 5, "r"),
        _order("b_out", "d", Side.BUY, 100, 30, "r"),
    ]
    book = Book.build(orders, grid, 100)
    arr = book_arrays(book)
    units, certificate = vm.clear_volume(book, arr)
    assert _check(book, arr, units) == (200, ((30 - 1 - 20) + (10 - 1 - 5)) * 1000)
    assert certificate is None  # capacities: no certificate
    assert (units[0].tolist(), units[1].tolist()) == ([0, 2], [3, 1])


def test_volume_capacity_binds() -> None:
    # Two lots could cross the edge; its capacity lets one through, the dearer buy gets it.
    grid = GridTree(("r", "in"), (-1, 0), (0, 2), (-1, 100))
    orders = [
        _order("s", "a", Side.SELL, 200, 10, "in"),
        _order("b1", "b", Side.BUY, 100, 20, "r"),
        _order("b2", "c", Side.BUY, 100, 30, "r"),
    ]
    book = Book.build(orders, grid, 100)
    arr = book_arrays(book)
    units, _ = vm.clear_volume(book, arr)
    assert _check(book, arr, units) == (100, (30 - 2 - 10) * 1000)
    assert units[1].tolist() == [2]


def test_volume_zero_fee_edges_and_flat_grid() -> None:
    for grid in (
        GridTree.single("root"),
        GridTree(("root", "a", "b"), (-1, 0, 1), (0, 0, 0), (-1, -1, -1)),
    ):
        nodes = list(grid.ids)
        orders = [
            _order("s1", "a", Side.SELL, 300, 10, nodes[-1]),
            _order("s2", "b", Side.SELL, 100, 25, nodes[0]),
            _order("b1", "c", Side.BUY, 200, 25, nodes[0]),
            _order("b2", "d", Side.BUY, 300, 9, nodes[-1]),
        ]
        book = Book.build(orders, grid, 100)
        arr = book_arrays(book)
        units, certificate = vm.clear_volume(book, arr)
        want = oracle(book, "volume")
        assert _check(book, arr, units) == (want["primary"], want["secondary"])
        assert certificate is not None
        assert _volume_bound(book, certificate) == want["primary"]


def test_invalid_volume_self_compatible_participant() -> None:
    # Without self-trade prevention a participant's own sell and buy could be paired: refused.
    orders = [
        _order("s", "same", Side.SELL, 100, 10),
        _order("b", "same", Side.BUY, 100, 20),
    ]
    book = Book.build(orders, GridTree.single(), 100)
    with pytest.raises(ClearingError, match="self-trade prevention"):
        vm.clear_volume(book, book_arrays(book))


def _fills(arr: BookArrays, units: Units) -> np.ndarray:
    sell, buy, lots = units
    n = len(arr.lots)
    return (np.bincount(sell, lots, n) + np.bincount(buy, lots, n)).astype(np.int64)


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
def test_volume_units_are_the_canonical_pairing_of_the_fills(capacities: bool) -> None:
    for case in range(60):
        book = _small(case, capacities)
        arr = book_arrays(book)
        units, _ = vm.clear_volume(book, arr)
        again = vm.pair_fills(book, arr, _fills(arr, units))
        for a, b in zip(units, again, strict=True):
            assert a.tolist() == b.tolist(), case


def test_invalid_volume_pairing_of_incompatible_fills() -> None:
    grid = GridTree(("r", "a"), (-1, 0), (0, 3), (-1, -1))
    orders = [
        _order("s1", "p", Side.SELL, 100, 10, "a"),
        _order("s2", "q", Side.SELL, 100, 20, "r"),
        _order("b1", "x", Side.BUY, 100, 25, "r"),
        _order("b2", "y", Side.BUY, 100, 12, "a"),
    ]
    book = Book.build(orders, grid, 100)
    arr = book_arrays(book)
    # s2 (20) can only meet b1 (25); filling b2 (12) as well needs s1, which then meets b2.
    units = vm.pair_fills(book, arr, np.array([1, 1, 1, 1], dtype=np.int64))
    assert (units[0].tolist(), units[1].tolist(), units[2].tolist()) == ([0, 1], [3, 2], [1, 1])
    with pytest.raises(ClearingError, match="paired compatibly"):
        vm.pair_fills(book, arr, np.array([0, 1, 0, 1], dtype=np.int64))  # 20 > 12 − 3
    with pytest.raises(ClearingError, match="differ in total"):
        vm.pair_fills(book, arr, np.array([1, 1, 1, 0], dtype=np.int64))
