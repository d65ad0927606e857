"""The command line: JSON in, JSON out; bad input exits 2 with one JSON line on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peerpower.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"

GOOD = {
    "lot_wh": 100,
    "orders": [
        {
            "id": "b1",
            "participant": "A",
            "side": "buy",
            "energy_wh": 200,
            "price_sen_per_kwh": 1000,
        },
        {
            "id": "s1",
            "participant": "B",
            "side": "sell",
            "energy_wh": 200,
            "price_sen_per_kwh": 650,
        },
    ],
}


def _run(tmp_path: Path, capsys, book, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "book.json"
    path.write_text(book if isinstance(book, str) else json.dumps(book))
    code = main(["clear", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_clear_prints_result_json(tmp_path: Path, capsys) -> None:
    code, out, err = _run(tmp_path, capsys, GOOD, "--mechanism", "optimal")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["goal"] == "welfare"
    assert result["trades"] == [
        {
            "sell_order": "s1",
            "buy_order": "b1",
            "seller": "B",
            "buyer": "A",
            "energy_wh": 200,
            "price_sen_per_kwh": 825,
            "fee_sen_per_kwh": 0,
            "buyer_price_sen_per_kwh": 825,
        }
    ]
    assert result["totals"] == {
        "volume_wh": 200,
        "welfare_microyen": 700000,
        "fees_microyen": 0,
        "rent_microyen": 0,
    }
    # nodal pricing (the default for welfare): the curves meet on 6.50–10.00 yen/kWh
    assert result["pricing"] == "nodal"
    assert result["node_prices_sen_per_kwh"] == {"root": 825}


def test_verify_command_accepts_and_rejects(tmp_path: Path, capsys) -> None:
    _, out, _ = _run(tmp_path, capsys, GOOD, "--mechanism", "call")
    (tmp_path / "r.json").write_text(out)
    assert main(["verify", str(tmp_path / "book.json"), str(tmp_path / "r.json")]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    bad = json.loads(out)
    bad["trades"][0]["price_sen_per_kwh"] = 1001
    (tmp_path / "r.json").write_text(json.dumps(bad))
    assert main(["verify", str(tmp_path / "book.json"), str(tmp_path / "r.json")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["rule"] == "pricing"  # not its node's price
    bad = json.loads(out)
    bad["trades"][0]["fee_sen_per_kwh"] = 1.0
    (tmp_path / "r.json").write_text(json.dumps(bad))
    assert main(["verify", str(tmp_path / "book.json"), str(tmp_path / "r.json")]) == 2
    assert json.loads(capsys.readouterr().err)["field"] == "trades[0].fee_sen_per_kwh"
    bad = json.loads(out)
    bad["surprise"] = 1
    (tmp_path / "r.json").write_text(json.dumps(bad))
    assert main(["verify", str(tmp_path / "book.json"), str(tmp_path / "r.json")]) == 2
    assert json.loads(capsys.readouterr().err)["field"] == "surprise"


def _order(**change):
    book = json.loads(json.dumps(GOOD))
    book["orders"][0].update(change)
    return book


def _drop(field: str):
    book = json.loads(json.dumps(GOOD))
    del book["orders"][1][field]
    return book


INVALID = [
    ("not_json", "{not json", "book", "not JSON"),
    ("not_object", "[1, 2]", "$", "JSON object"),
    ("missing_side", _drop("side"), "orders[1].side", "missing"),
    ("missing_price", _drop("price_sen_per_kwh"), "orders[1].price_sen_per_kwh", "missing"),
    ("mistyped_energy", _order(energy_wh="200"), "orders[0].energy_wh", "'200'"),
    ("bool_energy", _order(energy_wh=True), "orders[0].energy_wh", "True"),
    ("unknown_side", _order(side="hold"), "orders[0].side", "'hold'"),
    ("partial_lot", _order(energy_wh=250), "orders[0].energy_wh", "250"),
    ("zero_energy", _order(energy_wh=0), "orders[0].energy_wh", "0"),
    ("negative_price", _order(price_sen_per_kwh=-1), "orders[0].price_sen_per_kwh", "-1"),
    ("huge_price", _order(price_sen_per_kwh=100001), "orders[0].price_sen_per_kwh", "100001"),
    ("float_price", _order(price_sen_per_kwh=10.5), "orders[0].price_sen_per_kwh", "10.5"),
    ("duplicate_id", _order(id="s1"), "orders[1].id", "'s1'"),
    ("unknown_node_no_grid", _order(node="x"), "orders[0].node", "'x'"),
    ("bad_seed", {**GOOD, "seed": "zz"}, "seed", "'zz'"),
    ("bad_lot", {**GOOD, "lot_wh": 0}, "lot_wh", "0"),
    ("orders_not_list", {"orders": {}}, "orders", "list"),
]


@pytest.mark.parametrize(("name", "book", "field", "names"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_exits_2_with_json_error(tmp_path, capsys, name, book, field, names) -> None:
    code, out, err = _run(tmp_path, capsys, book, "--mechanism", "cda")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["field"] == field
    assert names in error["error"]


GRID_CASES = [
    (
        "two_roots",
        [{"id": "a", "parent": None}, {"id": "b", "parent": None}],
        "grid.nodes",
        "exactly one root",
    ),
    (
        "cycle",
        [{"id": "r", "parent": None}, {"id": "a", "parent": "b"}, {"id": "b", "parent": "a"}],
        "grid.nodes",
        "cycle",
    ),
    (
        "unknown_parent",
        [{"id": "r", "parent": None}, {"id": "a", "parent": "zz"}],
        "grid.nodes[1].parent",
        "'zz'",
    ),
    (
        "duplicate_node",
        [{"id": "r", "parent": None}, {"id": "r", "parent": "r"}],
        "grid.nodes[1].id",
        "'r'",
    ),
    (
        "negative_fee",
        [{"id": "r", "parent": None}, {"id": "a", "parent": "r", "fee_sen_per_kwh": -5}],
        "grid.nodes[1].fee_sen_per_kwh",
        "-5",
    ),
    (
        "bad_capacity",
        [{"id": "r", "parent": None}, {"id": "a", "parent": "r", "capacity_wh": "big"}],
        "grid.nodes[1].capacity_wh",
        "'big'",
    ),
]


@pytest.mark.parametrize(
    ("name", "nodes", "field", "names"), GRID_CASES, ids=[c[0] for c in GRID_CASES]
)
def test_invalid_grid_exits_2(tmp_path, capsys, name, nodes, field, names) -> None:
    book = json.loads(json.dumps(GOOD))
    book["grid"] = {"nodes": nodes}
    for o in book["orders"]:
        o["node"] = nodes[0]["id"]
    code, out, err = _run(tmp_path, capsys, book, "--mechanism", "cda")
    assert (code, out) == (2, "")
    error = json.loads(err)
    assert error["field"] == field and names in error["error"]


def test_invalid_unknown_node_with_grid(tmp_path, capsys) -> None:
    book = {**GOOD, "grid": {"nodes": [{"id": "r", "parent": None}]}}
    book["orders"] = [dict(o, node="nowhere") for o in GOOD["orders"]]
    code, out, err = _run(tmp_path, capsys, book, "--mechanism", "cda")
    assert (code, out) == (2, "")
    assert json.loads(err)["field"] == "orders[0].node" and "'nowhere'" in err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--mechanism", "dutch"], "mechanism"),
        (["--mechanism", "optimal", "--goal", "fastest"], "goal"),
    ],
)
def test_invalid_mechanism_or_goal(tmp_path, capsys, args, field) -> None:
    code, out, err = _run(tmp_path, capsys, GOOD, *args)
    assert (code, out) == (2, "")
    error = json.loads(err)
    assert error["field"] == field and repr(args[-1]) in error["error"]


def test_missing_file_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["clear", str(tmp_path / "nope.json"), "--mechanism", "cda"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nope.json" in json.loads(err)["error"]


def test_module_entry_point_reads_stdin() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerpower",
            "clear",
            "-",
            "--mechanism",
            "optimal",
            "--goal",
            "maxmin",
        ],
        input=json.dumps(GOOD),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["goal"] == "maxmin"


def test_demo_prints_every_example_and_mechanism(capsys) -> None:
    assert main(["demo", "--examples", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    for path in EXAMPLES.glob("*.json"):
        assert path.name in out
    assert "SELL kWh | PRICE ¥/kWh | BUY kWh" in out
    assert "VERIFY FAILED" not in out
    assert out.count("[optimal --goal maxmin]") == len(list(EXAMPLES.glob("*.json")))


def test_bench_clearing_reports_time_and_lower_bound(tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "bench.json"
    args = ["bench", "clearing", "--sizes", "300", "--repeat", "1", "--no-self-cross"]
    args += ["--only", "cda,optimal:welfare:nodal,optimal:volume +cap"]
    assert main([*args, "--out", str(out_file)]) == 0
    rows = json.loads(out_file.read_text())
    assert [r["run"] for r in rows] == ["cda", "optimal:welfare:nodal", "optimal:volume +cap"]
    for row in rows:
        assert row["seconds"] > 0
        assert row["lower_bound_seconds"] > 0
        assert abs(row["ratio"] - row["seconds"] / row["lower_bound_seconds"]) < 0.1
    assert "lower bound s" in capsys.readouterr().out


def test_bench_clearing_runs_a_named_run_past_its_largest_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run capped at a size is left out above it by default, and measured when --only names it.
    from peerpower import bench

    capped = (bench.Run("cda", largest=100), bench.Run("call"))
    monkeypatch.setattr(bench, "RUNS", capped)
    args = ["bench", "clearing", "--sizes", "300", "--repeat", "1", "--no-self-cross"]
    out_file = tmp_path / "all.json"
    assert main([*args, "--out", str(out_file)]) == 0
    assert [r["run"] for r in json.loads(out_file.read_text())] == ["call"]
    assert main([*args, "--only", "cda", "--out", str(out_file)]) == 0
    assert [r["run"] for r in json.loads(out_file.read_text())] == ["cda"]
