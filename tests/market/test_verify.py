"""verify() rejects every kind of tampering, naming the rule."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import pytest

from peerpower.market import clear, parse_book, verify
from peerpower.market.result import ClearingResult, Objective, Trade, totals_of

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def feeders() -> tuple:
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    return book, clear(book, "optimal", "welfare")


def _with_trade(book, result: ClearingResult, k: int, **change) -> ClearingResult:
    trades = list(result.trades)
    trades[k] = dataclasses.replace(trades[k], **change)
    limit = defaultdict(int, {o.id: o.price_sen_per_kwh for o in book.orders})
    return dataclasses.replace(result, trades=tuple(trades), totals=totals_of(tuple(trades), limit))


def _rules(book, result) -> list[str]:
    return [rule for rule, _ in verify(book, result).problems]


def test_verify_accepts_the_honest_result(feeders) -> None:
    book, result = feeders
    check = verify(book, result)
    assert check.ok and check.proven_optimal is True


def test_invalid_fee_is_rejected(feeders) -> None:
    book, result = feeders
    bad = _with_trade(book, result, 0, fee_sen_per_kwh=result.trades[0].fee_sen_per_kwh - 1)
    assert "fee" in _rules(book, bad)


def test_invalid_price_outside_limits_is_rejected(feeders) -> None:
    book, result = feeders
    ask = book.orders[book.by_id[result.trades[0].sell_order]].price_sen_per_kwh
    assert "price" in _rules(book, _with_trade(book, result, 0, price_sen_per_kwh=ask - 1))


def test_invalid_midpoint_is_rejected(feeders) -> None:
    book, result = feeders
    t = result.trades[0]
    ask = book.orders[book.by_id[t.sell_order]].price_sen_per_kwh
    assert "midpoint" in _rules(book, _with_trade(book, result, 0, price_sen_per_kwh=ask))


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
    trade = (Trade("s", "b", "A", "A", 100, 15, 0),)
    limit = {"s": 10, "b": 20}
    forged = ClearingResult("optimal", trade, totals_of(trade, limit), goal="welfare")
    assert "self-trade" in _rules(book, forged)
    assert clear(book, "optimal", "welfare").trades == ()


def test_invalid_capacity_breach_is_rejected(feeders) -> None:
    book, _ = feeders
    # 1.0 kWh may cross feeder-B's edge; send 1.3 kWh to the shop from feeder A.
    trade = (
        Trade("pv1", "shop", "home-1", "shop", 800, 1425, 300),
        Trade("pv2", "shop", "home-2", "shop", 500, 1400, 300),
    )
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    forged = ClearingResult("optimal", trade, totals_of(trade, limit), goal="welfare")
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


def test_invalid_certificate_is_rejected(feeders) -> None:
    book, result = feeders
    cert = json.loads(json.dumps(result.certificate))
    for node in cert["price_sen_per_kwh"]:
        cert["price_sen_per_kwh"][node] += 1  # a uniform shift keeps feasibility, moves the bound
    check = verify(book, dataclasses.replace(result, certificate=cert))
    assert check.proven_optimal is False and [r for r, _ in check.problems] == ["certificate"]


def test_suboptimal_result_cannot_carry_a_certificate(feeders) -> None:
    book, result = feeders
    fewer = result.trades[1:]
    limit = {o.id: o.price_sen_per_kwh for o in book.orders}
    worse = dataclasses.replace(
        result, trades=fewer, totals=totals_of(fewer, limit), objective=None
    )
    check = verify(book, worse)
    assert check.proven_optimal is False


def test_invalid_cda_replay_is_rejected() -> None:
    book = parse_book(json.loads((EXAMPLES / "misono_gate.json").read_text()))
    result = clear(book, "cda")
    swapped = tuple(reversed(result.trades))
    assert "replay" in _rules(book, dataclasses.replace(result, trades=swapped))
    assert "clearing-price" in _rules(
        book, dataclasses.replace(clear(book, "call"), clearing_price_sen_per_kwh=1)
    )
