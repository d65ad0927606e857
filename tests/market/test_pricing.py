"""Pricing rules: which mechanism defines which, nodal prices worked by hand, and money that
depends on fills alone (issue 15)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import random_book
from peerpower.errors import ClearingError
from peerpower.market import clear, parse_book, verify
from peerpower.market.orders import Book, Side
from peerpower.market.result import ClearingResult

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    ("mechanism", "goal", "pricing"),
    [
        ("optimal", "volume", "nodal"),
        ("optimal", "maxmin", "nodal"),
        ("call", None, "midpoint"),
        ("call", None, "resting"),
        ("cda", None, "nodal"),
        ("cda", None, "midpoint"),
        ("optimal", "welfare", "resting"),
        ("optimal", "welfare", "fair"),
    ],
)
def test_invalid_pricing_for_the_mechanism_is_refused(
    mechanism: str, goal: str | None, pricing: str
) -> None:
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    with pytest.raises(ClearingError) as err:
        clear(book, mechanism, goal, pricing)
    assert err.value.field == "pricing"
    assert repr(pricing) in str(err.value)


@pytest.mark.parametrize(
    ("mechanism", "goal", "default", "other"),
    [
        ("optimal", "welfare", "nodal", "midpoint"),
        ("optimal", None, "nodal", "midpoint"),
        ("optimal", "volume", "midpoint", None),
        ("optimal", "maxmin", "midpoint", None),
        ("call", None, "nodal", None),
        ("cda", None, "resting", None),
    ],
)
def test_pricing_defaults(
    mechanism: str, goal: str | None, default: str, other: str | None
) -> None:
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    result = clear(book, mechanism, goal)
    assert result.pricing == default
    assert clear(book, mechanism, goal, default).to_json() == result.to_json()
    assert (result.node_prices is not None) == (default == "nodal")
    if other is not None:
        assert clear(book, mechanism, goal, other).pricing == other


def test_feeders_nodal_prices_worked_by_hand() -> None:
    # examples/tokyo_feeders.json: substation → feeder-A, feeder-B (fee 1 yen each; feeder-B
    # passes at most 1.0 kWh) → tx-A1, tx-A2, tx-B1 (0.5 yen) → homes (0).
    # Welfare optimum: the shop (22 yen) takes feeder-B's whole 1.0 kWh, from pv2 (8.5 + 3
    # fee) and pv1 (9 + 3); pv1's last 0.3 kWh go to h4 (13, fee 1), h4's last 0.1 kWh comes
    # from pv3 (12) next door; the EV (15) gets nothing over the full edge, v2h (20) sells none.
    # Prices: pv3 is partly filled → π(home-3) = 1200; energy flows home-3 → tx-A2 → home-4
    # and home-1 → tx-A1 → feeder-A → tx-A2, each edge's gap equal to its fee (no capacity):
    # π(tx-A2) = π(home-4) = 1200, π(feeder-A) = 1150, π(tx-A1) = π(home-1) = π(home-2)
    # = 1100, π(substation) = 1250. Beyond the full edge feeder-B: the EV unfilled at 1500
    # and v2h unfilled at 2000 bound π(ev-home) = π(tx-B1) = π(shop) to [1500, 2000]; the
    # rule takes 1750, and π(feeder-B) = 1700. Congestion rent on the 1.0 kWh to the shop:
    # 1750 − 1100 − 300 = 350 sen/kWh, 3.5 yen.
    book = parse_book(json.loads((EXAMPLES / "tokyo_feeders.json").read_text()))
    result = clear(book, "optimal", "welfare")
    assert result.node_prices == {
        "substation": 1250,
        "feeder-A": 1150,
        "feeder-B": 1700,
        "tx-A1": 1100,
        "tx-A2": 1200,
        "tx-B1": 1750,
        "home-1": 1100,
        "home-2": 1100,
        "home-3": 1200,
        "home-4": 1200,
        "ev-home": 1750,
        "shop": 1750,
    }
    got = {
        (t.sell_order, t.buy_order): (t.energy_wh, t.price_sen_per_kwh, t.buyer_price_sen_per_kwh)
        for t in result.trades
    }
    assert got == {
        ("pv1", "shop"): (500, 1100, 1750),
        ("pv2", "shop"): (500, 1100, 1750),
        ("pv1", "h4"): (300, 1100, 1200),
        ("pv3", "h4"): (100, 1200, 1200),
    }
    assert result.totals.welfare_microyen == 11_250_000
    assert result.totals.fees_microyen == (300 * 1000 + 100 * 300) * 10
    assert result.totals.rent_microyen == 350 * 1000 * 10
    assert verify(book, result).proven_optimal is True


def _money(result: ClearingResult) -> dict[str, int]:
    """Σ received − Σ paid per participant [µ¥], from the trades."""
    money: dict[str, int] = defaultdict(int)
    for t in result.trades:
        money[t.seller] += t.price_sen_per_kwh * t.energy_wh * 10
        money[t.buyer] -= t.buyer_price_sen_per_kwh * t.energy_wh * 10
    return dict(money)


def _money_from_fills(book: Book, result: ClearingResult) -> dict[str, int]:
    """Σ fills × node price per participant [µ¥]: sales +, purchases −; no pairing used."""
    assert result.node_prices is not None
    filled: dict[str, int] = defaultdict(int)
    for t in result.trades:
        filled[t.sell_order] += t.energy_wh
        filled[t.buy_order] += t.energy_wh
    money: dict[str, int] = defaultdict(int)
    for o in book.orders:
        if filled[o.id]:
            sign = 1 if o.side is Side.SELL else -1
            money[o.participant] += sign * filled[o.id] * result.node_prices[o.node] * 10
    return dict(money)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(1, 16),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from([("optimal", "welfare"), ("call", None)]),
)
def test_money_is_fills_times_node_prices(
    seed: int, n: int, nodes: int, capacities: bool, run: tuple[str, str | None]
) -> None:
    rng = random.Random(seed)
    book = random_book(rng, n_orders=n, n_nodes=nodes, capacities=capacities)
    result = clear(book, *run)
    assert result.pricing == "nodal"
    assert verify(book, result).ok
    if result.node_prices is None:  # a one-node call auction with no trade has no price
        assert run[0] == "call" and book.grid.size == 1 and not result.trades
        return
    assert _money(result) == _money_from_fills(book, result)
    # what buyers pay beyond what sellers receive is exactly the fees and the rent
    to_grid = result.totals.fees_microyen + result.totals.rent_microyen
    assert -sum(_money(result).values()) == to_grid
    assert result.totals.rent_microyen >= 0
