"""Optimal clearing for a shared goal (DESIGN.md §3; the seeds' optimal clearing).

Choose energies ``x_ij`` (whole lots) on compatible pairs to best meet the market's goal —
``volume`` (then welfare), ``welfare`` (then volume) or ``maxmin`` (then welfare) — and break
remaining ties by the seeded score Σ r_k · filled_k. Orders that cross an earlier order of their
own participant are left out first (self-trade prevention, :mod:`.stp`), so no participant is on
both sides of a compatible pair.

Pricing (:mod:`.pricing`): under ``nodal`` (the default for ``welfare``) every sale is paid its
node's price and every purchase pays its node's, the competitive equilibrium of the book; under
``midpoint`` each balanced unit is priced at ``ask + floor(spread / 2)``. The welfare optimum's
fills are paired canonically (:mod:`.pairing`).

Solvers
-------
* ``welfare`` on the grid tree is a min-cost flow with O(orders + edges) arcs: sells enter at
  their node at cost ``ask``, buys leave at ``−bid``, edges cost their fee both ways and carry
  their capacity. Any optimal flow splits into compatible pairs: with optimal node prices π,
  every positive-flow path from i to j has ``ask_i ≤ π(n_i)``, ``π(m_j) − π(n_i) ≥ fee_ij`` and
  ``π(m_j) ≤ bid_j``. The node prices are the LP certificate.
* ``volume`` ignores prices, so compatibility must be built in: a compressed price-expanded
  network, one min-cost circulation for volume then welfare, capacities as arcs between the grid
  components they separate (:mod:`.volume`). A minimum cut gives price thresholds per node, the
  certificate (without capacities).
* ``maxmin`` (:func:`.pairwise.clear_maxmin`): an LP bound by column generation over
  tree-ordered partner lists, a rounded and locally improved clearing, and on books of at most
  600 compatible pairs an exact MILP (SciPy's HiGHS) started from it, each stage stopped after
  ``maxmin_budget`` branch-and-bound nodes (a work limit, never wall time). Its fills are paired
  by ``maxmin``'s own rule (:func:`.canon.maxmin_pairing`), and clearings are compared by what
  their fills are worth under it.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import ClearingError
from peerpower.market import flow as fl
from peerpower.market import pairwise as pw
from peerpower.market.objective import evaluate, objective_of
from peerpower.market.orders import Book, BookArrays, book_arrays
from peerpower.market.pairing import midpoint_units, tree_units
from peerpower.market.pricing import edge_flows, nodal_prices
from peerpower.market.result import (
    GOALS,
    ClearingResult,
    Goal,
    Pricing,
    Totals,
    Trade,
    pricings_for,
    totals_from_columns,
    trades_from_columns,
)
from peerpower.market.stp import prevent_self_trade

I64 = npt.NDArray[np.int64]


def clear_optimal(
    book: Book,
    goal: Goal = "welfare",
    pricing: Pricing | None = None,
    maxmin_budget: int = pw.DEFAULT_BUDGET_NODES,
) -> ClearingResult:
    """Clear ``book`` optimally for ``goal`` and price it by ``pricing`` (default ``nodal`` for
    ``welfare``, ``midpoint`` otherwise); see the module notes. Orders that cross an earlier
    order of their participant are left out first (:mod:`peerpower.market.stp`)."""
    if goal not in GOALS:
        raise ClearingError("goal", f"unknown goal {goal!r}; use volume, welfare or maxmin")
    rule = check_pricing("optimal", goal, pricing)
    book, excluded = prevent_self_trade(book)
    arr = book_arrays(book)
    live = _tradable(arr)
    certificate: dict[str, Any] | None = None
    bound: dict[str, Any] | None = None
    offered: dict[str, int] | None = None  # maxmin: computed once from the pairs
    # The networks take every order, tradable or not, so that their certificates bound the
    # whole book.
    everyone = np.ones(len(arr.lots), dtype=bool) if live.any() else live
    if goal == "welfare":
        # Under nodal pricing the node prices are the certificate.
        filled, certificate = _welfare_flow(
            book, arr, everyone, arr.score_u64, certify=rule == "midpoint"
        )
        if rule == "nodal":
            units = tree_units(book.grid, arr.is_sell, arr.node, filled)
        else:
            paired = midpoint_units(book.grid, arr.is_sell, arr.node, arr.price, filled)
            assert paired is not None  # a welfare optimum never needs energy both ways
            units = paired
    elif goal == "volume":
        # Imported here: loading SciPy's graph routines takes time cda, call and welfare skip.
        from peerpower.market.volume import clear_volume

        units, certificate = clear_volume(book, arr)
        units = _canonical(book, arr, units)
    elif goal == "maxmin" and live.any():
        got = pw.clear_maxmin(book, arr, live, maxmin_budget)
        units = _unit_arrays(got.units)
        offered, bound = got.offered, got.bound
    else:  # maxmin with nothing to trade
        units = _unit_arrays([])
    trades, totals, node_prices = priced(book, arr, units, rule)
    sell, buy, lots = units
    e = (lots * book.lot_wh).tolist()
    if goal == "maxmin":
        objective = evaluate(book, trades, goal, offered=offered, scores=list(arr.score))
    else:
        # Σ r_k · filled_k in Python integers: exact whatever the size of the book.
        r = arr.score_u64
        score = sum(map(operator.mul, r[sell].tolist(), e)) + sum(
            map(operator.mul, r[buy].tolist(), e)
        )
        objective = objective_of(goal, totals.volume_wh, totals.welfare_microyen, score)
    return ClearingResult(
        "optimal",
        trades,
        totals,
        goal=goal,
        objective=objective,
        certificate=certificate,
        bound=bound,
        pricing=rule,
        node_prices=node_prices,
        excluded=excluded,
    )


def priced(
    book: Book, arr: BookArrays, units: fl.Units, rule: Pricing
) -> tuple[tuple[Trade, ...], Totals, dict[str, int] | None]:
    """The trades of ``units`` priced by ``rule`` (``nodal`` or ``midpoint``), their totals and,
    under ``nodal``, the node prices."""
    sell, buy, lots = units
    fee = book.grid.fees_between(arr.node[sell], arr.node[buy])
    ask, bid = arr.price[sell], arr.price[buy]
    node_prices: dict[str, int] | None = None
    if rule == "nodal":
        pi = _nodal(book, arr, units)
        price, buyer_price = pi[arr.node[sell]], pi[arr.node[buy]]
        node_prices = dict(zip(book.grid.ids, pi.tolist(), strict=True))
    else:
        price = ask + (bid - fee - ask) // 2  # midpoint_price, on arrays
        buyer_price = price + fee
    energy = lots * book.lot_wh
    trades = _trades(book, arr, sell, buy, energy, price, fee, buyer_price)
    rent = (buyer_price - price - fee).tolist()
    totals = totals_from_columns(energy.tolist(), ask.tolist(), bid.tolist(), fee.tolist(), rent)
    return trades, totals, node_prices


def check_pricing(mechanism: str, goal: str | None, pricing: str | None) -> Pricing:
    """The pricing rule to use: ``pricing``, or the mechanism's default; raises
    :class:`ClearingError` naming ``pricing`` if the mechanism (and goal) does not define it."""
    allowed = pricings_for(mechanism, goal)
    if pricing is None:
        return allowed[0]
    for known in allowed:
        if pricing == known:
            return known
    what = f"{mechanism}/{goal}" if goal else mechanism
    raise ClearingError(
        "pricing",
        f"{pricing!r} is not a pricing rule {what} defines; use {' or '.join(allowed)}",
    )


def _canonical(book: Book, arr: BookArrays, units: fl.Units) -> fl.Units:
    """``units`` re-paired by the canonical midpoint pairing of their fills
    (:func:`canonical_midpoint`), which keeps the volume, the welfare (it pays the least fee
    the fills allow) and the score."""
    sell, buy, lots = units
    filled = np.zeros(len(arr.lots), dtype=np.int64)
    np.add.at(filled, sell, lots)
    np.add.at(filled, buy, lots)
    return canonical_midpoint(book, arr, filled)


def canonical_midpoint(book: Book, arr: BookArrays, filled: I64) -> fl.Units:
    """The one pairing ``midpoint`` allows for fills ``filled`` [lots per order]: the bottom-up
    matching of :func:`.pairing.midpoint_units` where energy can cross every edge one way;
    otherwise (some compatible pairings need energy across an edge both ways, about one small
    random book in twenty under ``volume``) the least-fee pairing that
    :func:`.volume.pair_fills` computes from the fills alone. Raises :class:`ClearingError`
    (field ``pairing``) if no compatible pairing exists."""
    paired = midpoint_units(book.grid, arr.is_sell, arr.node, arr.price, filled)
    if paired is not None:
        return paired
    from peerpower.market.volume import pair_fills

    return pair_fills(book, arr, filled)


def _nodal(book: Book, arr: BookArrays, units: fl.Units) -> I64:
    """The rule's node prices of a welfare-optimal clearing (:mod:`.pricing`)."""
    sell, buy, lots = units
    flows = edge_flows(book, arr, sell, buy, lots)
    pi = nodal_prices(book, arr, flows)
    if pi is None:
        raise ClearingError("optimal", "internal: the welfare clearing has no equilibrium prices")
    return pi


# -- shared helpers ----------------------------------------------------------------------------
def _tradable(arr: BookArrays) -> npt.NDArray[np.bool_]:
    """Orders that could trade at all: fees are never negative, so a sell above every bid (or a
    buy below every ask) has no compatible counterparty."""
    sells, buys = arr.is_sell, ~arr.is_sell
    if not sells.any() or not buys.any():
        return np.zeros(len(arr.is_sell), dtype=bool)
    max_bid = arr.price[buys].max()
    min_ask = arr.price[sells].min()
    live: npt.NDArray[np.bool_] = np.where(sells, arr.price <= max_bid, arr.price >= min_ask)
    return live


def certifiable(book: Book, goal: str) -> bool:
    """Whether :func:`clear_optimal` proves its clearing of ``book`` optimal: ``welfare`` always
    (node prices under ``nodal``, a certificate under ``midpoint``) and ``volume`` without edge
    capacities (which the exact MILP clears), once self-trade prevention has left out crossing
    orders. A book with no sell or no buy that could trade needs no proof: nothing but the
    empty clearing is valid."""
    if goal not in ("welfare", "volume") or (goal == "volume" and book.grid.has_capacities):
        return False
    reduced, _ = prevent_self_trade(book)
    return bool(_tradable(book_arrays(reduced)).any())


def _trades(
    book: Book,
    arr: BookArrays,
    sell: I64,
    buy: I64,
    energy: I64,
    price: I64,
    fee: I64,
    buyer_price: I64,
) -> tuple[Trade, ...]:
    ids = book.ids
    names = arr.participants
    return trades_from_columns(
        [ids[k] for k in sell.tolist()],
        [ids[k] for k in buy.tolist()],
        [names[p] for p in arr.participant[sell].tolist()],
        [names[p] for p in arr.participant[buy].tolist()],
        energy.tolist(),
        price.tolist(),
        fee.tolist(),
        buyer_price.tolist(),
    )


def _unit_arrays(units: list[tuple[int, int, int]]) -> fl.Units:
    table = np.array(units, dtype=np.int64).reshape(-1, 3)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy()


# -- welfare: min-cost flow on the tree ---------------------------------------------------------
def _welfare_flow(
    book: Book,
    arr: BookArrays,
    live: npt.NDArray[np.bool_],
    priority: npt.NDArray[np.uint64],
    certify: bool = False,
    used: I64 | None = None,
) -> tuple[I64, dict[str, Any] | None]:
    """Lots filled per order by the welfare optimum over the ``live`` orders (then volume, then
    the highest Σ priority × filled), and, if ``certify``, the node-price certificate that
    ``midpoint`` results carry. ``used`` [lots per grid node]: net lots that trades made
    already send up each node's edge; the flow then keeps every capacitated edge's total
    within its capacity (``used`` itself must be)."""
    grid = book.grid
    n = grid.size
    s_node, t_node = n, n + 1
    idx_s = np.flatnonzero(live & arr.is_sell)
    idx_b = np.flatnonzero(live & ~arr.is_sell)
    filled = np.zeros(len(arr.lots), dtype=np.int64)
    if not len(idx_s) or not len(idx_b):
        return filled, None
    total = int(arr.lots[idx_s].sum())
    big = total + 2
    child = np.array([v for v in range(n) if grid.parent[v] >= 0], dtype=np.int64)
    par = np.array([grid.parent[v] for v in child.tolist()], dtype=np.int64)
    edge_cap = np.array(
        [
            grid.capacity_wh[v] // book.lot_wh if grid.capacity_wh[v] >= 0 else big
            for v in child.tolist()
        ],
        dtype=np.int64,
    )
    edge_fee = np.array([grid.fee_sen_per_kwh[v] for v in child.tolist()], dtype=np.int64)
    up_cap, down_cap = edge_cap, edge_cap
    if used is not None:
        capped = np.array([grid.capacity_wh[v] >= 0 for v in child.tolist()], dtype=bool)
        up_cap = np.where(capped, edge_cap - used[child], big)
        down_cap = np.where(capped, edge_cap + used[child], big)
        if (up_cap < 0).any() or (down_cap < 0).any():
            raise ValueError("used: the trades made already exceed a capacity")
    ne = len(child)
    ns, nb = len(idx_s), len(idx_b)
    tail = np.concatenate([child, par, np.full(ns, s_node), arr.node[idx_b], [s_node]])
    head = np.concatenate([par, child, arr.node[idx_s], np.full(nb, t_node), [t_node]])
    cap = np.concatenate([up_cap, down_cap, arr.lots[idx_s], arr.lots[idx_b], [total + 1]])
    order = np.concatenate([np.full(2 * ne, -1), idx_s, idx_b, [-1]]).astype(np.int64)
    # One more unit than the sells can carry forces flow through the bypass, so the source and
    # the sink end up with equal potentials and the node prices read off directly.
    net = fl.Network(n + 2, tail, head, cap, order, s_node, t_node, total + 1)
    welfare = np.concatenate([edge_fee, edge_fee, arr.price[idx_s], -arr.price[idx_b], [0]]).astype(
        np.int64
    )
    volume = np.zeros(len(tail), dtype=np.int64)
    volume[2 * ne : 2 * ne + ns] = -1
    score = fl.score_costs(net, priority, book.lot_wh)
    flow = fl.lexicographic(net, [welfare, volume, score])
    # Opposite flows on one edge cancel at no cost (fees are then zero): keep the net only.
    up, down = flow[:ne].copy(), flow[ne : 2 * ne].copy()
    both = np.minimum(up, down)
    flow[:ne] = up - both
    flow[ne : 2 * ne] = down - both
    filled[idx_s] = flow[2 * ne : 2 * ne + ns]
    filled[idx_b] = flow[2 * ne + ns : 2 * ne + ns + nb]
    if not certify:
        return filled, None
    return filled, _welfare_certificate(book, net, flow, welfare, child)


def welfare_units(
    book: Book, arr: BookArrays, live: npt.NDArray[np.bool_], used: I64 | None = None
) -> fl.Units:
    """Units of the welfare optimum over the ``live`` orders, canonically paired; ``used``:
    see :func:`_welfare_flow`."""
    filled, _ = _welfare_flow(book, arr, live, arr.score_u64, used=used)
    return tree_units(book.grid, arr.is_sell, arr.node, filled)


def _welfare_certificate(
    book: Book, net: fl.Network, flow: I64, cost: I64, child: I64
) -> dict[str, Any]:
    """Node prices π [sen/kWh] and signed congestion rents ρ on capacitated edges.

    With u_i = max(0, π(n_i) − ask_i), v_j = max(0, bid_j − π(m_j)) and |ρ_e| on each
    capacity, they form a feasible dual of the pairwise welfare LP; verify() checks that its
    value equals the welfare of the trades, which proves the clearing optimal.
    """
    grid = book.grid
    d = fl.potentials(net, flow, cost)
    price = d[: grid.size] - d[net.source]
    prices = {grid.ids[v]: int(price[v]) for v in range(grid.size)}
    rents: dict[str, int] = {}
    for c in child.tolist():
        if grid.capacity_wh[c] < 0:
            continue
        delta = int(price[grid.parent[c]] - price[c])
        fee = grid.fee_sen_per_kwh[c]
        rho = min(max(0, delta - fee), delta + fee)
        if rho:
            rents[grid.ids[c]] = rho
    return {"kind": "welfare-node-prices", "price_sen_per_kwh": prices, "rent_sen_per_kwh": rents}
