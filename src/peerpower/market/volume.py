"""Exact ``volume`` clearing that scales: a price-expanded circulation, warm-started primal–dual.

The goal (DESIGN.md §3, issue 15): choose whole lots ``x_ij`` on compatible pairs (sell ``i``,
buy ``j``, ``bid_j − fee_ij ≥ ask_i``) to maximise the traded energy Σ x, then the welfare
Σ (bid − fee − ask)·x, then the seeded score Σ r_k·filled_k, with every order filled at most its
lots and, on every capacitated edge, the net energy crossing it within ± its capacity. Self-trade
prevention has run before: no participant has a sell and a buy that could trade with each other,
so compatibility is a matter of prices and fees alone.

Notes
-----
**Capacities constrain fills only.** For the edge above node ``c`` the net energy crossing it is
(sells inside matched outside) − (buys inside matched outside) = S_c − B_c, the filled sells in
``c``'s subtree minus its filled buys: the lots matched inside cancel. So the problem is a pure
network flow (its constraint matrix is a network matrix, totally unimodular) — a *circulation*:

* a price-expanded network ``E`` pairs sells with compatible buys (below);
* each component of the grid left when the capacitated edges are cut is one node ``g``; the sell
  arcs leave their component's ``g`` and the buy arcs return to theirs;
* every capacitated edge is a pair of opposite arcs between the two components' ``g``, each of
  capacity ⌊capacity / lot⌋; they carry S_c − B_c back, so the net is within ± the capacity.

Without capacities there is one ``g`` and the circulation is an s–t flow through it. Every
optimal vertex is integral; no mixed-integer program is needed.

**The price-expanded network.** Edges with a zero fee are contracted (they change neither fees
nor compatibility). A node ``v`` whose subtree holds both sells and buys (*mixed*) has one chain
of *local price levels*: a sell ``i`` in the subtree stands at ``ask_i + fee(n_i, v)``, a buy at
``bid_j − fee(m_j, v)``. Flow moves up a chain (a unit at level λ may serve any buy at λ or
above), climbs to the parent at λ + fee and descends to a child at μ + fee, so the level of a
unit never falls and every path from a sell to a buy is a compatible pair. Orders of subtrees
with one side only need no chain: they attach to their nearest mixed ancestor's chain at their
level there. The network has Σ_v (distinct levels at mixed ``v``) nodes: at most (number of
orders) × (depth), and no more than the price range per node however many orders there are.

**Lexicographic objective.** The costs are M·(−1 on sell arcs) + welfare cost (ask + fees on the
way up, fees on the way down, −bid), with M larger than the welfare of any simple cycle (at most
2·components order arcs and one arc per node), so a minimum-cost circulation maximises volume
first and welfare second. The score stage then runs on the optimal face (arcs whose reduced cost
is not zero keep their flow) with cost −rank_k on its free order arcs, rank_k being the position
of r_k among them. Without capacities this is exact for Σ r_k·filled_k itself: on the face the
fills of the free order arcs (all incident to the one node ``g``) form a base polyhedron — the
feasible supplies of a network at private terminals — on which a linear objective is maximised
greedily in the order of its weights, so any weights in the same order give the same optimum.
With capacities that argument does not apply; an exact check follows: the residual face graph is
searched for a cycle of negative score (in exact 64-bit ``r``) through the few free order arcs,
and every such cycle is cancelled (up to 200 free order arcs and 200 cycles; beyond that the
rank-weighted optimum stands).

**Solver: primal–dual from the relaxation's prices.** OR-tools' cost-scaling min-cost flow on
``E`` takes 1–2 s on 10,000 orders and a minute on 100,000: ``E`` has long zero-cost chains.
Instead, the relaxation that replaces ``E`` by the grid tree itself (compatibility dropped) is
small and solved exactly; its node prices, copied to every level of a node, are feasible
potentials for ``E`` (a climb or descent costs what its tree edge costs). From there,
primal–dual: saturate the arcs of negative reduced cost, send the excess to the deficits by
maximum flows over the arcs of zero reduced cost, and when none is left raise the potentials by
the shortest-path distances (Dijkstra on reduced costs, capped at the nearest deficit). When the
relaxation's clearing can be paired compatibly, one maximum flow finishes (the benchmark books);
each further phase repairs the prices where compatibility binds. Where it binds widely (deep
trees, fees large against the spreads) the phases would be many, so after a fixed number of
them the remaining reduced costs are solved bit by bit, most significant first (cost scaling):
each bit needs few phases. All arithmetic is on integers (Dijkstra's float distances are checked
to stay below 2⁵² and so exact). The result is an optimal circulation with optimal potentials,
whose zero reduced costs define the face for the score stage.

**Units.** The score leaves no tie between different fills (the r_k differ; only where the
exact search is skipped could the rank weights tie), and the units are made a function of the
fills alone (:func:`pair_fills`, which a verifier can rerun): a minimum-fee flow
in ``E`` from the filled sells' levels to the filled buys', found by primal–dual from zero
potentials, split into paths of one sell and one buy each — every arc of ``E`` raises the
level, so the level nodes in increasing level are a topological order, and each chain passes
its lots on first in, first out (:func:`_units`). The least fee for the optimal fills is the
optimal fee, so the units carry exactly the optimal volume and welfare; capacities hold because
the net energy on an edge depends on the fills only.

**Certificate (no capacities).** The nodes of ``E`` reachable from ``g`` in the residual graph
form a minimum cut. At each mixed node the reachable levels are those at or above the lowest
reachable one, which gives the price thresholds; sells below them and buys at or above them are
covered, their energy equals the volume, and they are written as the ``volume-thresholds``
certificate that :mod:`peerpower.market.verify` checks (:func:`_certificate`).

Everything is a function of the book: the arrays are built in book order, OR-tools' solvers, the
phases and the phase budget are deterministic, and ties in r (between different ids,
practically impossible) are broken by book index. No wall-clock limit is used anywhere.

References
----------
.. [1] A. Schrijver, *Theory of Linear and Integer Programming*, Wiley 1986, §19.3 (network
   matrices are totally unimodular).
.. [2] J. Edmonds and R. M. Karp, "Theoretical improvements in algorithmic efficiency for network
   flow problems", J. ACM 19(2), 1972, doi:10.1145/321694.321699 (primal–dual, cost scaling).
.. [3] S. Fujishige, *Submodular Functions and Optimization*, 2nd ed., Elsevier 2005, §3.1
   (greedy optimality on base polyhedra; supplies of a network form one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, dijkstra

from peerpower.errors import ClearingError
from peerpower.market import flow as fl
from peerpower.market.orders import Book, BookArrays

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

_INF = 1 << 50  # capacity of arcs without one: more than any flow
_EXACT = float(1 << 52)  # float64 distances below this are exact integers


@dataclass(frozen=True, slots=True)
class _Circulation:
    """The price-expanded circulation of a book (see the module notes).

    Nodes ``0 .. n_levels − 1`` are the (mixed node, local level) pairs, sorted by node then
    level; ``n_levels + c`` is component ``c``'s node ``g``. Arcs are grouped: ``E``'s inner
    arcs, then one sell arc and one buy arc per order (in book order among each side), then
    the capacity arcs between components.
    """

    n_nodes: int
    n_levels: int
    tail: I64
    head: I64
    cap: I64
    welfare: I64  # welfare cost [sen/kWh per lot]: ask + fees − bid along a pair's path
    order: I64  # book index of an order arc, −1 otherwise
    is_sell: Bool  # sell arcs (volume cost −1)
    n_inner: int
    level_node: I64  # grid node (a mixed representative) of each level node
    level: I64  # local level [sen/kWh] of each level node
    sell_level: Bool  # level nodes that sells in the node's subtree stand at
    buy_level: Bool  # level nodes that buys in the node's subtree stand at
    n_components: int
    has_sells: Bool  # per grid node: a sell in its subtree
    has_buys: Bool  # per grid node: a buy in its subtree
    low: I64  # per grid node: nearest mixed representative at or above it, −1 if none
    dist: I64  # per grid node: fee distance from the root [sen/kWh]


def clear_volume(book: Book, arr: BookArrays) -> tuple[fl.Units, dict[str, Any] | None]:
    """Clear ``book`` exactly for the ``volume`` goal: most energy, then most welfare, then the
    highest seeded score Σ r_k·filled_k; see the module notes for the algorithm and its proof.

    Parameters
    ----------
    book
        The book, after self-trade prevention (no participant's sell and buy are compatible;
        otherwise :class:`ClearingError` may be raised).
    arr
        ``book_arrays(book)``.

    Returns
    -------
    units
        ``(sell index, buy index, lots)`` arrays over book indexes, one row per pair, sorted by
        (sell, buy): the canonical pairing of the optimal fills (:func:`pair_fills`).
    certificate
        Without edge capacities, a ``volume-thresholds`` certificate (price thresholds per node
        [sen/kWh]) whose covered energy equals the volume; ``None`` with capacities.
    """
    empty: fl.Units = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    capacities = book.grid.has_capacities
    net = _expand(book, arr)
    if net is None:
        return empty, None if capacities else _trivial_certificate(book, arr)
    combined = _combined_costs(net)
    pi = _relaxed_potentials(book, arr, net, combined)
    flow, pi = _min_cost(net.n_nodes, net.tail, net.head, net.cap, combined, pi)
    reduced = combined + pi[net.tail] - pi[net.head]
    flow = _score_stage(net, flow, reduced == 0, arr)
    if capacities:
        flow = _exact_score(net, flow, reduced == 0, arr)
    orders = net.order >= 0
    filled = np.zeros(len(arr.lots), dtype=np.int64)
    filled[net.order[orders]] = flow[orders]
    units = _pair(net, filled)
    if (arr.participant[units[0]] == arr.participant[units[1]]).any():
        raise ClearingError(
            "optimal",
            "internal: a participant's sell and buy are compatible; the volume clearing needs "
            "self-trade prevention first",
        )
    certificate = None if capacities else _certificate(book, net, flow)
    return units, certificate


# -- the network -----------------------------------------------------------------------------
def _expand(book: Book, arr: BookArrays) -> _Circulation | None:
    """Build the circulation; ``None`` when no sell can meet any buy through the tree (a side
    is empty)."""
    grid = book.grid
    n = grid.size
    parent = np.asarray(grid.parent, dtype=np.int64)
    dist = np.asarray(grid.dist_sen_per_kwh, dtype=np.int64)
    fee = np.asarray(grid.fee_sen_per_kwh, dtype=np.int64)
    preorder = list(grid.order)
    sells = np.flatnonzero(arr.is_sell)
    buys = np.flatnonzero(~arr.is_sell)
    if not len(sells) or not len(buys):
        return None
    in_s = grid.subtree_sums(np.bincount(arr.node[sells], minlength=n).astype(np.int64)) > 0
    in_b = grid.subtree_sums(np.bincount(arr.node[buys], minlength=n).astype(np.int64)) > 0
    mixed = in_s & in_b
    root = preorder[0]
    if not mixed[root]:
        return None
    # Zero-fee edges are contracted: a node is its own representative when its edge has a fee.
    low = np.full(n, -1, dtype=np.int64)
    par_list = parent.tolist()
    fee_list = fee.tolist()
    mixed_list = mixed.tolist()
    low_list = low.tolist()
    for v in preorder:
        is_rep = v == root or fee_list[v] > 0
        if is_rep and mixed_list[v]:
            low_list[v] = v
        elif v != root:
            low_list[v] = low_list[par_list[v]]
    low = np.array(low_list, dtype=np.int64)
    # Mixed parent of each mixed representative (its representative's nearest mixed one).
    mpar = np.full(n, -1, dtype=np.int64)
    reps = np.flatnonzero(low == np.arange(n))
    nonroot = reps[reps != root]
    mpar[nonroot] = low[parent[nonroot]]

    ask_level = arr.price + dist[arr.node]  # ask + fee to the root: level at v is this − dist[v]
    bid_level = arr.price - dist[arr.node]  # bid − fee to the root: level at v is this + dist[v]

    def walk(idx: I64, glob: I64, sign: int) -> tuple[I64, I64]:
        """(node, local level) of every chain node the orders ``idx`` pass through."""
        nodes_: list[I64] = []
        levels_: list[I64] = []
        cur = low[arr.node[idx]]
        g = glob[idx]
        while len(cur):
            nodes_.append(cur)
            levels_.append(g - sign * dist[cur])
            nxt = mpar[cur]
            keep = nxt >= 0
            cur, g = nxt[keep], g[keep]
        return np.concatenate(nodes_), np.concatenate(levels_)

    s_nodes, s_levels = walk(sells, ask_level, 1)
    b_nodes, b_levels = walk(buys, bid_level, -1)
    lo = int(min(s_levels.min(), b_levels.min()))
    hi = int(max(s_levels.max(), b_levels.max()))
    width = hi - lo + 1
    if n * width >= 1 << 62:  # pragma: no cover - prices and fees are bounded far below this
        raise ClearingError("optimal", "internal: price levels out of range")
    s_keys = np.unique(s_nodes * width + (s_levels - lo))
    b_keys = np.unique(b_nodes * width + (b_levels - lo))
    keys = np.union1d(s_keys, b_keys)
    n_levels = len(keys)
    level_node = keys // width
    level = keys % width + lo

    tails: list[I64] = []
    heads: list[I64] = []
    costs: list[I64] = []
    # chains: each level to the next one up at the same node
    up = np.flatnonzero(level_node[1:] == level_node[:-1])
    tails.append(up)
    heads.append(up + 1)
    costs.append(np.zeros(len(up), dtype=np.int64))
    # climbs: a sell level at v to the same sells' level at its mixed parent
    sv = s_keys // width
    p = mpar[sv]
    ok = p >= 0
    step = dist[sv[ok]] - dist[p[ok]]
    tails.append(np.searchsorted(keys, s_keys[ok]))
    heads.append(np.searchsorted(keys, p[ok] * width + (s_keys[ok] % width) + step))
    costs.append(step)
    # descents: a buy level at the mixed parent to the same buys' level at v
    bv = b_keys // width
    p = mpar[bv]
    ok = p >= 0
    step = dist[bv[ok]] - dist[p[ok]]
    tails.append(np.searchsorted(keys, p[ok] * width + (b_keys[ok] % width) - step))
    heads.append(np.searchsorted(keys, b_keys[ok]))
    costs.append(step)
    n_inner = sum(len(t) for t in tails)

    # components: cut at capacitated edges
    cap_wh = np.asarray(grid.capacity_wh, dtype=np.int64)
    comp_list = list(range(n))
    cap_list = cap_wh.tolist()
    for v in preorder[1:]:
        if cap_list[v] < 0:
            comp_list[v] = comp_list[par_list[v]]
    comp_raw = np.array(comp_list, dtype=np.int64)
    _, comp = np.unique(comp_raw, return_inverse=True)
    n_components = int(comp.max()) + 1
    g = n_levels + comp  # the component node of each grid node

    w_s = low[arr.node[sells]]
    w_b = low[arr.node[buys]]
    s_level = ask_level[sells] - dist[w_s]
    b_level = bid_level[buys] + dist[w_b]
    tails += [g[arr.node[sells]], np.searchsorted(keys, w_b * width + (b_level - lo))]
    heads += [np.searchsorted(keys, w_s * width + (s_level - lo)), g[arr.node[buys]]]
    costs += [s_level, -b_level]
    lot = book.lot_wh
    capped = np.flatnonzero((cap_wh >= 0) & (parent >= 0))
    child_g, parent_g = g[capped], g[parent[capped]]
    limit = cap_wh[capped] // lot
    tails += [child_g, parent_g]
    heads += [parent_g, child_g]
    costs.append(np.zeros(2 * len(capped), dtype=np.int64))
    tail = np.concatenate(tails)
    head = np.concatenate(heads)
    cap = np.concatenate(
        [np.full(n_inner, _INF, dtype=np.int64), arr.lots[sells], arr.lots[buys], limit, limit]
    ).astype(np.int64)
    order = np.concatenate([np.full(n_inner, -1), sells, buys, np.full(2 * len(capped), -1)])
    is_sell = np.zeros(len(tail), dtype=bool)
    is_sell[n_inner : n_inner + len(sells)] = True
    return _Circulation(
        n_nodes=n_levels + n_components,
        n_levels=n_levels,
        tail=tail.astype(np.int64),
        head=head.astype(np.int64),
        cap=cap,
        welfare=np.concatenate(costs).astype(np.int64),
        order=order.astype(np.int64),
        is_sell=is_sell,
        n_inner=n_inner,
        level_node=level_node.astype(np.int64),
        level=level.astype(np.int64),
        sell_level=np.isin(keys, s_keys),
        buy_level=np.isin(keys, b_keys),
        n_components=n_components,
        has_sells=in_s,
        has_buys=in_b,
        low=low,
        dist=dist,
    )


def _combined_costs(net: _Circulation) -> I64:
    """M·(−1 on sell arcs) + welfare cost, M above the welfare of any simple cycle."""
    orders = net.order >= 0
    inner = np.zeros(len(net.tail), dtype=bool)
    inner[: net.n_inner] = True
    top_order = int(np.abs(net.welfare[orders]).max(initial=0))
    top_fee = int(np.abs(net.welfare[inner]).max(initial=0))
    # A simple cycle passes each component node once (two order arcs) and each level node once.
    big = 2 * net.n_components * top_order + net.n_levels * top_fee + 1
    cost: I64 = net.welfare - big * net.is_sell.astype(np.int64)
    return cost


# -- warm start: the relaxation on the grid tree --------------------------------------------------
def _relaxed_potentials(book: Book, arr: BookArrays, net: _Circulation, cost: I64) -> I64:
    """Potentials for the circulation from the relaxation that routes over the grid tree itself
    (compatibility dropped): its optimal node prices, the same at every level of a node, are
    feasible on every arc of ``E`` (which costs what the tree edge costs)."""
    from ortools.graph.python import min_cost_flow

    n = book.grid.size
    reps = np.flatnonzero(net.low == np.arange(n))
    root = book.grid.root
    child = reps[reps != root]
    parent_rep = net.low[np.asarray(book.grid.parent, dtype=np.int64)[child]]
    step = net.dist[child] - net.dist[parent_rep]
    # relaxation nodes: grid nodes 0..n−1, then the components n..n+C−1
    to_relax = np.concatenate([net.level_node, n + np.arange(net.n_components)])
    outer = slice(net.n_inner, None)
    r_tail = np.concatenate([child, parent_rep, to_relax[net.tail[outer]]])
    r_head = np.concatenate([parent_rep, child, to_relax[net.head[outer]]])
    total = int(arr.lots.sum()) + 1
    r_cap = np.concatenate([np.full(2 * len(child), total), np.minimum(net.cap[outer], total)])
    r_cost = np.concatenate([step, step, cost[outer]])
    smcf = min_cost_flow.SimpleMinCostFlow()
    smcf.add_arcs_with_capacity_and_unit_cost(
        r_tail.astype(np.int32), r_head.astype(np.int32), r_cap, r_cost
    )
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise ClearingError("optimal", f"internal: relaxation ended with status {status}")
    r_flow = np.asarray(smcf.flows(np.arange(len(r_tail), dtype=np.int32)), dtype=np.int64)
    no_order = np.full(len(r_tail), -1, dtype=np.int64)
    relax = fl.Network(n + net.n_components, r_tail, r_head, r_cap, no_order, 0, 0, 0)
    rho = fl.potentials(relax, r_flow, r_cost)
    pi: I64 = rho[to_relax]
    return pi


# -- primal–dual ------------------------------------------------------------------------------
def _min_cost(
    n: int,
    tail: I64,
    head: I64,
    cap: I64,
    cost: I64,
    pi: I64,
    flow: I64 | None = None,
    supply: I64 | None = None,
) -> tuple[I64, I64]:
    """Minimum-cost flow meeting ``supply`` (zero: a circulation) and optimal potentials, from
    potentials ``pi`` that give every arc of capacity ``_INF`` a non-negative reduced cost.

    Primal–dual from ``pi`` for at most ``_WARM_PHASES`` price rises: when ``pi`` is close to
    optimal (the relaxation's prices usually are), that finishes. Otherwise the reduced costs
    left are solved bit by bit, most significant first (cost scaling, Edmonds and Karp 1972):
    at each scale the potentials double, the arcs whose reduced cost changes sign are set to
    their bound, and primal–dual repairs the flow, so each scale needs few phases however far
    ``pi`` was from optimal.
    """
    f, pi, done = _primal_dual(n, tail, head, cap, cost, pi, flow, supply, _WARM_PHASES)
    if done:
        return f, pi
    reduced = cost + pi[tail] - pi[head]
    q = np.zeros(n, dtype=np.int64)
    for k in range(int(np.abs(reduced).max()).bit_length(), -1, -1):
        f, q, _ = _primal_dual(n, tail, head, cap, reduced >> k, 2 * q, f, supply, None)
    return f, pi + q


_WARM_PHASES = 12  # price rises tried from the relaxation's prices before scaling


def _primal_dual(
    n: int,
    tail: I64,
    head: I64,
    cap: I64,
    cost: I64,
    pi: I64,
    flow: I64 | None,
    supply: I64 | None,
    budget: int | None,
) -> tuple[I64, I64, bool]:
    """Primal–dual minimum-cost flow from potentials ``pi`` (see :func:`_min_cost`).

    Starting from ``flow`` (zero if ``None``), arcs of negative reduced cost are saturated and
    arcs of positive reduced cost emptied; then, in phases, the excess is sent to the deficits
    by a maximum flow over the arcs of zero reduced cost, and when none is left the potentials
    rise by the (capped) shortest-path distances from the excess. Stops after ``budget`` rises
    (never if ``None``); returns the flow, the potentials and whether the flow is optimal.
    """
    from ortools.graph.python import max_flow

    m = len(tail)
    f = np.zeros(m, dtype=np.int64) if flow is None else flow.copy()
    pi = pi.copy()
    rc = cost + pi[tail] - pi[head]
    unbounded = cap >= _INF
    if (rc[unbounded] < 0).any():
        raise ClearingError("optimal", "internal: start potentials infeasible on an open arc")
    f = np.where(rc < 0, cap, np.where(rc > 0, 0, f))
    base = np.zeros(n, dtype=np.int64) if supply is None else supply
    big = int(np.abs(cap[~unbounded]).sum()) + int(np.abs(base).sum()) + 1
    src, dst = n, n + 1
    rises = 0
    while True:
        excess = base - _out(tail, f, n) + _out(head, f, n)
        pos = np.flatnonzero(excess > 0)
        if not len(pos):
            return f, pi, True
        if budget is not None and rises >= budget:
            return f, pi, False
        neg = np.flatnonzero(excess < 0)
        # 1. push along arcs of zero reduced cost
        fw = np.flatnonzero((rc == 0) & (f < cap))
        bw = np.flatnonzero((rc == 0) & (f > 0))
        solver = max_flow.SimpleMaxFlow()
        a_tail = np.concatenate([tail[fw], head[bw], np.full(len(pos), src), neg])
        a_head = np.concatenate([head[fw], tail[bw], pos, np.full(len(neg), dst)])
        a_cap = np.concatenate([np.minimum(cap[fw] - f[fw], big), f[bw], excess[pos], -excess[neg]])
        solver.add_arcs_with_capacity(a_tail.astype(np.int32), a_head.astype(np.int32), a_cap)
        status = solver.solve(src, dst)
        if status != solver.OPTIMAL:
            raise ClearingError("optimal", f"internal: maximum flow ended with status {status}")
        if solver.optimal_flow() > 0:
            moved = np.asarray(
                solver.flows(np.arange(len(fw) + len(bw), dtype=np.int32)), dtype=np.int64
            )
            f[fw] += moved[: len(fw)]
            f[bw] -= moved[len(fw) :]
            if solver.optimal_flow() == int(excess[pos].sum()):
                continue
            excess = base - _out(tail, f, n) + _out(head, f, n)
            pos = np.flatnonzero(excess > 0)
            neg = np.flatnonzero(excess < 0)
        # 2. raise the potentials by shortest-path distances from the excess
        fw = np.flatnonzero(f < cap)
        bw = np.flatnonzero(f > 0)
        u = np.concatenate([tail[fw], head[bw], np.full(len(pos), src)])
        v = np.concatenate([head[fw], tail[bw], pos])
        w = np.concatenate([rc[fw], -rc[bw], np.zeros(len(pos), dtype=np.int64)])
        dist = _shortest(n + 1, u, v, w, src)[:n]
        reach = dist[neg].min()
        if not np.isfinite(reach) or reach >= _EXACT:
            raise ClearingError("optimal", "internal: no path from an excess to a deficit")
        pi += np.minimum(dist, reach).astype(np.int64)
        rc = cost + pi[tail] - pi[head]
        rises += 1


def _out(ends: I64, f: I64, n: int) -> I64:
    """Σ of ``f`` per node of ``ends``, exactly."""
    total: I64 = np.bincount(ends, weights=f, minlength=n).round().astype(np.int64)
    if int(f.sum()) >= 1 << 52:  # pragma: no cover - flows are lots of one slot
        raise ClearingError("optimal", "internal: flow too large")
    return total


def _shortest(n: int, u: I64, v: I64, w: I64, source: int) -> npt.NDArray[np.float64]:
    """Dijkstra distances from ``source`` over arcs (u, v) of non-negative integer weight w
    (parallel arcs: the lightest counts)."""
    key = u * n + v
    rank = np.lexsort((w, key))
    key, w = key[rank], w[rank]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    key, w = key[first], w[first]
    graph = sp.csr_matrix((w.astype(np.float64), (key // n, key % n)), shape=(n, n))
    dist: npt.NDArray[np.float64] = dijkstra(graph, indices=source)
    return dist


# -- score ------------------------------------------------------------------------------------
def _score_stage(net: _Circulation, flow: I64, face: Bool, arr: BookArrays) -> I64:
    """Maximise Σ rank_k·filled_k over the optimal face (arcs off it keep their flow), rank_k
    being the position of r_k among the orders whose fill the face leaves free (ascending, ties
    by book index): only their order matters, and small weights keep the phases few."""
    free = np.flatnonzero(face)
    orders = net.order[free]
    loose = np.flatnonzero(orders >= 0)
    if not len(loose):
        return flow
    held = np.flatnonzero(~face)
    supply = np.zeros(net.n_nodes, dtype=np.int64)
    supply -= _out(net.tail[held], flow[held], net.n_nodes)
    supply += _out(net.head[held], flow[held], net.n_nodes)
    which = orders[loose]
    by = np.lexsort((which, arr.score_u64[which]))
    cost = np.zeros(len(free), dtype=np.int64)
    cost[loose[by]] = -np.arange(1, len(loose) + 1)
    sub, _ = _min_cost(
        net.n_nodes,
        net.tail[free],
        net.head[free],
        net.cap[free],
        cost,
        np.zeros(net.n_nodes, dtype=np.int64),
        flow[free],
        supply,
    )
    out = flow.copy()
    out[free] = sub
    return out


def _exact_score(net: _Circulation, flow: I64, face: Bool, arr: BookArrays) -> I64:
    """Cancel every cycle of the residual face graph that raises Σ r_k·filled_k, in exact
    integers. Only the face's free order arcs carry a score, so a cycle is a sequence of them
    joined by zero-cost residual paths: a Bellman–Ford over their ends (with reachability as
    zero-cost arcs) finds one, and its simple cycle of negative cost is cancelled."""
    free_orders = np.flatnonzero(face & (net.order >= 0))
    if len(free_orders) < 2 or len(free_orders) > _EXACT_SCORE_ARCS:
        return flow
    r = [int(x) for x in arr.score_u64.tolist()]
    f = flow.copy()
    plain = np.flatnonzero(face & (net.order < 0))
    for _ in range(_EXACT_SCORE_ROUNDS):
        cycle = _negative_cycle(net, f, plain, free_orders, r)
        if cycle is None:
            return f
        arcs, signs = cycle
        room = np.where(signs > 0, net.cap[arcs] - f[arcs], f[arcs])
        f[arcs] += int(room.min()) * signs
    return f  # pragma: no cover - each round gains; the rounds are a safety bound


_EXACT_SCORE_ARCS = 200  # free order arcs up to which the exact search runs
_EXACT_SCORE_ROUNDS = 200  # cycles cancelled at most


def _negative_cycle(
    net: _Circulation, f: I64, plain: I64, free_orders: I64, r: list[int]
) -> tuple[I64, I64] | None:
    """A simple cycle of negative score cost in the residual face graph, as (arcs, directions
    ±1), or ``None`` if there is none."""
    n = net.n_nodes
    fw = plain[f[plain] < net.cap[plain]]
    bw = plain[f[plain] > 0]
    u = np.concatenate([net.tail[fw], net.head[bw]])
    v = np.concatenate([net.head[fw], net.tail[bw]])
    arc = np.concatenate([fw, bw])
    sign = np.concatenate([np.ones(len(fw), np.int64), -np.ones(len(bw), np.int64)])
    key = u * n + v
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    graph = sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
    # residual free order arcs: (from, to, arc, direction, exact cost)
    edges: list[tuple[int, int, int, int, int]] = []
    for a in free_orders.tolist():
        score = r[int(net.order[a])]
        t, h = int(net.tail[a]), int(net.head[a])
        if f[a] < net.cap[a]:
            edges.append((t, h, a, 1, -score))
        if f[a] > 0:
            edges.append((h, t, a, -1, score))
    ends = sorted({e[0] for e in edges} | {e[1] for e in edges})
    pred_of: dict[int, npt.NDArray[np.int32]] = {}
    reach: dict[int, list[int]] = {}
    for x in ends:
        _, pred = breadth_first_order(graph, x, directed=True, return_predecessors=True)
        pred_of[x] = pred
        reach[x] = [y for y in ends if y != x and pred[y] >= 0]
    # Bellman–Ford from a virtual source joined to every end at cost 0, stopping as soon as the
    # predecessor graph closes a cycle (which then has negative cost).
    best = dict.fromkeys(ends, 0)
    back: dict[int, tuple[int, int]] = {}  # node → (edge index, −1) or (−1, reaching end)

    def before(y: int) -> int:
        e, x = back[y]
        return edges[e][0] if e >= 0 else x

    y = -1
    for _ in range(len(ends) + 1):
        changed = False
        for e, (t, h, _a, _s, c) in enumerate(edges):
            if best[t] + c < best[h]:
                best[h] = best[t] + c
                back[h] = (e, -1)
                changed = True
        for x in ends:
            for z in reach[x]:
                if best[x] < best[z]:
                    best[z] = best[x]
                    back[z] = (-1, x)
                    changed = True
        if not changed:
            return None
        y = _on_cycle(back, before)
        if y >= 0:
            break
    if y < 0:  # pragma: no cover - Bellman–Ford closes a cycle within |ends| rounds
        raise ClearingError("optimal", "internal: no cycle in the score search")
    # collect the closed walk (backwards), expanding reachability into residual arcs
    walk_arcs: list[int] = []
    walk_signs: list[int] = []
    start = y
    while True:
        e, x = back[y]
        if e >= 0:
            t, _h, a, s, _c = edges[e]
            walk_arcs.append(a)
            walk_signs.append(s)
            y = t
        else:
            pred = pred_of[x]
            node = y
            while node != x:
                prev = int(pred[node])
                at = int(np.searchsorted(sorted_key, prev * n + node))
                hit = int(by_key[at])
                walk_arcs.append(int(arc[hit]))
                walk_signs.append(int(sign[hit]))
                node = prev
            y = x
        if y == start:
            break
    walk_arcs.reverse()
    walk_signs.reverse()
    return _negative_simple_cycle(net, walk_arcs, walk_signs, r)


def _on_cycle(back: dict[int, tuple[int, int]], before: Callable[[int], int]) -> int:
    """A node on a cycle of the predecessor graph, or −1."""
    stamp: dict[int, int] = {}
    for k, start in enumerate(back):
        y = start
        while y in back and y not in stamp:
            stamp[y] = k
            y = before(y)
        if stamp.get(y) == k:
            return y
    return -1


def _negative_simple_cycle(
    net: _Circulation, arcs: list[int], signs: list[int], r: list[int]
) -> tuple[I64, I64] | None:
    """Split a closed walk of negative cost into simple cycles; return one of negative cost."""
    tail, head, order = net.tail, net.head, net.order

    def ends(a: int, s: int) -> tuple[int, int]:
        return (int(tail[a]), int(head[a])) if s > 0 else (int(head[a]), int(tail[a]))

    def cost(a: int, s: int) -> int:
        k = int(order[a])
        return 0 if k < 0 else -s * r[k]

    stack: list[tuple[int, int]] = []
    position = {ends(arcs[0], signs[0])[0]: 0}
    for a, s in zip(arcs, signs, strict=True):
        stack.append((a, s))
        node = ends(a, s)[1]
        if node in position:
            cut = position[node]
            cycle = stack[cut:]
            if sum(cost(b, t) for b, t in cycle) < 0:
                return (
                    np.array([b for b, _ in cycle], dtype=np.int64),
                    np.array([t for _, t in cycle], dtype=np.int64),
                )
            for b, t in cycle:
                position.pop(ends(b, t)[1], None)
            del stack[cut:]
            position[node] = cut
        else:
            position[node] = len(stack)
    return None  # pragma: no cover - a negative walk holds a negative simple cycle


# -- canonical pairing -------------------------------------------------------------------------
def pair_fills(book: Book, arr: BookArrays, filled: I64) -> fl.Units:
    """The canonical units of fills ``filled`` [lots per order, book indexes]: a compatible
    pairing with the least total fee, found deterministically from the fills alone.

    :func:`clear_volume` returns the pairing of its fills, so a verifier that has the fills can
    recompute the units. Raises :class:`ClearingError` if the fills cannot be paired
    compatibly (or their sells and buys differ in total).

    Notes
    -----
    The pairing is a minimum-cost flow in ``E`` (fees on the climbs and descents) from the
    sells' levels to the buys', solved by primal–dual from zero potentials (every arc of ``E``
    costs a fee ≥ 0), then split by :func:`_units`. Capacities are not involved: the net energy
    on every edge depends on the fills only.
    """
    net = _expand(book, arr)
    if net is None:
        if filled.any():
            raise ClearingError("pairing", "fills on one side only cannot be paired")
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return _pair(net, filled)


def _pair(net: _Circulation, filled: I64) -> fl.Units:
    orders = np.flatnonzero(net.order >= 0)
    amount = filled[net.order[orders]]
    n_levels = net.n_levels
    supply = np.zeros(n_levels, dtype=np.int64)
    sells = orders[net.is_sell[orders]]
    buys = orders[~net.is_sell[orders]]
    np.add.at(supply, net.head[sells], filled[net.order[sells]])
    np.subtract.at(supply, net.tail[buys], filled[net.order[buys]])
    if supply.sum() != 0:
        raise ClearingError("pairing", "the sells' and the buys' fills differ in total")
    inner = slice(0, net.n_inner)
    tail, head = net.tail[inner], net.head[inner]
    try:
        f, _ = _min_cost(
            n_levels,
            tail,
            head,
            net.cap[inner],
            net.welfare[inner],
            np.zeros(n_levels, dtype=np.int64),
            None,
            supply,
        )
    except ClearingError as err:
        raise ClearingError("pairing", "the fills cannot be paired compatibly") from err
    flow = np.zeros(len(net.tail), dtype=np.int64)
    flow[inner] = f
    flow[orders] = amount
    return _units(net, flow)


# -- units and certificate ------------------------------------------------------------------------
def _pairing_network(net: _Circulation, flow: I64) -> tuple[fl.Network, I64]:
    """``E`` with the sell arcs from a source and the buy arcs into a sink."""
    n_levels = net.n_levels
    s, t = n_levels, n_levels + 1
    orders = net.order >= 0
    keep = np.flatnonzero(np.arange(len(net.tail)) < net.n_inner)
    sell_arcs = np.flatnonzero(orders & net.is_sell)
    buy_arcs = np.flatnonzero(orders & ~net.is_sell)
    arcs = np.concatenate([keep, sell_arcs, buy_arcs])
    tail = np.concatenate([net.tail[keep], np.full(len(sell_arcs), s), net.tail[buy_arcs]])
    head = np.concatenate([net.head[keep], net.head[sell_arcs], np.full(len(buy_arcs), t)])
    supply = int(flow[sell_arcs].sum())
    network = fl.Network(n_levels + 2, tail, head, net.cap[arcs], net.order[arcs], s, t, supply)
    return network, flow[arcs]


def _units(net: _Circulation, flow: I64) -> fl.Units:
    """Split the flow in ``E`` into units, one sell and one buy each.

    Every arc of ``E`` raises the local level, so the level nodes taken in increasing level
    form a topological order. Each grid node's chain keeps a first-in-first-out queue of the
    lots on it: at a level node the lots arriving (its sells in book order, then the lots
    climbing or descending into it, in the order they were sent) join the queue behind those
    from below, then serve the node's buys in book order, then its climbs and descents in arc
    order; what is left moves up the chain. Units of one pair are added up; the result is
    sorted by (sell, buy).
    """
    nl = net.n_levels
    tail, head, order = net.tail, net.head, net.order
    carrying = flow > 0
    orders = order >= 0
    sell_arcs = np.flatnonzero(orders & net.is_sell & carrying)
    buy_arcs = np.flatnonzero(orders & ~net.is_sell & carrying)
    inner = slice(0, net.n_inner)
    moves = np.flatnonzero(
        carrying[inner] & (net.level_node[tail[inner]] != net.level_node[head[inner]])
    )
    if not len(sell_arcs):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()

    def by_node(arcs: I64, ends: I64) -> dict[int, list[int]]:
        grouped: dict[int, list[int]] = {}
        for a, x in zip(arcs.tolist(), ends[arcs].tolist(), strict=True):
            grouped.setdefault(x, []).append(a)
        return grouped

    sells_at = by_node(sell_arcs, head)
    buys_at = by_node(buy_arcs, tail)
    moves_from = by_node(moves, tail)
    f = flow.tolist()
    kind = order.tolist()
    heads = head.tolist()
    node_of = net.level_node.tolist()
    inbox: dict[int, list[list[int]]] = {}
    queues: dict[int, deque[list[int]]] = {}
    out_sell: list[int] = []
    out_buy: list[int] = []
    out_lots: list[int] = []
    topo = np.lexsort((np.arange(nl), net.level)).tolist()
    for x in topo:
        queue = queues.setdefault(node_of[x], deque())
        for a in sells_at.get(x, ()):
            queue.append([kind[a], f[a]])
        queue.extend(inbox.pop(x, ()))
        for a in buys_at.get(x, ()):
            need = f[a]
            while need:
                piece = queue[0]
                take = min(need, piece[1])
                out_sell.append(piece[0])
                out_buy.append(kind[a])
                out_lots.append(take)
                need -= take
                piece[1] -= take
                if not piece[1]:
                    queue.popleft()
        for a in moves_from.get(x, ()):
            need = f[a]
            sent = inbox.setdefault(heads[a], [])
            while need:
                piece = queue[0]
                take = min(need, piece[1])
                sent.append([piece[0], take])
                need -= take
                piece[1] -= take
                if not piece[1]:
                    queue.popleft()
    if inbox or any(queues.values()):
        raise ClearingError("optimal", "internal: the flow in E does not balance")
    sell = np.array(out_sell, dtype=np.int64)
    buy = np.array(out_buy, dtype=np.int64)
    lots = np.array(out_lots, dtype=np.int64)
    rank = np.lexsort((buy, sell))
    sell, buy, lots = sell[rank], buy[rank], lots[rank]
    first = np.flatnonzero(np.r_[True, (sell[1:] != sell[:-1]) | (buy[1:] != buy[:-1])])
    return sell[first], buy[first], np.add.reduceat(lots, first)


def _trivial_certificate(book: Book, arr: BookArrays) -> dict[str, Any]:
    """Thresholds covering nothing, for a book with no sell or no buy."""
    grid = book.grid
    sells = arr.price[arr.is_sell]
    # ask < floor covers no sell (and there is no buy to cover); with no sell, nothing at all
    floor: int | None = int(sells.min()) if len(sells) else None
    return _thresholds(grid.ids, [floor] * grid.size, [floor] * grid.size)


def _thresholds(
    ids: tuple[str, ...], up: list[int | None], down: list[int | None]
) -> dict[str, Any]:
    return {
        "kind": "volume-thresholds",
        "up_sen_per_kwh": dict(zip(ids, up, strict=True)),
        "down_sen_per_kwh": dict(zip(ids, down, strict=True)),
    }


def _certificate(book: Book, net: _Circulation, flow: I64) -> dict[str, Any]:
    """Price thresholds from the minimum cut of the maximum flow (see the module notes).

    At a mixed node ``w`` the reached levels are those at or above its lowest reached one, so
    σ_w, the lowest reached *sell* level, is a threshold for the sells attached at ``w`` and δ_w,
    the lowest reached *buy* level, one for its buys. ``up`` is σ carried down to each node (at
    its level there); ``down`` is the least of δ carried down, ``up`` and the parent's ``down``
    plus the fee — every buy at or above each of these is reached, so the cover is unchanged,
    and the constraints that :func:`peerpower.market.verify` checks hold by construction.
    """
    grid = book.grid
    network, f = _pairing_network(net, flow)
    fw, bw = f < network.cap, f > 0
    u = np.concatenate([network.tail[fw], network.head[bw]])
    v = np.concatenate([network.head[fw], network.tail[bw]])
    size = network.n_nodes
    graph = sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(size, size))
    found = breadth_first_order(graph, network.source, directed=True, return_predecessors=False)
    reached = np.zeros(size, dtype=bool)
    reached[found] = True
    if reached[network.sink]:
        raise ClearingError("optimal", "internal: the volume flow is not maximal")
    n = grid.size
    none = np.iinfo(np.int64).max
    sigma = np.full(n, none, dtype=np.int64)
    delta = np.full(n, none, dtype=np.int64)
    at = reached[: net.n_levels]
    hit = np.flatnonzero(at & net.sell_level)
    np.minimum.at(sigma, net.level_node[hit], net.level[hit])
    hit = np.flatnonzero(at & net.buy_level)
    np.minimum.at(delta, net.level_node[hit], net.level[hit])
    parent = grid.parent
    fee = grid.fee_sen_per_kwh
    dist = net.dist.tolist()
    low = net.low.tolist()
    has_sells = net.has_sells.tolist()
    has_buys = net.has_buys.tolist()
    sig, dlt = sigma.tolist(), delta.tolist()
    up: list[int | None] = [None] * n
    down: list[int | None] = [None] * n
    for x in grid.order:  # preorder: parents first
        w = low[x]
        below = dist[x] - dist[w] if w >= 0 else 0
        if w >= 0 and has_sells[x] and sig[w] != none:
            up[x] = sig[w] - below
        cands: list[int] = []
        if w >= 0 and has_buys[x] and dlt[w] != none:
            cands.append(dlt[w] + below)
        up_x = up[x]
        if up_x is not None:
            cands.append(up_x)
        p = parent[x]
        down_p = down[p] if p >= 0 else None
        if down_p is not None:
            cands.append(down_p + fee[x])
        down[x] = min(cands) if cands else None
    return _thresholds(grid.ids, up, down)
