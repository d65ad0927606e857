"""docs/results.md is written from runs: its figures are the runs' own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peerpower.cli import main
from peerpower.sim.results import RESIDENTIAL, build, renewable_share, without_batteries
from peerpower.sim.runner import costs_microyen
from peerpower.sim.scenario import load_scenario


@pytest.mark.slow
def test_results_document_carries_the_runs_figures() -> None:
    text, cases = build(misono_days=1, higashifuji_days=1, validators=1)
    m = cases["misono"]
    # the household cost change, recomputed from the sites' own costs
    costs = costs_microyen(m.result)
    homes = [s.id for s in m.result.scenario.sites if s.site_type in RESIDENTIAL]
    base = sum(costs[h].base for h in homes)
    p2p = sum(costs[h].p2p for h in homes)
    change = 100 * (p2p - base) / abs(base)
    row = next(line for line in text.splitlines() if line.startswith("| household bills"))
    assert f"{change:+.1f} % (misono)".replace("+-", "-") in row.replace("+-", "-")
    # each type's row is the summary's
    for name, t in m.summary["by_type"].items():
        assert f"| {name} | {t['sites']} | {t['baseline_cost_yen']:,.0f} |" in text
    assert f"Traded {m.summary['market']['traded_kwh']:g} kWh" in text
    # the battery-free run really has no batteries, and differs
    nb = cases["misono-no-batteries"]
    assert all(c.battery is None for c in nb.result.sites.values())
    assert any(c.battery is not None for c in m.result.sites.values())
    # no placeholder left
    assert "None" not in text and "nan" not in text


def test_without_batteries_keeps_everything_else() -> None:
    s = load_scenario("misono")
    nb = without_batteries(s)
    assert [x.id for x in nb.sites] == [x.id for x in s.sites]
    assert all(x.battery is None for x in nb.sites)
    assert [x.ev for x in nb.sites] == [x.ev for x in s.sites]
    assert nb.seed == s.seed and nb.start == s.start


def test_renewable_share_counts_own_pv_and_purchases() -> None:
    from dataclasses import dataclass

    @dataclass
    class D:
        pv_wh: int
        export_wh: int
        import_wh: int
        bought_wh: int

    # 600 Wh own PV used (1000 − 400 out), 300 imported of which 200 bought from neighbours
    share = renewable_share([D(1000, 400, 0, 0), D(0, 0, 300, 200)])  # type: ignore[list-item]
    assert share == pytest.approx(800 / 900)


def test_results_cli_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["results", "--out", str(tmp_path / "r.md"), "--misono-days", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(r"misono-days.*0", err)
    assert not (tmp_path / "r.md").exists()
