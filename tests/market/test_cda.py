"""Continuous double auction against a brute-force replay of the rules."""

from __future__ import annotations

import random

import pytest

from helpers import random_book
from peerpower.market import clear, verify
from peerpower.market.orders import Book, Order, Side, tie_score


def brute_cda(book: Book) -> list[tuple[str, str, int, int]]:
    """The CDA rules read literally: scan every resting order for every incoming one."""
    grid = book.grid
    lot = book.lot_wh
    r = {o.id: tie_score(book.seed, o.id) for o in book.orders}
    arrival = sorted(book.orders, key=lambda o: (o.seq, -r[o.id], o.id))
    left = {o.id: o.energy_wh for o in book.orders}
    resting: list[Order] = []
    flow = [0] * grid.size
    out = []

    def fee(a: Order, b: Order) -> int:
        return grid.fee(grid.index[a.node], grid.index[b.node])

    def room(s: Order, b: Order) -> int:
        up, down = grid.path(grid.index[s.node], grid.index[b.node])
        best = 10**18
        for e in up:
            if grid.capacity_wh[e] >= 0:
                best = min(best, grid.capacity_wh[e] - flow[e])
        for e in down:
            if grid.capacity_wh[e] >= 0:
                best = min(best, grid.capacity_wh[e] + flow[e])
        return best

    for k in arrival:
        while left[k.id]:
            cands = []
            for q in resting:
                if not left[q.id] or q.side is k.side or q.participant == k.participant:
                    continue
                s, b = (k, q) if k.side is Side.SELL else (q, k)
                f = fee(s, b)
                if b.price_sen_per_kwh - f < s.price_sen_per_kwh or room(s, b) < lot:
                    continue
                eff = q.price_sen_per_kwh + f if k.side is Side.BUY else -(q.price_sen_per_kwh - f)
                cands.append(((eff, q.seq, -r[q.id], q.id), q, s, b, f))
            if not cands:
                break
            _, q, s, b, f = min(cands, key=lambda c: c[0])
            amount = min(left[k.id], left[q.id], room(s, b))
            price = q.price_sen_per_kwh if k.side is Side.BUY else q.price_sen_per_kwh - f
            out.append((s.id, b.id, amount, price))
            left[k.id] -= amount
            left[q.id] -= amount
            up, down = grid.path(grid.index[s.node], grid.index[b.node])
            for e in up:
                flow[e] += amount
            for e in down:
                flow[e] -= amount
        if left[k.id]:
            resting.append(k)
    return out


@pytest.mark.parametrize("case", range(150))
def test_cda_matches_brute_force(case: int) -> None:
    rng = random.Random(case)
    book = random_book(rng, n_orders=rng.randint(1, 16), n_nodes=rng.randint(1, 6))
    result = clear(book, "cda")
    got = [(t.sell_order, t.buy_order, t.energy_wh, t.price_sen_per_kwh) for t in result.trades]
    assert got == brute_cda(book)
    assert verify(book, result).ok


def test_cda_incoming_buy_pays_resting_ask_and_rests_remainder() -> None:
    orders = [
        Order("s1", "A", Side.SELL, 300, 2000, "root", 0),
        Order("s2", "B", Side.SELL, 200, 1900, "root", 1),
        Order("b1", "C", Side.BUY, 600, 2100, "root", 2),
        Order("s3", "D", Side.SELL, 500, 2050, "root", 3),
    ]
    result = clear(Book.build(orders), "cda")
    got = [(t.sell_order, t.buy_order, t.energy_wh, t.price_sen_per_kwh) for t in result.trades]
    # b1 takes the cheapest first (s2 at 19.00), then s1 at 20.00; 100 Wh rests at 21.00 and
    # the later sell at 20.50 trades at the resting bid.
    assert got == [("s2", "b1", 200, 1900), ("s1", "b1", 300, 2000), ("s3", "b1", 100, 2100)]


def test_cda_equal_seq_ties_go_to_higher_score() -> None:
    seed = b"tie"
    orders = [
        Order("x", "A", Side.SELL, 100, 1000, "root", 0),
        Order("y", "B", Side.SELL, 100, 1000, "root", 0),
        Order("z", "C", Side.BUY, 100, 1000, "root", 5),
    ]
    result = clear(Book.build(orders, seed=seed), "cda")
    first = max(["x", "y"], key=lambda oid: tie_score(seed, oid))
    assert [t.sell_order for t in result.trades] == [first]
