"""Optimal clearing against an independent pairwise MILP oracle, and its certificates."""

from __future__ import annotations

import random

import pytest

from helpers import oracle, random_book, stp_kept
from peerpower.market import clear, verify
from peerpower.market.orders import Book, Order, Side


@pytest.mark.parametrize(
    "run", ["volume", "welfare", "welfare:midpoint", "maxmin"], ids=lambda r: r.replace(":", "-")
)
@pytest.mark.parametrize("case", range(40))
def test_optimal_matches_oracle(run: str, case: int) -> None:
    goal, _, pricing = run.partition(":")
    rng = random.Random(1000 * case + len(goal))
    book = random_book(rng, n_orders=rng.randint(2, 12), n_nodes=rng.randint(1, 5))
    result = clear(book, "optimal", goal, pricing or None)
    check = verify(book, result)
    assert check.ok, check.problems
    want = oracle(book, goal)
    assert result.objective is not None
    assert result.objective.primary == want["primary"]
    assert result.objective.secondary == want["secondary"]
    # self-trade prevention leaves out exactly what the oracle's own prevention leaves out
    kept = stp_kept(book)
    assert {o for o, _ in result.excluded} == {
        o.id for k, o in enumerate(book.orders) if k not in kept
    }
    if goal == "welfare":
        # nodal: the node prices are the proof; midpoint: the dual certificate is (none is
        # needed when no sell could meet any buy: only the empty clearing is valid)
        nodal = result.pricing == "nodal"
        assert (result.node_prices is not None) == nodal
        if nodal or _could_trade(book):
            assert check.proven_optimal is True
            assert (result.certificate is None) == nodal
    elif result.certificate is not None:
        assert check.proven_optimal is True


@pytest.mark.parametrize("case", range(30))
def test_every_book_is_proven_optimal_without_capacities(case: int) -> None:
    # Self-trade prevention leaves no participant on both sides of a compatible pair, so no
    # book (self-crossing participants included) falls off the certified network paths.
    rng = random.Random(77 + case)
    book = random_book(rng, n_orders=12, n_nodes=5, n_participants=12, capacities=False)
    assert _could_trade(book)
    for goal, pricing in (("volume", None), ("welfare", "midpoint"), ("welfare", None)):
        result = clear(book, "optimal", goal, pricing)
        check = verify(book, result)
        assert check.ok, check.problems
        assert check.proven_optimal is True
        if result.pricing == "nodal":
            assert result.certificate is None and result.node_prices is not None
        else:
            assert result.certificate is not None


def _could_trade(book: Book) -> bool:
    """Whether some order self-trade prevention keeps could meet another's price at all."""
    kept = [o for k, o in enumerate(book.orders) if k in stp_kept(book)]
    asks = [o.price_sen_per_kwh for o in kept if o.side is Side.SELL]
    bids = [o.price_sen_per_kwh for o in kept if o.side is Side.BUY]
    return bool(asks and bids) and min(asks) <= max(bids)


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
