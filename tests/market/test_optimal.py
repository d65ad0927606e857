"""Optimal clearing against an independent pairwise MILP oracle, and its certificates."""

from __future__ import annotations

import random

import pytest

from helpers import oracle, random_book
from peerpower.market import clear, verify
from peerpower.market.orders import Book, Order, Side


@pytest.mark.parametrize("goal", ["volume", "welfare", "maxmin"])
@pytest.mark.parametrize("case", range(40))
def test_optimal_matches_oracle(goal: str, case: int) -> None:
    rng = random.Random(1000 * case + len(goal))
    book = random_book(rng, n_orders=rng.randint(2, 12), n_nodes=rng.randint(1, 5))
    result = clear(book, "optimal", goal)
    check = verify(book, result)
    assert check.ok, check.problems
    want = oracle(book, goal)
    assert result.objective is not None
    assert result.objective.primary == want["primary"]
    assert result.objective.secondary == want["secondary"]
    if result.certificate is not None:
        assert check.proven_optimal is True


@pytest.mark.parametrize("case", range(30))
def test_certificate_proves_optimal_without_capacities(case: int) -> None:
    rng = random.Random(77 + case)
    book = random_book(rng, n_orders=12, n_nodes=5, n_participants=12, capacities=False)
    for goal in ("volume", "welfare"):
        result = clear(book, "optimal", goal)
        check = verify(book, result)
        assert check.ok, check.problems
        own_pairs = _self_compatible(book)
        if not own_pairs:
            assert result.certificate is not None
            assert check.proven_optimal is True


def _self_compatible(book: Book) -> bool:
    grid = book.grid
    for s in book.orders:
        for b in book.orders:
            if s.side is Side.SELL and b.side is Side.BUY and s.participant == b.participant:
                fee = grid.fee(grid.index[s.node], grid.index[b.node])
                if b.price_sen_per_kwh - fee >= s.price_sen_per_kwh:
                    return True
    return False


def test_optimal_tie_break_prefers_higher_seeded_score() -> None:
    # Two identical sells for one buy: the one with the higher r_k must be filled.
    from peerpower.market.orders import tie_score

    seed = bytes.fromhex("00ff")
    orders = [
        Order("a", "A", Side.SELL, 100, 1000, "root", 0),
        Order("b", "B", Side.SELL, 100, 1000, "root", 0),
        Order("c", "C", Side.BUY, 100, 2000, "root", 1),
    ]
    book = Book.build(orders, seed=seed)
    winner = max(["a", "b"], key=lambda oid: tie_score(seed, oid))
    for goal in ("volume", "welfare", "maxmin"):
        result = clear(book, "optimal", goal)
        assert [t.sell_order for t in result.trades] == [winner]
    other_seed = next(
        bytes([k])
        for k in range(256)
        if max(["a", "b"], key=lambda oid: tie_score(bytes([k]), oid)) != winner
    )
    result = clear(Book.build(orders, seed=other_seed), "optimal", "welfare")
    assert [t.sell_order for t in result.trades] != [winner]


def test_optimal_volume_beats_welfare_on_volume() -> None:
    # The seeds' point: goals differ. One cheap sell can serve a high bid (big spread) or
    # two buyers need it... here volume trades more, welfare earns more.
    orders = [
        Order("s1", "S1", Side.SELL, 100, 1000, "root", 0),
        Order("s2", "S2", Side.SELL, 100, 1900, "root", 1),
        Order("b1", "B1", Side.BUY, 100, 3000, "root", 2),
        Order("b2", "B2", Side.BUY, 100, 1200, "root", 3),
    ]
    book = Book.build(orders)
    vol = clear(book, "optimal", "volume")
    wel = clear(book, "optimal", "welfare")
    assert vol.totals.volume_wh == 200
    assert {(t.sell_order, t.buy_order) for t in vol.trades} == {("s1", "b2"), ("s2", "b1")}
    assert wel.totals.welfare_microyen >= vol.totals.welfare_microyen
    assert wel.totals.welfare_microyen == (3000 - 1000) * 100 * 10 + (1200 - 1000) * 0
