"""``maxmin`` against the independent MILP oracle (tests/helpers.py): exact whenever it says so.

The clearing starts from the rounded one and runs a MILP within a node budget (a deterministic
work limit). Whatever it claims proven must equal the oracle's optimum, it must never exceed
it, and the bound it reports otherwise must hold above it. Validity is checked here without
peerpower's own checks: the oracle's pair enumeration, capacity rows from explicit subtree
tests, and profits recomputed from the units.
"""

from __future__ import annotations

import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import _pairs, _subtree, oracle, random_book
from peerpower.bench import make_book
from peerpower.errors import ClearingError
from peerpower.market import clear, verify
from peerpower.market import pairwise as pw
from peerpower.market.optimal import _tradable
from peerpower.market.orders import Book, book_arrays, parse_book
from peerpower.market.stp import prevent_self_trade


def _clear(book: Book, budget: int) -> tuple[Book, pw.MaxminClearing]:
    """``pw.clear_maxmin`` on the book after self-trade prevention (as ``clear`` calls it)."""
    kept, _ = prevent_self_trade(book)
    arr = book_arrays(kept)
    return kept, pw.clear_maxmin(kept, arr, _tradable(arr), budget)


def _measure(book: Book, units: list[tuple[int, int, int]]) -> tuple[Fraction, int]:
    """t [µ¥/Wh] and welfare [µ¥] of ``units``, after checking lots, compatibility and
    capacities independently."""
    compatible = {(i, j): fee for i, j, fee in _pairs(book)}
    orders, grid, lot = book.orders, book.grid, book.lot_wh
    used = [0] * len(orders)
    profit: dict[str, int] = {}
    welfare = 0
    for i, j, n in units:
        assert n > 0
        assert (i, j) in compatible, f"({i}, {j}) is not a compatible pair"
        used[i] += n
        used[j] += n
        spread = orders[j].price_sen_per_kwh - compatible[(i, j)] - orders[i].price_sen_per_kwh
        welfare += spread * n * lot * 10
        seller, buyer = orders[i].participant, orders[j].participant
        profit[seller] = profit.get(seller, 0) + (spread // 2) * n * lot * 10
        profit[buyer] = profit.get(buyer, 0) + (spread - spread // 2) * n * lot * 10
    assert all(used[k] * lot <= o.energy_wh for k, o in enumerate(orders))
    for c in range(grid.size):
        if grid.parent[c] < 0 or grid.capacity_wh[c] < 0:
            continue
        net = 0
        for i, j, n in units:
            inside_s = _subtree(grid, c, grid.index[orders[i].node])
            inside_b = _subtree(grid, c, grid.index[orders[j].node])
            net += n if inside_s and not inside_b else (-n if inside_b and not inside_s else 0)
        assert abs(net) * lot <= grid.capacity_wh[c]
    offered: dict[str, int] = {}
    for k in sorted({k for i, j, _ in _pairs(book) for k in (i, j)}):
        offered[orders[k].participant] = offered.get(orders[k].participant, 0) + orders[k].energy_wh
    t = min((Fraction(profit.get(p, 0), e) for p, e in offered.items()), default=Fraction(0))
    return t, welfare


def _small(case: int, capacities: bool, make: bool) -> Book:
    rng = random.Random(31_000 + 97 * case + capacities)
    if not make:
        return random_book(
            rng,
            n_orders=rng.randint(6, 24),
            n_nodes=rng.randint(2, 6),
            n_participants=rng.randint(3, 12),
            capacities=capacities,
        )
    n = rng.randint(8, 22)
    raw = make_book(
        n,
        rng.randint(3, 8),
        case,
        both_share=0.2,
        transformer_capacity_wh=rng.choice([300, 800, 2000]) if capacities else None,
    )
    return parse_book(raw)


def _check_against_oracle(book: Book, got: pw.MaxminClearing, kept: Book) -> dict[str, Any]:
    want = oracle(book, "maxmin")
    t, welfare = _measure(kept, got.units)
    assert t <= want["primary"], "better than the optimum: a check is broken"
    if got.bound is None:  # proven: t and welfare
        assert got.proven
        assert (t, welfare) == (want["primary"], want["secondary"])
        return want
    assert Fraction(got.bound["primary_upper"]) >= want["primary"] * (1 - Fraction(1, 10**9))
    if got.bound["primary_proven"]:
        assert t == want["primary"]
        assert Fraction(got.bound["secondary_upper"]) >= want["secondary"]
    if got.bound["secondary_proven"]:
        assert welfare == want["secondary"]
    return want


@pytest.mark.parametrize("make", [False, True], ids=["random", "bench"])
@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
@pytest.mark.parametrize("case", range(12))
def test_maxmin_exact_equals_oracle_when_proven(case: int, capacities: bool, make: bool) -> None:
    book = _small(case, capacities, make)
    kept, got = _clear(book, pw.DEFAULT_BUDGET_NODES)
    _check_against_oracle(book, got, kept)


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
@pytest.mark.parametrize("case", range(20))
def test_maxmin_rounded_bound_is_at_least_the_oracle(case: int, capacities: bool) -> None:
    # Budget 0: the rounded clearing alone, with its LP bound beside it.
    book = _small(case + 100, capacities, make=case % 2 == 1)
    kept, got = _clear(book, 0)
    if not got.offered:  # nothing could trade
        assert not got.units and got.bound is None
        return
    assert got.bound is not None and got.bound["method"] == "lp-rounding"
    _check_against_oracle(book, got, kept)


def test_maxmin_exact_through_clear_is_verified() -> None:
    for case in range(6):
        book = _small(case + 200, capacities=case % 2 == 0, make=True)
        result = clear(book, "optimal", "maxmin")
        check = verify(book, result)
        assert check.ok, check.problems
        want = oracle(book, "maxmin")
        assert result.objective is not None
        assert result.objective.primary <= want["primary"]
        if result.bound is None:
            assert result.objective.primary == want["primary"]
            assert result.objective.secondary == want["secondary"]


def test_maxmin_exact_is_deterministic_across_processes() -> None:
    book = _small(3, capacities=True, make=True)
    _, first = _clear(book, pw.DEFAULT_BUDGET_NODES)
    _, again = _clear(book, pw.DEFAULT_BUDGET_NODES)
    assert first == again
    here = Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}];"
        "from test_maxmin_exact import _clear, _small; from peerpower.market import pairwise as pw;"
        "print(_clear(_small(3, True, True), pw.DEFAULT_BUDGET_NODES)[1].units)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(first.units)


def test_maxmin_exact_budget_is_a_node_limit() -> None:
    # With one node per stage the MILP proves less, never more, and the clearing stays valid.
    proven = {0: 0, 1: 0, pw.DEFAULT_BUDGET_NODES: 0}
    for case in range(8):
        book = _small(case + 300, capacities=False, make=True)
        for budget in proven:
            kept, got = _clear(book, budget)
            _check_against_oracle(book, got, kept)
            proven[budget] += got.proven
    assert proven[0] <= proven[1] <= proven[pw.DEFAULT_BUDGET_NODES]


def test_invalid_maxmin_budget_is_refused() -> None:
    book = _small(0, capacities=False, make=False)
    with pytest.raises(ClearingError, match="maxmin_budget"):
        _clear(book, -1)


def test_maxmin_respects_capacities_on_a_large_book() -> None:
    book = parse_book(make_book(1000, 250, 4, both_share=0.2, transformer_capacity_wh=3000))
    kept, got = _clear(book, pw.DEFAULT_BUDGET_NODES)
    assert got.bound is not None, "1,000 orders are beyond the MILP"
    t, welfare = _measure(kept, got.units)  # the capacity rows among its checks
    assert 0 < t <= Fraction(got.bound["primary_upper"])
    assert welfare <= got.bound["secondary_upper"]
    _, again = _clear(book, pw.DEFAULT_BUDGET_NODES)
    assert again.units == got.units


@pytest.mark.slow
@pytest.mark.parametrize("capacity", [None, 30_000], ids=["free", "capacities"])
def test_maxmin_on_ten_thousand_orders_is_valid_and_bounded(capacity: int | None) -> None:
    book = parse_book(make_book(10_000, 2_000, 1, both_share=0.2, transformer_capacity_wh=capacity))
    result = clear(book, "optimal", "maxmin")
    check = verify(book, result)
    assert check.ok, check.problems
    assert result.bound is not None and result.objective is not None
    assert 0 < result.objective.primary <= Fraction(result.bound["primary_upper"])
    assert result.objective.secondary <= result.bound["secondary_upper"]
    assert np.isfinite(result.bound["primary_upper"])
