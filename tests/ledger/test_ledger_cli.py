"""``peerpower ledger example | export | verify``: files, output lines, exit codes, bad input.

Bad input exits 2 with nothing on stdout and one JSON line on stderr naming the field; a chain
that is read but breaks a rule exits 1 with one ``invalid:`` line (tests/ledger/test_replay.py).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from peerpower.cli import main
from peerpower.ledger.store import Store

OK_LINE = re.compile(
    r"ok: chain (?P<chain>[\w-]+), (?P<blocks>\d+) blocks, (?P<txs>\d+) transactions, "
    r"(?P<settled>\d+) µ¥ settled, state root (?P<root>[0-9a-f]{64})"
)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example") / "chain"
    assert main(["ledger", "example", "--out", str(out)]) == 0
    return out


def _bad_input(code: int, out: str, err: str, field: str) -> str:
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    error = json.loads(lines[0])
    assert error["field"] == field
    message: str = error["error"]
    return message


# --- example --------------------------------------------------------------------------------


def test_ledger_example_writes_db_and_jsonl(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "ex"
    code, out, err = _run(capsys, "ledger", "example", "--out", str(out_dir))
    assert code == 0 and err == ""
    db, jsonl = out_dir / "chain.db", out_dir / "chain.jsonl"
    lines = out.splitlines()
    assert lines[0] == f"wrote {db} and {jsonl}"
    assert len(lines) == 2 and OK_LINE.fullmatch(lines[1])
    assert db.is_file() and jsonl.is_file()
    with Store(db) as store:
        assert store.head_height() == len(jsonl.read_text().splitlines()) - 1


def test_invalid_ledger_example_refuses_existing_chain(example_dir: Path, capsys) -> None:
    before = (example_dir / "chain.jsonl").read_bytes()
    message = _bad_input(*_run(capsys, "ledger", "example", "--out", str(example_dir)), "out")
    assert "chain.db" in message and "exists" in message
    assert (example_dir / "chain.jsonl").read_bytes() == before


def test_invalid_ledger_example_out_is_a_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    message = _bad_input(*_run(capsys, "ledger", "example", "--out", str(path)), "out")
    assert str(path) in message


# --- verify ---------------------------------------------------------------------------------


def _chain(example_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (example_dir / "chain.jsonl").read_text().splitlines()]


def _settled_microyen(chain: list[dict[str, Any]]) -> int:
    """Money moved by settlement, recomputed from the chain's transactions by the documented
    rules: buyers pay price + fee, shortfalls pay the imbalance price (price [sen/kWh] ×
    energy [Wh] × 10 = µ¥)."""
    imbalance = chain[0]["genesis"]["params"]["imbalance_price_sen_per_kwh"]
    trades: dict[str, list[dict[str, Any]]] = {}
    readings: dict[tuple[str, str], tuple[int, int]] = {}
    settled: list[str] = []
    for block in chain[1:]:
        for tx in block["txs"]:
            body = tx["body"]
            if body["type"] == "clear":
                trades[body["slot"]] = body["result"]["trades"]
            elif body["type"] == "meter":
                readings[body["slot"], body["site"]] = (body["import_wh"], body["export_wh"])
            elif body["type"] == "settle":
                settled.append(body["slot"])
    total = 0
    for slot in settled:
        sold: dict[str, int] = defaultdict(int)
        bought: dict[str, int] = defaultdict(int)
        for t in trades.get(slot, []):
            total += (t["price_sen_per_kwh"] + t["fee_sen_per_kwh"]) * t["energy_wh"] * 10
            sold[t["seller"]] += t["energy_wh"]
            bought[t["buyer"]] += t["energy_wh"]
        for site in set(sold) | set(bought):
            imported, exported = readings.get((slot, site), (0, 0))
            short = max(0, sold[site] - exported) + max(0, bought[site] - imported)
            total += imbalance * short * 10
    return total


@pytest.mark.parametrize("name", ["chain.jsonl", "chain.db"])
def test_ledger_verify_ok_line_counts(example_dir: Path, capsys, name: str) -> None:
    code, out, err = _run(capsys, "ledger", "verify", str(example_dir / name))
    assert code == 0 and err == ""
    assert len(out.splitlines()) == 1 and out.startswith("ok:")
    found = OK_LINE.fullmatch(out.rstrip("\n"))
    assert found, out
    chain = _chain(example_dir)
    assert found["chain"] == chain[0]["genesis"]["chain_id"] == "peerpower-example"
    assert int(found["blocks"]) == len(chain) - 1
    assert int(found["txs"]) == sum(len(block["txs"]) for block in chain[1:])
    assert int(found["settled"]) == _settled_microyen(chain)


def test_ledger_example_settles_the_documented_shortfall(example_dir: Path, capsys) -> None:
    # By hand from the example's story: home-pv sold 1.2 kWh in #25 and exported 0.6 kWh;
    # 0.6 kWh × 30 yen/kWh = 18 yen = 18,000,000 µ¥, the only penalty of the story.
    chain = _chain(example_dir)
    sold = exported = 0
    trade_money = 0
    for block in chain[1:]:
        for tx in block["txs"]:
            body = tx["body"]
            if body["type"] == "clear":
                for t in body["result"]["trades"]:
                    trade_money += (t["price_sen_per_kwh"] + t["fee_sen_per_kwh"]) * t["energy_wh"]
                    if (body["slot"], t["seller"]) == ("2026-08-18#25", "home-pv"):
                        sold += t["energy_wh"]
            elif body["type"] == "meter" and (body["slot"], body["site"]) == (
                "2026-08-18#25",
                "home-pv",
            ):
                exported = body["export_wh"]
    assert (sold, exported) == (1200, 600)
    code, out, _ = _run(capsys, "ledger", "verify", "--json", str(example_dir / "chain.db"))
    assert code == 0
    assert json.loads(out)["settled_microyen"] - trade_money * 10 == 18_000_000


def test_ledger_verify_db_and_jsonl_agree(example_dir: Path, capsys) -> None:
    _, from_db, _ = _run(capsys, "ledger", "verify", str(example_dir / "chain.db"))
    _, from_jsonl, _ = _run(capsys, "ledger", "verify", str(example_dir / "chain.jsonl"))
    assert from_db == from_jsonl


@pytest.mark.parametrize("name", ["chain.jsonl", "chain.db"])
def test_ledger_verify_json(example_dir: Path, capsys, name: str) -> None:
    code, out, err = _run(capsys, "ledger", "verify", "--json", str(example_dir / name))
    assert code == 0 and err == ""
    assert len(out.splitlines()) == 1
    report = json.loads(out)
    chain = _chain(example_dir)
    assert report == {
        "ok": True,
        "chain_id": "peerpower-example",
        "blocks": len(chain) - 1,
        "transactions": sum(len(block["txs"]) for block in chain[1:]),
        "settled_microyen": _settled_microyen(chain),
        "state_root": chain[-1]["header"]["state_root"],
    }


# --- export ---------------------------------------------------------------------------------


def test_ledger_export_reproduces_jsonl(example_dir: Path, tmp_path: Path, capsys) -> None:
    out_path = tmp_path / "again.jsonl"
    code, out, err = _run(
        capsys, "ledger", "export", "--db", str(example_dir / "chain.db"), "--out", str(out_path)
    )
    assert code == 0 and err == ""
    assert json.loads(out) == {"blocks": len(_chain(example_dir)) - 1, "out": str(out_path)}
    assert out_path.read_bytes() == (example_dir / "chain.jsonl").read_bytes()


def test_ledger_jsonl_lines_are_canonical(example_dir: Path) -> None:
    raw = (example_dir / "chain.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.isascii()
    for line in raw.decode().splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
    first = json.loads(raw.decode().splitlines()[0])
    assert set(first) == {"genesis", "hash"}
    heights = [json.loads(line)["header"]["height"] for line in raw.decode().splitlines()[1:]]
    assert heights == list(range(1, len(heights) + 1))


@pytest.mark.parametrize("name", ["missing.db", "notes.txt"])
def test_invalid_ledger_export_db(tmp_path: Path, capsys, name: str) -> None:
    path = tmp_path / name
    if name == "notes.txt":
        path.write_text("not a database\n" * 100)
    message = _bad_input(
        *_run(capsys, "ledger", "export", "--db", str(path), "--out", str(tmp_path / "o.jsonl")),
        "db",
    )
    assert str(path) in message
    assert not (tmp_path / "o.jsonl").exists()


def test_invalid_ledger_export_db_without_chain(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fresh.db"
    Store(path, create=True).close()
    message = _bad_input(
        *_run(capsys, "ledger", "export", "--db", str(path), "--out", str(tmp_path / "o.jsonl")),
        "db",
    )
    assert "holds no chain" in message


def test_invalid_ledger_export_out_folder_missing(
    example_dir: Path, tmp_path: Path, capsys
) -> None:
    target = tmp_path / "no-such-folder" / "o.jsonl"
    message = _bad_input(
        *_run(
            capsys, "ledger", "export", "--db", str(example_dir / "chain.db"), "--out", str(target)
        ),
        "out",
    )
    assert str(target) in message


# --- verify: input that is not a chain ------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.db"])
def test_invalid_ledger_verify_missing_file(tmp_path: Path, capsys, name: str) -> None:
    path = tmp_path / name
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "chain")
    assert str(path) in message and "does not exist" in message
    assert not path.exists()


@pytest.mark.parametrize(
    "content", [b"", b"SQLite format 2\x00 but not really" * 50, b"\xff\xfe\x00\x01" * 1000]
)
def test_invalid_ledger_verify_not_a_database(tmp_path: Path, capsys, content: bytes) -> None:
    path = tmp_path / "chain.db"
    path.write_bytes(content)
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "chain")
    assert str(path) in message and "not a peerpower database" in message
    assert path.read_bytes() == content  # verifying never writes to a file that is not ours
    assert [p.name for p in tmp_path.iterdir()] == ["chain.db"]


def test_invalid_ledger_verify_database_without_chain(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fresh.db"
    Store(path, create=True).close()
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "chain")
    assert "holds no chain" in message


def test_invalid_ledger_verify_folder(tmp_path: Path, capsys) -> None:
    message = _bad_input(*_run(capsys, "ledger", "verify", str(tmp_path)), "chain")
    assert str(tmp_path) in message


@pytest.mark.parametrize(
    ("first", "needle"),
    [
        (b"", "not JSON"),
        (b"hello\n", "not JSON"),
        (b"\xff\xfe{}\n", "not JSON"),
        (b"[1, 2]\n", '{"genesis": ...}'),
        (b'{"hash": "00"}\n', '{"genesis": ...}'),
    ],
    ids=["empty", "text", "not-utf8", "list", "no-genesis"],
)
def test_invalid_ledger_verify_first_line_not_genesis(
    tmp_path: Path, capsys, example_dir: Path, first: bytes, needle: str
) -> None:
    blocks = (example_dir / "chain.jsonl").read_bytes().splitlines(keepends=True)[1:]
    path = tmp_path / "chain.jsonl"
    path.write_bytes(first + (b"".join(blocks) if first else b""))
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "chain")
    assert str(path) in message and "line 1" in message and needle in message


def test_invalid_ledger_verify_blocks_without_genesis(
    tmp_path: Path, capsys, example_dir: Path
) -> None:
    blocks = (example_dir / "chain.jsonl").read_bytes().splitlines(keepends=True)[1:]
    path = tmp_path / "chain.jsonl"
    path.write_bytes(b"".join(blocks))  # the genesis line left out
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "chain")
    assert '{"genesis": ...}' in message


def test_invalid_ledger_verify_genesis_field(tmp_path: Path, capsys, example_dir: Path) -> None:
    lines = (example_dir / "chain.jsonl").read_text().splitlines(keepends=True)
    head = json.loads(lines[0])
    head["genesis"]["accounts"][0]["key"] = "zz"
    del head["hash"]
    path = tmp_path / "chain.jsonl"
    path.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    message = _bad_input(*_run(capsys, "ledger", "verify", str(path)), "genesis.accounts[0].key")
    assert "zz" in message


def test_ledger_verify_sqlite_suffixes(example_dir: Path, tmp_path: Path, capsys) -> None:
    for suffix in (".sqlite", ".sqlite3"):
        path = tmp_path / f"chain{suffix}"
        shutil.copyfile(example_dir / "chain.db", path)
        code, out, _ = _run(capsys, "ledger", "verify", str(path))
        assert code == 0 and out.startswith("ok:")
