"""Blocks: header, transactions and commit certificate (DESIGN.md §4).

A block is ``{"hash", "header", "txs", "commit"}``. The header holds the chain id, height, the
previous block's hash (the genesis hash for block 1), time [ms since the Unix epoch], the
proposer (a validator), the Merkle root and count of the transactions, and the state root after
the block. The block hash is ``SHA-256("peerpower/block/1\\0" ‖ canonical(header))``; it covers
the transactions through their Merkle root and the state through its root.

The commit certificate is kept beside the header, outside the hash: a list of validators'
Ed25519 signatures over ``"peerpower/commit/1\\0" ‖ block hash``. A block is committed when more
than two thirds of the genesis validators signed it (one of one in solo mode); consensus fills
in the certificate from its precommits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peerpower.crypto import (
    HASH_HEX_LENGTH,
    SIGNATURE_HEX_LENGTH,
    KeyPair,
    canonical_unchecked,
    check_encodable,
    merkle_root,
    parse_hex,
    sha256,
    verify_signature,
)
from peerpower.errors import InvalidBlock, InvalidInput
from peerpower.ledger.genesis import Genesis

BLOCK_DOMAIN = b"peerpower/block/1\x00"
COMMIT_DOMAIN = b"peerpower/commit/1\x00"


@dataclass(frozen=True, slots=True)
class Header:
    chain: str
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: str
    tx_root: bytes
    tx_count: int
    state_root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "height": self.height,
            "prev_hash": self.prev_hash.hex(),
            "time_ms": self.time_ms,
            "proposer": self.proposer,
            "tx_root": self.tx_root.hex(),
            "tx_count": self.tx_count,
            "state_root": self.state_root.hex(),
        }

    @property
    def hash(self) -> bytes:
        return sha256(BLOCK_DOMAIN + canonical_unchecked(self.to_json()))


@dataclass(frozen=True, slots=True)
class Signature:
    validator: str
    sig: bytes

    def to_json(self) -> dict[str, Any]:
        return {"validator": self.validator, "sig": self.sig.hex()}


@dataclass(frozen=True, slots=True)
class Block:
    """A block: header, transactions (as JSON objects) and commit certificate."""

    header: Header
    txs: tuple[dict[str, Any], ...]
    commit: tuple[Signature, ...] = ()

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash.hex(),
            "header": self.header.to_json(),
            "txs": list(self.txs),
            "commit": [s.to_json() for s in self.commit],
        }

    def with_commit(self, commit: tuple[Signature, ...]) -> Block:
        return Block(self.header, self.txs, commit)


def sign_commit(key: KeyPair, validator: str, block_hash: bytes) -> Signature:
    return Signature(validator, key.sign(COMMIT_DOMAIN, block_hash))


def quorum(validators: int) -> int:
    """Signatures needed to commit: more than two thirds of ``validators``."""
    return validators * 2 // 3 + 1


def check_commit(block: Block, genesis: Genesis) -> None:
    """Raise ``InvalidBlock`` (rule ``commit``) unless more than two thirds of the genesis
    validators signed the block's hash, each once and validly."""
    keys = {v.id: bytes.fromhex(v.key) for v in genesis.validators}
    h = block.header.height
    seen: set[str] = set()
    for k, s in enumerate(block.commit):
        key = keys.get(s.validator)
        if key is None:
            raise InvalidBlock(
                h, "commit", f"commit[{k}] is signed by {s.validator!r}, not a validator"
            )
        if s.validator in seen:
            raise InvalidBlock(h, "commit", f"commit[{k}]: {s.validator!r} signed twice")
        if not verify_signature(key, COMMIT_DOMAIN, block.hash, s.sig):
            raise InvalidBlock(h, "commit", f"commit[{k}]: bad signature by {s.validator!r}")
        seen.add(s.validator)
    need = quorum(len(keys))
    if len(seen) < need:
        raise InvalidBlock(
            h, "commit", f"{len(seen)} of {len(keys)} validators signed, {need} needed"
        )


def tx_root(txs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> bytes:
    return merkle_root([canonical_unchecked(tx) for tx in txs])


def block_from_json(obj: Any, where: str = "block") -> Block:
    """Read a block as written by :meth:`Block.to_json`; checks shape, types and the hash."""
    raw_header = obj.get("header") if isinstance(obj, dict) else None
    height = raw_header.get("height") if isinstance(raw_header, dict) else None
    h = height if type(height) is int else -1

    def bad(field: str, message: str) -> InvalidBlock:
        return InvalidBlock(h, "format", f"{where}.{field}: {message}")

    if not isinstance(obj, dict):
        raise bad("", "must be an object")
    raw = obj.get("header")
    if not isinstance(raw, dict):
        raise bad("header", "must be an object")
    names = (
        "chain",
        "height",
        "prev_hash",
        "time_ms",
        "proposer",
        "tx_root",
        "tx_count",
        "state_root",
    )
    if set(raw) != set(names):
        raise bad("header", f"must have exactly the fields {list(names)}")
    try:
        for name in ("height", "time_ms", "tx_count"):
            if type(raw[name]) is not int or raw[name] < 0:
                raise bad(f"header.{name}", f"must be a non-negative integer, got {raw[name]!r}")
        for name in ("chain", "proposer"):
            if type(raw[name]) is not str:
                raise bad(f"header.{name}", f"must be a string, got {raw[name]!r}")
        header = Header(
            raw["chain"],
            raw["height"],
            parse_hex(raw["prev_hash"], HASH_HEX_LENGTH, f"{where}.header.prev_hash"),
            raw["time_ms"],
            raw["proposer"],
            parse_hex(raw["tx_root"], HASH_HEX_LENGTH, f"{where}.header.tx_root"),
            raw["tx_count"],
            parse_hex(raw["state_root"], HASH_HEX_LENGTH, f"{where}.header.state_root"),
        )
        txs = obj.get("txs")
        if not isinstance(txs, list):
            raise bad("txs", "must be a list")
        commit_raw = obj.get("commit", [])
        if not isinstance(commit_raw, list):
            raise bad("commit", "must be a list")
        commit = []
        for k, s in enumerate(commit_raw):
            if not isinstance(s, dict) or type(s.get("validator")) is not str:
                raise bad(f"commit[{k}]", 'must be {"validator": id, "sig": hex}')
            commit.append(
                Signature(
                    s["validator"],
                    parse_hex(s.get("sig"), SIGNATURE_HEX_LENGTH, f"{where}.commit[{k}].sig"),
                )
            )
        check_encodable(txs)  # no floats or foreign types inside
    except InvalidInput as err:
        raise InvalidBlock(h, "format", str(err)) from None
    block = Block(header, tuple(txs), tuple(commit))
    given = obj.get("hash")
    if given is not None and given != block.hash.hex():
        raise InvalidBlock(
            h, "block-hash", f"{where}.hash {given!r} is not the header's hash {block.hash.hex()}"
        )
    return block
