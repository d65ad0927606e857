"""Independent oracle for nodal pricing (issue 15).

Nothing here uses :mod:`peerpower.market.pricing`, ``optimal`` or ``pairing``: the expected node
prices come from linear programs solved by scipy's HiGHS, the equilibrium conditions are checked
on flows recomputed from the trades by walking the tree, and self-trade prevention is the plain
one of :func:`helpers.stp_kept`.

The welfare LP over node-level flows of the book left after self-trade prevention, in lots::

    max  Σ_j bid_j b_j − Σ_i ask_i s_i − Σ_c f_c (u_c + d_c)
    s.t. at every node v:  Σ_{i at v} s_i + Σ_{c child of v} u_c + d_v
                         = Σ_{j at v} b_j + Σ_{c child of v} d_c + u_v            (π_v, free)
         u_c − d_c ≤ K_c,  d_c − u_c ≤ K_c   (capacitated edges, K_c = ⌊cap/lot⌋) (α_c, β_c ≥ 0)
         0 ≤ s_i ≤ L_i,  0 ≤ b_j ≤ L_j,  u_c, d_c ≥ 0                          (σ_i, τ_j ≥ 0)

(``u_c``: lots from child ``c`` up to its parent ``p``, ``d_c`` down.) Its dual::

    min  Σ L_i σ_i + Σ L_j τ_j + Σ K_c (α_c + β_c)
    s.t. π_v − σ_i ≤ ask_i           (sell i at v)
         π_v + τ_j ≥ bid_j           (buy j at v)
         −f_c ≤ π_p − π_c − (α_c − β_c) ≤ f_c

Node prices are potentials fixed absolutely by the orders (``π_v`` is what a lot is worth at
``v``), and the market band ``0 ≤ π ≤ 100000`` is added to the dual. For every node the least
and the greatest ``π_v`` over {dual feasible, in the band, dual objective = primal optimum} are
two more LPs; the rule's price is ``⌊(lo + hi) / 2⌋``. The dual's matrix is the transpose of a
network matrix (totally unimodular, also with the band's bounds), so the dual polyhedron and its
optimal face are integral and these optima are integers; the oracle asserts that they are.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from helpers import random_book, stp_kept
from peerpower.grid.tree import GridTree
from peerpower.market import Book, ClearingResult, Order, Side, Trade, clear, verify

BAND = (0, 100_000)
EPS = 1e-6  # slack on the dual objective's optimum in the price LPs
ROUND = 1e-3  # how far an LP optimum may be from the integer it must be


# -- the oracle -----------------------------------------------------------------------------
@dataclasses.dataclass
class Oracle:
    welfare_lots: int  # Σ spread × lots [sen/kWh · lot]
    lo: list[int]
    hi: list[int]

    @property
    def rule(self) -> list[int]:
        return [(a + b) // 2 for a, b in zip(self.lo, self.hi, strict=True)]


def _integer(x: float, what: str) -> int:
    r = round(x)
    assert abs(x - r) < ROUND, f"{what}: LP optimum {x} is not integral"
    return int(r)


def _rows(rows: list[np.ndarray], width: int) -> np.ndarray:
    return np.array(rows) if rows else np.zeros((0, width))


def _lp(c: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, **kw: Any) -> Any:
    res = linprog(
        c, A_ub=a_ub if len(b_ub) else None, b_ub=b_ub if len(b_ub) else None, method="highs", **kw
    )
    assert res.status == 0, res.message
    return res


def oracle(book: Book) -> Oracle:
    grid = book.grid
    n = grid.size
    lot = book.lot_wh
    kept = sorted(stp_kept(book))
    sells = [k for k in kept if book.orders[k].side is Side.SELL]
    buys = [k for k in kept if book.orders[k].side is Side.BUY]
    edges = [c for c in range(n) if grid.parent[c] >= 0]
    capped = [c for c in edges if grid.capacity_wh[c] >= 0]
    node = {k: grid.index[book.orders[k].node] for k in kept}
    price = {k: book.orders[k].price_sen_per_kwh for k in kept}
    lots = {k: book.orders[k].energy_wh // lot for k in kept}
    cap = {c: grid.capacity_wh[c] // lot for c in capped}
    fee = grid.fee_sen_per_kwh

    # Primal: variables s (sells), b (buys), u, d (edges).
    ns, nb, ne = len(sells), len(buys), len(edges)
    nv = ns + nb + 2 * ne
    col_u = {c: ns + nb + e for e, c in enumerate(edges)}
    col_d = {c: ns + nb + ne + e for e, c in enumerate(edges)}
    cost = np.zeros(nv)  # minimised: −welfare
    a_eq = np.zeros((n, nv))
    for x, k in enumerate(sells):
        cost[x] = price[k]
        a_eq[node[k], x] += 1
    for x, k in enumerate(buys):
        cost[ns + x] = -price[k]
        a_eq[node[k], ns + x] -= 1
    for c in edges:
        p = grid.parent[c]
        cost[col_u[c]] = cost[col_d[c]] = fee[c]
        # u_c leaves c and enters p; d_c leaves p and enters c (inflow − outflow = 0).
        a_eq[c, col_u[c]] -= 1
        a_eq[p, col_u[c]] += 1
        a_eq[p, col_d[c]] -= 1
        a_eq[c, col_d[c]] += 1
    rows = []
    rhs = []
    for c in capped:
        row = np.zeros(nv)
        row[col_u[c]], row[col_d[c]] = 1, -1
        rows += [row, -row]
        rhs += [cap[c], cap[c]]
    bounds = [(0, lots[k]) for k in sells] + [(0, lots[k]) for k in buys] + [(0, None)] * (2 * ne)
    welfare = 0
    if nv:
        primal = _lp(
            cost, _rows(rows, nv), np.array(rhs), A_eq=a_eq, b_eq=np.zeros(n), bounds=bounds
        )
        welfare = -_integer(primal.fun, "primal welfare")

    # Dual: variables π (n), σ (sells), τ (buys), α, β (capacitated edges).
    nc = len(capped)
    mv = n + ns + nb + 2 * nc
    col_a = {c: n + ns + nb + e for e, c in enumerate(capped)}
    col_b = {c: n + ns + nb + nc + e for e, c in enumerate(capped)}
    rows = []
    rhs = []
    for x, k in enumerate(sells):  # π_v − σ_i ≤ ask_i
        row = np.zeros(mv)
        row[node[k]], row[n + x] = 1, -1
        rows.append(row)
        rhs.append(price[k])
    for x, k in enumerate(buys):  # −π_v − τ_j ≤ −bid_j
        row = np.zeros(mv)
        row[node[k]], row[n + ns + x] = -1, -1
        rows.append(row)
        rhs.append(-price[k])
    for c in edges:  # ±(π_p − π_c − α_c + β_c) ≤ f_c
        row = np.zeros(mv)
        row[grid.parent[c]], row[c] = 1, -1
        if c in col_a:
            row[col_a[c]], row[col_b[c]] = -1, 1
        rows += [row, -row]
        rhs += [fee[c], fee[c]]
    objective = np.zeros(mv)
    for x, k in enumerate(sells):
        objective[n + x] = lots[k]
    for x, k in enumerate(buys):
        objective[n + ns + x] = lots[k]
    for c in capped:
        objective[col_a[c]] = objective[col_b[c]] = cap[c]
    a_ub = _rows(rows, mv)
    b_ub = np.array(rhs, dtype=float)
    free = [(None, None)] * n + [(0, None)] * (mv - n)
    # Strong duality checks the derivation of the dual above.
    dual = _lp(objective, a_ub, b_ub, bounds=free)
    assert _integer(dual.fun, "dual optimum") == welfare, (dual.fun, welfare)
    # The face of optimal duals within the band.
    face_a = np.vstack([a_ub, objective])
    face_b = np.append(b_ub, welfare + EPS)
    banded = [BAND] * n + [(0, None)] * (mv - n)
    lo, hi = [], []
    for v in range(n):
        unit = np.zeros(mv)
        unit[v] = 1
        lo.append(_integer(_lp(unit, face_a, face_b, bounds=banded).fun, f"min π_{v}"))
        hi.append(_integer(-_lp(-unit, face_a, face_b, bounds=banded).fun, f"max π_{v}"))
    return Oracle(welfare, lo, hi)


# -- the equilibrium conditions, checked on the trades --------------------------------------
def _ancestors(grid: GridTree, v: int) -> list[int]:
    out = [v]
    while grid.parent[out[-1]] >= 0:
        out.append(grid.parent[out[-1]])
    return out


def _path(grid: GridTree, u: int, v: int) -> tuple[list[int], list[int]]:
    """Edges (named by child) climbed from ``u`` and descended to ``v``."""
    au, av = _ancestors(grid, u), _ancestors(grid, v)
    common = set(au) & set(av)
    up = [x for x in au if x not in common]
    down = [x for x in av if x not in common]
    return up, down


def fills_of(result: ClearingResult) -> dict[str, int]:
    filled: dict[str, int] = defaultdict(int)
    for t in result.trades:
        filled[t.sell_order] += t.energy_wh
        filled[t.buy_order] += t.energy_wh
    return filled


def ce_problems(book: Book, result: ClearingResult) -> list[str]:
    """Every broken condition of the brief's competitive equilibrium (empty when none)."""
    grid = book.grid
    lot = book.lot_wh
    out: list[str] = []
    pi_by_id = result.node_prices
    if pi_by_id is None or sorted(pi_by_id) != sorted(grid.ids):
        return [f"node prices {pi_by_id!r} do not name every grid node"]
    pi = [pi_by_id[name] for name in grid.ids]
    kept = stp_kept(book)
    gone = {book.orders[k].id for k in range(len(book.orders)) if k not in kept}
    if {o for o, _ in result.excluded} != gone:
        out.append(f"excluded {result.excluded!r}, self-trade prevention leaves out {gone!r}")
    by_id = {o.id: o for o in book.orders}
    up = [0] * grid.size
    down = [0] * grid.size
    for t in result.trades:
        s, b = by_id[t.sell_order], by_id[t.buy_order]
        if s.side is not Side.SELL or b.side is not Side.BUY or s.id in gone or b.id in gone:
            out.append(f"{t}: not a kept sell and a kept buy")
        if (t.seller, t.buyer) != (s.participant, b.participant) or t.seller == t.buyer:
            out.append(f"{t}: wrong or equal participants")
        u, v = grid.index[s.node], grid.index[b.node]
        climb, descend = _path(grid, u, v)
        fee = sum(grid.fee_sen_per_kwh[c] for c in climb + descend)
        if t.fee_sen_per_kwh != fee:
            out.append(f"{t}: fee {t.fee_sen_per_kwh}, the path costs {fee}")
        if t.price_sen_per_kwh != pi[u] or t.buyer_price_sen_per_kwh != pi[v]:
            out.append(f"{t}: prices are not the node prices {pi[u]}/{pi[v]}")
        if t.buyer_price_sen_per_kwh - t.price_sen_per_kwh - fee < 0:
            out.append(f"{t}: negative rent")
        if t.energy_wh <= 0 or t.energy_wh % lot:
            out.append(f"{t}: not whole lots")
        for c in climb:
            up[c] += t.energy_wh
        for c in descend:
            down[c] += t.energy_wh
    filled = fills_of(result)
    for k, o in enumerate(book.orders):
        f, x, p = filled.get(o.id, 0), o.price_sen_per_kwh, pi[grid.index[o.node]]
        if k not in kept:
            continue
        if f > o.energy_wh:
            out.append(f"{o.id}: overfilled")
        sell = o.side is Side.SELL
        if f > 0 and (x > p if sell else x < p):
            out.append(f"{o.id}: filled at limit {x}, node price {p}")
        if f < o.energy_wh and (x < p if sell else x > p):
            out.append(f"{o.id}: left (partly) unfilled at limit {x}, node price {p}")
    for v in range(grid.size):
        if not BAND[0] <= pi[v] <= BAND[1]:
            out.append(f"node {grid.ids[v]}: price {pi[v]} outside the band")
        p = grid.parent[v]
        if p < 0:
            continue
        f, delta, net = grid.fee_sen_per_kwh[v], pi[p] - pi[v], up[v] - down[v]
        cap = grid.capacity_wh[v]
        limit = -1 if cap < 0 else (cap // lot) * lot
        where = f"edge {grid.ids[v]}→{grid.ids[p]} (fee {f}, Δ {delta}, up {up[v]}, down {down[v]})"
        if cap >= 0 and abs(net) > cap:
            out.append(f"{where}: over capacity {cap}")
        if up[v] > 0 and delta < f:
            out.append(f"{where}: energy moves up but Δ < fee")
        if down[v] > 0 and delta > -f:
            out.append(f"{where}: energy moves down but Δ > −fee")
        if delta > f and net != limit:
            out.append(f"{where}: Δ > fee yet the edge is not full upward")
        if delta < -f and -net != limit:
            out.append(f"{where}: Δ < −fee yet the edge is not full downward")
    return out


def totals_problems(book: Book, result: ClearingResult) -> list[str]:
    by_id = {o.id: o for o in book.orders}
    vol = wel = fees = rent = 0
    for t in result.trades:
        e = t.energy_wh
        spread = by_id[t.buy_order].price_sen_per_kwh - by_id[t.sell_order].price_sen_per_kwh
        vol += e
        wel += (spread - t.fee_sen_per_kwh) * e * 10
        fees += t.fee_sen_per_kwh * e * 10
        rent += (t.buyer_price_sen_per_kwh - t.price_sen_per_kwh - t.fee_sen_per_kwh) * e * 10
    got = result.totals
    want = (vol, wel, fees, rent)
    have = (got.volume_wh, got.welfare_microyen, got.fees_microyen, got.rent_microyen)
    return [] if want == have else [f"totals {have}, recomputed {want}"]


def money_by_trades(trades: tuple[Trade, ...] | list[Trade]) -> dict[str, int]:
    """What every participant receives (+) or pays (−) [sen/kWh · Wh]."""
    money: dict[str, int] = defaultdict(int)
    for t in trades:
        money[t.seller] += t.price_sen_per_kwh * t.energy_wh
        money[t.buyer] -= t.buyer_price_sen_per_kwh * t.energy_wh
    return {p: m for p, m in money.items() if m}


def money_by_fills(book: Book, result: ClearingResult) -> dict[str, int]:
    """Σ over a participant's orders of fill × its node's price, + for sells, − for buys."""
    assert result.node_prices is not None
    filled = fills_of(result)
    money: dict[str, int] = defaultdict(int)
    for o in book.orders:
        sign = 1 if o.side is Side.SELL else -1
        money[o.participant] += sign * filled.get(o.id, 0) * result.node_prices[o.node]
    return {p: m for p, m in money.items() if m}


def check(book: Book, result: ClearingResult, what: str) -> None:
    """Everything the oracle asserts of one nodal clearing."""
    problems = ce_problems(book, result) + totals_problems(book, result)
    assert not problems, f"{what}: {problems[:5]}"
    assert money_by_trades(result.trades) == money_by_fills(book, result), what
    expected = oracle(book)
    assert result.node_prices is not None
    got = [result.node_prices[name] for name in book.grid.ids]
    assert got == expected.rule, (
        f"{what}: node prices {got}, oracle lo {expected.lo} hi {expected.hi} "
        f"→ {expected.rule}\n{book.to_json()}"
    )
    wel = expected.welfare_lots * book.lot_wh * 10
    assert result.totals.welfare_microyen == wel, f"{what}: welfare"
    ver = verify(book, result)
    assert ver.ok, f"{what}: {ver.problems}"
    if result.mechanism == "optimal":
        assert ver.proven_optimal is True, what


# -- random books ---------------------------------------------------------------------------
def wide_book(rng: random.Random, n_orders: int, n_nodes: int) -> Book:
    """A random book with what :func:`helpers.random_book` lacks: zero and off-lot capacities,
    large fees, prices at the band's ends, lots other than 100 Wh."""
    lot = rng.choice([100, 100, 250])
    ids = [f"v{k}" for k in range(n_nodes)]
    shape = rng.choice(["random", "chain", "star"])
    parent = [-1] + [
        {"random": rng.randrange(k), "chain": k - 1, "star": 0}[shape] for k in range(1, n_nodes)
    ]
    fee = [0] + [rng.choice([0, 1, 5, 40, 2_000, 100_000]) for _ in range(1, n_nodes)]
    caps = [None, None, 0, lot, 2 * lot, lot + lot // 2, 3 * lot]
    cap = [-1] + [c if (c := rng.choice(caps)) is not None else -1 for _ in range(1, n_nodes)]
    grid = GridTree(tuple(ids), tuple(parent), tuple(fee), tuple(cap))
    levels = [0, 1, 500, 1_000, 2_000, 3_000, 50_000, 99_999, 100_000]
    orders = [
        Order(
            id=f"o{k}",
            participant=f"p{rng.randrange(max(2, n_orders // 2))}",
            side=rng.choice([Side.BUY, Side.SELL]),
            energy_wh=lot * rng.randint(1, 5),
            price_sen_per_kwh=rng.choice(levels) if rng.random() < 0.6 else rng.randint(0, 4_000),
            node=rng.choice(ids),
            seq=rng.randrange(n_orders),
        )
        for k in range(n_orders)
    ]
    return Book.build(orders, grid, lot, bytes(rng.randrange(256) for _ in range(8)))


def _order(oid: str, who: str, side: Side, lots: int, price: int, node: str = "root") -> Order:
    """One order of a hand-made book, its ``seq`` the number in its id."""
    return Order(oid, who, side, 100 * lots, price, node, int(oid[1:]))


def _two_nodes(fee: int, cap_wh: int | None) -> GridTree:
    """A root and one child ``c`` over an edge of ``fee`` and capacity ``cap_wh`` (None: none)."""
    return GridTree(("root", "c"), (-1, 0), (0, fee), (-1, -1 if cap_wh is None else cap_wh))


CASES = 200  # per test below (a third of it for the last two)


@pytest.mark.parametrize("capacities", [False, True])
def test_oracle_prices_random_trees(capacities: bool) -> None:
    rng = random.Random(1500 + capacities)
    for case in range(CASES):
        book = random_book(
            rng,
            n_orders=rng.randint(0, 16),
            n_nodes=rng.randint(1, 7),
            n_participants=rng.randint(2, 8),
            capacities=capacities,
            price_range=rng.choice([(10, 30), (5, 12), (0, 60)]),
        )
        check(book, clear(book, "optimal", "welfare"), f"case {case}")


def test_oracle_prices_wide_books() -> None:
    rng = random.Random(1515)
    for case in range(CASES):
        book = wide_book(rng, rng.randint(0, 14), rng.randint(1, 7))
        check(book, clear(book, "optimal", "welfare"), f"case {case}")


def test_oracle_prices_explicit_pricing_and_default_agree() -> None:
    rng = random.Random(1516)
    for case in range(CASES // 3):
        book = random_book(rng, n_orders=12, n_nodes=4)
        default = clear(book, "optimal")
        explicit = clear(book, "optimal", "welfare", "nodal")
        assert default.pricing == explicit.pricing == "nodal"
        assert default.to_json() == explicit.to_json(), f"case {case}"


def test_oracle_prices_call_on_a_grid() -> None:
    """``call`` on a grid splits the market by the same rule."""
    rng = random.Random(1517)
    for case in range(CASES // 3):
        book = random_book(rng, n_orders=rng.randint(2, 14), n_nodes=rng.randint(2, 6))
        check(book, clear(book, "call"), f"case {case}")


# -- re-pairing cannot move money --------------------------------------------------------------
def _lot_units(book: Book, result: ClearingResult) -> list[list[str]]:
    units: list[list[str]] = []
    for t in result.trades:
        units += [[t.sell_order, t.buy_order] for _ in range(t.energy_wh // book.lot_wh)]
    return units


def _compatible(book: Book, sell_id: str, buy_id: str) -> bool:
    grid = book.grid
    s, b = book.orders[book.by_id[sell_id]], book.orders[book.by_id[buy_id]]
    climb, descend = _path(grid, grid.index[s.node], grid.index[b.node])
    fee = sum(grid.fee_sen_per_kwh[c] for c in climb + descend)
    return b.price_sen_per_kwh - fee >= s.price_sen_per_kwh and s.participant != b.participant


def repaired(book: Book, result: ClearingResult, swaps: list[tuple[int, int]]) -> ClearingResult:
    """``result`` with its lots re-paired by the compatible ones of ``swaps`` (two lots exchange
    their buyers) and priced at the node prices: the same fills, so the same net energy on
    every edge and the same capacities met."""
    assert result.node_prices is not None
    units = _lot_units(book, result)
    for a, b in swaps:
        if not units:
            break
        x, y = units[a % len(units)], units[b % len(units)]
        if _compatible(book, x[0], y[1]) and _compatible(book, y[0], x[1]):
            x[1], y[1] = y[1], x[1]
    merged: dict[tuple[str, str], int] = defaultdict(int)
    for s, b in units:
        merged[(s, b)] += book.lot_wh
    grid = book.grid
    trades = []
    for (s, b), e in sorted(merged.items()):
        so, bo = book.orders[book.by_id[s]], book.orders[book.by_id[b]]
        climb, descend = _path(grid, grid.index[so.node], grid.index[bo.node])
        fee = sum(grid.fee_sen_per_kwh[c] for c in climb + descend)
        price, paid = result.node_prices[so.node], result.node_prices[bo.node]
        trades.append(Trade(s, b, so.participant, bo.participant, e, price, fee, paid))
    new = dataclasses.replace(result, trades=tuple(trades))
    wel, fees, rent = (
        sum(
            (
                book.orders[book.by_id[t.buy_order]].price_sen_per_kwh
                - book.orders[book.by_id[t.sell_order]].price_sen_per_kwh
                - t.fee_sen_per_kwh
            )
            * t.energy_wh
            * 10
            for t in trades
        ),
        sum(t.fee_sen_per_kwh * t.energy_wh * 10 for t in trades),
        sum(t.rent_sen_per_kwh * t.energy_wh * 10 for t in trades),
    )
    totals = dataclasses.replace(
        result.totals, welfare_microyen=wel, fees_microyen=fees, rent_microyen=rent
    )
    return dataclasses.replace(new, totals=totals)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.integers(0, 2**32),
    st.integers(8, 24),
    st.integers(1, 5),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_money_invariant_under_repairing(
    seed: int, n_orders: int, n_nodes: int, capacities: bool, swap_seed: int
) -> None:
    rng = random.Random(seed)
    book = random_book(
        rng, n_orders=n_orders, n_nodes=n_nodes, n_participants=6, capacities=capacities
    )
    pick = random.Random(swap_seed)
    swaps = [(pick.randrange(1000), pick.randrange(1000)) for _ in range(pick.randint(1, 30))]
    result = clear(book, "optimal", "welfare")
    before = money_by_trades(result.trades)
    assert before == money_by_fills(book, result)
    other = repaired(book, result, swaps)
    assert fills_of(other) == fills_of(result)
    assert money_by_trades(other.trades) == before
    # A Byzantine re-pairing gains nothing: verify refuses any pairing but the canonical one.
    same = sorted((t.sell_order, t.buy_order, t.energy_wh) for t in other.trades) == sorted(
        (t.sell_order, t.buy_order, t.energy_wh) for t in result.trades
    )
    event("canonical pairing" if same else "re-paired")
    ver = verify(book, other)
    if same:
        assert ver.ok, ver.problems
    else:
        # Refused for its pairing, or earlier for a unit's negative rent ("pricing"); a pairing
        # with counterflow also pays fees twice (lower welfare: "objective") and its gross flows
        # break the equilibrium conditions ("pricing").
        rules = {rule for rule, _ in ver.problems}
        assert rules & {"pairing", "pricing"}, ver.problems
        assert rules <= {"pairing", "pricing", "objective"}, ver.problems


def test_money_repairing_single_node_swap() -> None:
    # Sells 10 and 12, buys 20 and 25, one lot each: all trade at π ∈ [12, 20] → 16, whichever
    # sell meets whichever buy.
    book = Book.build(
        [
            _order("o1", "a", Side.SELL, 1, 10),
            _order("o2", "b", Side.SELL, 1, 12),
            _order("o3", "c", Side.BUY, 1, 20),
            _order("o4", "d", Side.BUY, 1, 25),
        ]
    )
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 16}
    other = repaired(book, result, [(0, 1)])
    assert {(t.sell_order, t.buy_order) for t in other.trades} != {
        (t.sell_order, t.buy_order) for t in result.trades
    }
    money = {"a": 1600, "b": 1600, "c": -1600, "d": -1600}
    assert money_by_trades(result.trades) == money_by_trades(other.trades) == money
    assert {rule for rule, _ in verify(book, other).problems} == {"pairing"}


def test_money_repairing_counterflow() -> None:
    # A sell and a buy at each end of a fee-1 edge: the canonical pairing trades locally; the
    # crossed pairing (a → e, b → d) is compatible but sends a lot each way over the edge and
    # pays two fees out of the rent (−1 each). Every participant's money is the same.
    book = Book.build(
        [
            _order("o1", "a", Side.SELL, 1, 10),
            _order("o2", "b", Side.SELL, 1, 10, "c"),
            _order("o3", "d", Side.BUY, 1, 40),
            _order("o4", "e", Side.BUY, 1, 40, "c"),
        ],
        _two_nodes(1, None),
    )
    result = clear(book, "optimal", "welfare")
    assert oracle(book) == Oracle(60, [10, 10], [40, 40])
    assert result.node_prices == {"root": 25, "c": 25}
    assert sorted((t.sell_order, t.buy_order) for t in result.trades) == [
        ("o1", "o3"),
        ("o2", "o4"),
    ]
    other = repaired(book, result, [(0, 1)])
    assert sorted((t.sell_order, t.buy_order) for t in other.trades) == [
        ("o1", "o4"),
        ("o2", "o3"),
    ]
    assert [t.rent_sen_per_kwh for t in other.trades] == [-1, -1]
    assert money_by_trades(other.trades) == money_by_trades(result.trades)
    assert not verify(book, other).ok


# -- edge cases, by hand ------------------------------------------------------------------------
def test_edge_single_node_interval() -> None:
    # Sells 10 × 2 lots, 15 × 1; buys 20 × 2, 12 × 2: 10 meets 20 for 2 lots and nothing else
    # trades. Filled sell 10 ≤ π, unfilled sell 15 ≥ π, filled buy 20 ≥ π, unfilled buy 12 ≤ π:
    # π ∈ [12, 15], the rule takes 13.
    book = Book.build(
        [
            _order("o1", "a", Side.SELL, 2, 10),
            _order("o2", "b", Side.SELL, 1, 15),
            _order("o3", "c", Side.BUY, 2, 20),
            _order("o4", "d", Side.BUY, 2, 12),
        ]
    )
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 13}
    assert [(t.sell_order, t.buy_order, t.energy_wh) for t in result.trades] == [("o1", "o3", 200)]
    assert [(t.price_sen_per_kwh, t.buyer_price_sen_per_kwh) for t in result.trades] == [(13, 13)]
    assert oracle(book) == Oracle(2 * 10, [12], [15])
    check(book, result, "single node")


def test_edge_single_node_marginal_buy() -> None:
    # Sell 10 × 3 lots; buys 20 × 2, 12 × 2: the buy at 12 is filled 1 of 2 lots, so it is both
    # filled (12 ≥ π) and left partly unfilled (12 ≤ π): π = 12 exactly.
    book = Book.build(
        [
            _order("o1", "a", Side.SELL, 3, 10),
            _order("o2", "c", Side.BUY, 2, 20),
            _order("o3", "d", Side.BUY, 2, 12),
        ]
    )
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 12}
    assert oracle(book) == Oracle(2 * 10 + 2, [12], [12])
    assert money_by_trades(result.trades) == {"a": 12 * 300, "c": -12 * 200, "d": -12 * 100}
    check(book, result, "marginal buy")


def test_edge_no_trade_two_nodes() -> None:
    # Sell 30 at the root, buy 20 at c over a fee of 2: no trade. π_root ≤ 30, π_c ≥ 20,
    # |π_root − π_c| ≤ 2: lo = (18, 20), hi = (30, 32), the rule takes (24, 26).
    book = Book.build(
        [_order("o1", "a", Side.SELL, 1, 30), _order("o2", "b", Side.BUY, 1, 20, "c")],
        _two_nodes(2, None),
    )
    result = clear(book, "optimal", "welfare")
    assert result.trades == ()
    assert result.node_prices == {"root": 24, "c": 26}
    assert oracle(book) == Oracle(0, [18, 20], [30, 32])
    check(book, result, "no trade")


def test_edge_no_trade_sells_only() -> None:
    # Only a sell at 40: π ∈ [0, 40] at its node; the band bounds the other side.
    book = Book.build([_order("o1", "a", Side.SELL, 1, 40)], _two_nodes(3, 100))
    result = clear(book, "optimal", "welfare")
    assert result.trades == ()
    assert oracle(book) == Oracle(0, [0, 0], [40, 43])
    assert result.node_prices == {"root": 20, "c": 21}
    check(book, result, "sells only")


def test_edge_empty_book() -> None:
    book = Book.build([], _two_nodes(7, None))
    result = clear(book, "optimal", "welfare")
    assert result.trades == ()
    assert result.node_prices == {"root": 50_000, "c": 50_000}
    check(book, result, "empty")


def test_edge_zero_capacity_islands() -> None:
    # A zero-capacity edge splits the grid: at the root sells 10 × 2 meet a buy 14 × 1 (π = 10,
    # the partly filled sell's ask); at c a sell 20 × 1 meets buys 30 × 2 (π = 30, the partly
    # filled buy's bid). Without the capacity c's buyer would take the root's spare lot.
    orders = [
        _order("o1", "a", Side.SELL, 2, 10),
        _order("o2", "b", Side.BUY, 1, 14),
        _order("o3", "c", Side.SELL, 1, 20, "c"),
        _order("o4", "d", Side.BUY, 2, 30, "c"),
    ]
    book = Book.build(orders, _two_nodes(1, 0))
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 10, "c": 30}
    assert oracle(book) == Oracle(4 + 10, [10, 30], [10, 30])
    assert sorted((t.sell_order, t.buy_order, t.price_sen_per_kwh) for t in result.trades) == [
        ("o1", "o2", 10),
        ("o3", "o4", 30),
    ]
    assert result.totals.rent_microyen == 0
    check(book, result, "islands")
    open_book = Book.build(orders, _two_nodes(1, None))
    opened = clear(open_book, "optimal", "welfare")
    assert opened.totals.welfare_microyen > result.totals.welfare_microyen
    check(open_book, opened, "islands joined")


def test_edge_congested_rent() -> None:
    # A seller at c (10 × 3 lots) and a buyer at the root (50 × 3) over an edge of fee 2 that
    # carries 1.5 lots: 1 lot moves up, both orders are partly filled, so π_c = 10 and
    # π_root = 50; the buyer pays 50, the seller gets 10, the fee is 2 and the rent 38.
    book = Book.build(
        [_order("o1", "a", Side.SELL, 3, 10, "c"), _order("o2", "b", Side.BUY, 3, 50)],
        _two_nodes(2, 150),
    )
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 50, "c": 10}
    assert oracle(book) == Oracle(38, [50, 10], [50, 10])  # grid order: root, c
    (trade,) = result.trades
    assert (trade.energy_wh, trade.price_sen_per_kwh, trade.fee_sen_per_kwh) == (100, 10, 2)
    assert (trade.buyer_price_sen_per_kwh, trade.rent_sen_per_kwh) == (50, 38)
    assert result.totals.rent_microyen == 38 * 100 * 10
    assert result.totals.fees_microyen == 2 * 100 * 10
    check(book, result, "congested")


def test_edge_congested_downward() -> None:
    # The same downhill: the seller at the root, the buyer at c.
    book = Book.build(
        [_order("o1", "a", Side.SELL, 3, 10), _order("o2", "b", Side.BUY, 3, 50, "c")],
        _two_nodes(2, 100),
    )
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 10, "c": 50}
    assert result.totals.rent_microyen == 38 * 100 * 10
    check(book, result, "congested down")


def test_edge_self_crossing_left_out() -> None:
    # p's buy at 20 crosses its earlier sell at 15 and is left out: its sell meets q's buy.
    orders = [
        _order("o1", "p", Side.SELL, 1, 15),
        _order("o2", "p", Side.BUY, 1, 20),
        _order("o3", "q", Side.BUY, 1, 18),
    ]
    book = Book.build(orders)
    result = clear(book, "optimal", "welfare")
    assert result.excluded == (("o2", "o1"),)
    # Filled sell 15 ≤ π ≤ 18 filled buy; o2 imposes nothing.
    assert result.node_prices == {"root": 16}
    check(book, result, "self-cross")
