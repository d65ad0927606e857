"""Pinned vectors worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerpower.market import clear, parse_book, verify

VECTORS = Path(__file__).parents[1] / "vectors"


@pytest.mark.parametrize("run", ["cda", "optimal:volume", "optimal:welfare", "optimal:maxmin"])
def test_capacity_bound_vector(run: str) -> None:
    vector = json.loads((VECTORS / "capacity_bound.json").read_text())
    book = parse_book(vector["book"])
    mechanism, _, goal = run.partition(":")
    result = clear(book, mechanism, goal or None)
    got = [[t.sell_order, t.buy_order, t.energy_wh, t.price_sen_per_kwh] for t in result.trades]
    assert got == vector["expected"][run]
    assert verify(book, result).ok
