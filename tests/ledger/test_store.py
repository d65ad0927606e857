"""SQLite storage of a node (peerpower.ledger.store): WAL, reopen, tampering, and SIGKILL."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from peerpower.cli import main
from peerpower.errors import InvalidInput
from peerpower.ledger.example import example_genesis, key, write_example
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.node import SoloNode
from peerpower.ledger.replay import verify_path
from peerpower.ledger.store import StorageError, Store

HEAD = 12  # blocks of the documented example chain


@pytest.fixture(scope="module")
def example_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example chain's database, written once; tests work on copies."""
    out = tmp_path_factory.mktemp("example")
    db, _jsonl, _node = write_example(out)
    assert not Path(str(db) + "-wal").exists()  # closed cleanly: one file holds everything
    return db


@pytest.fixture
def db(example_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "chain.db"
    shutil.copyfile(example_db, copy)
    return copy


def _sql(path: Path, statement: str, *params: Any) -> int:
    con = sqlite3.connect(path)
    try:
        cur = con.execute(statement, params)
        con.commit()
        return cur.rowcount
    finally:
        con.close()


def _verify_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["ledger", "verify", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# --- opening, reopening ---------------------------------------------------------------------


def test_store_wal_mode_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with Store(path, create=True) as store:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        other = sqlite3.connect(path)  # the journal mode is a property of the file
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()


def test_store_reopen_gives_same_state_and_head(tmp_path: Path) -> None:
    _db, _jsonl, node = write_example(tmp_path)
    with Store(tmp_path / "chain.db") as store:
        genesis, state = store.load()
        assert genesis.hash == example_genesis().hash
        assert store.head_height() == node.height == HEAD
        assert state.height == HEAD
        assert state.root == node.state.root
        assert state.head_hash == node.state.head_hash == store.block(HEAD).hash
        assert state.to_json() == node.state.to_json()
        assert store.block(HEAD).header.state_root == state.root


def test_store_node_restart_continues_from_head(db: Path) -> None:
    with Store(db) as store:
        last = store.block(HEAD)
        node = SoloNode(example_genesis(), "validator-1", key("validator-1"), store)
        assert node.height == HEAD
        block = node.produce(last.header.time_ms + 60_000)
        assert block.height == HEAD + 1
        assert block.header.prev_hash == last.hash
    with Store(db) as store:
        _genesis, state = store.load()
        assert store.head_height() == HEAD + 1
        assert state.head_hash == block.hash
    assert verify_path(db).blocks == HEAD + 1


def test_store_state_rows_are_canonical_json(db: Path) -> None:
    # The module notes promise canonical JSON for each record (sorted keys, no spaces).
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT value FROM state").fetchall()
        lines = [r[0] for r in con.execute("SELECT data FROM blocks ORDER BY height")]
    finally:
        con.close()
    assert len(rows) > 10
    for (value,) in rows:
        assert value == json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    for line in lines:
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))


def test_store_append_is_all_or_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(db) as store:
        before = store.stored_root()
        node = SoloNode(example_genesis(), "validator-1", key("validator-1"), store)

        def fail(self: Store, state: object) -> None:
            raise RuntimeError("disk on fire after the block and state rows were written")

        monkeypatch.setattr(Store, "_set_head", fail)
        with pytest.raises(RuntimeError):
            # an empty block still writes its row and the meta row (height, time) first
            node.produce(store.block(HEAD).header.time_ms + 7_200_000)
        monkeypatch.undo()
        assert node.height == HEAD
    with Store(db) as store:
        _genesis, state = store.load()
        assert store.head_height() == HEAD
        assert store.stored_root() == before == state.root
        count = store.db.execute("SELECT count(*) FROM blocks").fetchone()[0]
        assert count == HEAD


def test_invalid_store_initialise_other_genesis(db: Path) -> None:
    g = example_genesis()
    other = Genesis("another-chain", g.time_ms, g.accounts, g.market, g.params)
    with Store(db) as store, pytest.raises(StorageError, match="peerpower-example"):
        store.initialise(other)
    with Store(db) as store:
        assert store.head_height() == HEAD
        assert store.initialise(g).root == store.load()[1].root  # the same genesis reopens


def test_invalid_store_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        Store(tmp_path / "nothing.db")
    assert err.value.field == "db"
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.parametrize("content", [b"", b"not a database, just some words\n" * 40])
def test_invalid_store_foreign_file_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not a peerpower database"):
        Store(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_invalid_store_load_without_chain(tmp_path: Path) -> None:
    with Store(tmp_path / "new.db", create=True) as store:
        assert store.genesis() is None
        with pytest.raises(StorageError, match="holds no chain"):
            store.load()


def test_invalid_store_block_beyond_head(db: Path) -> None:
    with Store(db) as store, pytest.raises(InvalidInput) as err:
        store.block(HEAD + 1)
    assert err.value.field == "height"


# --- tampering ------------------------------------------------------------------------------


def _balance_plus_one(db: Path) -> None:
    con = sqlite3.connect(db)
    value = con.execute("SELECT value FROM state WHERE tbl='accounts' AND key='shop'").fetchone()
    con.close()
    record = json.loads(value[0])
    record["balance_microyen"] += 1
    assert (
        _sql(db, "UPDATE state SET value=? WHERE tbl='accounts' AND key='shop'", json.dumps(record))
        == 1
    )


def _delete_row(db: Path) -> None:
    assert _sql(db, "DELETE FROM state WHERE tbl='settled' AND key='2026-08-18#24'") == 1


def _extra_row(db: Path) -> None:
    record = {"slot": "2026-08-18#30", "status": "open", "sealed_height": 0, "seed": ""}
    _sql(db, "INSERT INTO state VALUES ('slots', '2026-08-18#30', ?)", json.dumps(record))


def _garbage_row(db: Path) -> None:
    assert _sql(db, "UPDATE state SET value='{not json' WHERE tbl='accounts' AND key='shop'") == 1


def _wrong_fields(db: Path) -> None:
    assert _sql(db, "UPDATE state SET value='{\"x\":1}' WHERE tbl='meta'") == 1


def _unknown_table(db: Path) -> None:
    _sql(db, "INSERT INTO state VALUES ('ghosts', 'k', '{}')")


@pytest.mark.parametrize(
    ("tamper", "rules"),
    [
        (_balance_plus_one, {"stored-state"}),
        (_delete_row, {"stored-state"}),
        (_extra_row, {"stored-state"}),
        (_garbage_row, {"storage"}),
        (_wrong_fields, {"storage"}),
        (_unknown_table, {"storage"}),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_invalid_store_tampered_state_row(
    db: Path, capsys: pytest.CaptureFixture[str], tamper: Any, rules: set[str]
) -> None:
    tamper(db)
    with Store(db) as store, pytest.raises(StorageError):
        store.load()
    code, out, err = _verify_cli(db, capsys)
    assert code == 1 and err == ""
    assert out.startswith("invalid: ")
    assert any(f"rule {rule}: " in out for rule in rules), out
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("head", ["11", "99", "twelve"])
def test_invalid_store_tampered_head(
    db: Path, capsys: pytest.CaptureFixture[str], head: str
) -> None:
    assert _sql(db, "UPDATE chain SET value=? WHERE key='head'", head) == 1
    with Store(db) as store, pytest.raises(StorageError):
        store.load()
    code, out, _ = _verify_cli(db, capsys)
    assert code == 1
    assert "rule head: " in out or "rule storage: " in out, out


def test_invalid_store_tampered_block_row(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    con = sqlite3.connect(db)
    data = con.execute("SELECT data FROM blocks WHERE height=9").fetchone()[0]
    con.close()
    block = json.loads(data)
    block["txs"][1]["body"]["export_wh"] += 100  # home-pv claims more export
    _sql(
        db,
        "UPDATE blocks SET data=? WHERE height=9",
        json.dumps(block, sort_keys=True, separators=(",", ":")),
    )
    code, out, _ = _verify_cli(db, capsys)
    assert code == 1
    assert out.startswith("invalid: height 9: rule tx-root: "), out


# --- killed at random moments ---------------------------------------------------------------

CHILD = '''
"""A solo node producing blocks until it is killed (the parent also imports it)."""

import sys
from datetime import date, datetime, timedelta

from peerpower.crypto import KeyPair
from peerpower.ledger.genesis import Genesis, GenesisAccount
from peerpower.ledger.node import SoloNode
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer, meter_reading
from peerpower.timeslots import JST

CHAIN = "kill-test"
SLOT_MS = 30 * 60 * 1000
T0 = int(datetime(2026, 8, 17, tzinfo=JST).timestamp() * 1000)
DAY0 = date(2026, 8, 17)
SITES = {  # site -> (side, energy [Wh], price [sen/kWh])
    "s1": ("sell", 1000, 1500),
    "s2": ("sell", 800, 1200),
    "b1": ("buy", 1000, 2500),
    "b2": ("buy", 600, 2000),
}


def key(name):
    return KeyPair.derive(f"{CHAIN}/{name}")


def genesis():
    return Genesis(
        CHAIN,
        T0,
        (
            GenesisAccount("op", "operator", key("op").public_hex, 10**15),
            GenesisAccount("grid", "grid", key("grid").public_hex),
            GenesisAccount("retail", "retail", key("retail").public_hex),
            GenesisAccount("val", "validator", key("val").public_hex),
        ),
    )


def slot(n):
    return f"{(DAY0 + timedelta(days=n // 48)).isoformat()}#{n % 48:02d}"


def open_node(store):
    return SoloNode(genesis(), "val", key("val"), store)


def signer(node, account):
    return Signer(genesis().tx_chain, account, key(account), node.state.account(account).nonce + 1)


def step(node):
    """Submit the next block's transactions and produce it. What a block holds depends on its
    height only, so a restarted node goes on exactly where the last one stopped. Three blocks
    each half hour p: at p:00 orders for the slot 2 h ahead and meter readings of the slot just
    ended; at p:25 (the next slot's gate) one that seals it; at p:27 one that clears it before
    it starts. The node clears and settles by itself."""
    h = node.height + 1
    p, phase = divmod(h - 1, 3)
    at = T0 + p * SLOT_MS + (1000, 25 * 60_000 + 1000, 27 * 60_000)[phase]
    if h == 1:
        op = signer(node, "op")
        for site, (side, _, _) in SITES.items():
            kind = "pv" if side == "sell" else "consumer"
            node.submit(
                op.register(site, key(site).public_hex, key(site + "/m").public_hex, "root", kind)
            )
        for site in SITES:
            node.submit(op.deposit(site, 10**12))
    elif phase == 0:
        for site, (side, energy, price) in SITES.items():
            order = signer(node, site).order(slot(p + 4), side, energy, price + 10 * (p % 7))
            node.submit(order, at)
        for site, (side, _, _) in SITES.items():
            imp, exp = (0, 2000) if side == "sell" else (2000, 0)
            tx = meter_reading(genesis().tx_chain, key(site + "/m"), site, slot(p - 1), imp, exp)
            node.submit(tx, at)
    block = node.produce(at)
    if node.dropped:
        raise RuntimeError(f"refused: {node.dropped[0][1]}")
    return block


if __name__ == "__main__":
    node = open_node(Store(sys.argv[1], create=True))
    print("ready", node.height, flush=True)
    while True:
        step(node)
'''


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("kill_chain", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_reopened(db: Path) -> int:
    """Reopen after a kill: the stored state, the head and the blocks agree."""
    with Store(db) as store:
        _genesis, state = store.load()  # re-hashes the state against the head's root
        head = store.head_height()
        rows = store.db.execute("SELECT min(height), max(height), count(*) FROM blocks")
        assert tuple(rows.fetchone()) == (1, head, head)  # no block beyond the head, no gap
        block = store.block(head)
        assert state.height == head
        assert state.root == block.header.state_root
        assert state.head_hash == block.hash
    return head


@pytest.mark.slow
def test_store_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    script = tmp_path / "kill_chain.py"
    script.write_text(CHILD)
    chain = _import(script)
    db = tmp_path / "node.db"
    with Store(db, create=True) as store:  # two blocks first, so every child resumes a chain
        node = chain.open_node(store)
        chain.step(node)
        chain.step(node)
    rng = random.Random(20260818)
    by_children = []
    for run in range(6):
        before = _check_reopened(db)
        with (tmp_path / f"child-{run}.err").open("w") as errors:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(db)],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                cwd=tmp_path,
            )
            try:
                assert proc.stdout is not None
                ready = proc.stdout.readline()
                assert ready == f"ready {before}\n", (tmp_path / f"child-{run}.err").read_text()
                time.sleep(rng.uniform(0.05, 1.5))
                assert proc.poll() is None, (tmp_path / f"child-{run}.err").read_text()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        head = _check_reopened(db)
        by_children.append(head - before)
        summary = verify_path(db)  # full replay from genesis; stored state = replayed state
        assert summary.blocks == head
        with Store(db) as store:  # a new node on the same file continues from that height
            node = chain.open_node(store)
            assert node.height == head
            last = store.block(head)
            block = chain.step(node)
            assert block.height == head + 1
            assert block.header.prev_hash == last.hash
        assert _check_reopened(db) == head + 1
    # the children did make blocks (the kills were not all before the first one)
    assert sum(by_children) >= 20, by_children
    final = verify_path(db)
    assert final.transactions > 2 * final.blocks
    assert final.settled_microyen > 0
