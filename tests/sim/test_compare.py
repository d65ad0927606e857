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


def test_a_call_auction_over_distance_fees_is_explained(tmp_path: Path) -> None:
    from peerpower.sim.compare import _one_fee
    from peerpower.sim.scenario import load_scenario, parse_scenario

    assert not _one_fee(load_scenario("misono"))
    flat = community_toml().replace(
        "sites_per_transformer = 4",
        "sites_per_transformer = 4\nfeeder_fee_yen_per_kwh = 0\n"
        "transformer_fee_yen_per_kwh = 0\nsite_fee_yen_per_kwh = 0",
    )
    assert _one_fee(parse_scenario(flat, "flat.toml", tmp_path))
    rows = compare(community("small", 1), parse_variants("call"), tmp_path)
    assert not _one_fee(community("small", 1))
    assert "one fee for every pair" in rows[0]["note"]
    assert "one fee for every pair" in table(rows)
