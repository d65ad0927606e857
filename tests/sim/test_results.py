"""docs/results.md is written from sweeps: its figures are the runs' own."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from scipy import stats

from peerpower.cli import main
from peerpower.sim.results import RESIDENTIAL, build, renewable_share, without_batteries
from peerpower.sim.scenario import load_scenario
from peerpower.sim.sweep import cluster


@pytest.mark.slow
def test_results_document_carries_the_sweeps_figures() -> None:
    with cluster(2, None) as client:
        text, sweeps = build([1, 2], 1, client)
    m, h = sweeps["misono"], sweeps["higashifuji"]
    assert [r["seed"] for r in m["runs"]] == [1, 2] and h["days"] == 1
    # the household bill change, recomputed per run from the types' own costs
    changes = []
    for r in m["runs"]:
        rows = [t for n, t in r["summary"]["by_type"].items() if n in RESIDENTIAL]
        saving = sum(t["baseline_cost_yen"] - t["p2p_cost_yen"] for t in rows)
        changes.append(-100 * saving / sum(t["gross_cost_yen"] for t in rows))
    mean = sum(changes) / 2
    half = stats.t.ppf(0.975, 1) * stats.tstd(changes) / math.sqrt(2)
    lo, hi = mean - half, mean + half
    row = next(line for line in text.splitlines() if line.startswith("| household bills"))
    assert f"{mean:+.1f} [{lo:.1f}, {hi:.1f}] % (misono)" in row
    # each type's row is the sweep's
    for name, t in m["runs"][0]["summary"]["by_type"].items():
        f = m["figures"]["scenario"][f"by_type.{name}.saving_yen_per_site_day"]
        lo, hi = f["ci95"]
        assert f"| {name} | {t['sites']} | {f['mean']:.2f} [{lo:.2f}, {hi:.2f}] |" in text
    # the battery-free sweep really ran without batteries, and differs
    nb = sweeps["misono-no-batteries"]
    assert nb["runs"][0]["summary"]["by_type"] != m["runs"][0]["summary"]["by_type"]
    assert "pv-battery" in nb["runs"][0]["summary"]["by_type"]  # the type stays, its battery not
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
    for flags, field in ((["--days", "0"], "--days"), (["--seeds", "3-1"], "--seeds")):
        code = main(["results", "--out", str(tmp_path / "r.md"), *flags])
        assert code == 2
        err = capsys.readouterr().err
        assert re.search(rf"{field}.*{flags[1]}", err), err
    assert not (tmp_path / "r.md").exists()


def test_a_figure_measured_in_only_some_runs_says_in_how_many() -> None:
    from peerpower.sim.results import _ci

    some = {"mean": 22.5, "ci95": [17.6, 27.4], "n": 4}
    assert _ci(some, " yen/kWh", 2, runs=10) == "22.50 [17.60, 27.40] yen/kWh (in 4 of 10 runs)"
    assert _ci({**some, "n": 10}, " yen/kWh", 2, runs=10) == "22.50 [17.60, 27.40] yen/kWh"
    assert _ci({"mean": None, "ci95": None, "n": 0}, runs=10) == "–"


def test_a_saving_is_not_a_share_of_a_gross_bill_of_a_few_yen() -> None:
    from peerpower.sim.results import GROSS_FLOOR_YEN, _type_table

    def run(gross_home: float, gross_tiny: float) -> dict[str, object]:
        by_type = {
            "home": {"sites": 2, "gross_cost_yen": gross_home, "storage_credit_yen": 0.0},
            "tiny": {"sites": 1, "gross_cost_yen": gross_tiny, "storage_credit_yen": 0.0},
        }
        return {"summary": {"by_type": by_type}}

    figure = {"mean": 12.0, "ci95": [10.0, 14.0], "n": 2}
    sweep = {
        "days": 7,
        "runs": [run(7000.0, 20.0), run(8000.0, 100.0)],
        "figures": {
            "scenario": {
                f"by_type.{n}.{k}": figure
                for n in ("home", "tiny")
                for k in ("saving_yen_per_site_day", "saving_percent_of_gross")
            }
        },
    }
    rows = _type_table(sweep)
    home = next(r for r in rows if r.startswith("| home |"))
    tiny = next(r for r in rows if r.startswith("| tiny |"))
    assert "| 12.0 [10.0, 14.0] |" in home  # 500–571 yen a site-day: the share stands
    assert 20.0 / 7 < GROSS_FLOOR_YEN <= 100.0 / 7
    assert "– (gross bill 2.9–14.3 yen a site-day)" in tiny and "12.0 [10.0" not in tiny
