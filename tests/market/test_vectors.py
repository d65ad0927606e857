"""Pinned vectors worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerpower.market import clear, parse_book, verify

VECTORS = Path(__file__).parents[1] / "vectors"
CAPACITY_BOUND = json.loads((VECTORS / "capacity_bound.json").read_text())


@pytest.mark.parametrize("run", list(CAPACITY_BOUND["expected"]))
def test_capacity_bound_vector(run: str) -> None:
    vector = CAPACITY_BOUND
    book = parse_book(vector["book"])
    mechanism, _, rest = run.partition(":")
    goal, _, pricing = rest.partition(":")
    result = clear(book, mechanism, goal or None, pricing or None)
    got = [
        [t.sell_order, t.buy_order, t.energy_wh, t.price_sen_per_kwh, t.buyer_price_sen_per_kwh]
        for t in result.trades
    ]
    assert got == vector["expected"][run]
    assert result.node_prices == vector["node_prices_sen_per_kwh"].get(run)
    assert result.totals.rent_microyen == vector["rent_microyen"].get(run, 0)
    check = verify(book, result)
    assert check.ok, check.problems


def test_capacity_bound_vector_covers_every_mechanism_and_pricing() -> None:
    assert set(CAPACITY_BOUND["expected"]) == {
        "cda",
        "call",
        "optimal:volume",
        "optimal:welfare",
        "optimal:welfare:midpoint",
        "optimal:maxmin",
    }
