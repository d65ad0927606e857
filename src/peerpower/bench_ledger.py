"""``peerpower bench ledger``: the exchange contract timed beside a lower bound of the same run.

1. **A block of signed orders.** On a prepared state (participants registered and funded), a
   block of ``blocks_orders`` orders is built by the solo node's :func:`build_block`; then
   ``apply_block`` — everything a validator checks: header, Merkle root, decoding, signatures,
   rules, state root — is timed, best of ``repeat``. Beside it, the lower bound: a plain
   single-thread loop of ``crypto_sign_open`` over exactly the signed messages that
   ``apply_block`` verifies (``TX_DOMAIN ‖ canonical(body)``), also best of ``repeat``. The
   target is apply ≤ 1.5 × bare verification.
2. **Verifying a month.** A deterministic synthetic chain (:mod:`peerpower.ledger.synthetic`:
   ``days`` days of ``sites`` sites trading every half hour, metered and settled) is built into
   a SQLite store and exported to JSON Lines; ``verify_path`` — what ``peerpower ledger verify``
   runs — is timed on both files. Target: under 60 s for 30 days of 100 sites.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import nacl.bindings

from peerpower.crypto import canonical_unchecked
from peerpower.ledger.blocks import COMMIT_DOMAIN, Block, sign_commit
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.node import build_block
from peerpower.ledger.replay import Summary, export, verify_path
from peerpower.ledger.rules import apply_block, genesis_state, to_ms
from peerpower.ledger.state import Settled, State
from peerpower.ledger.store import Store
from peerpower.ledger.synthetic import admit, community, synthetic_chain
from peerpower.ledger.transactions import TX_DOMAIN, Signer
from peerpower.timeslots import JST, Slot

ORDERS_PER_PARTICIPANT = 10
TARGET_RATIO = 1.5
TARGET_VERIFY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class OrderBlock:
    """A block of orders, the state it applies to, and the signed messages it carries."""

    genesis: Genesis
    state: State
    block: Block
    signed: tuple[tuple[bytes, bytes], ...]  # (signature ‖ TX_DOMAIN ‖ body, public key)


def order_block(orders: int, per_participant: int = ORDERS_PER_PARTICIPANT) -> OrderBlock:
    """``orders`` signed orders from ``orders / per_participant`` funded participants, in one
    block on top of the block that registered them."""
    participants = -(-orders // per_participant)
    t0 = to_ms(datetime(2026, 8, 17, 12, 0, tzinfo=JST))
    com = community(participants, t0, chain_id="bench-orders")
    genesis = com.genesis
    operator = Signer(genesis.tx_chain, "op", com.operator)
    setup = [tx for site in com.sites for tx in admit(operator, site, 10**11)]
    state = genesis_state(genesis)
    built = build_block(state, genesis, "val", com.validator, t0 + 1000, setup)
    assert not built.rejected, built.rejected[:1]
    state = built.state
    first = Slot.parse("2026-08-18#00")
    slots = [first]
    while len(slots) < per_participant:
        slots.append(slots[-1].next())
    txs: list[dict[str, Any]] = []
    signed: list[tuple[bytes, bytes]] = []
    for k, site in enumerate(com.sites):
        signer = Signer(genesis.tx_chain, site.id, site.key)
        seller = site.site_type.startswith("pv")
        for j in range(min(per_participant, orders - k * per_participant)):
            side = "sell" if seller else "buy"
            price = 800 + (k * 7919 + j * 104729) % 2201
            tx = signer.order(str(slots[j]), side, 100 * (1 + (k + j) % 20), price)
            txs.append(tx)
            message = TX_DOMAIN + canonical_unchecked(tx["body"])
            signed.append((bytes.fromhex(tx["sig"]) + message, site.key.public))
    built = build_block(state, genesis, "val", com.validator, t0 + 2000, txs)
    assert not built.rejected, built.rejected[:1]
    block = built.block.with_commit((sign_commit(com.validator, "val", built.block.hash),))
    return OrderBlock(genesis, state, block, tuple(signed))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Best wall time [s] of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_verify(signed: Sequence[tuple[bytes, bytes]]) -> None:
    """The lower bound: verify every signature, one after another, on one thread."""
    open_ = nacl.bindings.crypto_sign_open
    for message, public in signed:
        open_(message, public)


@dataclass(frozen=True, slots=True)
class ApplyFigures:
    orders: int
    apply_seconds: float
    bare_seconds: float

    @property
    def ratio(self) -> float:
        return self.apply_seconds / self.bare_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "apply_seconds": round(self.apply_seconds, 4),
            "bare_verify_seconds": round(self.bare_seconds, 4),
            "ratio": round(self.ratio, 3),
            "apply_signatures_per_second": round(self.orders / self.apply_seconds),
            "bare_signatures_per_second": round(self.orders / self.bare_seconds),
        }


def bench_apply(orders: int, repeat: int = 1) -> tuple[OrderBlock, ApplyFigures]:
    """Time ``apply_block`` on a block of ``orders`` orders and bare verification beside it."""
    ob = order_block(orders)
    expected = ob.block.header.state_root
    out: list[State] = []

    def apply() -> None:
        out.append(apply_block(ob.state, ob.block, ob.genesis))

    # Alternate the two so that a change in machine load hits both alike.
    apply_s = bare_s = float("inf")
    for _ in range(max(1, repeat)):
        bare_s = min(bare_s, best_of(1, lambda: bare_verify(ob.signed)))
        apply_s = min(apply_s, best_of(1, apply))
    assert all(s.root == expected for s in out)
    return ob, ApplyFigures(len(ob.block.txs), apply_s, bare_s)


@dataclass(frozen=True, slots=True)
class ChainFigures:
    """The synthetic chain, how long it took to build, and its verification beside the bound."""

    days: int
    sites: int
    summary: Summary
    kinds: dict[str, int]
    volume_wh: int
    defaults: int
    build_seconds: float
    jsonl_bytes: int
    db_bytes: int
    verify_jsonl_seconds: float
    verify_db_seconds: float
    bound_seconds: float
    signatures: int

    def to_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "sites": self.sites,
            **self.summary.to_json(),
            "transaction_types": self.kinds,
            "volume_wh": self.volume_wh,
            "defaults": self.defaults,
            "build_seconds": round(self.build_seconds, 2),
            "jsonl_bytes": self.jsonl_bytes,
            "db_bytes": self.db_bytes,
            "verify_jsonl_seconds": round(self.verify_jsonl_seconds, 3),
            "verify_db_seconds": round(self.verify_db_seconds, 3),
            "lower_bound_seconds": round(self.bound_seconds, 3),
            "signatures": self.signatures,
        }


def chain_signatures(genesis: Genesis, blocks: list[Block]) -> list[tuple[bytes, bytes]]:
    """Every signature a verifier checks — each transaction's and each commit's — as
    ``(signature ‖ signed bytes, public key)``."""
    keys = {a.id: bytes.fromhex(a.key) for a in genesis.accounts}
    meters: dict[str, bytes] = {}
    out: list[tuple[bytes, bytes]] = []
    for block in blocks:
        for tx in block.txs:
            body = tx["body"]
            signed = bytes.fromhex(tx["sig"]) + TX_DOMAIN + canonical_unchecked(body)
            if body["type"] == "meter":
                out.append((signed, meters[body["site"]]))
                continue
            out.append((signed, keys[body["from"]]))
            if body["type"] == "register":
                keys[body["account"]] = bytes.fromhex(body["key"])
                meters[body["account"]] = bytes.fromhex(body["meter_key"])
        for s in block.commit:
            out.append((s.sig + COMMIT_DOMAIN + block.hash, keys[s.validator]))
    return out


def lower_bound(path: Path, signed: list[tuple[bytes, bytes]]) -> None:
    """What any verifier of ``path`` must at least do: parse every line, check every
    signature (one thread)."""
    loads = json.loads
    with path.open(encoding="utf-8") as f:
        for line in f:
            loads(line)
    bare_verify(signed)


def bench_chain(days: int, sites: int, repeat: int = 1, seed: int = 1) -> ChainFigures:
    """Build the synthetic chain into SQLite, export it, and time ``verify_path`` on both."""
    with tempfile.TemporaryDirectory(prefix="peerpower-bench-") as tmp:
        db = Path(tmp) / "chain.db"
        jsonl = Path(tmp) / "chain.jsonl"
        start = time.perf_counter()
        with Store(db, create=True) as store:
            genesis, blocks = synthetic_chain(days, sites, seed, store)
            export(store, jsonl)
            _, state = store.load()
        build = time.perf_counter() - start
        kinds: dict[str, int] = {}
        for block in blocks:
            for tx in block.txs:
                kinds[tx["body"]["type"]] = kinds.get(tx["body"]["type"], 0) + 1
        volume = defaults = 0
        for rec in state.table("settled").values():
            assert isinstance(rec, Settled)
            volume += rec.volume_wh
            defaults += len(rec.defaulters)
        signed = chain_signatures(genesis, blocks)
        del blocks
        summaries: list[Summary] = []
        verify_jsonl = verify_db = bound = float("inf")
        for _ in range(max(1, repeat)):  # alternated, so that a change in load hits all alike
            bound = min(bound, best_of(1, lambda: lower_bound(jsonl, signed)))
            verify_jsonl = min(
                verify_jsonl, best_of(1, lambda: summaries.append(verify_path(jsonl)))
            )
            verify_db = min(verify_db, best_of(1, lambda: summaries.append(verify_path(db))))
        assert all(s == summaries[0] for s in summaries)
        assert summaries[0].state_root == state.root.hex()
        return ChainFigures(
            days,
            sites,
            summaries[0],
            kinds,
            volume,
            defaults,
            build,
            jsonl.stat().st_size,
            db.stat().st_size,
            verify_jsonl,
            verify_db,
            bound,
            len(signed),
        )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def run(
    blocks_orders: int = 10_000,
    days: int = 30,
    sites: int = 100,
    repeat: int = 1,
    out: IO[str] = sys.stdout,
) -> int:
    """Run both measurements and print them; 0 when both targets are met, else 1."""
    print(f"peerpower bench ledger — {_load()}", file=out, flush=True)
    print(
        f"\n1. apply_block of one block of signed orders (best of {max(1, repeat)}); lower bound: "
        "bare Ed25519 verification of the same signatures, one thread",
        file=out,
    )
    _, fig = bench_apply(blocks_orders, repeat)
    print(
        f"{'orders':>8} {'apply_block s':>13} {'bare verify s':>13} {'ratio':>6} "
        f"{'sig/s apply':>11} {'sig/s bare':>10}",
        file=out,
    )
    print(
        f"{fig.orders:>8} {fig.apply_seconds:>13.3f} {fig.bare_seconds:>13.3f} {fig.ratio:>6.2f} "
        f"{fig.orders / fig.apply_seconds:>11.0f} {fig.orders / fig.bare_seconds:>10.0f}   "
        f"target ratio ≤ {TARGET_RATIO}: {'met' if fig.ratio <= TARGET_RATIO else 'NOT met'}",
        file=out,
        flush=True,
    )
    print(
        f"\n2. ledger verify of a {days}-day chain of {sites} sites (best of {max(1, repeat)}); "
        "lower bound: parse every line and check every signature, one thread",
        file=out,
        flush=True,
    )
    ch = bench_chain(days, sites, repeat)
    s = ch.summary
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(ch.kinds.items(), key=lambda kv: -kv[1]))
    print(
        f"chain: {s.blocks} blocks, {s.transactions} transactions ({kinds}), "
        f"{s.settled_microyen} µ¥ settled, {ch.volume_wh / 1000:.1f} kWh traded, "
        f"{ch.defaults} defaults; built (solo node, SQLite, export) in {ch.build_seconds:.1f} s",
        file=out,
    )
    print(
        f"{'file':<6} {'MB':>6} {'verify s':>9} {'lower bound s':>13} {'ratio':>6} {'sig/s':>7}",
        file=out,
    )
    for name, size, seconds in (
        ("jsonl", ch.jsonl_bytes, ch.verify_jsonl_seconds),
        ("db", ch.db_bytes, ch.verify_db_seconds),
    ):
        print(
            f"{name:<6} {size / 1e6:>6.1f} {seconds:>9.2f} {ch.bound_seconds:>13.2f} "
            f"{seconds / ch.bound_seconds:>6.2f} {ch.signatures / seconds:>7.0f}",
            file=out,
        )
    ok_verify = ch.verify_jsonl_seconds < TARGET_VERIFY_SECONDS
    print(
        f"target: verify under {TARGET_VERIFY_SECONDS:.0f} s: {'met' if ok_verify else 'NOT met'}",
        file=out,
    )
    print(f"\nat the end: {_load()}", file=out, flush=True)
    return 0 if fig.ratio <= TARGET_RATIO and ok_verify else 1
