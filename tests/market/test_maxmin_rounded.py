"""``maxmin``'s rounded clearing (budget 0: no MILP), its LP bound and its building blocks.

The rounded path is checked on small books against the independent MILP oracle: the clearing
must be valid, never better than the optimum (that would mean a broken check), and the reported
bound must hold above the optimum. The partner lists taken from the grid tree are checked
against the dense pair matrix, and the greedy fill's best free partner against brute force.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import linprog

from helpers import _pairs, _subtree, oracle, random_book
from peerpower.bench import make_book
from peerpower.market import clear, verify
from peerpower.market import pairwise as pw
from peerpower.market.objective import maxmin_participants
from peerpower.market.optimal import _tradable
from peerpower.market.orders import Book, Side, book_arrays, parse_book
from peerpower.market.stp import prevent_self_trade


def _rounded(book: Book) -> tuple[Book, pw.MaxminClearing]:
    kept, _ = prevent_self_trade(book)
    arr = book_arrays(kept)
    return kept, pw.clear_maxmin(kept, arr, _tradable(arr), budget=0)


def _t_of(book: Book, units: list[tuple[int, int, int]], offered: dict[str, int]) -> Fraction:
    """t [µ¥/Wh] of ``units`` (book indexes), recomputed from the orders."""
    orders, grid = book.orders, book.grid
    profit: dict[str, int] = {}
    for i, j, n in units:
        fee = grid.fee(grid.index[orders[i].node], grid.index[orders[j].node])
        spread = orders[j].price_sen_per_kwh - fee - orders[i].price_sen_per_kwh
        assert spread >= 0 and orders[i].participant != orders[j].participant
        for who, gain in (
            (orders[i].participant, spread // 2),
            (orders[j].participant, spread - spread // 2),
        ):
            profit[who] = profit.get(who, 0) + gain * n * book.lot_wh * 10
    return min((Fraction(profit.get(p, 0), e) for p, e in offered.items()), default=Fraction(0))


@pytest.mark.parametrize("case", range(40))
def test_maxmin_participants_are_those_with_a_compatible_pair(case: int) -> None:
    # Pair by pair, from the orders and the grid's fees; few participants (some at several
    # nodes, some on both sides) and prices, so the best reach is often a participant's own.
    rng = random.Random(7100 + case)
    book = random_book(
        rng,
        n_orders=rng.randint(2, 60),
        n_nodes=rng.randint(1, 8),
        n_participants=rng.randint(1, 8),
        price_range=(10, rng.choice([12, 20, 30])),
    )
    grid, orders = book.grid, book.orders
    want: dict[str, int] = {}
    for o in orders:
        for m in orders:
            if m.side == o.side or m.participant == o.participant:
                continue
            s, b = (o, m) if o.side == Side.SELL else (m, o)
            fee = grid.fee(grid.index[s.node], grid.index[b.node])
            if b.price_sen_per_kwh - fee >= s.price_sen_per_kwh:
                want[o.participant] = want.get(o.participant, 0) + o.energy_wh
                break
    assert maxmin_participants(book) == want


@pytest.mark.parametrize("case", range(24))
def test_completion_adds_the_best_welfare_the_capacities_leave(case: int) -> None:
    # A start of random single lots within every capacity; the completion must keep it, stay
    # within every capacity and lot, and add the welfare of an LP over every compatible pair
    # with what the start leaves of each order and of each edge in each direction.
    rng = random.Random(8_200 + case)
    book, _ = prevent_self_trade(
        random_book(rng, rng.randint(8, 30), rng.randint(2, 6), 8, capacities=True)
    )
    arr = book_arrays(book)
    grid, orders = book.grid, book.orders
    node = [grid.index[o.node] for o in orders]
    pairs = _pairs(book)
    edges = [c for c in range(grid.size) if grid.parent[c] >= 0 and grid.capacity_wh[c] >= 0]

    def up(i: int, j: int, c: int) -> int:  # lots of (i, j) sent up edge c: +1, down: −1
        return int(_subtree(grid, c, node[i])) - int(_subtree(grid, c, node[j]))

    def net(units: list[tuple[int, int, int]], c: int) -> int:
        return sum(n * up(i, j, c) for i, j, n in units)

    left = [o.energy_wh // book.lot_wh for o in orders]
    start: list[tuple[int, int, int]] = []
    for i, j, _ in rng.sample(pairs, min(len(pairs), rng.randint(0, 8))):
        trial = [*start, (i, j, 1)]
        if (
            left[i]
            and left[j]
            and all(abs(net(trial, c)) * book.lot_wh <= grid.capacity_wh[c] for c in edges)
        ):
            start, left[i], left[j] = trial, left[i] - 1, left[j] - 1
    start = sorted(start)
    got = pw._complete(book, arr, start)
    have = {(i, j): n for i, j, n in got}
    assert all(have.get((i, j), 0) >= n for i, j, n in start)
    for k, o in enumerate(orders):
        assert sum(n for i, j, n in got if k in (i, j)) * book.lot_wh <= o.energy_wh
    for c in edges:
        assert abs(net(got, c)) * book.lot_wh <= grid.capacity_wh[c]
    spread = {
        (i, j): orders[j].price_sen_per_kwh - fee - orders[i].price_sen_per_kwh
        for i, j, fee in pairs
    }
    added = sum(spread[(i, j)] * n for i, j, n in got) - sum(
        spread[(i, j)] * n for i, j, n in start
    )
    if not pairs:
        assert added == 0
        return
    a_ub, b_ub = [], []
    for k in range(len(orders)):
        a_ub.append([1.0 if k in (i, j) else 0.0 for i, j, _ in pairs])
        b_ub.append(left[k])
    for c in edges:
        row = [float(up(i, j, c)) for i, j, _ in pairs]
        cap = grid.capacity_wh[c] // book.lot_wh
        a_ub += [row, [-v for v in row]]
        b_ub += [cap - net(start, c), cap + net(start, c)]
    lp = linprog(
        [-float(spread[(i, j)]) for i, j, _ in pairs], A_ub=a_ub, b_ub=b_ub, method="highs"
    )
    assert lp.status == 0
    assert added == round(-lp.fun)


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
@pytest.mark.parametrize("case", range(30))
def test_rounded_maxmin_is_valid_and_bounded_by_the_oracle(case: int, capacities: bool) -> None:
    rng = random.Random(5000 + case + 100 * capacities)
    book = random_book(
        rng,
        n_orders=rng.randint(4, 16),
        n_nodes=rng.randint(1, 5),
        n_participants=rng.randint(3, 10),
        capacities=capacities,
    )
    kept, got = _rounded(book)
    assert got.offered == maxmin_participants(kept)
    want = oracle(book, "maxmin")
    t = _t_of(kept, got.units, got.offered)
    assert t <= want["primary"]
    if got.bound is None:  # nothing could trade: no LP was needed
        assert not got.units and not got.offered
        return
    assert Fraction(got.bound["primary_upper"]) >= want["primary"] * (1 - Fraction(1, 10**9))
    if got.bound["primary_proven"]:
        assert t == want["primary"]


@pytest.mark.parametrize("case", range(20))
def test_rounded_maxmin_from_one_partner_per_order_still_bounds_the_optimum(
    monkeypatch: pytest.MonkeyPatch, case: int
) -> None:
    # One partner per order from the tree and one pair per order per round: the lists must be
    # completed from whole rows and the LP must price in the rest itself.
    monkeypatch.setattr(pw, "TOP_K", 1)
    monkeypatch.setattr(pw, "POOL_PER_ORDER", 1)
    monkeypatch.setattr(pw, "ADD_PER_ORDER", 1)
    rng = random.Random(7700 + case)
    book = random_book(
        rng, n_orders=rng.randint(10, 22), n_nodes=4, n_participants=10, capacities=case % 2 == 0
    )
    kept, got = _rounded(book)
    want = oracle(book, "maxmin")
    assert _t_of(kept, got.units, got.offered) <= want["primary"]
    if got.bound is not None:
        assert Fraction(got.bound["primary_upper"]) >= want["primary"] * (1 - Fraction(1, 10**9))


@pytest.mark.parametrize("case", range(15))
def test_partner_lists_from_the_tree_are_prefixes_of_the_full_lists(case: int) -> None:
    rng = random.Random(400 + case)
    raw = make_book(rng.randint(20, 120), rng.randint(5, 40), case, both_share=0.3)
    book, _ = prevent_self_trade(parse_book(raw))
    arr = book_arrays(book)
    sp = pw.PairSpace(book, arr, _tradable(arr), top_k=rng.randint(1, 6))
    dense = pw.build_pairs(book, arr, _tradable(arr))
    for selling, lists, gains, done in (
        (True, sp.list_s, sp.gain_s, sp.done_s),
        (False, sp.list_b, sp.gain_b, sp.done_b),
    ):
        ok = dense.ok if selling else dense.ok.T
        gain = dense.gain_s if selling else dense.gain_b.T
        for o in range(ok.shape[0]):
            partners = np.flatnonzero(ok[o])
            full = partners[np.lexsort((partners, -gain[o, partners]))].tolist()
            assert lists[o] == full[: len(lists[o])]
            assert gains[o] == gain[o, lists[o]].tolist()
            if done[o]:
                assert lists[o] == full
            sp.extend(selling, o)
            assert lists[o] == full


def _spaces(raw: dict[str, object]) -> tuple[pw.PairSpace, pw.Pairs]:
    """The pair space of a raw book after self-trade prevention, and its dense pair table."""
    book, _ = prevent_self_trade(parse_book(raw))
    arr = book_arrays(book)
    return pw.PairSpace(book, arr, _tradable(arr)), pw.build_pairs(book, arr, _tradable(arr))


def _brute_best(state: pw._State, dense: pw.Pairs, selling: bool, o: int) -> tuple[int, int] | None:
    """Order ``o``'s free compatible partner of highest spread with room (ties: lowest
    position), from the dense pair table: ``(spread, partner)`` or None."""
    best = None
    for c in range(len(state.rem_b) if selling else len(state.rem_s)):
        i, j = (o, c) if selling else (c, o)
        free = (state.rem_b[c] if selling else state.rem_s[c]) > 0
        if dense.ok[i, j] and free and state.room(i, j) > 0:
            key = (int(dense.spread[i, j]), -c)
            best = key if best is None or key > best else best
    return None if best is None else (best[0], -best[1])


@pytest.mark.parametrize("capacities", [False, True], ids=["free", "capacities"])
@pytest.mark.parametrize("case", range(10))
def test_best_free_partner_matches_brute_force(case: int, capacities: bool) -> None:
    rng = random.Random(900 + case)
    raw = make_book(rng.randint(30, 90), rng.randint(6, 30), case, both_share=0.2)
    if capacities:
        for node in raw["grid"]["nodes"]:
            if node["id"].startswith("t"):
                node["capacity_wh"] = rng.choice([0, 100, 300])
    sp, dense = _spaces(raw)
    state = pw._State(sp, pw._Edges(sp) if capacities else None)
    for _ in range(60):  # fill random pairs, then ask every order for its best free partner
        i, j = rng.randrange(len(sp.sells)), rng.randrange(len(sp.buys))
        if dense.ok[i, j]:
            n = min(state.rem_s[i], state.rem_b[j], state.room(i, j))
            if n > 0:
                state.add(i, j, rng.randint(1, n))
    for selling in (True, False):
        for o in range(len(sp.sells) if selling else len(sp.buys)):
            assert state._best_for(selling, o) == _brute_best(state, dense, selling, o)


@pytest.mark.parametrize("case", range(6))
def test_best_free_partner_stays_right_as_lots_are_taken_and_freed(case: int) -> None:
    # The scans keep state between calls (cursors, runs of full partners behind a blocked
    # one): ask again after every change, with tight capacities, lots taken and lots freed.
    rng = random.Random(4400 + case)
    raw = make_book(rng.randint(150, 250), rng.randint(40, 80), case, both_share=0.2)
    for order in raw["orders"]:  # small orders fill up, so full partners pile up in the lists
        order["energy_wh"] = 100 * rng.randint(1, 2)
    for node in raw["grid"]["nodes"]:
        if node["id"].startswith("t"):
            node["capacity_wh"] = rng.choice([100, 200, 300])
    sp, dense = _spaces(raw)
    state = pw._State(sp, pw._Edges(sp))
    checked = 0
    for step in range(300):
        if step % 9 == 8 and state.x:  # free some lots of a pair held
            (i, j), n = sorted(state.x.items())[rng.randrange(len(state.x))]
            state.add(i, j, -rng.randint(1, n))
            state.freed(True, i)
            state.freed(False, j)
        else:  # take lots of a free compatible pair, often its order's best
            selling = rng.random() < 0.5
            o = rng.randrange(len(sp.sells) if selling else len(sp.buys))
            got = state._best_for(selling, o)
            if got is not None and (state.rem_s[o] if selling else state.rem_b[o]) > 0:
                i, j = (o, got[1]) if selling else (got[1], o)
                n = min(state.rem_s[i], state.rem_b[j], state.room(i, j))
                if n > 0:
                    state.add(i, j, rng.randint(1, n))
        for selling in (True, False):
            for o in rng.sample(range(len(sp.sells) if selling else len(sp.buys)), 8):
                want = _brute_best(state, dense, selling, o)
                assert state._best_for(selling, o) == want
                checked += want is not None
    assert checked > 500


def _brute_best_lot(state: pw._State, dense: pw.Pairs, q: int) -> tuple[int, int, int] | None:
    """Participant ``q``'s best free pair by (gain, spread, sells first, lowest position), by
    brute force: ``(sell, buy, gain)`` or None."""
    best = None
    for side, mine in ((0, state.sells_of.get(q, ())), (1, state.buys_of.get(q, ()))):
        for o in mine:
            if (state.rem_s if side == 0 else state.rem_b)[o] <= 0:
                continue
            got = _brute_best(state, dense, side == 0, o)
            if got is None:
                continue
            spread, c = got
            gain = spread // 2 if side == 0 else spread - spread // 2
            key = (-gain, -spread, side, o)
            if gain > 0 and (best is None or key < best[0]):
                best = (key, (o, c, gain) if side == 0 else (c, o, gain))
    return None if best is None else best[1]


@pytest.mark.parametrize("case", range(6))
def test_best_lot_stays_right_as_full_edges_open(case: int) -> None:
    # The heaps and memos of the fill outlive an edge that fills up and opens again (a lot
    # that crosses it the other way): only the orders that found it full look again.
    rng = random.Random(6100 + case)
    raw = make_book(rng.randint(150, 250), rng.randint(40, 80), case, both_share=0.3)
    for order in raw["orders"]:
        order["energy_wh"] = 100 * rng.randint(1, 3)
    for node in raw["grid"]["nodes"]:
        if node["id"].startswith("t"):
            node["capacity_wh"] = 100
    sp, dense = _spaces(raw)
    edges = pw._Edges(sp)
    state = pw._State(sp, edges)
    people = sorted(set(state.sells_of) | set(state.buys_of))
    opened = checked = 0
    for step in range(600):
        if step % 50 == 49 and state.x:  # now and then a lot is freed
            i, j = sorted(state.x)[rng.randrange(len(state.x))]
            state.add(i, j, -1)
            state.freed(True, i)
            state.freed(False, j)
        else:  # a random free compatible pair, every other time one across a full edge
            full = {e for e in edges.limit if abs(state.net[e]) >= edges.limit[e]}
            pairs = [
                (int(i), int(j))
                for i, j in zip(*np.nonzero(dense.ok), strict=True)
                if min(state.rem_s[i], state.rem_b[j], state.room(int(i), int(j))) > 0
            ]
            across = [p for p in pairs if full & {e for e, _ in edges.path(*p)}]
            pick = across if across and step % 2 else pairs
            if pick:
                i, j = pick[rng.randrange(len(pick))]
                state.add(i, j, 1)
                opened += any(abs(state.net[e]) < edges.limit[e] for e in full)
        for q in rng.sample(people, 6):
            want = _brute_best_lot(state, dense, q)
            assert state.best_lot(q) == want, (step, q)
            checked += want is not None
    assert opened >= 10 and checked > 400


def test_rounded_maxmin_on_a_bench_book_is_deterministic_and_checked() -> None:
    book = parse_book(make_book(600, 150, 3))
    first = clear(book, "optimal", "maxmin")
    assert first.bound is not None, "600 orders must take the rounded path"
    check = verify(book, first)
    assert check.ok, check.problems
    assert first.objective is not None
    assert first.objective.primary > 0
    assert first.objective.primary <= Fraction(first.bound["primary_upper"])  # rounded up
    assert first.objective.secondary <= first.bound["secondary_upper"]
    again = clear(book, "optimal", "maxmin")
    assert again.digest() == first.digest()


def test_rounded_maxmin_respects_capacities_on_a_large_book() -> None:
    raw = make_book(600, 150, 4)
    for node in raw["grid"]["nodes"]:
        if node["id"].startswith("t"):  # each transformer passes at most 3 kWh either way
            node["capacity_wh"] = 3000
    book = parse_book(raw)
    result = clear(book, "optimal", "maxmin")
    assert result.bound is not None, "600 orders must take the rounded path"
    check = verify(book, result)
    assert check.ok, check.problems  # the capacity rule among them
    assert result.objective is not None
    assert float(result.objective.primary) <= result.bound["primary_upper"] * (1 + 1e-9)
    assert result.objective.secondary <= result.bound["secondary_upper"]


@pytest.mark.parametrize("case", range(8))
def test_column_generation_that_drops_idle_pairs_reaches_the_same_lp(
    monkeypatch: pytest.MonkeyPatch, case: int
) -> None:
    # Dropping the pairs that carry nothing and price above zero must not change what column
    # generation converges to: the LP over every compatible pair.
    raw = make_book(160, 25, case, both_share=0.2)
    if case % 2:
        for node in raw["grid"]["nodes"]:
            if node["id"].startswith("t"):
                node["capacity_wh"] = 500
    book, _ = prevent_self_trade(parse_book(raw))
    arr = book_arrays(book)
    sp = pw.PairSpace(book, arr, _tradable(arr))
    w = sp.weights()
    edges = pw._Edges(sp) if case % 2 else None
    people = sorted(w)[:12]
    seeds = sorted({(i, sp.list_s[i][0]) for i in range(len(sp.sells)) if sp.list_s[i]})
    values = []
    for purge_at in (10**9, 0):
        monkeypatch.setattr(pw, "PURGE_AT", purge_at)
        lp = pw._LP(sp, w, edges)
        lp.add(seeds)
        kept: list[int] = []
        keep = lp.keep
        monkeypatch.setattr(
            lp, "keep", lambda pairs, keep=keep, kept=kept: (kept.append(1), keep(pairs))
        )
        sol, _ = lp.run(people, math.inf, rounds=500)
        found, _ = lp.price(sol, people, repair=False)
        assert not found, ("column generation converged", purge_at)
        assert bool(kept) == (purge_at == 0)
        values.append(sol.value)
    assert values[1] == pytest.approx(values[0], rel=1e-7, abs=1e-7)


def test_solo_bound_caps_t() -> None:
    # Each participant's ratio is at most what it would earn if it had every partner to itself;
    # the LP bound can never exceed the smallest of those.
    book = parse_book(make_book(400, 100, 8))
    result = clear(book, "optimal", "maxmin")
    assert result.bound is not None
    arr = book_arrays(book)
    p = pw.build_pairs(book, arr, _tradable(arr))
    solo: dict[int, Fraction] = {}
    for side_gain, lots_self, lots_other, part, axis in (
        (p.gain_s, p.lots_s, p.lots_b, p.part_s, 1),
        (p.gain_b, p.lots_b, p.lots_s, p.part_b, 0),
    ):
        gains = side_gain if axis == 1 else side_gain.T
        ok = p.ok if axis == 1 else p.ok.T
        for k in range(gains.shape[0]):
            options = sorted(
                ((int(gains[k, m]), int(lots_other[m])) for m in range(gains.shape[1]) if ok[k, m]),
                reverse=True,
            )
            left, earned = int(lots_self[k]), 0
            for g, cap in options:
                take = min(left, cap)
                earned += g * take
                left -= take
            q = int(part[k])
            solo[q] = solo.get(q, Fraction(0)) + earned
    pid = {name: k for k, name in enumerate(arr.participants)}
    cap = min(
        Fraction(solo.get(pid[name], 0), e // book.lot_wh) * 10
        for name, e in maxmin_participants(book).items()
    )
    assert result.bound["primary_upper"] <= float(cap) * (1 + 1e-7)


@pytest.mark.parametrize("case", range(12))
def test_solo_bound_is_each_orders_best_gain_summed(case: int) -> None:
    # Recomputed from the orders and the grid's fees, pair by pair: every lot of a participant
    # at its order's best gain (a counterparty of the same participant counts: it is a bound).
    rng = random.Random(3300 + case)
    if case < 8:
        book = random_book(
            rng, n_orders=rng.randint(6, 40), n_nodes=rng.randint(1, 9), n_participants=12
        )
    else:
        book = parse_book(make_book(600, 120, case, both_share=0.2))
    kept, _ = prevent_self_trade(book)
    arr = book_arrays(kept)
    sp = pw.PairSpace(kept, arr, _tradable(arr))
    w = sp.weights()
    orders, grid = kept.orders, kept.grid
    most: dict[str, int] = {}
    for o in orders:
        best = None
        for c in orders:
            if c.side == o.side:
                continue
            s, b = (o, c) if o.side.value == "sell" else (c, o)
            spread = b.price_sen_per_kwh - grid.fee(grid.index[s.node], grid.index[b.node])
            spread -= s.price_sen_per_kwh
            gain = spread // 2 if o.side.value == "sell" else spread - spread // 2
            best = gain if best is None else max(best, gain)
        if best is not None and best > 0:
            most[o.participant] = most.get(o.participant, 0) + best * o.energy_wh // kept.lot_wh
    names = arr.participants
    want = min((Fraction(most.get(names[q], 0), n) for q, n in w.items()), default=Fraction(0))
    assert pw._solo_bound(sp, w) == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize("solvers", [(("glop", "use_dual_simplex: true"),), (("highs", ""),)])
def test_fallback_lp_solvers_give_valid_bounds(
    monkeypatch: pytest.MonkeyPatch, solvers: tuple[tuple[str, str], ...]
) -> None:
    monkeypatch.setattr(pw, "LP_SOLVERS", solvers)
    for case in range(8):
        rng = random.Random(9100 + case)
        book = random_book(rng, n_orders=12, n_nodes=4, n_participants=8, capacities=False)
        kept, got = _rounded(book)
        want = oracle(book, "maxmin")
        assert _t_of(kept, got.units, got.offered) <= want["primary"]
        if got.bound is not None:
            assert got.bound["primary_upper"] >= float(want["primary"]) * (1 - 1e-6) - 1e-6


def _best_lot_scan(state: pw._State, q: int) -> tuple[int, int, int] | None:
    """``best_lot`` by scanning every order of ``q``: the reference the heap must match."""
    best: tuple[int, int, int, int] | None = None  # gain, spread, sell, buy
    for selling, mine in ((True, state.sells_of.get(q, ())), (False, state.buys_of.get(q, ()))):
        rem_own = state.rem_s if selling else state.rem_b
        for o in mine:
            if rem_own[o] <= 0:
                continue
            found = state._best_for(selling, o)
            if found is None:
                continue
            spread, c = found
            gain = spread // 2 if selling else spread - spread // 2
            if gain <= 0:
                continue
            if best is None or (gain, spread) > (best[0], best[1]):
                best = (gain, spread, o, c) if selling else (gain, spread, c, o)
    if best is None:
        return None
    return best[2], best[3], best[0]


@pytest.mark.parametrize("capacity", [None, 1500], ids=["free", "capacities"])
def test_best_lot_heap_matches_the_full_scan(capacity: int | None, monkeypatch) -> None:
    # The lazy heap per participant must give exactly what scanning every order gives, at
    # every call of the greedy fill and the leximin search (lots freed, edges reopened).
    book = parse_book(make_book(600, 120, 2, both_share=0.2, transformer_capacity_wh=capacity))
    kept, _ = prevent_self_trade(book)
    arr = book_arrays(kept)
    sp = pw.PairSpace(kept, arr, _tradable(arr))
    heap = pw._State.best_lot
    calls = []

    def both(self: pw._State, q: int) -> tuple[int, int, int] | None:
        got = heap(self, q)
        assert got == _best_lot_scan(self, q)
        calls.append(got is not None)
        return got

    monkeypatch.setattr(pw._State, "best_lot", both)
    edges = pw._Edges(sp) if kept.grid.has_capacities else None
    pw._stage_one(sp, sp.weights(), edges)
    assert sum(calls) > 100 and not all(calls)
