"""Check a clearing result without trusting its author (DESIGN.md §3, issue 15).

Anyone can run :func:`verify` on a book and a result: it checks every unit (orders exist and
are on the right side, whole lots, no self-trade, the fee of the real grid path, compatibility,
prices within both limits), every order's fill, every edge capacity, the totals, and for each
mechanism its own rule: a call auction's and a continuous auction's exact replay; an optimal
clearing's pricing — nodal prices that are the book's competitive equilibrium and the rule's
point of it, or midpoint prices — its canonical pairing, its objective values and — when it
carries one — its optimality certificate, checked in time linear in the book. For ``call`` and
``optimal``, an order that crosses an earlier order of its own participant may not trade
(self-trade prevention, rule ``self-cross``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peerpower.errors import ClearingError, InvalidInput, InvalidResult
from peerpower.market.objective import evaluate, midpoint_price
from peerpower.market.orders import Book, Side, book_arrays
from peerpower.market.pairing import tree_units
from peerpower.market.pricing import edge_flows, equilibrium_problems, price_bounds
from peerpower.market.result import (
    GOALS,
    MECHANISMS,
    PRICINGS,
    ClearingResult,
    Objective,
    Totals,
    Trade,
    pricings_for,
    totals_of,
)
from peerpower.market.stp import prevent_self_trade

MAX_PROBLEMS = 20


@dataclass(slots=True)
class Verification:
    """Outcome of :func:`verify`.

    ``problems`` lists ``(rule, message)`` for each broken rule (the first ones, at most 20);
    ``proven_optimal`` is True when an optimality certificate checked out, False when one was
    given and failed, None when none was given.
    """

    problems: list[tuple[str, str]] = field(default_factory=list)
    objective: Objective | None = None
    proven_optimal: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, rule: str, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((rule, message))

    def raise_first(self) -> None:
        if self.problems:
            rule, message = self.problems[0]
            raise InvalidResult(rule, message)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [{"rule": r, "message": m} for r, m in self.problems],
            "objective": None if self.objective is None else self.objective.to_json(),
            "proven_optimal": self.proven_optimal,
        }


def verify(book: Book, result: ClearingResult) -> Verification:
    """Check ``result`` against ``book``; see the module notes."""
    out = Verification()
    if result.mechanism not in MECHANISMS:
        out.fail("mechanism", f"unknown mechanism {result.mechanism!r}")
        return out
    allowed = pricings_for(result.mechanism, result.goal)
    if result.pricing not in allowed:
        out.fail(
            "pricing",
            f"{result.mechanism}/{result.goal} prices by {' or '.join(allowed)}, "
            f"not {result.pricing!r}",
        )
        return out
    if result.mechanism != "cda":
        book = _without_self_crossing(book, result, out)
        if out.problems:
            return out
    nodal = result.pricing == "nodal" and (
        result.mechanism == "optimal" or result.node_prices is not None or result.trades
    )
    node_price = _node_prices(book, result, out) if nodal else None
    if out.problems:
        return out
    grid = book.grid
    orders = book.orders
    lot = book.lot_wh
    filled = [0] * len(orders)
    up_flow = [0] * grid.size
    for k, t in enumerate(result.trades):
        where = f"trades[{k}]"
        s = book.by_id.get(t.sell_order)
        b = book.by_id.get(t.buy_order)
        if s is None or b is None:
            missing = t.sell_order if s is None else t.buy_order
            out.fail("order-exists", f"{where}: order {missing!r} is not in the book")
            continue
        so, bo = orders[s], orders[b]
        if so.side is not Side.SELL or bo.side is not Side.BUY:
            out.fail("side", f"{where}: {so.id!r} must be a sell and {bo.id!r} a buy")
            continue
        if t.seller != so.participant or t.buyer != bo.participant:
            out.fail(
                "participant",
                f"{where}: seller/buyer {t.seller!r}/{t.buyer!r} do not own the orders "
                f"({so.participant!r}/{bo.participant!r})",
            )
        if so.participant == bo.participant:
            out.fail("self-trade", f"{where}: participant {so.participant!r} trades with itself")
        if t.energy_wh <= 0 or t.energy_wh % lot:
            out.fail("lot", f"{where}: {t.energy_wh} Wh is not a whole positive number of lots")
        u, v = grid.index[so.node], grid.index[bo.node]
        fee = grid.fee(u, v)
        if t.fee_sen_per_kwh != fee:
            out.fail("fee", f"{where}: fee {t.fee_sen_per_kwh} sen/kWh, the grid path costs {fee}")
        ask, bid = so.price_sen_per_kwh, bo.price_sen_per_kwh
        price, paid = t.price_sen_per_kwh, t.buyer_price_sen_per_kwh
        if bid - fee < ask:
            out.fail(
                "compatible",
                f"{where}: bid {bid} − fee {fee} is below ask {ask} sen/kWh",
            )
        elif node_price is not None:
            at_s, at_b = node_price[u], node_price[v]
            if price != at_s or paid != at_b:
                out.fail(
                    "pricing",
                    f"{where}: prices {price}/{paid} sen/kWh, the nodes "
                    f"{so.node!r}/{bo.node!r} are priced {at_s}/{at_b}",
                )
            elif not (ask <= price and paid <= bid and paid - price >= fee):
                out.fail(
                    "pricing",
                    f"{where}: seller's price {price} below ask {ask}, buyer's {paid} above bid "
                    f"{bid}, or their difference below the fee {fee} sen/kWh",
                )
        elif paid != price + fee:
            out.fail(
                "price",
                f"{where}: the buyer pays {paid}, not the price {price} + fee {fee} sen/kWh",
            )
        elif not ask <= price <= bid - fee:
            out.fail(
                "price",
                f"{where}: price {price} is outside [{ask}, {bid - fee}] sen/kWh",
            )
        elif result.pricing == "midpoint" and price != midpoint_price(ask, bid, fee):
            out.fail(
                "midpoint",
                f"{where}: price {price} is not the midpoint "
                f"{midpoint_price(ask, bid, fee)} sen/kWh",
            )
        filled[s] += t.energy_wh
        filled[b] += t.energy_wh
        if grid.has_capacities:
            up, down = grid.path(u, v)
            for e in up:
                up_flow[e] += t.energy_wh
            for e in down:
                up_flow[e] -= t.energy_wh
    for k, o in enumerate(orders):
        if filled[k] > o.energy_wh:
            out.fail("fill", f"order {o.id!r} filled {filled[k]} Wh of its {o.energy_wh} Wh")
    for e in range(grid.size):
        cap = grid.capacity_wh[e]
        if cap >= 0 and abs(up_flow[e]) > cap:
            out.fail(
                "capacity",
                f"edge {grid.ids[e]!r}→parent: net {up_flow[e]} Wh exceeds ±{cap} Wh",
            )
    if out.problems:
        if nodal and any(rule == "pricing" for rule, _ in out.problems):
            out.proven_optimal = False  # the prices are no equilibrium: no proof
        return out
    limit = {o.id: o.price_sen_per_kwh for o in orders}
    totals = totals_of(result.trades, limit)
    if totals != result.totals:
        out.fail("totals", f"totals are {_show(result.totals)}, recomputed {_show(totals)}")
    if result.mechanism == "optimal":
        _verify_pairing(book, result, out)
        if nodal:  # (a call auction's prices are checked by replaying it)
            _verify_equilibrium(book, result, out)
        _verify_optimal(book, result, out)
    else:
        _verify_replay(book, result, out)
    return out


def _without_self_crossing(book: Book, result: ClearingResult, out: Verification) -> Book:
    """The book after self-trade prevention; no trade may use an order it leaves out, and the
    result must list exactly those (rule ``self-cross``)."""
    reduced, excluded = prevent_self_trade(book)
    if not excluded and not result.excluded:
        return book
    if tuple(result.excluded) != excluded:
        out.fail(
            "self-cross",
            f"the result leaves out {list(result.excluded)[:5]!r}, self-trade prevention leaves "
            f"out {list(excluded)[:5]!r} (order, the earlier order it crosses)",
        )
    gone = dict(excluded)
    for k, t in enumerate(result.trades):
        for oid in (t.sell_order, t.buy_order):
            if oid in gone:
                out.fail(
                    "self-cross",
                    f"trades[{k}]: order {oid!r} crosses its participant's earlier order "
                    f"{gone[oid]!r} and may not trade",
                )
    return reduced


def _node_prices(book: Book, result: ClearingResult, out: Verification) -> list[int] | None:
    """The result's node prices in grid order, or ``None`` after naming what is wrong."""
    raw = result.node_prices
    grid = book.grid
    if raw is None:
        out.fail("pricing", "a nodal result must carry node_prices_sen_per_kwh")
        return None
    unknown = sorted(set(raw) - set(grid.ids))
    if unknown:
        out.fail("pricing", f"node_prices_sen_per_kwh: unknown node {unknown[0]!r}")
        return None
    values: list[int] = []
    for name in grid.ids:
        value = raw.get(name)
        if type(value) is not int:
            out.fail(
                "pricing", f"node_prices_sen_per_kwh.{name}: must be an integer, got {value!r}"
            )
            return None
        values.append(value)
    return values


def _units_of(book: Book, result: ClearingResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    by_id = book.by_id
    sell = np.array([by_id[t.sell_order] for t in result.trades], dtype=np.int64)
    buy = np.array([by_id[t.buy_order] for t in result.trades], dtype=np.int64)
    lots = np.array([t.energy_wh // book.lot_wh for t in result.trades], dtype=np.int64)
    return sell, buy, lots


def _verify_pairing(book: Book, result: ClearingResult, out: Verification) -> None:
    """The units must be the canonical pairing of the result's fills (:mod:`.pairing`): the
    tree's flow decomposition under ``nodal``, :func:`.optimal.canonical_midpoint` under
    ``midpoint``, and for ``maxmin`` its own rule (:func:`.canon.maxmin_pairing`)."""
    arr = book_arrays(book)
    sell, buy, lots = _units_of(book, result)
    filled = np.zeros(len(arr.lots), dtype=np.int64)
    np.add.at(filled, sell, lots)
    np.add.at(filled, buy, lots)
    if result.pricing == "nodal":
        canonical = tree_units(book.grid, arr.is_sell, arr.node, filled)
    elif result.goal == "maxmin":
        from peerpower.market.canon import maxmin_units

        try:
            canonical = maxmin_units(book, arr, filled)
        except ClearingError as err:
            out.fail("pairing", f"the fills cannot be paired: {err.message}")
            return
    else:
        from peerpower.market.optimal import canonical_midpoint

        try:
            canonical = canonical_midpoint(book, arr, filled)
        except ClearingError as err:
            out.fail("pairing", f"the fills cannot be paired: {err.message}")
            return
    want_s, want_b, want_n = canonical
    given = sorted(zip(sell.tolist(), buy.tolist(), lots.tolist(), strict=True))
    want = list(zip(want_s.tolist(), want_b.tolist(), want_n.tolist(), strict=True))
    if given != want:
        first = next(
            (k for k, (a, b) in enumerate(zip(given, want, strict=False)) if a != b),
            min(len(given), len(want)),
        )
        ids = book.ids
        shown = (
            f"({ids[given[first][0]]!r} → {ids[given[first][1]]!r})"
            if first < len(given)
            else "none"
        )
        out.fail(
            "pairing",
            f"the units are not the canonical pairing of their fills: unit {first} by (sell, "
            f"buy) is {shown}; {len(given)} units given, {len(want)} by the rule",
        )


def _verify_equilibrium(book: Book, result: ClearingResult, out: Verification) -> None:
    """Nodal prices must be a competitive equilibrium of the clearing — which proves it
    welfare-optimal — and the rule's point of the equilibrium prices (:mod:`.pricing`)."""
    arr = book_arrays(book)
    grid = book.grid
    sell, buy, lots = _units_of(book, result)
    flows = edge_flows(book, arr, sell, buy, lots)
    assert result.node_prices is not None
    given = np.array([result.node_prices[name] for name in grid.ids], dtype=np.int64)
    problems = equilibrium_problems(book, arr, flows, given)
    if problems:
        for text in problems:
            out.fail("pricing", f"not a competitive equilibrium: {text}")
        out.proven_optimal = False
        return
    bounds = price_bounds(book, arr, flows)
    assert bounds is not None  # the given prices satisfy the constraints
    lo, hi = bounds
    rule = (lo + hi) // 2
    wrong = np.flatnonzero(rule != given)
    if len(wrong):
        v = int(wrong[0])
        out.fail(
            "pricing",
            f"node {grid.ids[v]!r} is priced {int(given[v])}; the equilibrium prices there are "
            f"{int(lo[v])}–{int(hi[v])} sen/kWh and the rule takes {int(rule[v])}",
        )
    out.proven_optimal = True


def _show(t: Totals) -> str:
    return f"volume {t.volume_wh} Wh, welfare {t.welfare_microyen} µ¥, fees {t.fees_microyen} µ¥"


def _verify_replay(book: Book, result: ClearingResult, out: Verification) -> None:
    from peerpower.errors import ClearingError
    from peerpower.market.clear import clear

    try:
        again = clear(book, result.mechanism)
    except ClearingError as err:
        out.fail("mechanism", f"the book cannot be cleared by {result.mechanism}: {err}")
        return
    if result.clearing_price_sen_per_kwh != again.clearing_price_sen_per_kwh:
        out.fail(
            "clearing-price",
            f"clearing price {result.clearing_price_sen_per_kwh}, the rules give "
            f"{again.clearing_price_sen_per_kwh} sen/kWh",
        )
    if result.node_prices != again.node_prices:
        out.fail(
            "pricing",
            f"node prices {result.node_prices}, the rules give {again.node_prices} sen/kWh",
        )
    if result.trades != again.trades:
        first = next(
            (
                k
                for k, (a, b) in enumerate(zip(result.trades, again.trades, strict=False))
                if a != b
            ),
            min(len(result.trades), len(again.trades)),
        )
        out.fail(
            "replay",
            f"trades differ from the {result.mechanism} rules from unit {first} on "
            f"({len(result.trades)} units given, {len(again.trades)} by the rules)",
        )


def _verify_optimal(book: Book, result: ClearingResult, out: Verification) -> None:
    goal = result.goal
    if goal not in GOALS:
        out.fail("goal", f"optimal result with unknown goal {goal!r}")
        return
    objective = evaluate(book, result.trades, goal)
    out.objective = objective
    if result.objective is not None and result.objective != objective:
        out.fail(
            "objective",
            f"claimed {result.objective.to_json()}, recomputed {objective.to_json()}",
        )
    cert = result.certificate
    if cert is None:
        return
    try:
        if cert.get("kind") == "welfare-node-prices" and goal == "welfare":
            bound = _welfare_bound(book, cert)
            achieved = result.totals.welfare_microyen
        elif cert.get("kind") == "volume-thresholds" and goal == "volume":
            bound = _volume_bound(book, cert)
            achieved = result.totals.volume_wh
        else:
            out.fail("certificate", f"certificate kind {cert.get('kind')!r} does not fit {goal}")
            out.proven_optimal = False
            return
    except InvalidInput as err:
        out.fail("certificate", str(err))
        out.proven_optimal = False
        return
    if bound != achieved:
        out.fail("certificate", f"dual bound {bound} differs from the objective {achieved}")
        out.proven_optimal = False
    else:
        out.proven_optimal = True


def _node_map(cert: dict[str, Any], key: str, book: Book, allow_none: bool) -> list[int | None]:
    raw = cert.get(key)
    if not isinstance(raw, dict):
        raise InvalidInput(f"certificate.{key}", "must map every grid node to a value")
    values: list[int | None] = []
    for name in book.grid.ids:
        if name not in raw:
            raise InvalidInput(f"certificate.{key}", f"node {name!r} is missing")
        value = raw[name]
        if value is None and allow_none:
            values.append(None)
        elif type(value) is int:
            values.append(value)
        else:
            raise InvalidInput(f"certificate.{key}.{name}", f"must be an integer, got {value!r}")
    return values


def _welfare_bound(book: Book, cert: dict[str, Any]) -> int:
    """Value [µ¥] of the dual built from node prices; raises if the dual is infeasible."""
    grid = book.grid
    price = _node_map(cert, "price_sen_per_kwh", book, allow_none=False)
    rents_raw = cert.get("rent_sen_per_kwh", {})
    if not isinstance(rents_raw, dict):
        raise InvalidInput("certificate.rent_sen_per_kwh", "must be an object")
    rent = [0] * grid.size
    for name, value in rents_raw.items():
        k = grid.index.get(name)
        if k is None or grid.capacity_wh[k] < 0 or type(value) is not int:
            raise InvalidInput(
                f"certificate.rent_sen_per_kwh.{name}",
                f"rent {value!r} must be an integer on a capacitated edge",
            )
        rent[k] = value
    bound = 0
    for c in range(grid.size):
        p = grid.parent[c]
        if p < 0:
            continue
        delta = price[p] - price[c]  # type: ignore[operator]
        fee = grid.fee_sen_per_kwh[c]
        if delta > fee + rent[c] or -delta > fee - rent[c]:
            raise InvalidInput(
                "certificate.price_sen_per_kwh",
                f"prices at {grid.ids[c]!r} and its parent differ by more than the fee {fee}",
            )
        if rent[c]:
            bound += (grid.capacity_wh[c] // book.lot_wh) * book.lot_wh * abs(rent[c])
    for o in book.orders:
        local = price[grid.index[o.node]] or 0  # never None: allow_none=False above
        if o.side is Side.SELL:
            bound += o.energy_wh * max(0, local - o.price_sen_per_kwh)
        else:
            bound += o.energy_wh * max(0, o.price_sen_per_kwh - local)
    return bound * 10


def _volume_bound(book: Book, cert: dict[str, Any]) -> int:
    """Energy [Wh] of the order cover given by price thresholds; raises if it is no cover."""
    grid = book.grid
    up = _node_map(cert, "up_sen_per_kwh", book, allow_none=True)
    down = _node_map(cert, "down_sen_per_kwh", book, allow_none=True)
    for v in range(grid.size):
        if up[v] is not None and (down[v] is None or down[v] > up[v]):  # type: ignore[operator]
            raise InvalidInput("certificate.down_sen_per_kwh", f"above up at {grid.ids[v]!r}")
        p = grid.parent[v]
        if p < 0:
            continue
        fee = grid.fee_sen_per_kwh[v]
        if up[v] is not None and (up[p] is None or up[p] > up[v] + fee):  # type: ignore[operator]
            raise InvalidInput("certificate.up_sen_per_kwh", f"rises too fast at {grid.ids[v]!r}")
        dp, dv = down[p], down[v]
        if dp is not None and (dv is None or dv > dp + fee):
            raise InvalidInput("certificate.down_sen_per_kwh", f"drops too fast at {grid.ids[v]!r}")
    cover = 0
    for o in book.orders:
        k = grid.index[o.node]
        if o.side is Side.SELL:
            t = up[k]
            if t is None or o.price_sen_per_kwh < t:
                cover += o.energy_wh
        else:
            t = down[k]
            if t is not None and o.price_sen_per_kwh >= t:
                cover += o.energy_wh
    return cover


_RESULT_KEYS = frozenset(
    {
        "mechanism",
        "goal",
        "pricing",
        "trades",
        "totals",
        "clearing_price_sen_per_kwh",
        "node_prices_sen_per_kwh",
        "excluded",
        "objective",
        "certificate",
        "bound",
    }
)
_TRADE_KEYS = (
    ("sell_order", str),
    ("buy_order", str),
    ("seller", str),
    ("buyer", str),
    ("energy_wh", int),
    ("price_sen_per_kwh", int),
    ("fee_sen_per_kwh", int),
    ("buyer_price_sen_per_kwh", int),
)
_TOTALS_KEYS = ("volume_wh", "welfare_microyen", "fees_microyen", "rent_microyen")


def result_from_json(obj: Any) -> ClearingResult:
    """Read a clearing result as printed by ``peerpower clear``; strictly: unknown keys, a
    missing field or a value of the wrong type is an :class:`InvalidInput` naming the field."""
    if not isinstance(obj, dict):
        raise InvalidInput("$", "the result must be a JSON object")
    unknown = sorted(set(obj) - _RESULT_KEYS)
    if unknown:
        raise InvalidInput(unknown[0], "is not a field of a clearing result")
    mechanism = obj.get("mechanism")
    if mechanism not in MECHANISMS:
        raise InvalidInput("mechanism", f"unknown mechanism {mechanism!r}")
    goal = obj.get("goal")
    if goal is not None and goal not in GOALS:
        raise InvalidInput("goal", f"unknown goal {goal!r}")
    pricing = obj.get("pricing")
    if pricing not in PRICINGS:
        raise InvalidInput("pricing", f"must be one of {', '.join(PRICINGS)}, got {pricing!r}")
    raw = obj.get("trades")
    if not isinstance(raw, list):
        raise InvalidInput("trades", "must be a list")
    trades: list[Trade] = []
    names = {name for name, _ in _TRADE_KEYS}
    for k, t in enumerate(raw):
        if not isinstance(t, dict):
            raise InvalidInput(f"trades[{k}]", "must be an object")
        extra = sorted(set(t) - names)
        if extra:
            raise InvalidInput(f"trades[{k}].{extra[0]}", "is not a field of a trade")
        values: list[Any] = []
        for name, kind in _TRADE_KEYS:
            value = t.get(name)
            if type(value) is not kind:
                raise InvalidInput(f"trades[{k}].{name}", f"must be {kind.__name__}, got {value!r}")
            values.append(value)
        trades.append(Trade(*values))
    totals_raw = obj.get("totals")
    if not isinstance(totals_raw, dict):
        raise InvalidInput("totals", "must be an object")
    extra = sorted(set(totals_raw) - set(_TOTALS_KEYS))
    if extra:
        raise InvalidInput(f"totals.{extra[0]}", "is not a field of the totals")
    tv: list[int] = []
    for name in _TOTALS_KEYS:
        value = totals_raw.get(name)
        if type(value) is not int:
            raise InvalidInput(f"totals.{name}", f"must be an integer, got {value!r}")
        tv.append(value)
    price = obj.get("clearing_price_sen_per_kwh")
    if price is not None and type(price) is not int:
        raise InvalidInput("clearing_price_sen_per_kwh", f"must be an integer, got {price!r}")
    node_prices = obj.get("node_prices_sen_per_kwh")
    if node_prices is not None:
        if not isinstance(node_prices, dict):
            raise InvalidInput("node_prices_sen_per_kwh", "must map grid nodes to prices")
        for name, value in node_prices.items():
            if type(value) is not int:
                raise InvalidInput(
                    f"node_prices_sen_per_kwh.{name}", f"must be an integer, got {value!r}"
                )
    excluded_raw = obj.get("excluded", [])
    if not isinstance(excluded_raw, list):
        raise InvalidInput("excluded", "must be a list")
    excluded: list[tuple[str, str]] = []
    for k, item in enumerate(excluded_raw):
        if (
            not isinstance(item, dict)
            or set(item) != {"order", "crosses"}
            or type(item["order"]) is not str
            or type(item["crosses"]) is not str
        ):
            raise InvalidInput(f"excluded[{k}]", 'must be {"order": id, "crosses": id}')
        excluded.append((item["order"], item["crosses"]))
    objective = Objective.from_json(obj["objective"]) if "objective" in obj else None
    cert = obj.get("certificate")
    if cert is not None and not isinstance(cert, dict):
        raise InvalidInput("certificate", "must be an object")
    bound = obj.get("bound")
    if bound is not None and not isinstance(bound, dict):
        raise InvalidInput("bound", "must be an object")
    return ClearingResult(
        mechanism,
        tuple(trades),
        Totals(*tv),
        goal=goal,
        clearing_price_sen_per_kwh=price,
        objective=objective,
        certificate=cert,
        bound=bound,
        pricing=pricing,
        node_prices=node_prices,
        excluded=tuple(excluded),
    )
