"""verify() rejects every kind of tampering, naming the rule."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import pytest

from peerpower.errors import InvalidInput
from peerpower.market import clear, parse_book, verify
from peerpower.market.orders import Book, Order, Side
from peerpower.market.result import ClearingResult, Objective, Trade, totals_of
from peerpower.market.verify import result_from_json

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def feeders() -> tuple:
    """The Tokyo feeders book cleared for welfare at nodal prices (the default)."""
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    return book, clear(book, "optimal", "welfare")


@pytest.fixture
def feeders_midpoint() -> tuple:
    """The same book cleared for welfare at midpoint prices, with its dual certificate."""
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    return book, clear(book, "optimal", "welfare", "midpoint")


def _with_trade(book, result: ClearingResult, k: int, **change) -> ClearingResult:
    trades = list(result.trades)
    trades[k] = dataclasses.replace(trades[k], **change)
    limit = defaultdict(int, {o.id: o.price_sen_per_kwh for o in book.orders})
    return dataclasses.replace(result, trades=tuple(trades), totals=totals_of(tuple(trades), limit))


def _rules(book, result) -> list[str]:
    return [rule for rule, _ in verify(book, result).problems]


def test_verify_accepts_the_honest_result(feeders, feeders_midpoint) -> None:
    for book, result in (feeders, feeders_midpoint):
        check = verify(book, result)
        assert check.ok and check.proven_optimal is True
    assert feeders[1].certificate is None and feeders[1].node_prices is not None
    assert feeders_midpoint[1].certificate is not None and feeders_midpoint[1].node_prices is None


def test_invalid_fee_is_rejected(feeders) -> None:
    book, result = feeders
    bad = _with_trade(book, result, 0, fee_sen_per_kwh=result.trades[0].fee_sen_per_kwh - 1)
    assert "fee" in _rules(book, bad)


def test_invalid_price_outside_limits_is_rejected(feeders_midpoint) -> None:
    book, result = feeders_midpoint
    t = result.trades[0]
    ask = book.orders[book.by_id[t.sell_order]].price_sen_per_kwh
    below = ask - 1
    bad = _with_trade(
        book, result, 0, price_sen_per_kwh=below, buyer_price_sen_per_kwh=below + t.fee_sen_per_kwh
    )
    assert _rules(book, bad) == ["price"]
    # and a buyer who pays other than price + fee under midpoint pricing
    bad = _with_trade(book, result, 0, buyer_price_sen_per_kwh=t.buyer_price_sen_per_kwh + 1)
    assert _rules(book, bad) == ["price"]


def test_invalid_midpoint_is_rejected(feeders_midpoint) -> None:
    book, result = feeders_midpoint
    t = result.trades[0]
    ask = book.orders[book.by_id[t.sell_order]].price_sen_per_kwh
    bad = _with_trade(
        book, result, 0, price_sen_per_kwh=ask, buyer_price_sen_per_kwh=ask + t.fee_sen_per_kwh
    )
    assert _rules(book, bad) == ["midpoint"]


def test_invalid_overfill_is_rejected(feeders) -> None:
    book, result = feeders
    order = book.orders[book.by_id[result.trades[0].sell_order]]
    assert "fill" in _rules(book, _with_trade(book, result, 0, energy_wh=order.energy_wh + 100))


def test_invalid_partial_lot_is_rejected(feeders) -> None:
    book, result = feeders
    assert "lot" in _rules(book, _with_trade(book, result, 0, energy_wh=50))


def test_invalid_unknown_order_is_rejected(feeders) -> None:
    book, result = feeders
    assert "order-exists" in _rules(book, _with_trade(book, result, 0, sell_order="ghost"))


def test_invalid_self_trade_is_rejected() -> None:
    book = parse_book(
        {
            "orders": [
                {
                    "id": "s",
                    "participant": "A",
                    "side": "sell",
                    "energy_wh": 100,
                    "price_sen_per_kwh": 10,
                },
                {
                    "id": "b",
                    "participant": "A",
                    "side": "buy",
                    "energy_wh": 100,
                    "price_sen_per_kwh": 20,
                },
            ]
        }
    )
    trade = (Trade("s", "b", "A", "A", 100, 15, 0, 15),)
    limit = {"s": 10, "b": 20}
    # A continuous auction does not leave crossing orders out; it never pairs them either.
    forged = ClearingResult("cda", trade, totals_of(trade, limit), pricing="resting")
    assert "self-trade" in _rules(book, forged)
    assert clear(book, "cda").trades == ()
    # Optimal and call clearings leave b out first (it crosses A's earlier sell s).
    for mechanism, goal in (("optimal", "welfare"), ("call", None)):
        honest = clear(book, mechanism, goal)
        assert honest.trades == () and honest.excluded == (("b", "s"),)
        forged = dataclasses.replace(honest, trades=trade, totals=totals_of(trade, limit))
        assert "self-cross" in _rules(book, forged)


def test_invalid_capacity_breach_is_rejected(feeders) -> None:
    book, _ = feeders
    # 1.0 kWh may cross feeder-B's edge; send 1.3 kWh to the shop from feeder A.
    trade = (
        Trade("pv1", "shop", "home-1", "shop", 800, 1425, 300, 1725),
        Trade("pv2", "shop", "home-2", "shop", 500, 1400, 300, 1700),
    )
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    forged = ClearingResult(
        "optimal", trade, totals_of(trade, limit), goal="welfare", pricing="midpoint"
    )
    assert "capacity" in _rules(book, forged)


def test_invalid_totals_are_rejected(feeders) -> None:
    book, result = feeders
    bad = dataclasses.replace(
        result, totals=dataclasses.replace(result.totals, volume_wh=result.totals.volume_wh + 100)
    )
    assert _rules(book, bad) == ["totals"]


def test_invalid_claimed_objective_is_rejected(feeders) -> None:
    book, result = feeders
    inflated = Objective(
        result.objective.primary + 1, result.objective.secondary, result.objective.score
    )
    assert _rules(book, dataclasses.replace(result, objective=inflated)) == ["objective"]


def test_invalid_certificate_is_rejected(feeders_midpoint) -> None:
    book, result = feeders_midpoint
    cert = json.loads(json.dumps(result.certificate))
    for node in cert["price_sen_per_kwh"]:
        cert["price_sen_per_kwh"][node] += 1  # a uniform shift keeps feasibility, moves the bound
    check = verify(book, dataclasses.replace(result, certificate=cert))
    assert check.proven_optimal is False and [r for r, _ in check.problems] == ["certificate"]


def test_suboptimal_result_cannot_carry_a_certificate(feeders, feeders_midpoint) -> None:
    # Dropping a unit leaves a worse clearing: its dual certificate (midpoint) no longer
    # matches, and no node prices make it a competitive equilibrium (nodal).
    for (book, result), rule in ((feeders_midpoint, "certificate"), (feeders, "pricing")):
        fewer = result.trades[1:]
        limit = {o.id: o.price_sen_per_kwh for o in book.orders}
        worse = dataclasses.replace(
            result, trades=fewer, totals=totals_of(fewer, limit), objective=None
        )
        check = verify(book, worse)
        assert check.proven_optimal is False
        assert rule in [r for r, _ in check.problems]


def test_invalid_cda_replay_is_rejected() -> None:
    book = parse_book(json.loads((EXAMPLES / "misono_gate.json").read_text()))
    result = clear(book, "cda")
    swapped = tuple(reversed(result.trades))
    assert "replay" in _rules(book, dataclasses.replace(result, trades=swapped))
    assert "clearing-price" in _rules(
        book, dataclasses.replace(clear(book, "call"), clearing_price_sen_per_kwh=1)
    )


# -- pricing -------------------------------------------------------------------------------------
def _priced_at(book, result: ClearingResult, prices: dict[str, int]) -> ClearingResult:
    """``result`` with node prices ``prices`` and every trade priced at its nodes' prices."""
    node = {o.id: o.node for o in book.orders}
    trades = tuple(
        dataclasses.replace(
            t,
            price_sen_per_kwh=prices[node[t.sell_order]],
            buyer_price_sen_per_kwh=prices[node[t.buy_order]],
        )
        for t in result.trades
    )
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    return dataclasses.replace(
        result, trades=trades, totals=totals_of(trades, limit), node_prices=prices
    )


@pytest.mark.parametrize(
    ("node", "rule"), [("shop", "pricing"), ("substation", "pricing"), ("home-1", "pricing")]
)
def test_invalid_pricing_node_price_off_by_one(feeders, node: str, rule: str) -> None:
    # Worked by hand in test_pricing.py: energy crosses every edge on the way from home-1 to
    # the substation and from tx-B1 to the shop, so each of these prices is tied to its
    # neighbour's by the fee. One sen more at one node is refused — with the trades left at
    # the old prices (the trade is not priced at its node) or repriced to match (the prices
    # are no equilibrium; at home-1 the trade to h4 then earns its seller 1101 while h4 pays
    # 1200, less than the fee 100 apart, which the trade's own price check names first — as
    # a pricing failure too).
    book, result = feeders
    assert result.node_prices is not None
    prices = dict(result.node_prices)
    prices[node] += 1
    stale = dataclasses.replace(result, node_prices=prices)
    assert set(_rules(book, stale)) == {"pricing"}
    check = verify(book, _priced_at(book, result, prices))
    assert {r for r, _ in check.problems} == {rule}
    if rule == "pricing":
        assert check.proven_optimal is False


def test_invalid_pricing_trade_price_not_node_price(feeders) -> None:
    book, result = feeders
    t = result.trades[0]
    less = t.price_sen_per_kwh - 1
    assert _rules(book, _with_trade(book, result, 0, price_sen_per_kwh=less)) == ["pricing"]
    paid = t.buyer_price_sen_per_kwh + 1
    assert _rules(book, _with_trade(book, result, 0, buyer_price_sen_per_kwh=paid)) == ["pricing"]
    # a nodal result without its node prices
    assert _rules(book, dataclasses.replace(result, node_prices=None)) == ["pricing"]


@pytest.mark.parametrize("goal", ["volume", "maxmin"])
def test_invalid_pricing_nodal_with_goal(feeders, goal: str) -> None:
    book, welfare = feeders
    result = clear(book, "optimal", goal)
    assert result.pricing == "midpoint"
    claimed = dataclasses.replace(result, pricing="nodal", node_prices=welfare.node_prices)
    assert _rules(book, claimed) == ["pricing"]


def test_invalid_pricing_name_for_the_mechanism() -> None:
    book = parse_book(json.loads((EXAMPLES / "misono_gate.json").read_text()))
    call = clear(book, "call")
    assert _rules(book, dataclasses.replace(call, pricing="midpoint")) == ["pricing"]
    cda = clear(book, "cda")
    assert _rules(book, dataclasses.replace(cda, pricing="nodal")) == ["pricing"]


def _one_node_pair() -> tuple:
    book = parse_book(
        {
            "orders": [
                {
                    "id": "s",
                    "participant": "S",
                    "side": "sell",
                    "energy_wh": 100,
                    "price_sen_per_kwh": 1000,
                },
                {
                    "id": "b",
                    "participant": "B",
                    "side": "buy",
                    "energy_wh": 100,
                    "price_sen_per_kwh": 2000,
                },
            ]
        }
    )
    return book, clear(book, "optimal", "welfare")


@pytest.mark.parametrize("price", [1000, 1200, 2000])
def test_invalid_pricing_equilibrium_but_not_the_midpoint(price: int) -> None:
    # Both orders filled: every price in [ask, bid] = [1000, 2000] is a competitive equilibrium
    # (and proves the clearing optimal), but the rule takes floor((1000 + 2000) / 2) = 1500.
    book, result = _one_node_pair()
    assert result.node_prices == {"root": 1500}
    assert [(t.price_sen_per_kwh, t.buyer_price_sen_per_kwh) for t in result.trades] == [
        (1500, 1500)
    ]
    check = verify(book, _priced_at(book, result, {"root": price}))
    assert [r for r, _ in check.problems] == ["pricing"]
    assert "1000–2000" in check.problems[0][1] and "1500" in check.problems[0][1]
    assert check.proven_optimal is True


def test_invalid_pricing_outside_the_equilibrium() -> None:
    # With u (ask 1300) left unfilled the equilibrium prices are 1000–1300 (rule: 1150): at
    # 1301 u would rather have sold.
    book, _ = _one_node_pair()
    unfilled = Order("u", "U", Side.SELL, 100, 1300, "root", 2)
    book = Book.build([*book.orders, unfilled], book.grid, book.lot_wh, book.seed)
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {"root": 1150}
    assert [t.sell_order for t in result.trades] == ["s"]
    check = verify(book, _priced_at(book, result, {"root": 1301}))
    assert [r for r, _ in check.problems] == ["pricing"]
    assert "'u'" in check.problems[0][1]
    assert check.proven_optimal is False
    # above the buyer's bid: the trade's own check refuses it, as a pricing failure
    assert _rules(book, _priced_at(book, result, {"root": 2001})) == ["pricing"]


# -- pairing -------------------------------------------------------------------------------------
def _re_paired(book, result: ClearingResult, i: int, j: int) -> ClearingResult:
    """Swap the partners of units ``i`` and ``j`` for as much energy as both carry: the fills
    of every order stay the same. Units are priced by the result's own rule."""
    a, b = result.trades[i], result.trades[j]
    e = min(a.energy_wh, b.energy_wh)
    grid = book.grid
    order = {o.id: o for o in book.orders}
    units: dict[tuple[str, str], int] = {}
    for t in result.trades:
        units[(t.sell_order, t.buy_order)] = t.energy_wh
    units[(a.sell_order, a.buy_order)] -= e
    units[(b.sell_order, b.buy_order)] -= e
    for s, t in ((a.sell_order, b.buy_order), (b.sell_order, a.buy_order)):
        units[(s, t)] = units.get((s, t), 0) + e
    trades = []
    for (s, t), energy in sorted(units.items()):
        if not energy:
            continue
        so, bo = order[s], order[t]
        fee = grid.fee(grid.index[so.node], grid.index[bo.node])
        if result.pricing == "nodal":
            assert result.node_prices is not None
            price, paid = result.node_prices[so.node], result.node_prices[bo.node]
        else:
            ask, bid = so.price_sen_per_kwh, bo.price_sen_per_kwh
            price = ask + (bid - fee - ask) // 2
            paid = price + fee
        trades.append(Trade(s, t, so.participant, bo.participant, energy, price, fee, paid))
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    return dataclasses.replace(result, trades=tuple(trades), totals=totals_of(tuple(trades), limit))


def _money(result: ClearingResult) -> dict[str, int]:
    """Σ received − Σ paid per participant [µ¥]."""
    money: dict[str, int] = defaultdict(int)
    for t in result.trades:
        money[t.seller] += t.price_sen_per_kwh * t.energy_wh * 10
        money[t.buyer] -= t.buyer_price_sen_per_kwh * t.energy_wh * 10
    return dict(money)


def test_invalid_pairing_re_paired(feeders, feeders_midpoint) -> None:
    # pv1 (home-1) → shop and pv2 (home-2) → shop, pv1 → h4: home-1 and home-2 share tx-A1, so
    # giving pv2's shop energy to h4 and pv1's h4 energy to the shop keeps every fill, fee,
    # flow and the welfare — only the pairing changes, and the rules define one.
    for book, result in (feeders, feeders_midpoint):
        units = [(t.sell_order, t.buy_order) for t in result.trades]
        i, j = units.index(("pv1", "h4")), units.index(("pv2", "shop"))
        swapped = _re_paired(book, result, i, j)
        assert {(t.sell_order, t.buy_order) for t in swapped.trades} >= {("pv2", "h4")}
        check = verify(book, swapped)
        assert [r for r, _ in check.problems] == ["pairing"]
        if result.pricing == "nodal":  # the re-pairing would not have moved any money ...
            assert _money(swapped) == _money(result)
        else:  # ... but under midpoint prices it would
            assert _money(swapped) != _money(result)


def test_invalid_pairing_re_paired_on_one_node() -> None:
    orders = [
        {"id": i, "participant": p, "side": side, "energy_wh": 100, "price_sen_per_kwh": x}
        for i, p, side, x in (
            ("s1", "A", "sell", 1000),
            ("s2", "B", "sell", 1100),
            ("b1", "C", "buy", 2000),
            ("b2", "D", "buy", 2100),
        )
    ]
    book = parse_book({"orders": orders})
    for pricing in ("nodal", "midpoint"):
        result = clear(book, "optimal", "welfare", pricing)
        # canonical: sells in book order serve buys in book order
        assert [(t.sell_order, t.buy_order) for t in result.trades] == [("s1", "b1"), ("s2", "b2")]
        swapped = _re_paired(book, result, 0, 1)
        assert [(t.sell_order, t.buy_order) for t in swapped.trades] == [("s1", "b2"), ("s2", "b1")]
        assert _rules(book, swapped) == ["pairing"]


def test_invalid_pairing_re_paired_volume() -> None:
    # Under midpoint the pairing decides who is paid what: the canonical bottom-up matching
    # (the dearest buy takes the dearest sell it can pay) is the only one accepted.
    orders = [
        {"id": i, "participant": p, "side": side, "energy_wh": 100, "price_sen_per_kwh": x}
        for i, p, side, x in (
            ("s1", "A", "sell", 1000),
            ("s2", "B", "sell", 1100),
            ("b1", "C", "buy", 2000),
            ("b2", "D", "buy", 2100),
        )
    ]
    book = parse_book({"orders": orders})
    result = clear(book, "optimal", "volume")
    assert [(t.sell_order, t.buy_order) for t in result.trades] == [("s1", "b1"), ("s2", "b2")]
    assert verify(book, result).ok
    swapped = _re_paired(book, result, 0, 1)
    assert _money(swapped) != _money(result)
    assert _rules(book, swapped) == ["pairing"]


def test_invalid_pairing_re_paired_maxmin() -> None:
    # maxmin pairs its fills by its own rule (market/canon.py): every other pairing of the same
    # fills is refused, among them ones that would move money between participants.
    from peerpower.bench import make_book

    refused = moved = 0
    for case in range(4):
        book = parse_book(make_book(30, 8, case, both_share=0.2))
        result = clear(book, "optimal", "maxmin")
        assert result.pricing == "midpoint" and verify(book, result).ok
        order = {o.id: o for o in book.orders}
        grid = book.grid
        for i in range(len(result.trades)):
            for j in range(i + 1, len(result.trades)):
                a, b = result.trades[i], result.trades[j]
                if a.sell_order == b.sell_order or a.buy_order == b.buy_order:
                    continue  # the same units again
                crossed = ((a.sell_order, b.buy_order), (b.sell_order, a.buy_order))
                if any(
                    order[s].participant == order[t].participant
                    or order[t].price_sen_per_kwh
                    - grid.fee(grid.index[order[s].node], grid.index[order[t].node])
                    < order[s].price_sen_per_kwh
                    for s, t in crossed
                ):
                    continue  # not a pairing at all
                swapped = _re_paired(book, result, i, j)
                assert "pairing" in _rules(book, swapped)
                refused += 1
                moved += _money(swapped) != _money(result)
    assert refused > 10 and moved > 0, (refused, moved)


# -- self-trade prevention -----------------------------------------------------------------------
def _self_crossing_book():
    # A's buy b (2000, seq 1) crosses A's earlier sell s (1000, seq 0): b is left out.
    orders = [
        ("s", "A", "sell", 1000),
        ("b", "A", "buy", 2000),
        ("c", "C", "buy", 2000),
        ("d", "D", "sell", 1000),
    ]
    return parse_book(
        {
            "orders": [
                {
                    "id": i,
                    "participant": p,
                    "side": side,
                    "energy_wh": 100,
                    "price_sen_per_kwh": x,
                    "seq": k,
                }
                for k, (i, p, side, x) in enumerate(orders)
            ]
        }
    )


@pytest.mark.parametrize(("mechanism", "goal"), [("optimal", "welfare"), ("call", None)])
def test_invalid_self_cross_trades_an_excluded_order(mechanism: str, goal: str | None) -> None:
    book = _self_crossing_book()
    result = clear(book, mechanism, goal)
    assert result.excluded == (("b", "s"),)
    assert result.totals.volume_wh == 100  # one of s, d to c; b may not trade
    assert verify(book, result).ok
    used = {t.sell_order for t in result.trades}
    (free,) = {"s", "d"} - used
    seller = "A" if free == "s" else "D"
    extra = Trade(free, "b", seller, "A", 100, 1500, 0, 1500)
    trades = (*result.trades, extra)
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    forged = dataclasses.replace(result, trades=trades, totals=totals_of(trades, limit))
    check = verify(book, forged)
    assert [r for r, _ in check.problems] == ["self-cross"]
    assert "'b'" in check.problems[0][1] and "'s'" in check.problems[0][1]


@pytest.mark.parametrize(
    "excluded",
    [(), (("b", "s"), ("c", "s")), (("b", "d"),), (("s", "b"),)],
    ids=["none", "one-too-many", "wrong-partner", "reversed"],
)
def test_invalid_self_cross_wrong_excluded_list(excluded: tuple) -> None:
    book = _self_crossing_book()
    for mechanism, goal in (("optimal", "welfare"), ("call", None)):
        result = clear(book, mechanism, goal)
        assert _rules(book, dataclasses.replace(result, excluded=excluded)) == ["self-cross"]


def test_invalid_self_cross_listed_where_nothing_crosses(feeders) -> None:
    book, result = feeders
    assert result.excluded == ()
    claimed = dataclasses.replace(result, excluded=(("h4", "pv3"),))
    assert _rules(book, claimed) == ["self-cross"]


# -- strict parsing ------------------------------------------------------------------------------
def test_result_json_round_trips(feeders, feeders_midpoint) -> None:
    book = parse_book(json.loads((EXAMPLES / "misono_gate.json").read_text()))
    results = [feeders[1], feeders_midpoint[1], clear(book, "call"), clear(book, "cda")]
    results += [clear(_self_crossing_book(), "optimal"), clear(_self_crossing_book(), "call")]
    for result in results:
        assert result_from_json(json.loads(result.to_json_text())) == result


@pytest.mark.parametrize(
    ("where", "field"),
    [("top", "tip"), ("trade", "trades[0].tip"), ("totals", "totals.tip")],
)
def test_invalid_result_unknown_key(feeders, where: str, field: str) -> None:
    _, result = feeders
    data = result.to_json()
    target = {"top": data, "trade": data["trades"][0], "totals": data["totals"]}[where]
    target["tip"] = 1
    with pytest.raises(InvalidInput) as err:
        result_from_json(data)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pricing": "fair"}, "pricing"),
        ({"node_prices_sen_per_kwh": {"shop": 17.5}}, "node_prices_sen_per_kwh.shop"),
        ({"excluded": [{"order": "b"}]}, "excluded[0]"),
        (
            {"totals": {"volume_wh": 1, "welfare_microyen": 0, "fees_microyen": 0}},
            "totals.rent_microyen",
        ),
    ],
)
def test_invalid_result_field(feeders, change: dict, field: str) -> None:
    _, result = feeders
    data = {**result.to_json(), **change}
    with pytest.raises(InvalidInput) as err:
        result_from_json(data)
    assert err.value.field == field


def test_invalid_result_trade_without_buyer_price(feeders) -> None:
    _, result = feeders
    data = result.to_json()
    del data["trades"][0]["buyer_price_sen_per_kwh"]
    with pytest.raises(InvalidInput) as err:
        result_from_json(data)
    assert err.value.field == "trades[0].buyer_price_sen_per_kwh"
