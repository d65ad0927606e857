"""``peerpower simulate --compare``: one community under several markets, tabulated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerpower.cli import main
from peerpower.sim.compare import compare, market_profits, parse_variants, table
from peerpower.sim.runner import run
from tests.sim.community import community, community_toml


def test_welfare_is_the_participants_profits_together() -> None:
    result = run(community("small", 1))
    welfare, per_wh = market_profits(result)
    assert welfare > 0
    # the clearings' recorded welfare equals every participant's profit against its limit
    # prices, summed (computed trade by trade from the chain's orders)
    orders = {}
    for block in result.validators.blocks:
        for tx in block.txs:
            b = tx["body"]
            if b["type"] == "order":
                orders[f"{b['from']}#{b['nonce']}"] = b
    total = 0
    for units in result.contracts.values():
        for u in units:
            ask = orders[u.sell_order]["price_sen_per_kwh"]
            bid = orders[u.buy_order]["price_sen_per_kwh"]
            total += (bid - ask - u.fee_sen_per_kwh) * u.energy_wh * 10
    assert welfare == total
    assert min(per_wh.values()) >= 0  # nobody trades beyond its limit price


def test_compare_runs_each_variant(tmp_path: Path) -> None:
    rows = compare(community("small", 1), parse_variants("cda,optimal:welfare"), tmp_path)
    assert [r["variant"] for r in rows] == ["cda", "optimal:welfare"]
    for r, folder in zip(rows, ("cda", "optimal-welfare"), strict=True):
        assert r["checks"] is True
        assert (tmp_path / folder / "summary.json").exists()
        data = json.loads((tmp_path / folder / "summary.json").read_text())
        assert r["traded_kwh"] == data["market"]["traded_kwh"]
    assert json.loads((tmp_path / "compare.json").read_text()) == rows
    text = table(rows)
    assert "welfare ¥" in text and "optimal:welfare" in text


def test_compare_bad_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(community_toml())
    code = main(
        [
            "simulate",
            "--scenario",
            str(scenario),
            "--compare",
            "cda,auction",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "'auction' is not one of" in capsys.readouterr().err


def test_a_call_auction_clears_over_distance_fees_by_node(tmp_path: Path) -> None:
    # Before issue 15 a call auction left every slot void on a grid with distance fees; by
    # market splitting it clears them, one price per node.
    scenario = community("small", 1)
    grid = scenario.market_rules().grid
    assert len({grid.fee(a, b) for a in range(grid.size) for b in range(grid.size)}) > 2
    rows = compare(scenario, parse_variants("call"), tmp_path)
    assert rows[0]["checks"] is True and rows[0]["pricing"] == "nodal"
    assert "note" not in rows[0]
    cleared = []
    for line in (tmp_path / "call" / "chain.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tx in record.get("txs", []):
            if tx["body"]["type"] == "clear":
                cleared.append(tx["body"]["result"])
    traded = [r for r in cleared if r["trades"]]
    assert traded, "the call auction traded nothing"
    for r in traded:
        assert r["pricing"] == "nodal"
        assert set(r["node_prices_sen_per_kwh"]) == set(grid.ids)
        for t in r["trades"]:
            assert t["buyer_price_sen_per_kwh"] - t["price_sen_per_kwh"] >= t["fee_sen_per_kwh"]
    assert rows[0]["traded_kwh"] == round(
        sum(t["energy_wh"] for r in traded for t in r["trades"]) / 1000, 1
    )


def test_parse_variants_takes_a_pricing() -> None:
    assert parse_variants("optimal:welfare:midpoint,call") == [
        ("optimal", "welfare", "midpoint"),
        ("call", None, None),
    ]
