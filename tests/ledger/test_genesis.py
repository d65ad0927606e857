"""The market's pricing rule in genesis: its default per mechanism and goal, its refusals, and
its place in the genesis hash."""

from __future__ import annotations

from typing import Any

import pytest

from peerpower.errors import InvalidInput
from peerpower.ledger.genesis import Genesis, MarketRules
from tests.ledger.chain_helpers import make_genesis


def genesis_json(**market: Any) -> dict[str, Any]:
    obj = make_genesis().to_json()
    obj["market"] = {k: v for k, v in obj["market"].items() if k not in ("goal", "pricing")}
    obj["market"].update(market)
    return obj


@pytest.mark.parametrize(
    ("mechanism", "goal", "default"),
    [
        ("optimal", "welfare", "nodal"),
        ("optimal", "volume", "midpoint"),
        ("optimal", "maxmin", "midpoint"),
        ("call", None, "nodal"),
        ("cda", None, "resting"),
    ],
)
def test_genesis_pricing_default(mechanism: str, goal: str | None, default: str) -> None:
    market: dict[str, Any] = {"mechanism": mechanism}
    if goal is not None:
        market["goal"] = goal
    g = Genesis.from_json(genesis_json(**market))
    assert g.market.pricing == default
    assert g.to_json()["market"]["pricing"] == default  # written out, so hashed
    assert Genesis.from_json(g.to_json()) == g
    rules: Any = (mechanism, goal)
    assert MarketRules(*rules).pricing == default


def test_genesis_pricing_midpoint_for_welfare_is_another_chain() -> None:
    nodal = Genesis.from_json(genesis_json(goal="welfare"))
    midpoint = Genesis.from_json(genesis_json(goal="welfare", pricing="midpoint"))
    explicit = Genesis.from_json(genesis_json(goal="welfare", pricing="nodal"))
    assert midpoint.market.pricing == "midpoint"
    assert explicit == nodal and explicit.hash == nodal.hash
    # the rule is part of the genesis hash, so of every transaction's chain id
    assert midpoint.hash != nodal.hash
    assert midpoint.tx_chain != nodal.tx_chain
    assert Genesis.from_json(midpoint.to_json()).hash == midpoint.hash


@pytest.mark.parametrize(
    ("market", "value", "allowed"),
    [
        ({"goal": "volume", "pricing": "nodal"}, "'nodal'", "use midpoint"),
        ({"goal": "maxmin", "pricing": "nodal"}, "'nodal'", "use midpoint"),
        ({"goal": "welfare", "pricing": "resting"}, "'resting'", "use nodal or midpoint"),
        ({"goal": "welfare", "pricing": "uniform"}, "'uniform'", "use nodal or midpoint"),
        ({"mechanism": "call", "pricing": "midpoint"}, "'midpoint'", "use nodal"),
        ({"mechanism": "cda", "pricing": "nodal"}, "'nodal'", "use resting"),
        ({"goal": "welfare", "pricing": 1}, "1", "a pricing rule's name"),
        ({"goal": "welfare", "pricing": ["nodal"]}, "['nodal']", "a pricing rule's name"),
    ],
)
def test_invalid_genesis_pricing(market: dict[str, Any], value: str, allowed: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Genesis.from_json(genesis_json(**market))
    assert info.value.field == "genesis.market.pricing"
    assert value in info.value.message
    assert allowed in info.value.message


def test_invalid_market_rules_pricing() -> None:
    with pytest.raises(InvalidInput) as info:
        MarketRules(goal="volume", pricing="nodal")
    assert info.value.field == "genesis.market.pricing"
    assert "'nodal' is not a pricing rule optimal/volume defines; use midpoint" in str(info.value)


def test_genesis_maxmin_budget_is_a_market_parameter() -> None:
    from peerpower.market.pairwise import DEFAULT_BUDGET_NODES

    default = Genesis.from_json(genesis_json(goal="maxmin"))
    assert default.market.maxmin_budget == DEFAULT_BUDGET_NODES
    assert default.to_json()["market"]["maxmin_budget"] == DEFAULT_BUDGET_NODES  # hashed
    larger = Genesis.from_json(genesis_json(goal="maxmin", maxmin_budget=100_000))
    assert larger.market.maxmin_budget == 100_000
    assert larger.hash != default.hash
    assert Genesis.from_json(larger.to_json()) == larger
    # other goals neither write nor take it
    assert (
        "maxmin_budget" not in Genesis.from_json(genesis_json(goal="welfare")).to_json()["market"]
    )


@pytest.mark.parametrize(
    ("market", "value"),
    [
        ({"goal": "maxmin", "maxmin_budget": -1}, "-1"),
        ({"goal": "maxmin", "maxmin_budget": 1.5}, "1.5"),
        ({"goal": "maxmin", "maxmin_budget": 10**8}, str(10**8)),
        ({"goal": "welfare", "maxmin_budget": 1000}, "'welfare'"),
    ],
)
def test_invalid_genesis_maxmin_budget(market: dict[str, Any], value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Genesis.from_json(genesis_json(**market))
    assert err.value.field == "genesis.market.maxmin_budget"
    assert value in err.value.message


def test_maxmin_budget_reaches_the_clearing() -> None:
    # A budget of 0 leaves the clearing to rounding: the same book the default budget proves
    # optimal (no bound) then carries its LP bound instead.
    from peerpower.market import clear, parse_book

    orders = [
        {
            "id": f"s{k}",
            "participant": f"S{k}",
            "side": "sell",
            "energy_wh": 300,
            "price_sen_per_kwh": 1000 + 100 * k,
        }
        for k in range(3)
    ] + [
        {
            "id": f"b{k}",
            "participant": f"B{k}",
            "side": "buy",
            "energy_wh": 200,
            "price_sen_per_kwh": 2500 - 150 * k,
        }
        for k in range(4)
    ]
    book = parse_book({"orders": orders})
    proven = clear(book, "optimal", "maxmin")
    rounded = clear(book, "optimal", "maxmin", maxmin_budget=0)
    assert proven.bound is None
    assert rounded.bound is not None and rounded.bound["method"] == "lp-rounding"
    assert rounded.objective is not None and proven.objective is not None
    assert rounded.objective.primary < proven.objective.primary  # the MILP did better
