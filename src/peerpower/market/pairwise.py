"""``maxmin`` on large books: an LP bound over every compatible pair and a rounded clearing.

In whole lots ``maxmin`` is NP-hard (it contains max–min fair allocation), and a MILP over the
compatible pairs — about 400,000 integer variables on a 2,000-order book — is out of reach: SCIP
needs 40 s to prove a 200-order book, its root node alone takes 14 s on 2,000 orders, and even a
48-order book of a simulated neighbourhood (286 pairs, 35 participants) was not proven in two
minutes by SCIP or HiGHS. Books with more than :data:`EXACT_PAIRS` compatible pairs are therefore
cleared by rounding, and so is any book whose exact MILP is not proven within
:data:`EXACT_NODES` branch-and-bound nodes (a deterministic limit, so every validator gets the
same clearing); the bounds that the rounded clearing is measured against are reported beside
it.

1. ``t``: the LP relaxation ``max t`` s.t. ``profit_p ≥ t · offered_p`` is solved by *column
   generation*: GLOP over a pool of pairs, first each order's best partners by spread; the
   reduced cost ``d = y·A − c`` of **every** pair is computed from the duals at once with NumPy
   (the pair matrix is dense, sells × buys) and each order's most negative pairs join the pool
   until none is negative. The duals are then feasible for the LP over all pairs, so its value
   bounds ``t`` of every clearing. The LP solution is rounded down and *filled*: the
   participant with the lowest ratio ``profit / offered`` gets lots on its best free pair until
   every participant is stuck; then a leximin local search lets the lowest participant take a
   lot of a full partner from another counterparty when everyone that touches stays above it,
   and fills again. ``t`` is proven optimal when every participant's next achievable ratio
   above it (profits are whole numbers) lies beyond the LP bound.
2. welfare, keeping every ratio at least ``t``: the candidates are the welfare optimum (a
   min-cost flow) if it already keeps everyone at ``t``, stage 1's clearing, and the same with
   the lots nobody needs to stay at ``t`` taken back (lowest spread first); each is completed by
   a welfare min-cost flow over the lots it left (adding trades never lowers a profit), and the
   best is kept. The welfare optimum without the ``t`` constraint is the reported bound.

On a grid with capacities the LP and the rounding leave the capacities out (so the LP still
bounds ``t``); the rounded clearing gives back lots where an edge is over, lowest spread first,
and is filled again within the capacities; there is no welfare completion, and the welfare
bound is the capacitated welfare optimum.

Profits here are in sen/kWh·lot and offered energy in lots (the ratio × 10 is µ¥/Wh).
"""

from __future__ import annotations

import heapq
import importlib
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import ClearingError
from peerpower.grid.tree import GridTree
from peerpower.market.orders import Book, BookArrays

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: Books with at most this many compatible pairs are cleared by the exact MILP ...
EXACT_PAIRS = 60
#: ... if it is proven within this many branch-and-bound nodes at each of its stages.
EXACT_NODES = 1_000
#: Largest sells × buys matrix accepted (memory: about 40 bytes a pair).
MAX_PAIRS = 40_000_000
#: Partners per order in the first column pool.
POOL_PER_ORDER = 15
#: Unused pairs with a reduced cost above this share of the largest leave the pool.
PURGE = 0.02
#: LP solvers (OR-tools model builder name, parameters) tried in turn.
LP_SOLVERS = (("glop", ""), ("glop", "use_dual_simplex: true"), ("highs", ""))
#: Pairs per order that join the pool in a round of column generation.
ADD_PER_ORDER = 3
#: Most lots the leximin local search moves.
MOVES = 400
#: Relative tolerance of the LP (reduced costs, bounds).
TOL = 1e-7


@dataclass
class Pairs:
    """Dense sells × buys view of the live part of a book."""

    sells: I64  # book indexes
    buys: I64
    ok: Bool  # compatible, participants differ
    spread: I64  # bid − fee − ask [sen/kWh]
    gain_s: I64  # floor(spread / 2): the seller's gain at the midpoint price
    gain_b: I64  # spread − gain_s: the buyer's
    lots_s: I64
    lots_b: I64
    part_s: I64  # participant index
    part_b: I64
    node_s: I64  # grid node index
    node_b: I64

    @property
    def count(self) -> int:
        return int(self.ok.sum())


def build_pairs(book: Book, arr: BookArrays, live: Bool) -> Pairs:
    """The compatible pairs among the ``live`` orders of ``book``."""
    sells = np.flatnonzero(live & arr.is_sell)
    buys = np.flatnonzero(live & ~arr.is_sell)
    if len(sells) * len(buys) > MAX_PAIRS:
        raise ClearingError(
            "orders",
            f"{len(sells)} sells × {len(buys)} buys that could trade make "
            f"{len(sells) * len(buys)} pairs, more than pairwise clearing takes ({MAX_PAIRS}); "
            "clear this book with --goal welfare or split it",
        )
    s_nodes, s_inv = np.unique(arr.node[sells], return_inverse=True)
    b_nodes, b_inv = np.unique(arr.node[buys], return_inverse=True)
    uu, vv = np.meshgrid(s_nodes, b_nodes, indexing="ij")
    fee_nodes = book.grid.fees_between(uu.ravel(), vv.ravel()).reshape(uu.shape)
    fee = fee_nodes[s_inv][:, b_inv].astype(np.int64)
    spread = arr.price[buys][None, :] - fee - arr.price[sells][:, None]
    ok = (spread >= 0) & (arr.participant[sells][:, None] != arr.participant[buys][None, :])
    gain_s = spread // 2
    return Pairs(
        sells=sells,
        buys=buys,
        ok=ok,
        spread=spread,
        gain_s=gain_s,
        gain_b=spread - gain_s,
        lots_s=arr.lots[sells],
        lots_b=arr.lots[buys],
        part_s=arr.participant[sells],
        part_b=arr.participant[buys],
        node_s=arr.node[sells],
        node_b=arr.node[buys],
    )


def offered_wh(pairs: Pairs, arr: BookArrays, lot_wh: int) -> dict[str, int]:
    """The participants of ``maxmin`` — those with an order in at least one compatible pair —
    and the energy of those orders [Wh] (as :func:`.objective.maxmin_participants`, read off
    pairs already built)."""
    p = pairs
    orders = np.concatenate([p.sells[p.ok.any(axis=1)], p.buys[p.ok.any(axis=0)]])
    orders.sort()
    offered: dict[str, int] = {}
    for o in orders.tolist():
        name = arr.participants[arr.participant[o]]
        offered[name] = offered.get(name, 0) + int(arr.lots[o]) * lot_wh
    return offered


def _edge_limits(grid: GridTree, lot_wh: int) -> dict[int, int]:
    """Capacitated edges (named by their child node) → capacity [lots]."""
    return {
        c: grid.capacity_wh[c] // lot_wh
        for c in range(grid.size)
        if grid.capacity_wh[c] >= 0 and grid.parent[c] >= 0
    }


@dataclass(frozen=True)
class Bound:
    """What the LP proves about a rounded clearing (in the units of the objective)."""

    primary: float  # upper bound of t [µ¥/Wh]
    secondary: float  # upper bound of welfare [µ¥] given the t achieved
    primary_proven: bool
    secondary_proven: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "lp-rounding",
            # rounded up, so that they stay upper bounds
            "primary_upper": math.ceil(max(0.0, self.primary) * 1e6) / 1e6,
            "secondary_upper": math.ceil(max(0.0, self.secondary) * 1e3) / 1e3,
            "primary_proven": self.primary_proven,
            "secondary_proven": self.secondary_proven,
        }


class _LP:
    """An LP over a growing pool of pairs, solved by column generation (GLOP)."""

    def __init__(
        self,
        pairs: Pairs,
        pool: Bool,
        n_participants: int,
        weights: dict[int, int] | None,
        floors: dict[int, int] | None,
        objective: F64 | None,
    ) -> None:
        """Maximise ``t`` with ``profit_p ≥ t · weights_p`` when ``weights`` is given, else
        ``objective`` (per lot of each pair) with ``profit_p ≥ floors_p``."""
        self.pairs = pairs
        self.pool = pool
        self.objective = objective
        self.weights = weights
        rows = weights if weights is not None else (floors or {})
        self.people = np.array(sorted(rows), dtype=np.int64)
        self.row_of = np.full(n_participants, -1, dtype=np.int64)
        self.row_of[self.people] = np.arange(len(self.people))
        self.rhs_people = (
            np.zeros(len(self.people))
            if weights is not None
            else -np.array([rows[q] for q in self.people.tolist()], dtype=np.float64)
        )

    def solve(self) -> tuple[float, F64]:
        """LP value over all pairs and its solution (a sells × buys matrix of lots)."""
        p = self.pairs
        last = -math.inf
        while True:
            value, x, duals = self._solve_pool()
            reduced = self._reduced_costs(*duals)
            scale = max(1.0, float(np.abs(reduced[p.ok]).max(initial=0.0)))
            bad = p.ok & ~self.pool & (reduced < -TOL * scale)
            if not bad.any():
                return value, x
            if value > last + TOL * max(1.0, abs(value)):
                # Pairs the LP does not use and prices well out leave the pool (they come back
                # if the duals call them), so each round's LP stays small; only after the value
                # rose, so the rounds cannot cycle.
                self.pool &= (x > 1e-9) | (reduced <= PURGE * scale)
            last = value
            # Each order's few most negative pairs join (fewer rounds of the LP).
            masked = np.where(bad, reduced, np.inf)
            for axis in (1, 0):
                k = min(ADD_PER_ORDER, masked.shape[axis])
                best = np.argpartition(masked, k - 1, axis=axis).take(range(k), axis=axis)
                other = np.arange(masked.shape[1 - axis])
                if axis == 1:
                    idx = (np.repeat(other, k), best.ravel())
                else:
                    idx = (best.ravel(), np.tile(other, k))
                has = np.isfinite(masked[idx])
                self.pool[idx[0][has], idx[1][has]] = True

    def _solve_pool(self) -> tuple[float, F64, tuple[F64, F64, F64]]:
        from scipy.sparse import coo_matrix

        # Typed loosely: the stubs shipped with this OR-tools module are malformed.
        mb: Any = importlib.import_module("ortools.linear_solver.python.model_builder_helper")

        p = self.pairs
        n_s, n_b = p.ok.shape
        n_p = len(self.people)
        ii, jj = np.nonzero(self.pool)
        m = len(ii)
        k = np.arange(m)
        # Rows: sells, buys, participants; columns: pairs (then t).
        r = [ii, n_s + jj]
        c = [k, k]
        v = [np.ones(m), np.ones(m)]
        for part, gain in ((p.part_s[ii], p.gain_s[ii, jj]), (p.part_b[jj], p.gain_b[ii, jj])):
            row = self.row_of[part]
            use = (row >= 0) & (gain != 0)
            r.append(n_s + n_b + row[use])
            c.append(k[use])
            v.append(-gain[use].astype(np.float64))
        n_cols = m
        cost = np.zeros(m + (1 if self.weights is not None else 0))
        if self.weights is not None:
            w = np.array([self.weights[q] for q in self.people.tolist()], dtype=np.float64)
            r.append(n_s + n_b + np.arange(n_p))
            c.append(np.full(n_p, m))
            v.append(w)
            n_cols = m + 1
            cost[m] = -1.0
        else:
            assert self.objective is not None
            cost[:m] = -self.objective[ii, jj]
        a = coo_matrix(
            (np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
            shape=(n_s + n_b + n_p, n_cols),
        ).tocsr()
        b = np.concatenate([p.lots_s, p.lots_b, self.rhs_people]).astype(np.float64)
        upper = np.full(n_cols, np.inf)
        upper[:m] = np.minimum(p.lots_s[ii], p.lots_b[jj])
        model = mb.ModelBuilderHelper()
        model.fill_model_from_sparse_data(
            np.zeros(n_cols), upper, cost, np.full(len(b), -np.inf), b, a
        )
        # GLOP, and if it reports numerical trouble, GLOP's dual simplex, then HiGHS.
        for name, params in LP_SOLVERS:
            solver = mb.ModelSolverHelper(name)
            solver.enable_output(False)
            if params:
                solver.set_solver_specific_parameters(params)
            solver.solve(model)
            if solver.status() == mb.SolveStatus.OPTIMAL:
                break
        else:
            raise ClearingError(
                "optimal", f"internal: every LP solver failed, last with {solver.status()!r}"
            )
        # The solver minimises ``cost``; the duals of the ≤ rows are ≤ 0 there.
        y = -np.asarray(solver.dual_values(), dtype=np.float64)
        values = np.asarray(solver.variable_values(), dtype=np.float64)
        x = np.zeros((n_s, n_b))
        x[ii, jj] = values[:m]
        return float(-solver.objective_value()), x, (y[:n_s], y[n_s : n_s + n_b], y[n_s + n_b :])

    def _reduced_costs(self, alpha: F64, beta: F64, mu_rows: F64) -> F64:
        """``d = y·A − c`` for every pair (+inf where incompatible)."""
        p = self.pairs
        d = alpha[:, None] + beta[None, :]
        if len(self.people):
            mu = np.zeros(len(self.row_of))
            mu[self.people] = mu_rows
            d -= mu[p.part_s][:, None] * p.gain_s
            d -= mu[p.part_b][None, :] * p.gain_b
        if self.objective is not None:
            d -= self.objective
        out: F64 = np.where(p.ok, d, np.inf)
        return out


class _State:
    """A clearing being built: lots per pair, lots left per order, profit per participant."""

    def __init__(self, pairs: Pairs, x: I64, n_participants: int) -> None:
        p = pairs
        self.p = p
        self.x = x
        self.rem_s = p.lots_s - x.sum(axis=1)
        self.rem_b = p.lots_b - x.sum(axis=0)
        self.profit = np.zeros(n_participants, dtype=np.int64)
        np.add.at(self.profit, p.part_s, (p.gain_s * x).sum(axis=1))
        np.add.at(self.profit, p.part_b, (p.gain_b * x).sum(axis=0))
        self.net: dict[int, int] | None = None  # net lots per capacitated edge, when limited
        self.sells_of: dict[int, list[int]] = {}
        self.buys_of: dict[int, list[int]] = {}
        for i, q in enumerate(p.part_s.tolist()):
            self.sells_of.setdefault(q, []).append(i)
        for j, q in enumerate(p.part_b.tolist()):
            self.buys_of.setdefault(q, []).append(j)

    def _partners(self) -> None:
        """Each order's partners by its gain, best first (ties: lowest index), and a cursor
        past the partners found full: a fill only adds lots, so they stay full; a steal frees
        one order's lot and moves back the cursors that had passed it (:meth:`_freed`)."""
        p = self.p
        if hasattr(self, "by_gain_s"):
            return
        self.key_s = np.where(p.ok, p.gain_s, -1)  # gain of a sell's partner, −1: none
        self.key_b = np.where(p.ok, p.gain_b, -1).T  # gain of a buy's partner
        self.by_gain_s = np.argsort(-self.key_s, axis=1, kind="stable")
        self.by_gain_b = np.argsort(-self.key_b, axis=1, kind="stable")
        self.cursor_s = [0] * len(p.sells)
        self.cursor_b = [0] * len(p.buys)

    def _freed(self, sell: int | None = None, buy: int | None = None) -> None:
        """A lot of ``sell`` (or ``buy``) became free: no cursor may stay past it."""
        if not hasattr(self, "rank_s"):
            # rank_s[i, j]: where buy j stands in sell i's list (and rank_b for buys)
            self.rank_s = np.empty_like(self.by_gain_s)
            columns = np.arange(self.by_gain_s.shape[1])[None, :]
            np.put_along_axis(self.rank_s, self.by_gain_s, columns, axis=1)
            self.rank_b = np.empty_like(self.by_gain_b)
            columns = np.arange(self.by_gain_b.shape[1])[None, :]
            np.put_along_axis(self.rank_b, self.by_gain_b, columns, axis=1)
        if sell is not None:
            self.cursor_b = np.minimum(self.cursor_b, self.rank_b[:, sell]).tolist()
        if buy is not None:
            self.cursor_s = np.minimum(self.cursor_s, self.rank_s[:, buy]).tolist()

    def best_lot(self, q: int) -> tuple[int, int, int] | None:
        """Free pair (sell, buy) that gains participant ``q`` most, with that gain (and, once
        :meth:`limit_edges` is on, room on every capacitated edge of its path)."""
        best: tuple[int, int, int] | None = None
        for i in self.sells_of.get(q, []):
            if self.rem_s[i] <= 0:
                continue
            row, key, k = self.by_gain_s[i], self.key_s[i], self.cursor_s[i]
            while k < len(row) and key[row[k]] > 0 and self.rem_b[row[k]] <= 0:
                k += 1
            self.cursor_s[i] = k
            while self.net is not None and k < len(row) and key[row[k]] > 0:
                if self.rem_b[row[k]] > 0 and self.room(i, int(row[k])) > 0:
                    break
                k += 1  # a blocked edge can open again: the cursor stays where it was
            if k < len(row) and key[row[k]] > 0 and (best is None or key[row[k]] > best[2]):
                best = (i, int(row[k]), int(key[row[k]]))
        for j in self.buys_of.get(q, []):
            if self.rem_b[j] <= 0:
                continue
            col, key, k = self.by_gain_b[j], self.key_b[j], self.cursor_b[j]
            while k < len(col) and key[col[k]] > 0 and self.rem_s[col[k]] <= 0:
                k += 1
            self.cursor_b[j] = k
            while self.net is not None and k < len(col) and key[col[k]] > 0:
                if self.rem_s[col[k]] > 0 and self.room(int(col[k]), j) > 0:
                    break
                k += 1
            if k < len(col) and key[col[k]] > 0 and (best is None or key[col[k]] > best[2]):
                best = (int(col[k]), j, int(key[col[k]]))
        return best

    def limit_edges(self, grid: GridTree, lot_wh: int) -> None:
        """From now on, keep every capacitated edge's net energy within its capacity (the
        clearing must already respect them)."""
        self.grid = grid
        self.limit = _edge_limits(grid, lot_wh)
        self.paths: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.net = dict.fromkeys(self.limit, 0)
        for i, j in np.argwhere(self.x).tolist():
            for e, sign in self._path(i, j):
                self.net[e] += sign * int(self.x[i, j])

    def _path(self, i: int, j: int) -> list[tuple[int, int]]:
        """Capacitated edges between sell i and buy j, +1 crossed upwards, −1 downwards."""
        key = (int(self.p.node_s[i]), int(self.p.node_b[j]))
        edges = self.paths.get(key)
        if edges is None:
            up, down = self.grid.path(*key)
            edges = [(e, 1) for e in up if e in self.limit]
            edges += [(e, -1) for e in down if e in self.limit]
            self.paths[key] = edges
        return edges

    def room(self, i: int, j: int) -> int:
        """Lots pair (i, j) could still carry without an edge over its capacity."""
        assert self.net is not None
        free = 1 << 62
        for e, sign in self._path(i, j):
            free = min(free, self.limit[e] - sign * self.net[e])
        return free

    def add(self, i: int, j: int, lots: int) -> None:
        p = self.p
        self.x[i, j] += lots
        self.rem_s[i] -= lots
        self.rem_b[j] -= lots
        self.profit[p.part_s[i]] += lots * p.gain_s[i, j]
        self.profit[p.part_b[j]] += lots * p.gain_b[i, j]
        if self.net is not None:
            for e, sign in self._path(i, j):
                self.net[e] += sign * lots

    def fill(self, weights: dict[int, int], target: float = math.inf) -> None:
        """Raise the lowest ratio ``profit_q / weights_q``: give the lowest participant its best
        free lots until its ratio passes the next lowest one, until every ratio is at least
        ``target`` or its participant is stuck."""
        self._partners()
        heap = [(self.profit[q] / w, q) for q, w in weights.items() if w > 0]
        heapq.heapify(heap)
        while heap:
            ratio, q = heapq.heappop(heap)
            w = weights[q]
            if ratio != self.profit[q] / w:  # stale entry: q gained as someone's partner
                heapq.heappush(heap, (self.profit[q] / w, q))
                continue
            if ratio >= target:
                break
            lot = self.best_lot(q)
            if lot is None:
                continue  # stuck: its orders, or all partners it could gain from, are full
            i, j, gain = lot
            goal = min(heap[0][0] if heap else math.inf, target)
            need = 1
            if math.isfinite(goal):
                need = max(1, math.floor((goal * w - self.profit[q]) / gain) + 1)
            most = min(self.rem_s[i], self.rem_b[j])
            if self.net is not None:
                most = min(most, self.room(i, j))
            self.add(i, j, int(min(need, most)))
            heapq.heappush(heap, (self.profit[q] / w, q))

    def improve(self, weights: dict[int, int], moves: int = MOVES) -> None:
        """Leximin local search: while the lowest participant can take a lot from a full
        partner's other counterparty (:meth:`steal`), do it and fill again."""
        self.fill(weights)
        people = np.array([q for q, w in weights.items() if w > 0], dtype=np.int64)
        if not len(people):
            return
        w = np.array([weights[q] for q in people.tolist()], dtype=np.float64)
        for _ in range(moves):
            q = int(people[(self.profit[people] / w).argmin()])
            if not self.steal(q, weights):
                return
            self.fill(weights)

    def trim(self, floors: dict[int, int]) -> None:
        """Take back lots, lowest spread first, that no participant needs to stay at its floor
        (so that a welfare flow can put them to better use)."""
        p = self.p
        floor = np.zeros(len(self.profit), dtype=np.int64)
        for q, f in floors.items():
            floor[q] = f
        si, bj = np.nonzero(self.x)
        for k in np.argsort(p.spread[si, bj], kind="stable").tolist():
            i, j = int(si[k]), int(bj[k])
            qs, qb = int(p.part_s[i]), int(p.part_b[j])
            take = int(self.x[i, j])
            for q, g in ((qs, int(p.gain_s[i, j])), (qb, int(p.gain_b[i, j]))):
                if g > 0:
                    take = min(take, (int(self.profit[q]) - int(floor[q])) // g)
            if take > 0:
                self.add(i, j, -take)

    def steal(self, q: int, weights: dict[int, int]) -> bool:
        """Give ``q`` one lot: an order of q with lots left takes a lot of a full partner from
        that partner's counterparty of another participant. Only if everyone the move lowers or
        changes stays strictly above q's present ratio (so the sorted ratios rise)."""
        p = self.p
        w = np.zeros(len(self.profit), dtype=np.int64)
        for r, wr in weights.items():
            w[r] = wr
        pq, wq = int(self.profit[q]), weights[q]

        def above(people: I64, profit: I64) -> Bool:
            # profit / w > pq / wq, exactly; participants without a weight have no floor
            mask: Bool = (w[people] == 0) | (profit * wq > pq * w[people])
            return mask

        hold_i, hold_j = np.nonzero(self.x)
        best: tuple[int, int, int, int, int] | None = None  # gain, side, mine, partner, donor
        for j in self.buys_of.get(q, []):
            if self.rem_b[j] <= 0:
                continue
            si, bj = hold_i, hold_j  # sell si (full) trades with buy bj; j takes one of its lots
            gain = self.key_b[j, si]
            ok = (gain > 0) & (self.rem_s[si] == 0) & (p.part_b[bj] != q)
            ok &= above(p.part_b[bj], self.profit[p.part_b[bj]] - p.gain_b[si, bj])
            ok &= above(
                p.part_s[si], self.profit[p.part_s[si]] - p.gain_s[si, bj] + p.gain_s[si, j]
            )
            if ok.any():
                k = int(np.flatnonzero(ok)[gain[ok].argmax()])
                if best is None or gain[k] > best[0]:
                    best = (int(gain[k]), 1, j, int(si[k]), int(bj[k]))
        for i in self.sells_of.get(q, []):
            if self.rem_s[i] <= 0:
                continue
            si, bj = hold_i, hold_j  # buy bj (full) trades with sell si; i takes one of its lots
            gain = self.key_s[i, bj]
            ok = (gain > 0) & (self.rem_b[bj] == 0) & (p.part_s[si] != q)
            ok &= above(p.part_s[si], self.profit[p.part_s[si]] - p.gain_s[si, bj])
            ok &= above(
                p.part_b[bj], self.profit[p.part_b[bj]] - p.gain_b[si, bj] + p.gain_b[i, bj]
            )
            if ok.any():
                k = int(np.flatnonzero(ok)[gain[ok].argmax()])
                if best is None or gain[k] > best[0]:
                    best = (int(gain[k]), 0, i, int(bj[k]), int(si[k]))
        if best is None:
            return False
        _, side, mine, partner, donor = best
        self._partners()
        if side == 1:  # q's buy ``mine`` takes sell ``partner``'s lot from buy ``donor``
            self.add(partner, donor, -1)
            self.add(partner, mine, 1)
            self._freed(buy=donor)
        else:  # q's sell ``mine`` takes buy ``partner``'s lot from sell ``donor``
            self.add(donor, partner, -1)
            self.add(mine, partner, 1)
            self._freed(sell=donor)
        return True

    def respect_capacities(self, grid: GridTree, lot_wh: int) -> None:
        """Take back lots, lowest spread first, from the pairs that push an edge's net energy
        past its capacity, until no edge is over (taking back never creates a trade)."""
        from peerpower.market.optimal import _euler

        p = self.p
        tin_l, tout_l = _euler(grid)
        tin = np.array(tin_l, dtype=np.int64)
        caps = list(_edge_limits(grid, lot_wh).items())
        while True:
            si, bj = np.nonzero(self.x)
            ts, tb = tin[p.node_s[si]], tin[p.node_b[bj]]
            lots = self.x[si, bj]
            over = None
            for c, limit in caps:
                s_in = (ts >= tin_l[c]) & (ts < tout_l[c])
                b_in = (tb >= tin_l[c]) & (tb < tout_l[c])
                up, down = s_in & ~b_in, b_in & ~s_in
                net = int(lots[up].sum() - lots[down].sum())
                if net > limit:
                    over = (up, net - limit)
                elif net < -limit:
                    over = (down, -limit - net)
                if over is not None:
                    break
            if over is None:
                return
            crossing, excess = over
            ks = np.flatnonzero(crossing)
            for k in ks[np.argsort(p.spread[si[ks], bj[ks]], kind="stable")].tolist():
                take = min(excess, int(lots[k]))
                self.add(int(si[k]), int(bj[k]), -take)
                excess -= take
                if excess == 0:
                    break

    def ratio(self, weights: dict[int, int]) -> Fraction:
        return min(
            (Fraction(int(self.profit[q]), w) for q, w in weights.items() if w > 0),
            default=Fraction(0),
        )


def clear_maxmin_rounded(
    book: Book, arr: BookArrays, pairs: Pairs, offered_by_name: dict[str, int]
) -> tuple[list[tuple[int, int, int]], Bound]:
    """Units ``(sell index, buy index, lots)`` for ``maxmin`` and the bounds beside them;
    ``offered_by_name`` is :func:`offered_wh` of the pairs."""
    from peerpower.market.optimal import welfare_units

    p = pairs
    lot = book.lot_wh
    n_part = len(arr.participants)
    pid = {name: k for k, name in enumerate(arr.participants)}
    offered = {pid[name]: e // lot for name, e in offered_by_name.items()}
    # Stage 1: t, from the LP rounded down and filled.
    t_lp, x_lp = _LP(p, _seed_pool(p), n_part, offered, None, None).solve()
    start = np.maximum(np.floor(x_lp + 1e-9), 0).astype(np.int64)
    full = _State(p, start.copy(), n_part)
    full.improve(offered)
    capacities = book.grid.has_capacities
    if capacities:  # the LP, the fill and the search ignore capacities: take back what is
        # over, then fill again within them
        full.respect_capacities(book.grid, lot)
        full.limit_edges(book.grid, lot)
        full.fill(offered)
    t = full.ratio(offered)
    # Stage 2: welfare with every ratio kept ≥ t: stage 1's clearing, and the same trimmed of
    # the lots nobody needs for that, each completed by a welfare flow.
    floors = {q: math.ceil(t * w) for q, w in offered.items()}
    lean = _State(p, full.x.copy(), n_part)
    lean.trim(floors)
    # (Taking lots back can push an edge past its capacity the other way: not with capacities.)
    candidates = [full.x] if capacities else [lean.x, full.x]
    every = np.ones(len(arr.lots), dtype=bool)
    row = np.full(len(arr.lots), -1, dtype=np.int64)
    row[p.sells] = np.arange(len(p.sells))
    col = np.full(len(arr.lots), -1, dtype=np.int64)
    col[p.buys] = np.arange(len(p.buys))
    best_w = np.zeros(p.ok.shape, dtype=np.int64)
    w_s, w_b, w_n = welfare_units(book, arr, every)
    np.add.at(best_w, (row[w_s], col[w_b]), w_n)
    if _State(p, best_w, n_part).ratio(offered) >= t:
        candidates.insert(0, best_w)  # the welfare optimum already keeps everyone at t
    best_x: I64 | None = None
    best_welfare = -1
    for x in candidates:
        if not capacities:  # complete with a welfare flow over what is left
            left = arr.lots.copy()
            left[p.sells] = p.lots_s - x.sum(axis=1)
            left[p.buys] = p.lots_b - x.sum(axis=0)
            mask = np.zeros(len(arr.lots), dtype=bool)
            mask[p.sells] = mask[p.buys] = True
            mask &= left > 0
            if mask.any():
                e_s, e_b, e_n = welfare_units(book, replace(arr, lots=left), mask)
                np.add.at(x, (row[e_s], col[e_b]), e_n)
        if _State(p, x, n_part).ratio(offered) < t:
            continue  # the lean fill can fall short: someone stuck below t gained only later
        value = int((p.spread * x).sum())
        if value > best_welfare:
            best_x, best_welfare = x, value
    assert best_x is not None
    w_max = int((p.spread * best_w).sum())
    units = [(int(p.sells[i]), int(p.buys[j]), int(best_x[i, j])) for i, j in np.argwhere(best_x)]
    units.sort()
    scale = 10 * lot  # sen/kWh · lot → µ¥
    # Any clearing better than t gives every participant at least its next ratio above t;
    # if even the smallest of those is beyond the LP bound (with the LP's tolerance), t is
    # optimal.
    t_next = min(
        (Fraction(math.floor(t * w) + 1, w) for w in offered.values() if w > 0),
        default=Fraction(0),
    )
    t_proven = t_lp + TOL * max(1.0, abs(t_lp)) < t_next
    return units, Bound(
        primary=t_lp * 10,
        secondary=float(w_max * scale),
        primary_proven=t_proven,
        secondary_proven=t_proven and best_welfare >= w_max,
    )


def _seed_pool(p: Pairs) -> Bool:
    """Each order's best partners by spread."""
    score = np.where(p.ok, p.spread, -1)
    pool = np.zeros(p.ok.shape, dtype=bool)
    n_s, n_b = p.ok.shape
    k = min(POOL_PER_ORDER, n_b)
    if k:
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        pool[np.repeat(np.arange(n_s), k), top.ravel()] = True
    k = min(POOL_PER_ORDER, n_s)
    if k:
        top = np.argpartition(-score, k - 1, axis=0)[:k, :]
        pool[top.ravel(), np.tile(np.arange(n_b), k)] = True
    pool &= p.ok
    return pool
