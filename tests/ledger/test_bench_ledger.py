"""``peerpower bench ledger`` at small sizes: the synthetic chain verifies, the figures are sane,
and the fast paths the benchmark led to give exactly what the plain code gives."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import nacl.bindings
import pytest

from peerpower import crypto
from peerpower.bench_ledger import bench_apply, bench_chain, chain_signatures, order_block, run
from peerpower.errors import InvalidBlock, InvalidInput
from peerpower.ledger import synthetic
from peerpower.ledger.blocks import Block, Header, block_from_json
from peerpower.ledger.replay import export, replay, verify_path
from peerpower.ledger.rules import apply_block, check_header, decode_block_txs
from peerpower.ledger.state import Account, Meta, evolve
from peerpower.ledger.store import Store, block_line
from peerpower.ledger.synthetic import synthetic_chain
from peerpower.timeslots import SLOTS_PER_DAY


def test_order_block_carries_the_signed_messages_apply_block_checks() -> None:
    ob = order_block(120, per_participant=10)
    assert len(ob.block.txs) == 120 == len(ob.signed)
    for (signed, public), tx in zip(ob.signed, ob.block.txs, strict=True):
        assert signed[:64].hex() == tx["sig"]
        message = nacl.bindings.crypto_sign_open(signed, public)
        assert message == b"peerpower/tx/1\x00" + crypto.canonical(tx["body"])
    assert {tx["body"]["type"] for tx in ob.block.txs} == {"order"}
    new = apply_block(ob.state, ob.block, ob.genesis)
    assert new.root == ob.block.header.state_root
    assert len(new.table("orders")) == 120


def test_bench_apply_figures_are_sane() -> None:
    _, fig = bench_apply(200, repeat=2)
    assert fig.orders == 200
    assert 0 < fig.bare_seconds < 60
    assert 0 < fig.apply_seconds < 60
    row = fig.to_json()
    assert row["ratio"] == pytest.approx(fig.apply_seconds / fig.bare_seconds, rel=1e-2)
    assert row["apply_signatures_per_second"] > 0


def test_synthetic_chain_is_deterministic() -> None:
    g1, b1 = synthetic_chain(1, 8, seed=5)
    g2, b2 = synthetic_chain(1, 8, seed=5)
    g3, b3 = synthetic_chain(1, 8, seed=6)
    assert g1.hash == g2.hash == g3.hash
    assert [block_line(b) for b in b1] == [block_line(b) for b in b2]
    assert [b.hash for b in b1] != [b.hash for b in b3]


def test_synthetic_chain_verifies_from_sqlite_and_jsonl(tmp_path: Path) -> None:
    days, sites = 2, 12
    db = tmp_path / "chain.db"
    with Store(db, create=True) as store:
        genesis, blocks = synthetic_chain(days, sites, seed=2, store=store)
        n = export(store, tmp_path / "chain.jsonl")
        _, state = store.load()
    assert n == len(blocks)
    from_jsonl = verify_path(tmp_path / "chain.jsonl")
    assert verify_path(db) == from_jsonl
    assert from_jsonl.blocks == len(blocks)
    assert from_jsonl.state_root == state.root.hex()
    assert from_jsonl.settled_microyen == state.meta.settled_microyen > 0
    assert state.money_microyen() == genesis.supply_microyen
    kinds: dict[str, int] = {}
    for block in blocks:
        for tx in block.txs:
            kinds[tx["body"]["type"]] = kinds.get(tx["body"]["type"], 0) + 1
    assert kinds["register"] == sites
    assert kinds["meter"] == days * SLOTS_PER_DAY * sites  # every site, every slot
    assert kinds["order"] > 0
    assert kinds["clear"] > 0
    assert kinds["settle"] == days * SLOTS_PER_DAY  # every metered slot is settled
    sides = {tx["body"]["side"] for b in blocks for tx in b.txs if tx["body"]["type"] == "order"}
    assert sides == {"buy", "sell"}
    prices = [
        tx["body"]["price_sen_per_kwh"]
        for b in blocks
        for tx in b.txs
        if tx["body"]["type"] == "order"
    ]
    assert min(prices) >= 800 and max(prices) <= 3000
    # Every transaction and commit signature, once each.
    assert len(chain_signatures(genesis, blocks)) == from_jsonl.transactions + len(blocks)


def test_defaults_suspend_and_the_operator_reinstates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "SELLER_SHORT", 0.6)
    genesis, blocks = synthetic_chain(2, 10, seed=3)
    kinds = [tx["body"]["type"] for b in blocks for tx in b.txs]
    assert "reinstate" in kinds
    state, summary = replay(genesis, [block_line(b) for b in blocks])
    assert summary.blocks == len(blocks)
    defaulted = sum(len(rec.defaulters) for rec in state.table("settled").values())  # type: ignore[attr-defined]
    assert defaulted >= genesis.params.default_limit
    assert state.money_microyen() == genesis.supply_microyen


def test_a_site_low_on_margin_is_topped_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "TOP_UP_BELOW_MICROYEN", synthetic.DEPOSIT_MICROYEN - 1)
    genesis, blocks = synthetic_chain(1, 8, seed=4)
    deposits = [tx for b in blocks for tx in b.txs if tx["body"]["type"] == "deposit"]
    assert len(deposits) > 8
    state, _ = replay(genesis, [block_line(b) for b in blocks])
    assert state.money_microyen() == genesis.supply_microyen


def test_bench_chain_figures_are_sane() -> None:
    fig = bench_chain(1, 6)
    s = fig.summary
    assert s.blocks == 2 * (SLOTS_PER_DAY + 17) + 1
    assert fig.kinds["meter"] == SLOTS_PER_DAY * 6
    assert sum(fig.kinds.values()) == s.transactions
    assert fig.signatures == s.transactions + s.blocks
    assert fig.volume_wh > 0
    assert fig.bound_seconds > 0 and fig.verify_jsonl_seconds > 0 and fig.verify_db_seconds > 0
    assert fig.jsonl_bytes > 0 and fig.db_bytes > 0
    json.dumps(fig.to_json())


def test_run_prints_both_tables() -> None:
    out = io.StringIO()
    code = run(blocks_orders=100, days=1, sites=5, out=out)
    text = out.getvalue()
    assert code in (0, 1)  # the ratio target is for 10,000 orders on a quiet machine
    assert "apply_block s" in text and "bare verify s" in text
    assert "verify s" in text and "lower bound s" in text
    assert "target: verify under 60 s: met" in text


# -- the fast paths give what the plain code gives ---------------------------------------------


def test_canonical_encoder_matches_json_dumps() -> None:
    values = [
        {"b": [1, True, None, "é\U0001f600"], "a": {"z": -3, "y": ""}},
        ["x", 10**30, False],
        "plain",
        0,
    ]
    for v in values:
        expected = json.dumps(v, sort_keys=True, separators=(",", ":")).encode()
        assert crypto.canonical_unchecked(v) == expected == crypto.canonical(v)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"a": [1, {"b": 1.5}]}, "$.a[1].b"),
        ({"a": {1: 2}}, "$.a"),
        ([[], (1, {2.0})], "$[1][1]"),
        ({"ok": 1, "bad": b"x"}, "$.bad"),
    ],
)
def test_check_encodable_names_the_same_path(value: object, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        crypto.check_encodable(value)
    assert err.value.field == field
    with pytest.raises(InvalidInput) as again:
        crypto.canonical(value)
    assert str(again.value) == str(err.value)


def test_evolve_is_replace() -> None:
    acct = Account("a", "participant", "00" * 32, node="n", meter_key="11" * 32, site_type="pv")
    changed = evolve(acct, nonce=3, balance_microyen=7, status="suspended")
    assert changed == dataclasses.replace(acct, nonce=3, balance_microyen=7, status="suspended")
    assert acct.nonce == 0
    meta = Meta(1, 2, 3, 4, "ab")
    assert evolve(meta, height=9) == Meta(9, 2, 3, 4, "ab")
    with pytest.raises(AttributeError):
        evolve(meta, heigth=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.nonce = 4  # type: ignore[misc]


def _first_error(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except InvalidBlock as err:
        return str(err)
    return "no error"


@pytest.mark.parametrize("breakage", ["sig", "field", "type", "height+field", "root+field"])
def test_apply_block_raises_what_the_checks_in_order_raise(breakage: str) -> None:
    """apply_block decodes before it checks the header (to reuse each transaction's bytes as
    its Merkle leaf); a block with a malformed transaction still fails exactly as before."""
    ob = order_block(30)
    raw = json.loads(block_line(ob.block))
    txs = raw["txs"]
    if breakage == "sig":
        txs[7]["sig"] = txs[7]["sig"].upper()
    elif breakage == "type":
        txs[3]["body"]["type"] = "bid"
    else:
        txs[11]["body"]["energy_wh"] = "100"
    h = ob.block.header
    header = Header(
        h.chain,
        h.height + (1 if breakage.startswith("height") else 0),
        h.prev_hash,
        h.time_ms,
        h.proposer,
        h.tx_root
        if breakage.startswith("root")
        else crypto.merkle_root([crypto.canonical(t) for t in txs]),
        h.tx_count,
        h.state_root,
    )
    block = Block(header, tuple(txs))

    def reference() -> None:
        check_header(ob.state, block, ob.genesis)
        decode_block_txs(block, ob.genesis)

    expected = _first_error(reference)
    assert expected != "no error"
    assert _first_error(lambda: apply_block(ob.state, block, ob.genesis)) == expected


def test_block_from_json_rejects_floats_as_before() -> None:
    ob = order_block(10)
    raw = json.loads(block_line(ob.block))
    raw["txs"][4]["body"]["energy_wh"] = 100.0
    raw.pop("hash")
    with pytest.raises(InvalidBlock) as err:
        block_from_json(raw)
    assert err.value.rule == "format"
    assert "$[4].body.energy_wh: floats are not allowed in canonical JSON, got 100.0" in str(
        err.value
    )
