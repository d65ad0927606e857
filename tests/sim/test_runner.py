"""A small community through the whole stack: outputs written, checks computed (and able to
fail), money and energy accounted for, the same seed giving the same summary."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from peerpower.cli import main
from peerpower.ledger.replay import verify_path
from peerpower.sim.network import Validators
from peerpower.sim.runner import costs_microyen, run
from peerpower.sim.scenario import Scenario
from peerpower.sim.summary import summary, write_outputs
from tests.sim.community import community, community_toml


def small(validators: int = 1) -> Scenario:
    return community("small", validators)


def test_simulation_solo_outputs_and_checks(tmp_path: Path) -> None:
    result = run(small())
    data = write_outputs(result, tmp_path)
    assert data["checks"] == {
        "energy_balanced": True,
        "money_conserved": True,
        "chain_verified": True,
    }
    assert data["sites"] == 8 and data["days"] == 1
    assert set(data["by_type"]) == {"pv", "consumer", "pv-battery", "consumer-phev"}
    assert len(data["slots"]) == 48
    # the market traded, and its volume is the trades file's and the chain's
    with (tmp_path / "trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    traded = sum(int(r["energy_wh"]) for r in rows)
    assert traded > 0
    assert data["market"]["traded_kwh"] == round(traded / 1000, 1)
    assert sum(s["volume_wh"] for s in data["slots"]) == traded
    verify_path(tmp_path / "chain.jsonl")
    assert json.loads((tmp_path / "summary.json").read_text()) == data
    # every slot was metered and settled on chain
    state = result.validators.state
    assert len(state.table("settled")) == 48
    assert all(len(ds) == 48 for ds in result.deliveries.values())
    assert all(len(ds) == 48 for ds in result.baseline.values())
    # bills: baseline = retail only; by type sums match per-site costs
    costs = costs_microyen(result)
    total_base = sum(b for _, b in costs.values())
    assert round(total_base / 1e6, 2) == pytest.approx(
        sum(t["baseline_cost_yen"] for t in data["by_type"].values()), abs=0.05
    )


def test_simulation_checks_can_fail() -> None:
    result = run(small())
    assert summary(result, True)["checks"]["energy_balanced"] is True
    d = result.deliveries["site-000"][20]
    result.deliveries["site-000"][20] = replace(d, import_wh=d.import_wh + 5)
    assert summary(result, True)["checks"]["energy_balanced"] is False


def test_simulation_is_deterministic() -> None:
    a = summary(run(small()), True)
    b = summary(run(small()), True)
    assert a == b


def test_a_site_whose_transactions_were_lost_resyncs(monkeypatch: pytest.MonkeyPatch) -> None:
    # site-006's third batch of bids never reaches the chain (as if refused): its controller's
    # nonce runs ahead of the chain's, and from then on all it sends would be refused — unless
    # it takes the chain's view of its account, as it must
    batches = {"n": 0}
    real_submit = Validators.submit

    def lossy(self: Validators, txs: list[dict]) -> int:  # type: ignore[type-arg]
        if any(tx["body"].get("from") == "site-006" for tx in txs):
            batches["n"] += 1
            if batches["n"] == 3:  # its third batch of bids is lost
                txs = [tx for tx in txs if tx["body"].get("from") != "site-006"]
                batches["lost_at"] = self.state.meta.time_ms
        return real_submit(self, txs)

    monkeypatch.setattr(Validators, "submit", lossy)
    result = run(small())
    assert batches["n"] > 3
    assert result.resyncs >= 1
    assert result.refused == 0  # nothing it sent after the loss was refused (nor any other's)
    # it went on bidding: orders of its reached the chain after the loss
    later = [
        tx
        for b in result.validators.blocks
        if b.header.time_ms > batches["lost_at"]
        for tx in b.txs
        if tx["body"].get("from") == "site-006" and tx["body"]["type"] == "order"
    ]
    assert later


def test_the_operator_reinstates_suspended_sites_daily() -> None:
    result = run(small().with_overrides(days=2))
    assert result.reinstated, "no site was suspended: the test needs one"
    day2 = result.validators.blocks[0].header.time_ms + 25 * 3600 * 1000  # genesis is 23:00
    for site in result.reinstated:
        # back in: it bid again on the second day, and nothing it sent was refused
        assert any(
            tx["body"].get("from") == site and tx["body"]["type"] == "order"
            for b in result.validators.blocks
            if b.header.time_ms > day2
            for tx in b.txs
        ), site
    assert result.refused == 0


@pytest.mark.slow
def test_simulation_four_validators(tmp_path: Path) -> None:
    data = write_outputs(run(small(4)), tmp_path)
    assert all(data["checks"].values())
    assert data["validators"] == 4
    assert data["market"]["traded_kwh"] > 0


def test_simulate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(community_toml())
    assert main(["simulate", "--scenario", str(scenario), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "small: 8 sites" in out and "checks: energy_balanced yes" in out
    assert (tmp_path / "out" / "summary.json").exists()


def test_invalid_simulate_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "atlantis", "--out", str(tmp_path)]) == 2
    err = json.loads(capsys.readouterr().err)
    assert "atlantis" in err["error"]


def test_bench_simulate_reports_what_it_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    scenario = tmp_path / "small.toml"
    scenario.write_text(community_toml())
    code = main(["bench", "simulate", "--scenario", str(scenario)])
    out = capsys.readouterr().out
    found = re.search(
        r"8 sites, 1 day\(s\), 1 validator.* in ([\d.]+) s .* peak memory ([\d,]+) MB", out
    )
    assert found is not None, out
    assert code == (
        0 if float(found.group(1)) < 60 and int(found.group(2).replace(",", "")) < 2048 else 1
    )
