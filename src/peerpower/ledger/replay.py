"""Export a chain to JSON Lines and verify a chain by replaying it from genesis.

The export format: the first line is ``{"genesis": {...}, "hash": "<genesis hash>"}``, then one
block per line in height order, each ``{"hash", "header", "txs", "commit"}`` in canonical JSON.

Verifying replays every block from the genesis state: each line must be its block's canonical
JSON; block hash, commit certificate, header
(chain, height, parent, time, proposer, Merkle root), every transaction's signature and rules —
each clearing decision re-checked with ``market.verify`` against the sealed book — and the state
root. From a database, the stored state must also equal the replayed one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerpower.crypto import canonical_unchecked
from peerpower.errors import InvalidBlock, InvalidInput
from peerpower.ledger.blocks import block_from_json, check_commit
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.rules import apply_block, genesis_state
from peerpower.ledger.state import State
from peerpower.ledger.store import StorageError, Store, block_line


@dataclass(frozen=True, slots=True)
class Summary:
    """What a verified chain holds."""

    blocks: int
    transactions: int
    settled_microyen: int
    state_root: str
    chain_id: str

    def line(self) -> str:
        return (
            f"ok: chain {self.chain_id}, {self.blocks} blocks, {self.transactions} transactions, "
            f"{self.settled_microyen} µ¥ settled, state root {self.state_root}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "chain_id": self.chain_id,
            "blocks": self.blocks,
            "transactions": self.transactions,
            "settled_microyen": self.settled_microyen,
            "state_root": self.state_root,
        }


def genesis_line(genesis: Genesis) -> str:
    return canonical_unchecked({"genesis": genesis.to_json(), "hash": genesis.hash.hex()}).decode()


def export(store: Store, out: Path) -> int:
    """Write the chain in ``store`` to ``out`` as JSON Lines; returns the number of blocks."""
    genesis = store.genesis()
    if genesis is None:
        raise InvalidInput("db", f"{str(store.path)!r} holds no chain")
    n = 0
    try:
        f = out.open("w", encoding="utf-8")
    except OSError as err:
        raise InvalidInput("out", f"cannot write {str(out)!r}: {err.strerror}") from None
    with f:
        f.write(genesis_line(genesis) + "\n")
        for line in store.block_lines():
            f.write(line + "\n")
            n += 1
    return n


def replay(genesis: Genesis, lines: Iterable[str | bytes]) -> tuple[State, Summary]:
    """Replay block lines (text, or UTF-8 bytes) from genesis; raises ``InvalidBlock`` at the
    first bad height."""
    state = genesis_state(genesis)
    blocks = txs = 0
    for number, text in enumerate(lines, start=1):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidBlock(
                state.height + 1, "format", f"block line {number} is not JSON: {err.msg}"
            ) from None
        except ValueError as err:  # not UTF-8, or an integer too long to read
            raise InvalidBlock(
                state.height + 1, "format", f"block line {number} is not JSON: {err}"
            ) from None
        except RecursionError:
            raise InvalidBlock(
                state.height + 1, "format", f"block line {number} nests too deeply"
            ) from None
        try:
            block = block_from_json(obj, f"block {state.height + 1}")
        except RecursionError:
            raise InvalidBlock(
                state.height + 1, "format", f"block line {number} nests too deeply"
            ) from None
        except InvalidBlock as err:
            if err.height >= 0:
                raise
            # a block without a readable height: name the height it stands at
            raise InvalidBlock(state.height + 1, err.rule, err.message) from None
        # One block, one text: a line with duplicate keys, unknown fields or other spacing
        # could be read differently by another reader, so only the canonical form is accepted.
        raw = text.encode() if isinstance(text, str) else text
        if raw.rstrip(b"\n") != block_line(block).encode():
            raise InvalidBlock(
                block.height,
                "canonical",
                f"block line {number} is not the block's canonical JSON (duplicate or unknown "
                "keys, spacing or key order)",
            )
        check_commit(block, genesis)
        state = apply_block(state, block, genesis)
        blocks += 1
        txs += len(block.txs)
    summary = Summary(blocks, txs, state.meta.settled_microyen, state.root.hex(), genesis.chain_id)
    return state, summary


def _jsonl(path: Path) -> tuple[Genesis, Iterator[bytes]]:
    try:
        f = path.open("rb")
    except OSError as err:
        raise InvalidInput("chain", f"cannot read {str(path)!r}: {err.strerror}") from None
    try:
        genesis = _genesis_line(path, f.readline())
    except BaseException:
        f.close()
        raise

    def lines() -> Iterator[bytes]:
        with f:
            for line in f:
                if line.strip():
                    yield line

    return genesis, lines()


def _genesis_line(path: Path, first: bytes) -> Genesis:
    try:
        head = json.loads(first.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidInput("chain", f"line 1 of {str(path)!r} is not JSON") from None
    if not isinstance(head, dict) or "genesis" not in head:
        raise InvalidInput("chain", f'line 1 of {str(path)!r} must be {{"genesis": ...}}')
    genesis = Genesis.from_json(head["genesis"])
    if head.get("hash") not in (None, genesis.hash.hex()):
        raise InvalidBlock(
            0, "genesis-hash", f"line 1 hash {head.get('hash')!r} is not {genesis.hash.hex()}"
        )
    return genesis


def verify_path(path: Path) -> Summary:
    """Verify ``chain.jsonl`` or ``chain.db`` (by its suffix: ``.db``/``.sqlite`` is SQLite)."""
    if not path.exists():
        raise InvalidInput("chain", f"{str(path)!r} does not exist")
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        try:
            opened = Store(path)
        except StorageError as err:  # not a database at all: bad input, not a bad chain
            raise InvalidInput("chain", str(err)) from None
        with opened as store:
            genesis = store.genesis()
            if genesis is None:
                raise InvalidInput("chain", f"{str(path)!r} holds no chain")
            state, summary = replay(genesis, store.block_lines())
            head = store.head_height()
            if head != state.height:
                raise InvalidBlock(
                    head, "head", f"stored head {head}, blocks end at {state.height}"
                )
            stored = store.stored_root()
            if stored != state.root:
                raise InvalidBlock(
                    head,
                    "stored-state",
                    f"the stored state (root {stored.hex()}) is not the replayed one "
                    f"({state.root.hex()})",
                )
            return summary
    genesis, lines = _jsonl(path)
    return replay(genesis, lines)[1]


__all__ = ["Summary", "block_line", "export", "genesis_line", "replay", "verify_path"]
