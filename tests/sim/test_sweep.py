"""``peerpower sweep``: seeds parsed strictly, runs on a local Dask cluster equal to runs in this
process, intervals recomputed here, bad flags refused naming the flag."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
from scipy import stats

from peerpower.cli import main
from peerpower.errors import InvalidInput
from peerpower.sim import sweep as sw
from peerpower.sim.runner import run
from peerpower.sim.scenario import MAX_SEED
from peerpower.sim.summary import summary
from tests.sim.community import community, community_toml


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("1-10", list(range(1, 11))), ("7", [7]), ("1-3,8, 20-21", [1, 2, 3, 8, 20, 21]), ("0", [0])],
)
def test_seeds_are_parsed(text: str, seeds: list[int]) -> None:
    assert sw.parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("5-1", "ends before it starts"),
        ("a", "not a seed"),
        ("1-", "not a seed"),
        ("-3", "not a seed"),
        ("1.5", "not a seed"),
        ("", "not a seed"),
        ("1-3,2", "twice"),
        (f"{MAX_SEED + 1}", "largest seed"),
        ("1-20000", "more than"),
    ],
)
def test_invalid_seeds(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        sw.parse_seeds(text)
    assert info.value.field == "--seeds"
    assert says in info.value.message


def test_intervals_are_students_t_over_the_runs() -> None:
    runs = [
        {"market": {"traded_kwh": x, "midday_price_yen_per_kwh": p}, "by_type": {}}
        for x, p in ((1.0, None), (2.0, 10.0), (3.0, 12.0), (4.0, None))
    ]
    got = sw.intervals(runs)
    xs = [1.0, 2.0, 3.0, 4.0]
    mean = sum(xs) / 4
    half = stats.t.ppf(0.975, 3) * stats.tstd(xs) / math.sqrt(4)
    assert got["market.traded_kwh"]["mean"] == mean
    assert got["market.traded_kwh"]["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    # a figure missing (null) in a run counts only where it was measured
    assert got["market.midday_price_yen_per_kwh"]["n"] == 2
    assert got["market.midday_price_yen_per_kwh"]["mean"] == 11.0


def test_sweep_on_a_local_cluster_equals_runs_here(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(community_toml())
    code = main(
        [
            "sweep",
            "--scenario",
            str(tmp_path / "small.toml"),
            "--seeds",
            "4-6",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["seed"] for r in data["runs"]] == [4, 5, 6]
    assert data["variants"] == ["scenario"] and data["days"] == 1
    # each run in its worker process is the run of the same seed in this one
    here = run(community("small").with_overrides(seed=5))
    mine = summary(here, True)
    theirs = next(r["summary"] for r in data["runs"] if r["seed"] == 5)
    assert theirs == json.loads(json.dumps(mine))
    # the figures are the runs' own
    traded = [r["summary"]["market"]["traded_kwh"] for r in data["runs"]]
    f = data["figures"]["scenario"]["market.traded_kwh"]
    assert f["n"] == 3 and f["mean"] == pytest.approx(sum(traded) / 3, abs=1e-4)
    assert len({r["summary"]["market"]["traded_kwh"] for r in data["runs"]}) > 1  # seeds differ


def test_sweep_with_variants_runs_each_for_every_seed(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(community_toml())
    with sw.cluster(1, None) as client:
        data = sw.sweep(
            community("small"),
            [1, 2],
            [("call", None, None), ("optimal", "welfare", None)],
            client,
        )
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [
        ("call", 1),
        ("call", 2),
        ("optimal:welfare", 1),
        ("optimal:welfare", 2),
    ]
    assert all(r["summary"]["mechanism"] == r["variant"].split(":")[0] for r in data["runs"])
    assert set(data["figures"]) == {"call", "optimal:welfare"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_invalid_sweep_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sw, "CONNECT_TIMEOUT_S", 2)
    base = ["sweep", "--scenario", "misono", "--out", str(tmp_path)]
    cases = [
        (["--seeds", "5-1"], "--seeds", "5-1"),
        (["--seeds", "1-2", "--workers", "0"], "--workers", "0"),
        (["--seeds", "1-2", "--scheduler", "localhost"], "--scheduler", "localhost"),
        (
            ["--seeds", "1-2", "--scheduler", f"tcp://127.0.0.1:{_closed_port()}"],
            "--scheduler",
            "127.0.0.1",
        ),
        (["--seeds", "1", "--workers", "2", "--scheduler", "tcp://a:1"], "--workers", "not both"),
    ]
    for flags, field, says in cases:
        assert main(base + flags) == 2, flags
        err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert err["field"] == field and says in err["error"], (flags, err)
    assert not (tmp_path / "sweep.json").exists()


def test_sweep_on_a_scheduler_given_by_address(tmp_path: Path) -> None:
    # a cluster started elsewhere (here: in this process, on 127.0.0.1), reached by address
    from distributed import LocalCluster

    (tmp_path / "small.toml").write_text(community_toml())
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as outside:
        address = outside.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        code = main(
            [
                "sweep",
                "--scenario",
                str(tmp_path / "small.toml"),
                "--seeds",
                "2",
                "--scheduler",
                address,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        assert code == 0
        assert len(outside.scheduler_info["workers"]) == 1  # still up: the sweep did not close it
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    mine = summary(run(community("small").with_overrides(seed=2)), True)
    assert data["runs"][0]["summary"] == json.loads(json.dumps(mine))
