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
from peerpower.sim.runner import chain_money, costs_microyen, run
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
    total_base = sum(c.base for c in costs.values())
    assert round(total_base / 1e6, 2) == pytest.approx(
        sum(t["baseline_cost_yen"] for t in data["by_type"].values()), abs=0.05
    )


def test_simulation_checks_can_fail() -> None:
    result = run(small())
    assert summary(result, True)["checks"]["energy_balanced"] is True
    d = result.deliveries["site-000"][20]
    result.deliveries["site-000"][20] = replace(d, import_wh=d.import_wh + 5)
    assert summary(result, True)["checks"]["energy_balanced"] is False


def test_summary_figures_are_the_runs_own() -> None:
    # Recomputed here from the deliveries, the baseline and the contracts; then a wash is
    # planted in one slot and the summary must see it.
    result = run(small())
    data = summary(result, True)
    m, s = data["market"], result.scenario
    slots = sorted({d.slot for ds in result.baseline.values() for d in ds})
    cap = sum(
        min(
            sum(d.export_wh for ds in result.baseline.values() for d in ds if d.slot == slot),
            sum(d.import_wh for ds in result.baseline.values() for d in ds if d.slot == slot),
        )
        for slot in slots
    )
    traded = sum(u.energy_wh for units in result.contracts.values() for u in units)
    assert cap > 0 and m["cap_kwh"] == round(cap / 1000, 1)
    assert m["absorbed_of_cap_percent"] == round(100 * traded / cap, 2)
    # a unit planted on each side of each window's edges, at a price of its own
    day, unit = next((k.split("#")[0], us[0]) for k, us in result.contracts.items() if us)
    for k in (19, 20, 29, 30, 33, 34, 41, 42):
        planted = replace(unit, energy_wh=100, price_sen_per_kwh=1_000 + 37 * k)
        key = f"{day}#{k}"
        result.contracts[key] = (*result.contracts.get(key, ()), planted)
    m = summary(result, True)["market"]
    windows = {"midday_price_yen_per_kwh": (10, 15), "evening_price_yen_per_kwh": (17, 21)}
    for key, (start, end) in windows.items():
        # a slot is "day#index"; slot k starts at k half hours past midnight
        units = [
            u
            for slot, us in result.contracts.items()
            for u in us
            if start * 60 <= int(slot.split("#")[1]) * 30 < end * 60
        ]
        energy = sum(u.energy_wh for u in units)
        money = sum(u.energy_wh * u.price_sen_per_kwh for u in units)
        assert m[key] == round(money / energy / 100, 2)
    # per type: saving per site-day and of the gross bill, from the sites' own costs
    costs = costs_microyen(result)
    for name, t in data["by_type"].items():
        ids = [x.id for x in s.sites if x.site_type == name]
        saving = sum(costs[i].base - costs[i].p2p for i in ids)
        gross = sum(costs[i].gross for i in ids)
        assert t["saving_yen_per_site_day"] == round(saving / len(ids) / s.days / 1e6, 2)
        assert t["saving_percent_of_gross"] == round(100 * saving / gross, 2)
    # storage left beyond the baseline's: at the buyback where PV refills it, else the tariff;
    # a site's battery or car left 1 kWh emptier must cost it exactly that
    for has_pv in (True, False):
        site = next(
            c
            for c in result.sites.values()
            if (c.spec.pv is not None) == has_pv and (c.battery or c.ev) is not None
        )
        store = site.battery if site.battery is not None else site.ev
        before = costs_microyen(result)[site.spec.id]
        store._stored_wh -= 1_000  # type: ignore[union-attr]
        after = costs_microyen(result)[site.spec.id]
        rate = s.buyback_sen_per_kwh if has_pv else s.tariff_sen_per_kwh
        assert before.storage - after.storage == 1_000 * rate * 10
        assert after.p2p - before.p2p == 1_000 * rate * 10
    assert m["wash_kwh"] == 0
    site_id = next(iter(result.deliveries))
    d = result.deliveries[site_id][30]
    result.deliveries[site_id][30] = replace(
        d, bought_wh=d.bought_wh + 700, sold_wh=d.sold_wh + 900
    )
    assert summary(result, True)["market"]["wash_kwh"] == round(
        (700 + min(d.bought_wh, d.sold_wh)) / 1000, 1
    )


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


def test_a_scenarios_name_does_not_change_what_its_seed_gives() -> None:
    a = summary(run(community("small")), True)
    b = summary(run(community("renamed")), True)
    assert a["scenario"] == "small" and b["scenario"] == "renamed"
    assert {**a, "scenario": None} == {**b, "scenario": None}


def test_a_car_charging_at_work_trades_on_its_own_account_there() -> None:
    from peerpower.agents.catalogue import car_account_id
    from peerpower.ledger.state import Account
    from peerpower.sim.scenario import parse_scenario

    toml = community_toml().replace(
        'type = "consumer-phev"\ncount = 1\n',
        'type = "consumer-phev"\ncount = 2\n'
        '[sites.car]\npattern = "workplace"\ncharge_at = "n-business-000"\n'
        '[[sites]]\ntype = "business"\nid_prefix = "business"\n',
    )
    sc = parse_scenario(toml, "work.toml", Path("."))  # a Tuesday
    result = run(sc)
    data = summary(result, True)
    assert data["checks"] == {
        "energy_balanced": True,
        "money_conserved": True,
        "chain_verified": True,
    }
    state = result.validators.state
    cars = [c for c in result.sites.values() if c.car_id is not None]
    assert len(cars) == 2
    costs = costs_microyen(result)
    for c in cars:
        car = car_account_id(c.spec.id)
        acct = state.account(car)
        assert isinstance(acct, Account) and acct.node == "n-business-000"
        assert acct.site_type == "ev"
        ds = result.deliveries[c.spec.id]
        at_work = [d for d in ds if d.car is not None]
        assert at_work and all(not d.ev_plugged and d.charge_wh == 0 for d in at_work)
        # every unit the car bought is a contract of its account, delivered at work and
        # metered there; it never bought what it could not take
        units = [u for us in result.contracts.values() for u in us if u.buyer == car]
        assert sum(u.energy_wh for u in units) == sum(d.car.bought_wh for d in at_work)
        assert all(d.car.import_wh >= d.car.bought_wh for d in at_work)
        assert sum(d.car.import_wh for d in at_work) > 0
        # its money is its site's: on chain at work, retail beyond its contracts
        retail = sum(
            max(0, x.import_wh - x.bought_wh) * sc.tariff_sen_per_kwh * 10
            for x in (*ds, *(d.car for d in at_work))
        ) - sum(max(0, x.export_wh - x.sold_wh) * sc.buyback_sen_per_kwh * 10 for x in ds)
        on_chain = sum(result.deposits[a] - chain_money(result, a) for a in (c.spec.id, car))
        cost = costs[c.spec.id]
        assert c.ev is not None
        fuel = round(c.ev.fuel_cost_yen * 1e6)
        assert cost.p2p == on_chain + retail + fuel - cost.storage


def test_the_genesis_funds_every_cars_account_too() -> None:
    from peerpower.sim.scenario import parse_scenario

    # more workplace cars than the genesis' spare deposits: every deposit is still made
    toml = community_toml().replace(
        'type = "consumer-phev"\ncount = 1\n',
        'type = "consumer-phev"\ncount = 12\n'
        '[sites.car]\npattern = "workplace"\ncharge_at = "n-business-000"\n'
        '[[sites]]\ntype = "business"\nid_prefix = "business"\n',
    )
    result = run(parse_scenario(toml, "cars.toml", Path(".")))
    assert result.refused == 0
    for c in result.sites.values():
        for account in (c.spec.id, c.car_id):
            if account is not None:
                assert result.deposits[account] == 20_000 * 1_000_000
                # what it holds on chain, plus what it paid, is its deposit
                assert chain_money(result, account) > 0
