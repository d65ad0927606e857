"""``maxmin``: a whole-lot clearing, its LP bound, and an exact MILP within a node budget.

``maxmin`` maximises ``t``, the lowest ``profit_p / offered_p`` over the participants with an
order in a compatible pair (profits at midpoint prices, offered energy in lots), then welfare,
then the seeded score. In whole lots it is NP-hard (it contains max–min fair allocation), so it is
solved in three parts, each deterministic:

1. **A rounded clearing with an LP bound**, at any size. The compatible pairs are never built
   all at once (a 10,000-order book has 25 million sells × buys): each order keeps a list of its
   partners by its own gain, best first, whose first :data:`TOP_K` come from the grid tree (the
   best buys for a sell at node ``u`` are among the best ``bid − dist`` of every subtree on ``u``'s
   path to the root), extended to the whole row only when a fill runs past them. A greedy *fill*
   (the participant with the lowest ratio takes its best free lot, until everyone is stuck) and a
   leximin local search (:meth:`_State.steal`: the lowest participant takes a lot of a full
   partner from a better-off counterparty) give a first clearing. The LP relaxation is solved
   with the participant rows of a set ``S`` of the lowest participants only — a relaxation, so
   its value still bounds ``t`` — by column generation (GLOP over a pool; the reduced costs of
   *every* pair that could price in are computed from the duals with NumPy: a pair touching no
   order of ``S`` has reduced cost ``α_i + β_j + R(n_i) − R(m_j)`` ≥ 0 unless a capacity dual
   makes ``R(m_j) > R(n_i)``, and those pairs are priced too). Edge capacities are rows of the
   LP (``−C ≤ net flow ≤ C``); their duals enter a pair's reduced cost as the difference of a
   node potential ``R`` between its ends. The duals, made exactly feasible (clipped, scaled so
   that ``Σ μ_p offered_p = 1``, and every remaining violation charged to an order), give the
   bound ``Σ α L + Σ β L + Σ C |ρ|`` — a dual argument, true whatever the solver's tolerances.
   ``S`` grows by the participants the clearing leaves below the bound. The LP solution is
   rounded down, capacities repaired, filled and searched again; the better clearing is kept.
   Column generation stops at :data:`CG_ROUNDS` rounds or :data:`CG_PRICED` reduced costs (a
   work limit); once the pool passes :data:`PURGE_AT` pairs, a round in which t rose first
   drops those that carry no lots and price above zero. The LPs after the first, there for
   their rounding, then keep only the pairs the last one used and the new participants' seeds.
   Two cheap bounds stand beside the LP's: :func:`_solo_bound` (every lot of a participant at its
   order's best gain, unopposed) and the welfare optimum over all offered lots (Σ profit =
   welfare).
2. **Welfare under that floor**: the welfare optimum (a min-cost flow) if it keeps everyone at
   ``t``, the clearing itself, and the clearing trimmed of lots nobody needs to stay at ``t``
   (if the trim keeps every capacity), each completed by a welfare flow over the lots left
   within the capacity left on each edge in each direction, the best kept.
3. **Exact, on small books** (at most :data:`MILP_PAIRS` compatible pairs): a MILP over every
   compatible pair (HiGHS through :func:`scipy.optimize.milp`, presolve off; within the same
   node budgets it proved more of the hard small books than SCIP) starts from the rounded
   clearing as a cutoff — it must beat the incumbent's ``t`` by at least the next achievable
   ratio, with integer right-hand sides — and stops after ``budget`` branch-and-bound nodes
   per stage (``t``, then welfare with every ratio ≥ t, then the seeded score on that face):
   a work limit, not wall time, so every validator gets the same clearing (HiGHS's search is
   deterministic). An infeasible cutoff proves the incumbent optimal. Every solution the
   solver returns is rounded and checked exactly (lots, capacities, t, welfare) before it is
   taken, and an optimum counts as proven only if no achievable ratio lies between it and the
   solver's bound.
4. **Paired by the rule**: the clearing's fills are paired by ``maxmin``'s pairing rule
   (:func:`.canon.maxmin_pairing`), and its t, welfare and score are those of that pairing. On
   small books every clearing met above is a candidate and a local search over fills follows
   (:func:`.canon.best_canonical`). The pairwise bound ranges over every pairing, so it still
   bounds t; a result counts as proven only when its t under the rule reaches it.

Profits here are in sen/kWh·lot and offered energy in lots (the ratio × 10 is µ¥/Wh). Pair
positions ``i`` index the live sells, ``j`` the live buys (:class:`PairSpace`).
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import importlib
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import ClearingError
from peerpower.market.canon import SEARCH_EVALUATIONS, best_canonical
from peerpower.market.orders import Book, BookArrays

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
Pair = tuple[int, int]
Units = list[tuple[int, int, int]]

#: Partners per order taken from the grid tree before a row is computed in full.
TOP_K = 16
#: Books with at most this many compatible pairs get the exact MILP after the rounding.
MILP_PAIRS = 600
#: Branch-and-bound nodes per MILP stage (t, welfare, score) unless the market sets another.
DEFAULT_BUDGET_NODES = 20_000
#: Participants whose rows the first LP holds; then up to as many more per round.
LP_PEOPLE = 64
#: Rounds of growing the LP's participants.
LP_ROUNDS = 4
#: Partners per order of ``S`` in the LP's first pool.
POOL_PER_ORDER = 8
#: Pairs per order that join the pool in a round of column generation.
ADD_PER_ORDER = 4
#: Most rounds of column generation per LP (each round's duals give a valid bound).
CG_ROUNDS = 40
#: Reduced costs column generation may compute before it stops (a work limit: on the largest
#: books, where a round prices 10^7 pairs, the LP converges too slowly to bound t better than
#: :func:`_solo_bound`).
CG_PRICED = 50_000_000
#: Pool size past which a round of column generation first drops the pairs that carry no lots
#: and price above zero (they only slow the simplex down).
PURGE_AT = 10_000
#: Rounds of column generation in the LPs after the first: none, one solve over their pool
#: (their rounding is what counts, and more rounds did not raise t on books of 10,000–60,000).
LATER_CG_ROUNDS = 0
#: LP solvers (OR-tools model builder name, parameters) tried in turn.
LP_SOLVERS = (("glop", ""), ("glop", "use_dual_simplex: true"), ("highs", ""))
#: Most lots the leximin local search moves.
MOVES = 400
#: Relative tolerance of the LP's reduced costs.
TOL = 1e-9
#: Largest sells × buys the old dense view (:func:`build_pairs`) accepts.
MAX_PAIRS = 40_000_000
#: Kept for callers of the old exact path: books with at most this many pairs, proven within
#: this many nodes, went to the MILP of :mod:`.optimal`.
EXACT_PAIRS = 60
EXACT_NODES = 1_000


@dataclass(frozen=True)
class _Under:
    """The counterparties in each node's subtree by ``bid − dist`` (for sells; ``−ask − dist``
    for buys), best first, and where each stands: the best free partner of an order at ``u``
    is the best, over ``u`` and its ancestors ``a``, of the first free entry under ``a`` plus
    ``2·dist(a) − dist(u)`` (exact at the lowest common ancestor, less above it)."""

    lists: list[list[int]]
    rank: list[dict[int, int]]
    value: list[int]


# -- the pair space ----------------------------------------------------------------------------
class PairSpace:
    """The live sells and buys of a book and, for each order, its compatible partners by the
    order's own gain, best first (ties: lowest position), computed lazily.

    ``list_s[i]`` are buy positions for sell ``i`` with ``gain_s[i]`` the seller's gains
    ``floor(spread / 2)``; ``list_b[j]`` sell positions with the buyer's gains
    ``spread − floor(spread / 2)``. A list that is not ``done`` is a true prefix of the full one
    and is completed from the order's whole row when a fill needs more.
    """

    def __init__(self, book: Book, arr: BookArrays, live: Bool, top_k: int | None = None) -> None:
        grid = book.grid
        self.grid = grid
        self.lot_wh = book.lot_wh
        self.sells = np.flatnonzero(live & arr.is_sell)
        self.buys = np.flatnonzero(live & ~arr.is_sell)
        self.ask = arr.price[self.sells]
        self.bid = arr.price[self.buys]
        self.lots_s = arr.lots[self.sells]
        self.lots_b = arr.lots[self.buys]
        self.part_s = arr.participant[self.sells]
        self.part_b = arr.participant[self.buys]
        self.node_s = arr.node[self.sells]
        self.node_b = arr.node[self.buys]
        self.n_part = len(arr.participants)
        self.dist = np.asarray(grid.dist_sen_per_kwh, dtype=np.int64)
        self.dist_list: list[int] = list(grid.dist_sen_per_kwh)
        self.top_k = TOP_K if top_k is None else top_k
        self._fees: dict[int, I64] = {}
        self._pair: dict[Pair, tuple[int, int, int]] = {}
        self.kids: list[list[int]] = [[] for _ in range(grid.size)]
        for v in grid.order[1:]:
            self.kids[grid.parent[v]].append(v)
        self.list_s, self.gain_s, self.done_s = self._lists(selling=True)
        self.list_b, self.gain_b, self.done_b = self._lists(selling=False)
        self.chain: list[list[int]] = []  # each node and its ancestors, the node first
        for v in range(grid.size):
            up = [v]
            while grid.parent[up[-1]] >= 0:
                up.append(grid.parent[up[-1]])
            self.chain.append(up)
        self.under_s = self._subtree_lists(selling=True)
        self.under_b = self._subtree_lists(selling=False)

    # fees and spreads
    def fee_from(self, v: int) -> I64:
        """Fee [sen/kWh] from node ``v`` to every node (cached)."""
        row = self._fees.get(v)
        if row is None:
            n = self.grid.size
            row = self.grid.fees_between(np.full(n, v, dtype=np.int64), np.arange(n))
            self._fees[v] = row
        return row

    def spreads(self, si: I64, bj: I64) -> I64:
        """``bid − fee − ask`` [sen/kWh] of the pairs ``(si[k], bj[k])``."""
        fee = self.grid.fees_between(self.node_s[si], self.node_b[bj])
        out: I64 = self.bid[bj] - fee - self.ask[si]
        return out

    def sell_row(self, i: int) -> I64:
        """Spreads of sell ``i`` with every buy."""
        out: I64 = self.bid - self.fee_from(int(self.node_s[i]))[self.node_b] - self.ask[i]
        return out

    def buy_col(self, j: int) -> I64:
        """Spreads of every sell with buy ``j``."""
        out: I64 = self.bid[j] - self.fee_from(int(self.node_b[j]))[self.node_s] - self.ask
        return out

    def pair(self, i: int, j: int) -> tuple[int, int, int]:
        """``(spread, seller's gain, buyer's gain)`` of pair (i, j) (cached)."""
        got = self._pair.get((i, j))
        if got is None:
            s = int(self.bid[j]) - self.grid.fee(int(self.node_s[i]), int(self.node_b[j]))
            s -= int(self.ask[i])
            got = (s, s // 2, s - s // 2)
            self._pair[(i, j)] = got
        return got

    def compatible(self, i: int, j: int) -> bool:
        return self.pair(i, j)[0] >= 0 and self.part_s[i] != self.part_b[j]

    # partner lists
    def _lists(self, selling: bool) -> tuple[list[list[int]], list[list[int]], list[bool]]:
        """Each order's best partners from the tree: at every node the ``top_k`` counterparties
        of its subtree by ``bid − dist`` (for a sell; ``−ask − dist`` for a buy); a node's
        candidates are the lists of its ancestors, whose values plus ``2·dist(ancestor) −
        dist(node)`` are at most the true ``bid − fee`` (exact at the lowest common ancestor).
        Any partner missing has a value at most the largest truncated list's last, so the
        entries whose gain lies above that one's are complete."""
        grid, dist, k_top = self.grid, self.dist, self.top_k
        if selling:
            o_node, o_price, o_part = self.node_s, self.ask, self.part_s
            c_node, c_part = self.node_b, self.part_b
            c_val = self.bid - dist[self.node_b]
        else:
            o_node, o_price, o_part = self.node_b, self.bid, self.part_b
            c_node, c_part = self.node_s, self.part_s
            c_val = -self.ask - dist[self.node_s]
        n_o = len(o_node)
        lists: list[list[int]] = [[] for _ in range(n_o)]
        gains: list[list[int]] = [[] for _ in range(n_o)]
        done = [True] * n_o
        if not n_o or not len(c_node):
            return lists, gains, done
        n = grid.size
        order = np.argsort(c_node, kind="stable")
        starts = np.searchsorted(c_node[order], np.arange(n + 1))
        top: list[I64] = [order[starts[v] : starts[v + 1]] for v in range(n)]
        cut: list[int | None] = [None] * n
        for v in reversed(grid.order):
            kids = self.kids[v]
            cand = np.concatenate([top[v]] + [top[c] for c in kids]) if kids else top[v]
            truncated = len(cand) > k_top or any(cut[c] is not None for c in kids)
            if truncated:
                cand = cand[np.lexsort((cand, -c_val[cand]))][:k_top]
                cut[v] = int(c_val[cand[-1]])
            top[v] = cand
        o_order = np.argsort(o_node, kind="stable")
        o_starts = np.searchsorted(o_node[o_order], np.arange(n + 1))
        parent = grid.parent
        for u in range(n):
            mine = o_order[o_starts[u] : o_starts[u + 1]]
            if not len(mine):
                continue
            cands: list[I64] = []
            vals: list[I64] = []
            cuts: list[int] = []
            a = u
            while a >= 0:
                shift = 2 * int(dist[a]) - int(dist[u])
                cands.append(top[a])
                vals.append(c_val[top[a]] + shift)
                if cut[a] is not None:
                    cuts.append(cut[a] + shift)  # type: ignore[operator]
                a = parent[a]
            cand = np.concatenate(cands)
            val = np.concatenate(vals)
            first = np.lexsort((-val, cand))  # by candidate, best value first
            cand, val = cand[first], val[first]
            keep = np.ones(len(cand), dtype=bool)
            keep[1:] = cand[1:] != cand[:-1]
            cand, val = cand[keep], val[keep]
            v_cut = max(cuts) if cuts else None
            for o in mine.tolist():
                spread = val - o_price[o] if selling else o_price[o] + val
                gain = spread // 2 if selling else spread - spread // 2
                ok = (spread >= 0) & (c_part[cand] != o_part[o])
                if v_cut is not None:
                    s_cut = v_cut - int(o_price[o]) if selling else int(o_price[o]) + v_cut
                    if s_cut >= 0:
                        done[o] = False
                        ok &= gain > (s_cut // 2 if selling else s_cut - s_cut // 2)
                idx = cand[ok]
                g = gain[ok]
                by = np.lexsort((idx, -g))
                lists[o] = idx[by].tolist()
                gains[o] = g[by].tolist()
        return lists, gains, done

    def _subtree_lists(self, selling: bool) -> _Under:
        """For orders of one side, the counterparties under every node, best first."""
        if selling:
            c_node, c_val = self.node_b, self.bid - self.dist[self.node_b]
        else:
            c_node, c_val = self.node_s, -self.ask - self.dist[self.node_s]
        at: list[int] = []
        who: list[int] = []
        for c, v in enumerate(c_node.tolist()):
            for a in self.chain[v]:
                at.append(a)
                who.append(c)
        at_a = np.array(at, dtype=np.int64)
        who_a = np.array(who, dtype=np.int64)
        by = np.lexsort((who_a, -c_val[who_a], at_a))
        at_a, who_a = at_a[by], who_a[by]
        starts = np.searchsorted(at_a, np.arange(self.grid.size + 1))
        lists = [who_a[starts[v] : starts[v + 1]].tolist() for v in range(self.grid.size)]
        rank = [{c: k for k, c in enumerate(lst)} for lst in lists]
        return _Under(lists, rank, c_val.tolist())

    def extend(self, selling: bool, o: int) -> None:
        """Complete order ``o``'s partner list from its whole row (the old list is a prefix)."""
        if selling:
            spread = self.sell_row(o)
            ok = (spread >= 0) & (self.part_b != self.part_s[o])
            gain = spread // 2
        else:
            spread = self.buy_col(o)
            ok = (spread >= 0) & (self.part_s != self.part_b[o])
            gain = spread - spread // 2
        idx = np.flatnonzero(ok)
        g = gain[idx]
        by = np.lexsort((idx, -g))
        new = idx[by].tolist()
        lists, gains, done = (
            (self.list_s, self.gain_s, self.done_s)
            if selling
            else (self.list_b, self.gain_b, self.done_b)
        )
        lists[o] = new
        gains[o] = g[by].tolist()
        done[o] = True

    def has_partner(self) -> tuple[Bool, Bool]:
        """Which sells and which buys have at least one compatible pair."""
        for i in range(len(self.sells)):
            if not self.list_s[i] and not self.done_s[i]:
                self.extend(True, i)
        for j in range(len(self.buys)):
            if not self.list_b[j] and not self.done_b[j]:
                self.extend(False, j)
        s = np.array([bool(x) for x in self.list_s], dtype=bool)
        b = np.array([bool(x) for x in self.list_b], dtype=bool)
        return s, b

    def weights(self) -> dict[int, int]:
        """The participants of ``maxmin`` → lots of their orders that have a compatible pair."""
        s, b = self.has_partner()
        w: dict[int, int] = {}
        for part, lots in (
            (self.part_s[s].tolist(), self.lots_s[s].tolist()),
            (self.part_b[b].tolist(), self.lots_b[b].tolist()),
        ):
            for q, n in zip(part, lots, strict=True):
                w[q] = w.get(q, 0) + n
        return dict(sorted(w.items()))


class _Edges:
    """Capacitated edges (named by their child node) crossed by pairs, with their limits [lots]."""

    def __init__(self, sp: PairSpace) -> None:
        grid = sp.grid
        self.sp = sp
        self.limit = {
            c: grid.capacity_wh[c] // sp.lot_wh
            for c in range(grid.size)
            if grid.capacity_wh[c] >= 0 and grid.parent[c] >= 0
        }
        self._paths: dict[Pair, list[tuple[int, int]]] = {}
        self._node_s: list[int] = sp.node_s.tolist()
        self._node_b: list[int] = sp.node_b.tolist()

    def path(self, i: int, j: int) -> list[tuple[int, int]]:
        """Capacitated edges between sell i and buy j, +1 crossed upwards, −1 downwards."""
        key = (self._node_s[i], self._node_b[j])
        edges = self._paths.get(key)
        if edges is None:
            up, down = self.sp.grid.path(*key)
            edges = [(e, 1) for e in up if e in self.limit]
            edges += [(e, -1) for e in down if e in self.limit]
            self._paths[key] = edges
        return edges


# -- a clearing being built --------------------------------------------------------------------
class _State:
    """Lots per pair, lots left per order, profit per participant, net lots per capacitated
    edge; filled greedily and improved by a leximin local search."""

    def __init__(self, sp: PairSpace, edges: _Edges | None) -> None:
        self.sp = sp
        self.edges = edges
        self.x: dict[Pair, int] = {}
        self.held_s: list[dict[int, int]] = [{} for _ in range(len(sp.sells))]
        self.held_b: list[dict[int, int]] = [{} for _ in range(len(sp.buys))]
        self.rem_s: list[int] = sp.lots_s.tolist()
        self.rem_b: list[int] = sp.lots_b.tolist()
        self.profit: list[int] = [0] * sp.n_part
        self.part_s: list[int] = sp.part_s.tolist()
        self.part_b: list[int] = sp.part_b.tolist()
        self.cur_s = [0] * sp.grid.size  # per node: sells' cursor into the buys under it
        self.cur_b = [0] * sp.grid.size
        # per node: (epoch, {start of a run of full partners: its end}) behind the cursor
        self.jumps_s: list[tuple[int, dict[int, int]]] = [(-1, {})] * sp.grid.size
        self.jumps_b: list[tuple[int, dict[int, int]]] = [(-1, {})] * sp.grid.size
        self.epoch = 0  # counts the times lots were freed
        self.memo_s: dict[int, tuple[int, int, int]] = {}  # order → (spread, partner, epoch)
        self.memo_b: dict[int, tuple[int, int, int]] = {}
        # per participant: (epoch, heap of (−gain, −spread, side, order))
        self.lazy: dict[int, tuple[int, list[tuple[int, int, int, int]]]] = {}
        self._no_waits()
        self.net: dict[int, int] = dict.fromkeys(edges.limit, 0) if edges else {}
        self.sells_of: dict[int, list[int]] = {}
        self.buys_of: dict[int, list[int]] = {}
        for i, q in enumerate(self.part_s):
            self.sells_of.setdefault(q, []).append(i)
        for j, q in enumerate(self.part_b):
            self.buys_of.setdefault(q, []).append(j)

    def copy(self) -> _State:
        other = _State.__new__(_State)
        other.sp, other.edges = self.sp, self.edges
        other.x = dict(self.x)
        other.held_s = [dict(h) for h in self.held_s]
        other.held_b = [dict(h) for h in self.held_b]
        other.rem_s, other.rem_b = list(self.rem_s), list(self.rem_b)
        other.profit = list(self.profit)
        other.part_s, other.part_b = self.part_s, self.part_b
        other.cur_s, other.cur_b = [0] * len(self.cur_s), [0] * len(self.cur_b)
        other.jumps_s = [(-1, {})] * len(self.cur_s)
        other.jumps_b = [(-1, {})] * len(self.cur_b)
        other.epoch, other.memo_s, other.memo_b = 0, {}, {}
        other.lazy = {}
        other._no_waits()
        other.net = dict(self.net)
        other.sells_of, other.buys_of = self.sells_of, self.buys_of
        return other

    def add(self, i: int, j: int, lots: int) -> None:
        _, gs, gb = self.sp.pair(i, j)
        now = self.x.get((i, j), 0) + lots
        if now:
            self.x[(i, j)] = now
            self.held_s[i][j] = now
            self.held_b[j][i] = now
        else:
            del self.x[(i, j)]
            del self.held_s[i][j]
            del self.held_b[j][i]
        self.rem_s[i] -= lots
        self.rem_b[j] -= lots
        self.profit[self.part_s[i]] += lots * gs
        self.profit[self.part_b[j]] += lots * gb
        if self.edges is not None:
            limit = self.edges.limit
            for e, sign in self.edges.path(i, j):
                before = self.net[e]
                after = before + sign * lots
                self.net[e] = after
                if abs(before) >= limit[e] and abs(after) < abs(before):
                    self._opened(e, 1 if before > 0 else -1)

    def _no_waits(self) -> None:
        """Forget which orders wait for which full edges (every memo is stale anyway)."""
        # (edge, direction) full → (side, order) whose last best passed a partner for want of
        # room on it; orders whose edge has opened since, and the same per participant
        self.waiting: dict[tuple[int, int], set[tuple[int, int]]] = {}
        self.stale: set[tuple[int, int]] = set()
        self.pending: dict[int, list[tuple[int, int]]] = {}

    def _opened(self, e: int, direction: int) -> None:
        """Edge ``e`` got room again in ``direction`` (+1 up, −1 down): the orders that passed
        a partner for want of it may have a better one now."""
        waiting = self.waiting.pop((e, direction), None)
        if not waiting:
            return
        for key in sorted(waiting):
            if key not in self.stale:
                self.stale.add(key)
                q = (self.part_s if key[0] == 0 else self.part_b)[key[1]]
                self.pending.setdefault(q, []).append(key)

    def _full_edge(self, i: int, j: int) -> tuple[int, int] | None:
        """A capacitated edge, with the direction pair (i, j) would cross it in, that has no
        room left, or None."""
        assert self.edges is not None
        limit = self.edges.limit
        net = self.net
        for e, sign in self.edges.path(i, j):
            if sign * net[e] >= limit[e]:
                return e, sign
        return None

    def room(self, i: int, j: int) -> int:
        """Lots pair (i, j) could still carry without an edge over its capacity."""
        if self.edges is None:
            return 1 << 62
        free = 1 << 62
        limit = self.edges.limit
        for e, sign in self.edges.path(i, j):
            free = min(free, limit[e] - sign * self.net[e])
        return free

    def ratio(self, w: dict[int, int]) -> Fraction:
        return min((Fraction(self.profit[q], n) for q, n in w.items()), default=Fraction(0))

    def welfare(self) -> int:
        return sum(self.sp.pair(i, j)[0] * n for (i, j), n in self.x.items())

    def units(self) -> Units:
        sp = self.sp
        return sorted((int(sp.sells[i]), int(sp.buys[j]), n) for (i, j), n in self.x.items())

    # the greedy fill
    def _best_for(self, selling: bool, o: int) -> tuple[int, int] | None:
        """Order ``o``'s free partner of highest spread (ties: lowest position) with room on
        its path: ``(spread, partner)`` or None.

        Cursors per node skip the partners found full (:meth:`freed` moves them back). Until a
        lot is freed, partners only fill up, so the last answer stands while its partner is
        free and has room — unless it passed a partner for want of room on an edge that has
        opened since (:attr:`waiting`, :attr:`stale`)."""
        sp = self.sp
        rem = self.rem_b if selling else self.rem_s
        memo = self.memo_s if selling else self.memo_b
        key = (0 if selling else 1, o)
        got = memo.get(o)
        if got is not None and got[2] == self.epoch and key not in self.stale:
            if got[1] < 0:
                return None
            c = got[1]
            if rem[c] > 0 and (
                self.edges is None
                or (self._full_edge(o, c) if selling else self._full_edge(c, o)) is None
            ):
                return got[0], c
        self.stale.discard(key)
        under = sp.under_s if selling else sp.under_b
        cur = self.cur_s if selling else self.cur_b
        jumps = self.jumps_s if selling else self.jumps_b
        c_part = self.part_b if selling else self.part_s
        me = (self.part_s if selling else self.part_b)[o]
        u = int((sp.node_s if selling else sp.node_b)[o])
        price = int((sp.ask if selling else sp.bid)[o])
        dist = sp.dist_list
        best: tuple[int, int] | None = None  # (value, −partner)
        full: list[tuple[int, int]] = []  # the full edges that kept o from a partner
        limit = self.edges.limit if self.edges is not None else None
        below = -1  # the node just under ``a`` on o's chain: the edge crossed to reach a
        for a in sp.chain[u]:
            if limit is not None and below in limit:
                # Every partner reached from here on crosses edge ``below`` in o's direction
                # (up for a sell, down for a buy). If it is full, none has room; partners
                # with a lower common ancestor were weighed in the lists below, exactly.
                net = self.net[below]
                if (net if selling else -net) >= limit[below]:
                    full.append((below, 1 if selling else -1))
                    break
            below = a
            lst = under.lists[a]
            k = cur[a]
            while k < len(lst) and rem[lst[k]] <= 0:
                k += 1
            cur[a] = k
            shift = 2 * dist[a] - dist[u]
            # Past a blocked partner the cursor cannot move, so runs of full partners behind
            # it are remembered (from a run's start to its end) until a lot is freed.
            tag = jumps[a]
            if tag[0] != self.epoch:
                tag = jumps[a] = (self.epoch, {})
            jump = tag[1]
            run = -1
            while k < len(lst):
                c = lst[k]
                if rem[c] <= 0:
                    if run < 0:
                        run = k
                    k = jump.get(k, k + 1)
                    continue
                if run >= 0:
                    jump[run] = k
                    run = -1
                value = under.value[c] + shift
                if best is not None and (value, -c) <= best:
                    break
                if (selling and value < price) or (not selling and price + value < 0):
                    break  # every later one is worse
                if c_part[c] != me:
                    if self.edges is None:
                        best = (value, -c)
                        break
                    edge = self._full_edge(o, c) if selling else self._full_edge(c, o)
                    if edge is None:
                        best = (value, -c)
                        break
                    full.append(edge)
                k += 1  # a blocked edge can open again: the cursor stays where it was
        for edge in full:
            self.waiting.setdefault(edge, set()).add(key)
        if best is None:
            memo[o] = (0, -1, self.epoch)
            return None
        spread = best[0] - price if selling else price + best[0]
        memo[o] = (spread, -best[1], self.epoch)
        return spread, -best[1]

    def best_lot(self, q: int) -> tuple[int, int, int] | None:
        """Free pair (sell, buy) that gains participant ``q`` most, with that gain (ties: the
        higher spread, then sells before buys, lowest position).

        A lazy heap per participant holds its orders keyed by their last best (gain, spread):
        until a lot is freed, or an edge opens that the order found full, an order's best
        partner only gets worse, so a key whose order still has it is the best of all (the
        heap's order is the tie rule). The heap is rebuilt when a lot is freed; an order whose
        full edge opened goes in again with an unknown key (its old key, a bound no longer,
        stays beside it and only costs a look)."""
        lazy = self.lazy.get(q)
        unknown = -(1 << 62)  # a key better than any: the order's best is not known
        if lazy is None or lazy[0] != self.epoch:
            heap: list[tuple[int, int, int, int]] = []
            for side, mine in ((0, self.sells_of.get(q, ())), (1, self.buys_of.get(q, ()))):
                heap += [(unknown, 0, side, o) for o in mine]
            heapq.heapify(heap)
            lazy = (self.epoch, heap)
            self.lazy[q] = lazy
            self.pending.pop(q, None)
        heap = lazy[1]
        for side, o in self.pending.pop(q, ()):
            heapq.heappush(heap, (unknown, 0, side, o))  # its edge opened: beside its old key
        while heap:
            key = heap[0]
            selling = key[2] == 0
            o = key[3]
            if (self.rem_s if selling else self.rem_b)[o] <= 0:
                heapq.heappop(heap)  # filled: within the epoch it stays filled
                continue
            found = self._best_for(selling, o)
            if found is None:
                heapq.heappop(heap)
                continue
            spread, c = found
            gain = spread // 2 if selling else spread - spread // 2
            if gain <= 0:
                heapq.heappop(heap)
                continue
            if (key[0], key[1]) == (-gain, -spread):
                return (o, c, gain) if selling else (c, o, gain)
            heapq.heapreplace(heap, (-gain, -spread, key[2], o))
        return None

    def fill(self, w: dict[int, int], people: list[int] | None = None) -> None:
        """Raise the lowest ratio ``profit_q / w_q``: give the lowest participant its best free
        lots until its ratio passes the next lowest one, until every one is stuck."""
        profit = self.profit
        heap = [(profit[q] / w[q], q) for q in (w if people is None else people)]
        heapq.heapify(heap)
        while heap:
            ratio, q = heapq.heappop(heap)
            n = w[q]
            if ratio != profit[q] / n:  # stale entry: q gained as someone's partner
                heapq.heappush(heap, (profit[q] / n, q))
                continue
            lot = self.best_lot(q)
            if lot is None:
                continue  # stuck: its orders, or all partners it could gain from, are full
            i, j, gain = lot
            most = min(self.rem_s[i], self.rem_b[j], self.room(i, j))
            if heap:
                need = max(1, math.floor((heap[0][0] * n - profit[q]) / gain) + 1)
                most = min(most, need)
            self.add(i, j, most)
            heapq.heappush(heap, (profit[q] / n, q))

    def improve(self, w: dict[int, int], moves: int = MOVES) -> None:
        """Leximin local search: while the lowest participant can take a lot from a full
        partner's other counterparty (:meth:`steal`), do it and fill again around it — the
        participants it changed, and those below the one it raised that can use a lot it
        freed (everyone else was stuck before and still is)."""
        self.fill(w)
        people = np.array(list(w), dtype=np.int64)
        if not len(people):
            return
        sp = self.sp
        weight = np.array([w[q] for q in people.tolist()], dtype=np.float64)
        for _ in range(moves):
            ratios = np.array(self.profit, dtype=np.float64)[people] / weight
            q = int(people[int(ratios.argmin())])
            before_s: dict[int, int] = {}
            before_b: dict[int, int] = {}
            moved = self.steal(q, w, before_s, before_b)
            if moved is None:
                return
            low = np.zeros(sp.n_part, dtype=bool)
            low[people[ratios < self.profit[q] / w[q]]] = True
            users = {r for r in moved if r in w}
            for i, was in before_s.items():
                if self.rem_s[i] > was:  # sell i has a lot free now: buys below that gain
                    spread = sp.sell_row(i)
                    can = (spread - spread // 2 > 0) & (sp.part_b != sp.part_s[i])
                    can &= low[sp.part_b] & (np.array(self.rem_b) > 0)
                    users.update(sp.part_b[can].tolist())
            for j, was in before_b.items():
                if self.rem_b[j] > was:
                    spread = sp.buy_col(j)
                    can = (spread // 2 > 0) & (sp.part_s != sp.part_b[j])
                    can &= low[sp.part_s] & (np.array(self.rem_s) > 0)
                    users.update(sp.part_s[can].tolist())
            self.fill(w, sorted(users))

    def steal(
        self, q: int, w: dict[int, int], before_s: dict[int, int], before_b: dict[int, int]
    ) -> set[int] | None:
        """Give ``q`` more: an order of q takes a lot of a full partner from that partner's
        counterparty of another participant — with a lot it has left, or, if it has none, one
        it moves away from its least gainful partner. Only if q gains and everyone else the
        move changes stays strictly above q's present ratio (so the sorted ratios rise), and no
        capacity is broken. Returns the participants it changed, and notes in ``before_s`` and
        ``before_b`` the lots the orders it changed had left before."""
        sp = self.sp
        best: tuple[int, list[tuple[int, int, int]]] | None = None  # q's gain, the lots moved
        for selling, mine in ((False, self.buys_of.get(q, ())), (True, self.sells_of.get(q, ()))):
            rem_own = self.rem_s if selling else self.rem_b
            rem_other = self.rem_b if selling else self.rem_s
            held = self.held_s if selling else self.held_b
            for o in mine:
                release: list[tuple[int, int, int]] = []
                g_low = 0
                if rem_own[o] <= 0:
                    if not held[o]:
                        continue
                    g_low, c_low = min((self._gain(selling, o, c), c) for c in held[o])
                    release = [(o, c_low, -1) if selling else (c_low, o, -1)]
                lst = sp.list_s[o] if selling else sp.list_b[o]
                gains = sp.gain_s[o] if selling else sp.gain_b[o]
                k = 0
                while True:
                    if k >= len(lst):
                        if (sp.done_s if selling else sp.done_b)[o]:
                            break
                        sp.extend(selling, o)
                        lst = sp.list_s[o] if selling else sp.list_b[o]
                        gains = sp.gain_s[o] if selling else sp.gain_b[o]
                        continue
                    c, g = lst[k], gains[k]
                    k += 1
                    if g <= g_low or (best is not None and g - g_low <= best[0]):
                        break
                    if rem_other[c] != 0:
                        continue
                    donors = self.held_b[c] if selling else self.held_s[c]
                    for d in sorted(donors):
                        if d == o:
                            continue
                        moves = [(d, c, -1), (o, c, 1)] if selling else [(c, d, -1), (c, o, 1)]
                        if self._better(q, w, moves + release):
                            best = (g - g_low, moves + release)
                            break
                    if best is not None and best[0] == g - g_low:
                        break
        if best is None:
            return None
        changed: set[int] = set()
        for i, j, _ in best[1]:
            before_s.setdefault(i, self.rem_s[i])
            before_b.setdefault(j, self.rem_b[j])
        for i, j, n in best[1]:
            if n < 0:
                self.add(i, j, n)
                self.freed(True, i)
                self.freed(False, j)
        for i, j, n in best[1]:
            if n > 0:
                self.add(i, j, n)
            changed.update((self.part_s[i], self.part_b[j]))
        return changed

    def _gain(self, selling: bool, o: int, c: int) -> int:
        return self.sp.pair(o, c)[1] if selling else self.sp.pair(c, o)[2]

    def _better(self, q: int, w: dict[int, int], moves: list[tuple[int, int, int]]) -> bool:
        """Whether moving ``moves`` raises q and keeps everyone else it changes strictly above
        q's present ratio, within the capacities."""
        delta: dict[int, int] = {}
        for i, j, n in moves:
            _, gs, gb = self.sp.pair(i, j)
            delta[self.part_s[i]] = delta.get(self.part_s[i], 0) + n * gs
            delta[self.part_b[j]] = delta.get(self.part_b[j], 0) + n * gb
        if delta.get(q, 0) <= 0:
            return False
        pq, wq = self.profit[q], w[q]
        for r, d in delta.items():
            n = w.get(r, 0)
            if r != q and d and n and (self.profit[r] + d) * wq <= pq * n:
                return False
        return self._fits(moves)

    def _fits(self, moves: list[tuple[int, int, int]]) -> bool:
        if self.edges is None:
            return True
        change: dict[int, int] = {}
        for i, j, n in moves:
            for e, sign in self.edges.path(i, j):
                change[e] = change.get(e, 0) + sign * n
        limit = self.edges.limit
        return all(abs(self.net[e] + d) <= limit[e] for e, d in change.items() if d)

    def freed(self, selling: bool, o: int) -> None:
        """A lot of sell (or buy) ``o`` became free: no cursor may stay past it."""
        sp = self.sp
        self.epoch += 1  # every memo and heap is stale
        self._no_waits()
        under = sp.under_b if selling else sp.under_s  # lists that hold o
        cur = self.cur_b if selling else self.cur_s
        for a in sp.chain[int((sp.node_s if selling else sp.node_b)[o])]:
            k = under.rank[a][o]
            if cur[a] > k:
                cur[a] = k

    def reset_cursors(self) -> None:
        self.epoch += 1
        self._no_waits()
        self.cur_s = [0] * len(self.cur_s)
        self.cur_b = [0] * len(self.cur_b)

    def respect_capacities(self) -> None:
        """Take back lots, lowest spread first, from the pairs that push an edge's net energy
        past its capacity, until no edge is over (taking back never creates a trade)."""
        if self.edges is None:
            return
        limit = self.edges.limit
        for e in sorted(limit):
            while abs(self.net[e]) > limit[e]:
                sign = 1 if self.net[e] > 0 else -1
                excess = abs(self.net[e]) - limit[e]
                crossing = sorted(
                    (self.sp.pair(i, j)[0], i, j)
                    for (i, j) in self.x
                    if (e, sign) in self.edges.path(i, j)
                )
                for _, i, j in crossing:
                    take = min(excess, self.x[(i, j)])
                    self.add(i, j, -take)
                    excess -= take
                    if not excess:
                        break
        self.reset_cursors()

    def trim(self, floors: dict[int, int]) -> None:
        """Take back lots, lowest spread first, that no participant needs to stay at its floor
        (so that a welfare flow can put them to better use)."""
        sp = self.sp
        for _, i, j in sorted((sp.pair(i, j)[0], i, j) for (i, j) in self.x):
            _, gs, gb = sp.pair(i, j)
            take = self.x[(i, j)]
            for r, g in ((self.part_s[i], gs), (self.part_b[j], gb)):
                if g > 0 and r in floors:
                    take = min(take, (self.profit[r] - floors[r]) // g)
            if take > 0:
                self.add(i, j, -take)


# -- the LP bound --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """What is proven about a ``maxmin`` clearing (in the units of the objective)."""

    primary: float  # upper bound of t [µ¥/Wh]
    secondary: float  # upper bound of welfare [µ¥] given the t achieved
    primary_proven: bool
    secondary_proven: bool
    method: str = "lp-rounding"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            # rounded up, so that they stay upper bounds
            "primary_upper": math.ceil(max(0.0, self.primary) * 1e6) / 1e6,
            "secondary_upper": math.ceil(max(0.0, self.secondary) * 1e3) / 1e3,
            "primary_proven": self.primary_proven,
            "secondary_proven": self.secondary_proven,
        }


@dataclass
class _LPSolution:
    value: float
    x: dict[Pair, float]
    alpha: F64  # per sell (0 for those not in a row)
    beta: F64
    mu: F64  # per participant
    rho: dict[int, float]  # per capacitated edge


class _LP:
    """``max t`` s.t. lots per order, ``profit_p ≥ t · w_p`` for ``p`` in ``people`` and the
    capacities, over a growing pool of pairs."""

    def __init__(self, sp: PairSpace, w: dict[int, int], edges: _Edges | None) -> None:
        self.sp = sp
        self.w = w
        self.edges = edges
        self.pool: dict[Pair, int] = {}
        self.cols: list[Pair] = []
        self.priced = 0  # reduced costs computed so far
        self._rows_s: dict[int, tuple[I64, I64, I64]] = {}  # sell → (buys, gs, gb) compatible
        self._cols_b: dict[int, tuple[I64, I64, I64]] = {}

    def keep(self, pairs: list[Pair]) -> None:
        """Drop every pair but ``pairs`` from the pool."""
        self.cols = list(pairs)
        self.pool = {p: k for k, p in enumerate(self.cols)}

    def add(self, pairs: list[Pair]) -> int:
        added = 0
        for p in pairs:
            if p not in self.pool:
                self.pool[p] = len(self.cols)
                self.cols.append(p)
                added += 1
        return added

    def _columns(self) -> tuple[I64, I64, I64, I64]:
        """The pool's pairs as columns: sells, buys, the seller's and the buyer's gains."""
        m = len(self.cols)
        si = np.fromiter((p[0] for p in self.cols), dtype=np.int64, count=m)
        bj = np.fromiter((p[1] for p in self.cols), dtype=np.int64, count=m)
        spread = self.sp.spreads(si, bj)
        return si, bj, spread // 2, spread - spread // 2

    def solve(self, people: list[int]) -> _LPSolution:
        from scipy.sparse import coo_matrix

        # Typed loosely: the stubs shipped with this OR-tools module are malformed.
        mb: Any = importlib.import_module("ortools.linear_solver.python.model_builder_helper")
        sp = self.sp
        m = len(self.cols)
        si, bj, gs, gb = self._columns()
        s_rows, s_idx = np.unique(si, return_inverse=True)
        b_rows, b_idx = np.unique(bj, return_inverse=True)
        n_s, n_b, n_p = len(s_rows), len(b_rows), len(people)
        prow = np.full(sp.n_part, -1, dtype=np.int64)
        prow[np.array(people, dtype=np.int64)] = np.arange(n_p)
        k = np.arange(m)
        r = [s_idx, n_s + b_idx]
        c = [k, k]
        v = [np.ones(m), np.ones(m)]
        base = n_s + n_b
        for part, gain in ((sp.part_s[si], gs), (sp.part_b[bj], gb)):
            row = prow[part]
            use = (row >= 0) & (gain != 0)
            r.append(base + row[use])
            c.append(k[use])
            v.append(-gain[use].astype(np.float64))
        # t's column
        r.append(base + np.arange(n_p))
        c.append(np.full(n_p, m))
        v.append(np.array([self.w[q] for q in people], dtype=np.float64))
        edge_rows: list[int] = []
        if self.edges is not None:
            er: dict[int, int] = {}
            er_r: list[int] = []
            er_c: list[int] = []
            er_v: list[float] = []
            for kk, (i, j) in enumerate(self.cols):
                for e, sign in self.edges.path(i, j):
                    if e not in er:
                        er[e] = len(edge_rows)
                        edge_rows.append(e)
                    er_r.append(base + n_p + er[e])
                    er_c.append(kk)
                    er_v.append(float(sign))
            r.append(np.array(er_r, dtype=np.int64))
            c.append(np.array(er_c, dtype=np.int64))
            v.append(np.array(er_v, dtype=np.float64))
        n_rows = base + n_p + len(edge_rows)
        a = coo_matrix(
            (np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n_rows, m + 1)
        ).tocsr()
        caps = (
            np.array([self.edges.limit[e] for e in edge_rows], dtype=np.float64)
            if self.edges is not None
            else np.zeros(0)
        )
        hi = np.concatenate([sp.lots_s[s_rows], sp.lots_b[b_rows], np.zeros(n_p), caps])
        lo = np.concatenate([np.full(base + n_p, -np.inf), -caps])
        # No upper bounds on the pairs (the order rows imply them): a bound's dual would hide
        # from the reduced costs.
        upper = np.full(m + 1, np.inf)
        cost = np.zeros(m + 1)
        cost[m] = -1.0
        model = mb.ModelBuilderHelper()
        model.fill_model_from_sparse_data(
            np.zeros(m + 1), upper.astype(np.float64), cost, lo, hi.astype(np.float64), a
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
        # The solver minimises −t; the duals of the rows are ≤ 0 there (free on ranges).
        y = -np.asarray(solver.dual_values(), dtype=np.float64)
        values = np.asarray(solver.variable_values(), dtype=np.float64)
        alpha = np.zeros(len(sp.sells))
        alpha[s_rows] = y[:n_s]
        beta = np.zeros(len(sp.buys))
        beta[b_rows] = y[n_s:base]
        mu = np.zeros(sp.n_part)
        mu[np.array(people, dtype=np.int64)] = y[base : base + n_p]
        rho = {e: float(y[base + n_p + q]) for q, e in enumerate(edge_rows)}
        x = {self.cols[q]: float(values[q]) for q in np.flatnonzero(values[:m] > 1e-9).tolist()}
        return _LPSolution(float(values[m]), x, alpha, beta, mu, rho)

    def _row(self, i: int) -> tuple[I64, I64, I64]:
        got = self._rows_s.get(i)
        if got is None:
            sp = self.sp
            spread = sp.sell_row(i)
            j = np.flatnonzero((spread >= 0) & (sp.part_b != sp.part_s[i]))
            s = spread[j]
            got = (j, s // 2, s - s // 2)
            self._rows_s[i] = got
        return got

    def _col(self, j: int) -> tuple[I64, I64, I64]:
        got = self._cols_b.get(j)
        if got is None:
            sp = self.sp
            spread = sp.buy_col(j)
            i = np.flatnonzero((spread >= 0) & (sp.part_s != sp.part_b[j]))
            s = spread[i]
            got = (i, s // 2, s - s // 2)
            self._cols_b[j] = got
        return got

    def potentials(self, rho: dict[int, float]) -> F64:
        """``R(v)``: Σ of the capacity duals on the path from node ``v`` to the root."""
        grid = self.sp.grid
        pot = np.zeros(grid.size)
        for v in grid.order[1:]:
            pot[v] = pot[grid.parent[v]] + rho.get(v, 0.0)
        return pot

    def price(
        self, sol: _LPSolution, people: list[int], repair: bool
    ) -> tuple[list[tuple[float, int, int]], float]:
        """Pairs of negative reduced cost (most negative few per order), and — if ``repair`` —
        the value of the duals made feasible for the LP over *every* compatible pair (an upper
        bound of t; ``inf`` if the duals say nothing)."""
        sp = self.sp
        mu_pos = np.maximum(sol.mu, 0.0)
        weight = sum(mu_pos[q] * self.w[q] for q in people)
        pot = self.potentials(sol.rho)
        scale = 1.0 / weight if weight > 0 else 0.0
        # raw duals for the columns to add; the scaled, clipped ones for the bound
        a_raw, b_raw, mu_raw = sol.alpha, sol.beta, sol.mu
        a_fix = np.maximum(sol.alpha, 0.0) * scale
        b_fix = np.maximum(sol.beta, 0.0) * scale
        mu_fix = mu_pos * scale
        pot_fix = pot * scale
        big = 1.0 + float(np.abs(sol.alpha).max(initial=0.0)) + float(np.abs(mu_raw).max())
        tol = TOL * big
        found: list[tuple[float, int, int]] = []
        in_s = np.zeros(sp.n_part, dtype=bool)
        in_s[np.array(people, dtype=np.int64)] = True
        ps_node, pb_node = pot[sp.node_s], pot[sp.node_b]
        for s in np.flatnonzero(in_s[sp.part_s]).tolist():
            bj, gs, gb = self._row(s)
            if not len(bj):
                continue
            d = a_raw[s] + b_raw[bj] + ps_node[s] - pb_node[bj]
            d -= mu_raw[sp.part_s[s]] * gs + mu_raw[sp.part_b[bj]] * gb
            self.priced += len(bj)
            self._take(found, d, tol, np.full(len(bj), s), bj)
            if repair:
                d = a_fix[s] + b_fix[bj] + pot_fix[sp.node_s[s]] - pot_fix[sp.node_b[bj]]
                d -= mu_fix[sp.part_s[s]] * gs + mu_fix[sp.part_b[bj]] * gb
                a_fix[s] += max(0.0, -float(d.min()))
        for b in np.flatnonzero(in_s[sp.part_b]).tolist():
            si, gs, gb = self._col(b)
            if not len(si):
                continue
            d = a_raw[si] + b_raw[b] + ps_node[si] - pb_node[b]
            d -= mu_raw[sp.part_s[si]] * gs + mu_raw[sp.part_b[b]] * gb
            self.priced += len(si)
            self._take(found, d, tol, si, np.full(len(si), b))
            if repair:
                d = a_fix[si] + b_fix[b] + pot_fix[sp.node_s[si]] - pot_fix[sp.node_b[b]]
                d -= mu_fix[sp.part_s[si]] * gs + mu_fix[sp.part_b[b]] * gb
                b_fix[b] += max(0.0, -float(d.min()))
        if sol.rho:
            # Pairs touching no order of S price in only where R(m_j) − R(n_i) > α_i + β_j.
            free_s = np.flatnonzero(~in_s[sp.part_s])
            free_b = np.flatnonzero(~in_s[sp.part_b])
            ks, kb = a_raw + ps_node, pb_node - b_raw
            self._capacity_pairs(found, ks, kb, free_s, free_b, tol, None)
            if repair:
                ks, kb = a_fix + pot_fix[sp.node_s], pot_fix[sp.node_b] - b_fix
                self._capacity_pairs(None, ks, kb, free_s, free_b, 0.0, a_fix)
        if not repair or weight <= 0:
            return found, math.inf
        caps = (
            sum(self.edges.limit[e] * abs(r) * scale for e, r in sol.rho.items())
            if (self.edges is not None)
            else 0.0
        )
        value = float(a_fix @ sp.lots_s + b_fix @ sp.lots_b) + caps
        return found, value * (1 + 1e-12) + 1e-12

    def _capacity_pairs(
        self,
        found: list[tuple[float, int, int]] | None,
        ks: F64,
        kb: F64,
        free_s: I64,
        free_b: I64,
        tol: float,
        a_fix: F64 | None,
    ) -> None:
        """Compatible pairs of free sells and buys with ``kb[j] − ks[i] > tol``: added to
        ``found`` (raw duals) or charged to ``a_fix`` (the repair)."""
        sp = self.sp
        if not len(free_s) or not len(free_b):
            return
        ob = free_b[np.argsort(-kb[free_b], kind="stable")]
        kb_sorted = -kb[ob]
        for i in free_s.tolist():
            n = int(np.searchsorted(kb_sorted, -(ks[i] + tol), side="left"))
            if not n:
                continue
            j = ob[:n]
            spread = sp.bid[j] - sp.fee_from(int(sp.node_s[i]))[sp.node_b[j]] - sp.ask[i]
            ok = (spread >= 0) & (sp.part_b[j] != sp.part_s[i])
            if not ok.any():
                continue
            j = j[ok]
            d = ks[i] - kb[j]
            self.priced += len(j)
            if found is not None:
                self._take(found, d, tol, np.full(len(j), i), j)
            if a_fix is not None:
                a_fix[i] += max(0.0, -float(d.min()))

    @staticmethod
    def _take(found: list[tuple[float, int, int]], d: F64, tol: float, i: I64, j: I64) -> None:
        bad = np.flatnonzero(d < -tol)
        if len(bad) > ADD_PER_ORDER:
            bad = bad[np.argsort(d[bad], kind="stable")[:ADD_PER_ORDER]]
        found.extend(zip(d[bad].tolist(), i[bad].tolist(), j[bad].tolist(), strict=True))

    def run(
        self, people: list[int], bound: float, rounds: int = CG_ROUNDS
    ) -> tuple[_LPSolution, float]:
        """Column generation until no pair prices in, at most ``rounds`` rounds; the best
        bound seen on the way."""
        sol = self.solve(people)
        purged_at = -math.inf  # the LP value when the pool was last purged
        for _ in range(rounds):
            found, value = self.price(sol, people, repair=True)
            bound = min(bound, value)
            if not found or self.priced >= CG_PRICED:
                break
            found.sort()
            if len(self.cols) > PURGE_AT and sol.value > purged_at * (1 + 1e-9) + 1e-9:
                # only after t rose: on a degenerate LP the duals can alternate between two
                # vertices of the same value, each pricing in what the other dropped
                self.keep(self._tight(sol, people))
                purged_at = sol.value
            if not self.add([(i, j) for _, i, j in found]):
                break
            sol = self.solve(people)
        return sol, bound

    def _tight(self, sol: _LPSolution, people: list[int]) -> list[Pair]:
        """The pool's pairs that carry lots or price at zero under ``sol``'s duals (the
        others cost the simplex time and would not enter)."""
        sp = self.sp
        si, bj, gs, gb = self._columns()
        mu = np.zeros(sp.n_part)
        mu[people] = sol.mu[people]
        pot = self.potentials(sol.rho)
        d = sol.alpha[si] + sol.beta[bj] + pot[sp.node_s[si]] - pot[sp.node_b[bj]]
        d -= mu[sp.part_s[si]] * gs + mu[sp.part_b[bj]] * gb
        big = 1.0 + float(np.abs(sol.alpha).max(initial=0.0)) + float(np.abs(sol.mu).max())
        used = np.array([p in sol.x for p in self.cols], dtype=bool)
        keep = used | (d <= TOL * big)
        return [self.cols[k] for k in np.flatnonzero(keep).tolist()]


# -- the clearing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaxminClearing:
    """A ``maxmin`` clearing: units ``(sell index, buy index, lots)`` over book indexes, the
    bound beside it (``None`` when the MILP proved t and welfare optimal), and the participants
    it is measured over with their offered energy [Wh]."""

    units: Units
    bound: dict[str, Any] | None
    offered: dict[str, int]
    proven: bool


def clear_maxmin(
    book: Book, arr: BookArrays, live: Bool, budget: int = DEFAULT_BUDGET_NODES
) -> MaxminClearing:
    """Clear ``book`` (after self-trade prevention) for ``maxmin``; see the module notes.

    Parameters
    ----------
    book, arr
        The book and its column view.
    live
        Orders that could trade at all.
    budget
        Branch-and-bound nodes per stage of the exact MILP (0: the rounded clearing only).
    """
    if budget < 0:
        raise ClearingError("maxmin_budget", f"must be a non-negative node count, got {budget}")
    sp = PairSpace(book, arr, live)
    w = sp.weights()
    names = arr.participants
    offered = {names[q]: n * book.lot_wh for q, n in w.items()}
    if not w:
        return MaxminClearing([], None, offered, True)
    edges = _Edges(sp) if book.grid.has_capacities else None
    state, t_bound = _stage_one(sp, w, edges)
    pool: list[Units] = [state.units()]
    units, t, welfare, w_max = _stage_two(book, arr, sp, w, edges, state)
    pool.append(units)
    scale = 10 * book.lot_wh  # sen/kWh · lot → µ¥
    method = "lp-rounding"
    t_proven = _next_ratio(t, w) > t_bound
    w_proven = t_proven and welfare >= w_max
    exact = _Milp.build(sp, w, edges) if budget else None
    if exact is not None:
        method = "milp"
        units, t, welfare, t_proven, w_proven, mip_bound = exact.run(
            book, arr, units, t, welfare, budget, t_proven, w_proven, pool
        )
        t_bound = min(t_bound, mip_bound)
    # Every lot's spread is split between its two participants, so Σ profit = welfare.
    t_bound = min(t_bound, w_max / sum(w.values()))
    # The clearing is its fills paired by the rule: t, welfare and score are those of the
    # maxmin pairing of its fills, which the pairwise bound still bounds (.canon's notes). On
    # small books every clearing met is a candidate and the search over fills runs; on large
    # ones the final clearing alone is paired.
    if exact is not None:
        got = best_canonical(book, arr, w, [*pool, units], _partners(sp), SEARCH_EVALUATIONS)
    else:
        got = best_canonical(book, arr, w, [units], {}, 0)
    # t is proven if the solver proved t optimal over every pairing and the canonical pairing
    # reaches it, or if no achievable ratio lies between the canonical t and the bound.
    c_proven = (t_proven and got.t >= t) or _next_ratio(got.t, w) > t_bound
    cw_proven = c_proven and w_proven and got.welfare >= welfare
    if method == "milp" and c_proven and cw_proven:
        return MaxminClearing(got.units, None, offered, True)
    bound = Bound(
        primary=(float(t) if t_proven else t_bound) * 10,
        secondary=float(welfare if w_proven and c_proven else w_max) * scale,
        primary_proven=c_proven,
        secondary_proven=cw_proven,
        method=method,
    )
    return MaxminClearing(got.units, bound.to_json(), offered, c_proven and cw_proven)


def _partners(sp: PairSpace) -> dict[int, list[int]]:
    """Every live order's compatible counterparts (book indexes), best gain first, for the
    search of :func:`.canon.best_canonical`."""
    out: dict[int, list[int]] = {}
    for i in range(len(sp.sells)):
        if not sp.done_s[i]:
            sp.extend(True, i)
        out[int(sp.sells[i])] = [int(sp.buys[j]) for j in sp.list_s[i]]
    for j in range(len(sp.buys)):
        if not sp.done_b[j]:
            sp.extend(False, j)
        out[int(sp.buys[j])] = [int(sp.sells[i]) for i in sp.list_b[j]]
    return out


def _next_ratio(t: Fraction, w: dict[int, int]) -> Fraction:
    """The smallest t' > t that any clearing could have: every participant's next ratio above
    t (profits are whole numbers)."""
    return min((Fraction(math.floor(t * n) + 1, n) for n in w.values()), default=Fraction(0))


def _stage_one(sp: PairSpace, w: dict[int, int], edges: _Edges | None) -> tuple[_State, float]:
    """The clearing of highest t found, and an upper bound of t [sen/kWh].

    The LP holds the rows of the participants that some clearing found so far leaves lowest
    (first the greedy one's, then each rounded LP solution's): the LP's own participants can
    take partners that others need, and those join it in the next round.
    """
    base = _State(sp, edges)
    base.improve(w)
    best, t_best = base, base.ratio(w)
    people = list(w)
    weight = np.array([w[q] for q in people], dtype=np.float64)
    lp = _LP(sp, w, edges)
    bound = math.inf
    chosen: set[int] = set()
    last = base
    used: list[Pair] = []  # the pairs the last LP solution carries lots on
    for _ in range(LP_ROUNDS):
        if t_best >= bound * (1 - 1e-9):
            break  # the clearing reaches the bound
        new: list[int] = []
        for state in dict.fromkeys([last, base]):
            ratios = np.array(state.profit, dtype=np.float64)[people] / weight
            for k in np.argsort(ratios, kind="stable").tolist():
                q = people[k]
                if len(new) >= LP_PEOPLE or ratios[k] >= bound:
                    break
                if q not in chosen and q not in new:
                    new.append(q)
        if not new:
            break
        chosen.update(new)
        seeds: list[Pair] = []
        for q in new:
            for i in base.sells_of.get(q, ()):
                seeds += [(i, j) for j in sp.list_s[i][:POOL_PER_ORDER]]
                seeds += [(i, j) for state in (base, last) for j in state.held_s[i]]
            for j in base.buys_of.get(q, ()):
                seeds += [(i, j) for i in sp.list_b[j][:POOL_PER_ORDER]]
                seeds += [(i, j) for state in (base, last) for i in state.held_b[j]]
        if last is not base and len(lp.cols) > PURGE_AT:
            # A later LP is there for its rounding only: on a large pool it keeps the pairs
            # the last one used and takes the new participants' seeds, not every pair priced
            # in so far (which made each solve take seconds).
            lp.keep(used)
        lp.add(sorted(set(seeds)))
        if not lp.cols:
            break
        # The first LP gives the bound; later ones, with more participants' rows, are there for
        # their rounding, which a few rounds of column generation serve (their duals still
        # give valid bounds, so the bound only tightens).
        sol, bound = lp.run(sorted(chosen), bound, CG_ROUNDS if last is base else LATER_CG_ROUNDS)
        if not sol.x:
            break
        used = sorted(sol.x)
        last = _State(sp, edges)
        for (i, j), v in sorted(sol.x.items()):
            n = math.floor(v + 1e-9)
            if n > 0 and sp.compatible(i, j):
                last.add(i, j, min(n, last.rem_s[i], last.rem_b[j]))
        last.respect_capacities()
        last.fill(w, sorted(chosen))  # the LP's participants first: they are the lowest
        last.improve(w)
        t_last = last.ratio(w)
        if t_last > t_best:
            best, t_best = last, t_last
    return best, min(bound, _solo_bound(sp, w))


def _solo_bound(sp: PairSpace, w: dict[int, int]) -> float:
    """An upper bound of t: the lowest ratio any participant could reach if every lot of its
    own traded with its order's best counterparty, as though nobody competed for them
    (tightest on the largest books, where the LP converges too slowly)."""
    grid, dist = sp.grid, sp.dist
    n = grid.size
    ub: list[I64] = []
    for selling in (True, False):
        o_node, o_price = (sp.node_s, sp.ask) if selling else (sp.node_b, sp.bid)
        c_node = sp.node_b if selling else sp.node_s
        c_val = sp.bid - dist[sp.node_b] if selling else -sp.ask - dist[sp.node_s]
        if not len(o_node):
            ub.append(np.zeros(0, dtype=np.int64))
            continue
        low = np.iinfo(np.int64).min // 4
        sub = np.full(n, low, dtype=np.int64)
        if len(c_node):
            np.maximum.at(sub, c_node, c_val)
        for v in reversed(grid.order[1:]):  # subtree maxima, leaves first
            sub[grid.parent[v]] = max(sub[grid.parent[v]], sub[v])
        best = np.full(n, low, dtype=np.int64)  # max over ancestors a of sub[a] + 2·dist[a]
        for v in grid.order:
            here = sub[v] + 2 * dist[v] if sub[v] > low else low
            p = grid.parent[v]
            best[v] = max(best[p], here) if p >= 0 else here
        reach = best[o_node]
        spread = np.where(reach > low, reach - dist[o_node], low)
        spread = spread - o_price if selling else spread + o_price
        gain = spread // 2 if selling else spread - spread // 2
        lots = sp.lots_s if selling else sp.lots_b
        ub.append(np.where(reach > low, np.maximum(gain, 0), 0) * lots)
    most = np.zeros(sp.n_part, dtype=np.int64)
    np.add.at(most, sp.part_s, ub[0])
    np.add.at(most, sp.part_b, ub[1])
    return min((float(most[q]) / n_q for q, n_q in w.items()), default=0.0)


def _stage_two(
    book: Book,
    arr: BookArrays,
    sp: PairSpace,
    w: dict[int, int],
    edges: _Edges | None,
    state: _State,
) -> tuple[Units, Fraction, int, int]:
    """Welfare with every ratio kept ≥ the state's t: units, t, welfare and the welfare optimum
    (without the floor) [sen/kWh · lot]."""
    from peerpower.market.optimal import welfare_units

    t = state.ratio(w)
    floors = {q: math.ceil(t * n) for q, n in w.items()}
    every = np.ones(len(arr.lots), dtype=bool)
    opt = _units_list(welfare_units(book, arr, every))
    w_max = _welfare_of(book, arr, opt)
    candidates: list[Units] = []
    if _ratio_of(book, arr, sp, w, opt) >= t:
        candidates.append(opt)  # the welfare optimum already keeps everyone at t
    lean = state.copy()
    lean.trim(floors)
    # taking lots back can raise an edge's net flow where they ran against it
    if edges is None or _within_capacities(book, arr, lean.units()):
        candidates.append(lean.units())
    candidates.append(state.units())
    best: Units | None = None
    best_welfare = -1
    for units in candidates:
        units = _complete(book, arr, units)
        if _ratio_of(book, arr, sp, w, units) < t:
            continue  # the lean fill can fall short: someone stuck below t gained only later
        value = _welfare_of(book, arr, units)
        if value > best_welfare:
            best, best_welfare = units, value
    assert best is not None
    return best, t, best_welfare, w_max


def _complete(book: Book, arr: BookArrays, units: Units) -> Units:
    """``units`` and a welfare flow over the lots they leave, within the capacity the units
    leave each edge (adding trades never lowers a profit)."""
    from peerpower.market.optimal import welfare_units

    left = arr.lots.copy()
    for s, b, n in units:
        left[s] -= n
        left[b] -= n
    mask = left > 0
    if not mask.any():
        return units
    used = None
    if book.grid.has_capacities:
        used = _net_up(book, arr, units)
    e_s, e_b, e_n = welfare_units(book, replace(arr, lots=left), mask, used)
    merged: dict[Pair, int] = {}
    for s, b, n in units + list(zip(e_s.tolist(), e_b.tolist(), e_n.tolist(), strict=True)):
        merged[(s, b)] = merged.get((s, b), 0) + n
    return sorted((s, b, n) for (s, b), n in merged.items() if n)


def _net_up(book: Book, arr: BookArrays, units: Units) -> I64:
    """Net lots ``units`` send up each grid node's edge: what its subtree sells to the rest
    less what it buys from it."""
    balance = np.zeros(book.grid.size, dtype=np.int64)
    for s, b, n in units:
        balance[arr.node[s]] += n
        balance[arr.node[b]] -= n
    return book.grid.subtree_sums(balance)


def _within_capacities(book: Book, arr: BookArrays, units: Units) -> bool:
    grid = book.grid
    net = _net_up(book, arr, units).tolist()
    return all(
        grid.capacity_wh[c] < 0 or abs(net[c]) * book.lot_wh <= grid.capacity_wh[c]
        for c in range(grid.size)
        if grid.parent[c] >= 0
    )


def _units_list(units: tuple[I64, I64, I64]) -> Units:
    s, b, n = units
    return sorted(zip(s.tolist(), b.tolist(), n.tolist(), strict=True))


def _welfare_of(book: Book, arr: BookArrays, units: Units) -> int:
    """Σ spread × lots [sen/kWh · lot]."""
    if not units:
        return 0
    s, b, n = (np.array(c, dtype=np.int64) for c in zip(*units, strict=True))
    fee = book.grid.fees_between(arr.node[s], arr.node[b])
    return int(((arr.price[b] - fee - arr.price[s]) * n).sum())


def _profits(book: Book, arr: BookArrays, n_part: int, units: Units) -> list[int]:
    profit = [0] * n_part
    if not units:
        return profit
    s, b, n = (np.array(c, dtype=np.int64) for c in zip(*units, strict=True))
    spread = arr.price[b] - book.grid.fees_between(arr.node[s], arr.node[b]) - arr.price[s]
    gs = spread // 2
    for q, v in zip(arr.participant[s].tolist(), (gs * n).tolist(), strict=True):
        profit[q] += v
    for q, v in zip(arr.participant[b].tolist(), ((spread - gs) * n).tolist(), strict=True):
        profit[q] += v
    return profit


def _ratio_of(
    book: Book, arr: BookArrays, sp: PairSpace, w: dict[int, int], units: Units
) -> Fraction:
    profit = _profits(book, arr, sp.n_part, units)
    return min((Fraction(profit[q], n) for q, n in w.items()), default=Fraction(0))


def _score_of(arr: BookArrays, units: Units) -> int:
    r = arr.score
    return sum((r[s] + r[b]) * n for s, b, n in units)


# -- exact on small books ------------------------------------------------------------------------
@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what C code prints to stderr while the MILP runs: HiGHS 1.12 prints a debug line
    to stdout when it repairs a solution after a restart (``transformNewIntegerFeasibleSolution
    tmpSolver.run();``), whatever its output options, and ``peerpower clear`` writes its JSON
    to stdout. C's buffer is flushed on both sides so that nothing lands after the switch."""
    flush = _c_flush()
    sys.stdout.flush()
    flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        flush()
        os.dup2(saved, 1)
        os.close(saved)


def _c_flush() -> Any:
    try:
        libc = ctypes.CDLL(None)
        fflush = libc.fflush
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX C library
        return lambda: None
    return lambda: fflush(None)


@dataclass(frozen=True)
class _MipResult:
    status: int  # 0 optimal, 1 stopped at the node limit, 2 infeasible
    x: F64 | None
    dual: float | None  # bound of the minimised objective


class _Milp:
    """The pairwise MILP over every compatible pair of a small book (HiGHS via SciPy)."""

    def __init__(
        self, sp: PairSpace, w: dict[int, int], edges: _Edges | None, si: I64, bj: I64
    ) -> None:
        from scipy.sparse import coo_matrix

        self.sp, self.w = sp, w
        self.si, self.bj = si, bj
        m = len(si)
        self.m = m
        spread = sp.spreads(si, bj)
        self.spread = spread
        gs, gb = spread // 2, spread - spread // 2
        k = np.arange(m)
        rows: list[I64] = [si, len(sp.sells) + bj]
        cols: list[I64] = [k, k]
        vals: list[F64] = [np.ones(m), np.ones(m)]
        lo: list[float] = [-np.inf] * (len(sp.sells) + len(sp.buys))
        hi: list[float] = [float(x) for x in sp.lots_s.tolist() + sp.lots_b.tolist()]
        n_rows = len(lo)
        if edges is not None:
            er: dict[int, int] = {}
            for q, (i, j) in enumerate(zip(si.tolist(), bj.tolist(), strict=True)):
                for e, sign in edges.path(i, j):
                    if e not in er:
                        er[e] = n_rows
                        n_rows += 1
                        lo.append(-float(edges.limit[e]))
                        hi.append(float(edges.limit[e]))
                    rows.append(np.array([er[e]]))
                    cols.append(np.array([q]))
                    vals.append(np.array([float(sign)]))
        # participant rows: profit_p (then − w_p t on the t rows)
        self.people = list(w)
        prow = np.full(sp.n_part, -1, dtype=np.int64)
        prow[np.array(self.people, dtype=np.int64)] = np.arange(len(self.people))
        self.p0 = n_rows
        for part, gain in ((sp.part_s[si], gs), (sp.part_b[bj], gb)):
            row = prow[part]
            use = (row >= 0) & (gain != 0)
            rows.append(n_rows + row[use])
            cols.append(k[use])
            vals.append(gain[use].astype(np.float64))
        n_rows += len(self.people)
        a = coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_rows, m),
        ).tocsr()
        self.a = a
        self.lo = np.array(lo + [0.0] * len(self.people))
        self.hi = np.array(hi + [np.inf] * len(self.people))
        self.gain = a[self.p0 :, :]  # profit rows
        self.upper = np.minimum(sp.lots_s[si], sp.lots_b[bj]).astype(np.float64)
        self.weights = np.array([w[q] for q in self.people], dtype=np.float64)

    @classmethod
    def build(cls, sp: PairSpace, w: dict[int, int], edges: _Edges | None) -> _Milp | None:
        """The MILP if the book has at most :data:`MILP_PAIRS` compatible pairs."""
        n_s, n_b = len(sp.sells), len(sp.buys)
        if n_s * n_b > 64 * MILP_PAIRS:
            # the pairs may still be few; count them from the lists, completed
            total = 0
            for i in range(n_s):
                if not sp.done_s[i]:
                    sp.extend(True, i)
                total += len(sp.list_s[i])
                if total > MILP_PAIRS:
                    return None
        ii, jj = np.meshgrid(np.arange(n_s), np.arange(n_b), indexing="ij")
        si, bj = ii.ravel(), jj.ravel()
        spread = sp.spreads(si, bj)
        ok = (spread >= 0) & (sp.part_s[si] != sp.part_b[bj])
        if int(ok.sum()) > MILP_PAIRS or not ok.any():
            return None
        return cls(sp, w, edges, si[ok], bj[ok])

    def _solve(
        self, cost: F64, extra: list[tuple[F64, float]], t_lo: float | None, nodes: int
    ) -> Any:
        """Minimise ``cost`` over (x, t?) with the extra rows ``row ≥ lower`` on the x."""
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_matrix, hstack, vstack

        m = self.m
        a, lo, hi = self.a, self.lo.copy(), self.hi.copy()
        if extra:
            a = vstack([a, csr_matrix(np.array([r for r, _ in extra]))]).tocsr()
            lo = np.concatenate([lo, [b for _, b in extra]])
            hi = np.concatenate([hi, np.full(len(extra), np.inf)])
        n = m
        upper = self.upper
        integrality = np.ones(m)
        if t_lo is not None:  # the t column: profit_p − w_p·t ≥ 0
            col = np.zeros(a.shape[0])
            col[self.p0 : self.p0 + len(self.people)] = -self.weights
            a = hstack([a, csr_matrix(col[:, None])]).tocsr()
            n = m + 1
            upper = np.concatenate([upper, [np.inf]])
            integrality = np.concatenate([integrality, [0]])
        lower = np.zeros(n)
        if t_lo is not None:
            lower[m] = t_lo
        with warnings.catch_warnings(), _stdout_to_stderr():
            warnings.simplefilter("ignore")
            res = milp(
                cost,
                integrality=integrality,
                bounds=Bounds(lower, upper),
                constraints=[LinearConstraint(a, lo, hi)],
                options={"presolve": False, "node_limit": nodes, "mip_rel_gap": 0.0},
            )
        return _MipResult(int(res.status), res.x, getattr(res, "mip_dual_bound", None))

    def _units(self, x: F64) -> Units | None:
        sp = self.sp
        n = np.round(x[: self.m]).astype(np.int64)
        if np.abs(x[: self.m] - n).max(initial=0.0) > 1e-4 or (n < 0).any():
            return None
        use = np.flatnonzero(n > 0)
        return sorted(
            (int(sp.sells[self.si[k]]), int(sp.buys[self.bj[k]]), int(n[k])) for k in use.tolist()
        )

    def _valid(self, units: Units, book: Book, arr: BookArrays) -> bool:
        """Lots and capacities hold exactly (the solver works in floating point)."""
        used = np.zeros(len(arr.lots), dtype=np.int64)
        for s, b, n in units:
            used[s] += n
            used[b] += n
        if (used > arr.lots).any():
            return False
        return _within_capacities(book, arr, units)

    def run(
        self,
        book: Book,
        arr: BookArrays,
        units: Units,
        t: Fraction,
        welfare: int,
        budget: int,
        t_proven: bool,
        w_proven: bool,
        pool: list[Units],
    ) -> tuple[Units, Fraction, int, bool, bool, float]:
        """Improve the incumbent ``units`` (ratio ``t``, welfare) stage by stage within
        ``budget`` nodes each: units, t, welfare, whether t and welfare are proven, and an
        upper bound of t [sen/kWh]. Every valid clearing the solver returns joins ``pool``."""
        m = self.m
        w = self.w
        bound = math.inf
        if not t_proven:
            t_next = _next_ratio(t, w)
            cut = [math.ceil(t_next * n) for n in self.weights.astype(np.int64).tolist()]
            extra = [(row, float(c)) for row, c in zip(self._profit_rows(), cut, strict=True)]
            cost = np.zeros(m + 1)
            cost[m] = -1.0
            res = self._solve(cost, extra, float(t_next), budget)
            if res.status == 2:  # nothing beats the incumbent
                t_proven = True
            elif res.x is not None:
                found = self._units(res.x)
                accepted = False
                if found is not None and self._valid(found, book, arr):
                    pool.append(found)
                    t_found = _ratio_of(book, arr, self.sp, w, found)
                    if t_found > t:
                        accepted = True
                        units, t = found, t_found
                        welfare = _welfare_of(book, arr, units)
                        better = _complete(book, arr, units)
                        if _ratio_of(book, arr, self.sp, w, better) >= t:
                            units, welfare = better, _welfare_of(book, arr, better)
                dual = res.dual
                if dual is not None and math.isfinite(dual):
                    bound = -float(dual) + 1e-6  # HiGHS stops within an absolute gap of 1e-6
                # Optimal: proven if no achievable ratio lies between t and the solver's bound.
                t_proven = res.status == 0 and accepted and _next_ratio(t, w) > bound
            if not t_proven:
                return units, t, welfare, False, False, bound
        floors = [math.ceil(t * n) for n in self.weights.astype(np.int64).tolist()]
        extra = [(row, float(c)) for row, c in zip(self._profit_rows(), floors, strict=True)]
        spread = self.spread.astype(np.float64)
        if not w_proven:
            res = self._solve(-spread, [*extra, (spread, float(welfare + 1))], None, budget)
            w_proven = res.status == 2  # nothing beats the incumbent's welfare
            if res.status in (0, 1) and res.x is not None:
                found = self._units(res.x)
                accepted = (
                    found is not None
                    and self._valid(found, book, arr)
                    and _ratio_of(book, arr, self.sp, w, found) >= t
                    and _welfare_of(book, arr, found) > welfare
                )
                if accepted:
                    assert found is not None
                    pool.append(found)
                    units, welfare = found, _welfare_of(book, arr, found)
                w_proven = res.status == 0 and accepted
        if not w_proven:
            return units, t, welfare, True, False, bound
        # the seeded score on the optimal face (best effort within the budget)
        r = arr.score
        s_idx, b_idx = self.sp.sells[self.si], self.sp.buys[self.bj]
        score = np.array(
            [(r[s] + r[b]) / 2.0**64 for s, b in zip(s_idx.tolist(), b_idx.tolist(), strict=True)]
        )
        res = self._solve(-score, [*extra, (spread, float(welfare))], None, budget)
        if res.x is not None:
            found = self._units(res.x)
            if (
                found is not None
                and self._valid(found, book, arr)
                and _ratio_of(book, arr, self.sp, w, found) >= t
                and _welfare_of(book, arr, found) == welfare
                and _score_of(arr, found) > _score_of(arr, units)
            ):
                pool.append(found)
                units = found
        return units, t, welfare, True, True, bound

    def _profit_rows(self) -> list[F64]:
        dense = self.gain.toarray()
        return [dense[k] for k in range(dense.shape[0])]


# -- the dense view (small books, tests) ----------------------------------------------------------
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
    """The compatible pairs among the ``live`` orders of ``book``, as dense matrices."""
    sells = np.flatnonzero(live & arr.is_sell)
    buys = np.flatnonzero(live & ~arr.is_sell)
    if len(sells) * len(buys) > MAX_PAIRS:
        raise ClearingError(
            "orders",
            f"{len(sells)} sells × {len(buys)} buys that could trade make "
            f"{len(sells) * len(buys)} pairs, more than the dense pair view takes ({MAX_PAIRS})",
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
    and the energy of those orders [Wh], read off a dense view."""
    p = pairs
    orders = np.concatenate([p.sells[p.ok.any(axis=1)], p.buys[p.ok.any(axis=0)]])
    orders.sort()
    offered: dict[str, int] = {}
    for o in orders.tolist():
        name = arr.participants[arr.participant[o]]
        offered[name] = offered.get(name, 0) + int(arr.lots[o]) * lot_wh
    return offered


def clear_maxmin_rounded(
    book: Book, arr: BookArrays, pairs: Pairs, offered_by_name: dict[str, int]
) -> tuple[Units, Bound]:
    """The rounded clearing alone (no MILP), for callers of the old interface; ``pairs`` and
    ``offered_by_name`` are no longer needed."""
    live = np.zeros(len(arr.lots), dtype=bool)
    live[pairs.sells] = True
    live[pairs.buys] = True
    got = clear_maxmin(book, arr, live, budget=0)
    b = got.bound
    assert b is not None
    return got.units, Bound(
        b["primary_upper"] / 1.0,
        b["secondary_upper"] / 1.0,
        b["primary_proven"],
        b["secondary_proven"],
    )
