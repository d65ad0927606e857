"""Verifying a chain by replay (peerpower.ledger.replay, ``peerpower ledger verify``).

Each tamper test edits a copy of the example chain's JSON Lines and expects ``ledger verify``
to exit 1 naming the height and the rule that broke. Where a test targets a rule that is
checked after the block hash and commit certificate, it reseals the block the way an attacker
holding the example's keys could: hashes and Merkle roots recomputed here with hashlib, and
signatures made with PyNaCl directly over the documented domain tags.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from peerpower.cli import main
from peerpower.errors import InvalidBlock
from peerpower.ledger.example import example_genesis, key, write_example
from peerpower.ledger.replay import replay, verify_path
from peerpower.ledger.store import Store

# The domain tags as documented in blocks.py and transactions.py
BLOCK_DOMAIN = b"peerpower/block/1\x00"
COMMIT_DOMAIN = b"peerpower/commit/1\x00"
TX_DOMAIN = b"peerpower/tx/1\x00"
VALIDATOR = "validator-1"

Chain = list[dict[str, Any]]  # line 1 (genesis) then one block per line


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("example")
    db, jsonl, _node = write_example(out)
    return db, jsonl


@pytest.fixture(scope="module")
def chain(example: tuple[Path, Path]) -> Chain:
    return [json.loads(line) for line in example[1].read_text().splitlines()]


def _canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _merkle(items: list[bytes]) -> bytes:
    if not items:
        return _sha(b"")
    level = [_sha(b"\x00" + item) for item in items]
    while len(level) > 1:
        pairs = [level[k : k + 2] for k in range(0, len(level), 2)]
        level = [_sha(b"\x01" + p[0] + p[1]) if len(p) == 2 else p[0] for p in pairs]
    return level[0]


def _sign(name: str, domain: bytes, message: bytes) -> str:
    return nacl.signing.SigningKey(key(name).seed).sign(domain + message).signature.hex()


def _sign_tx(tx: dict[str, Any], name: str) -> None:
    tx["sig"] = _sign(name, TX_DOMAIN, _canon(tx["body"]))


def _reseal(block: dict[str, Any], *, tx_root: bool = True, commit: bool = True) -> None:
    """Recompute the Merkle root and count, the block hash and (optionally) the commit."""
    header = block["header"]
    if tx_root:
        header["tx_root"] = _merkle([_canon(tx) for tx in block["txs"]]).hex()
        header["tx_count"] = len(block["txs"])
    block["hash"] = _sha(BLOCK_DOMAIN + _canon(header)).hex()
    if commit:
        block["commit"] = [
            {
                "validator": VALIDATOR,
                "sig": _sign(VALIDATOR, COMMIT_DOMAIN, bytes.fromhex(block["hash"])),
            }
        ]


def _at(c: Chain, height: int) -> dict[str, Any]:
    block = c[height]
    assert block["header"]["height"] == height
    return block


def _tx(c: Chain, height: int, kind: str) -> dict[str, Any]:
    return next(tx for tx in _at(c, height)["txs"] if tx["body"]["type"] == kind)


# --- the tampers: each edits the chain in place; (height, rule) expected --------------------


def order_price(c: Chain) -> None:
    _tx(c, 3, "order")["body"]["price_sen_per_kwh"] += 1  # header left as it was


def order_price_resealed(c: Chain) -> None:
    _tx(c, 3, "order")["body"]["price_sen_per_kwh"] += 1
    _reseal(_at(c, 3))  # only the participant's signature is now wrong


def order_signed_by_another_site(c: Chain) -> None:
    tx = _tx(c, 3, "order")
    assert tx["body"]["from"] == "home-pvbat"
    _sign_tx(tx, "home-pv")
    _reseal(_at(c, 3))


def order_replayed(c: Chain) -> None:
    block = _at(c, 3)
    block["txs"].append(copy.deepcopy(block["txs"][0]))
    _reseal(block)


def state_root(c: Chain) -> None:
    _at(c, 5)["header"]["state_root"] = "00" * 32


def state_root_resealed(c: Chain) -> None:
    _at(c, 5)["header"]["state_root"] = "00" * 32
    _reseal(_at(c, 5))


def prev_hash(c: Chain) -> None:
    _at(c, 7)["header"]["prev_hash"] = "11" * 32


def prev_hash_resealed(c: Chain) -> None:
    _at(c, 7)["header"]["prev_hash"] = "11" * 32
    _reseal(_at(c, 7))


def block_removed(c: Chain) -> None:
    del c[5]


def hash_field(c: Chain) -> None:
    block = _at(c, 4)
    block["hash"] = block["hash"][:-1] + ("0" if block["hash"][-1] != "0" else "1")


def commit_removed(c: Chain) -> None:
    _at(c, 4)["commit"] = []


def commit_by_non_validator(c: Chain) -> None:
    block = _at(c, 4)
    block["commit"] = [
        {
            "validator": "operator",
            "sig": _sign("operator", COMMIT_DOMAIN, bytes.fromhex(block["hash"])),
        }
    ]


def commit_of_old_hash(c: Chain) -> None:
    block = _at(c, 4)
    block["header"]["time_ms"] += 1
    _reseal(block, commit=False)  # the header hash moved, the signature did not


def commit_signed_twice(c: Chain) -> None:
    block = _at(c, 4)
    block["commit"] = block["commit"] * 2


def tx_count_resealed(c: Chain) -> None:
    block = _at(c, 9)
    block["header"]["tx_count"] += 1
    _reseal(block, tx_root=False)


def time_resealed(c: Chain) -> None:
    block = _at(c, 5)
    block["header"]["time_ms"] = _at(c, 4)["header"]["time_ms"]
    _reseal(block)


def proposer_resealed(c: Chain) -> None:
    block = _at(c, 5)
    block["header"]["proposer"] = "operator"
    _reseal(block)


def clearing_inflated(c: Chain) -> None:
    tx = _tx(c, 6, "clear")
    result = tx["body"]["result"]
    trade = result["trades"][0]
    assert trade["buyer"] == "home-a" and trade["energy_wh"] == 1000  # home-a bid 1.0 kWh
    trade["energy_wh"] += 100
    result["totals"]["volume_wh"] += 100
    _sign_tx(tx, VALIDATOR)  # a validator signing a bad clearing: only the clearing rule breaks
    _reseal(_at(c, 6))


def meter_reading_resigned_by_site_key(c: Chain) -> None:
    tx = _tx(c, 10, "meter")
    _sign_tx(tx, tx["body"]["site"])  # the site's account key, not its meter key
    _reseal(_at(c, 10))


def genesis_balance(c: Chain) -> None:
    c[0]["genesis"]["accounts"][0]["balance_microyen"] += 1


def genesis_balance_rehashed(c: Chain) -> None:
    c[0]["genesis"]["accounts"][0]["balance_microyen"] += 1
    c[0]["hash"] = _sha(_canon(c[0]["genesis"])).hex()  # a consistent genesis of another chain


def genesis_chain_id_no_hash(c: Chain) -> None:
    c[0]["genesis"]["chain_id"] = "peerpower-forged"
    del c[0]["hash"]


TAMPERS: list[tuple[Callable[[Chain], None], int, str]] = [
    (order_price, 3, "tx-root"),
    (order_price_resealed, 3, "signature"),
    (order_signed_by_another_site, 3, "signature"),
    (order_replayed, 3, "nonce"),
    (state_root, 5, "block-hash"),
    (state_root_resealed, 5, "state-root"),
    (prev_hash, 7, "block-hash"),
    (prev_hash_resealed, 7, "parent"),
    (block_removed, 6, "height"),
    (hash_field, 4, "block-hash"),
    (commit_removed, 4, "commit"),
    (commit_by_non_validator, 4, "commit"),
    (commit_of_old_hash, 4, "commit"),
    (commit_signed_twice, 4, "commit"),
    (tx_count_resealed, 9, "tx-count"),
    (time_resealed, 5, "time"),
    (proposer_resealed, 5, "proposer"),
    (clearing_inflated, 6, "clearing"),
    (meter_reading_resigned_by_site_key, 10, "signature"),
    (genesis_balance, 0, "genesis-hash"),
    (genesis_balance_rehashed, 1, "parent"),
    (genesis_chain_id_no_hash, 1, "chain"),
]


def _write(path: Path, c: Chain) -> None:
    path.write_bytes(b"".join(_canon(obj) + b"\n" for obj in c))


@pytest.mark.parametrize(
    ("tamper", "height", "rule"), TAMPERS, ids=[t[0].__name__ for t in TAMPERS]
)
def test_invalid_chain_tampered(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chain: Chain,
    tamper: Callable[[Chain], None],
    height: int,
    rule: str,
) -> None:
    edited = copy.deepcopy(chain)
    tamper(edited)
    path = tmp_path / "chain.jsonl"
    _write(path, edited)

    assert main(["ledger", "verify", str(path)]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == 1
    assert out.startswith(f"invalid: height {height}: rule {rule}: "), out

    assert main(["ledger", "verify", "--json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert (report["height"], report["rule"]) == (height, rule)
    assert f"height {height}: {rule}: " in report["error"]

    with pytest.raises(InvalidBlock) as caught:
        verify_path(path)
    assert (caught.value.height, caught.value.rule) == (height, rule)


def test_untampered_copy_verifies(tmp_path: Path, chain: Chain) -> None:
    # The rewriting itself changes nothing: the tamper tests fail only for their edit.
    path = tmp_path / "chain.jsonl"
    _write(path, copy.deepcopy(chain))
    assert verify_path(path).blocks == len(chain) - 1


def test_reseal_reproduces_every_block(chain: Chain) -> None:
    # The test's own hash, Merkle root and commit signature agree with the chain's, so a
    # resealed block differs only where a tamper changed it.
    for block in chain[1:]:
        again = copy.deepcopy(block)
        _reseal(again)
        assert again == block


def test_genesis_hash_is_sha256_of_canonical_genesis(chain: Chain) -> None:
    assert chain[0]["hash"] == _sha(_canon(chain[0]["genesis"])).hex()
    assert chain[0]["hash"] == example_genesis().hash.hex()


# --- lines that are not blocks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "height"),
    [
        (b"not json", 3),
        (b'{"header": [1, 2]}', 3),
        (b'["a block?"]', 3),
        (b'{"hash": "00", "header": {"height": 3}}', 3),
        (b'{"header": {"height": 3}, "txs": ["\xff\xfe"]}', 3),
        (b"[" * 100_000 + b"]" * 100_000, 3),
        (b"[" * 950 + b"]" * 950, 3),
        (b'{"n": ' + b"9" * 5000 + b"}", 3),
    ],
    ids=[
        "not-json",
        "header-list",
        "list",
        "header-fields",
        "not-utf8",
        "deep",
        "deep-950",
        "huge-int",
    ],
)
def test_invalid_chain_line_is_not_a_block(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    example: tuple[Path, Path],
    line: bytes,
    height: int,
) -> None:
    lines = example[1].read_bytes().splitlines(keepends=True)
    path = tmp_path / "chain.jsonl"
    path.write_bytes(b"".join(lines[:height]) + line + b"\n" + b"".join(lines[height + 1 :]))
    assert main(["ledger", "verify", str(path)]) == 1
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 1
    assert out.startswith(f"invalid: height {height}: rule format: "), out


def test_invalid_chain_truncated_line(tmp_path: Path, example: tuple[Path, Path]) -> None:
    data = example[1].read_bytes()
    path = tmp_path / "chain.jsonl"
    path.write_bytes(data[: len(data) - 40])  # the last block cut short
    with pytest.raises(InvalidBlock) as caught:
        verify_path(path)
    assert (caught.value.height, caught.value.rule) == (12, "format")


# --- replay as a function -------------------------------------------------------------------


def test_replay_of_stored_blocks_is_the_stored_state(example: tuple[Path, Path]) -> None:
    with Store(example[0]) as store:
        genesis, state = store.load()
        replayed, summary = replay(genesis, store.block_lines())
    assert replayed.root == state.root
    assert replayed.head_hash == state.head_hash
    assert replayed.to_json() == state.to_json()
    assert summary.blocks == 12
    assert summary.state_root == state.root.hex()


def test_replay_accepts_text_and_bytes_lines(chain: Chain) -> None:
    genesis = example_genesis()
    text = [_canon(b).decode() for b in chain[1:]]
    by_text = replay(genesis, text)[1]
    by_bytes = replay(genesis, [t.encode() for t in text])[1]
    assert by_text == by_bytes


def test_replay_stops_at_first_bad_height(chain: Chain) -> None:
    edited = copy.deepcopy(chain)
    state_root_resealed(edited)
    prev_hash_resealed(edited)  # a later fault is never reached
    with pytest.raises(InvalidBlock) as caught:
        replay(example_genesis(), [_canon(b).decode() for b in edited[1:]])
    assert (caught.value.height, caught.value.rule) == (5, "state-root")


def test_replay_of_a_prefix_verifies(chain: Chain) -> None:
    # A chain cut at a block boundary is a valid shorter chain (a node that stopped there).
    _state, summary = replay(example_genesis(), [_canon(b).decode() for b in chain[1:8]])
    assert summary.blocks == 7
    assert summary.transactions == sum(len(b["txs"]) for b in chain[1:8])
    assert summary.settled_microyen == 0  # nothing is settled before block 11


def test_verify_db_copy_without_wal(tmp_path: Path, example: tuple[Path, Path]) -> None:
    copy_db = tmp_path / "copy.sqlite"
    shutil.copyfile(example[0], copy_db)
    assert verify_path(copy_db).state_root == verify_path(example[1]).state_root
