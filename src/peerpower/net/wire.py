"""Consensus messages as JSON, for transports between processes.

Every message is one JSON object with a type tag ``t``:

* ``proposal``: ``height``, ``round``, ``value_id`` (hex), ``value`` (the block as
  :meth:`peerpower.ledger.blocks.Block.to_json` writes it), ``valid_round``, ``proposer``,
  ``sig`` (hex);
* ``vote``: ``kind`` (``prevote`` | ``precommit``), ``height``, ``round``, ``value_id`` (hex or
  ``null`` for nil), ``validator``, ``sig``;
* ``sync``: ``height``, ``requester`` — a validator behind asks how ``height`` was decided;
* ``blocks``: ``blocks`` — committed blocks with their commit certificates, in height order
  (the answer to ``sync`` from storage);
* ``app``: ``payloads`` — messages between the validators' applications (relayed transactions,
  clearing claims), batched.

:func:`decode` checks shape and types and raises ``InvalidInput`` naming the field; signatures
are the consensus machine's to check. A proposal whose value does not hash to its ``value_id``
is refused here: the proposer signs only the id, so anyone relaying it could otherwise swap the
block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peerpower.consensus.tendermint import Proposal, SyncRequest, Vote
from peerpower.errors import InvalidInput, PeerpowerError
from peerpower.ledger.blocks import Block, block_from_json

MAX_BLOCKS_PER_MESSAGE = 64
MAX_APP_PAYLOADS = 10_000


@dataclass(frozen=True, slots=True)
class Blocks:
    """Committed blocks with their certificates, in height order."""

    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class AppMessages:
    """Messages between the validators' applications."""

    payloads: tuple[Any, ...]


Message = Proposal | Vote | SyncRequest | Blocks | AppMessages


def encode(message: Proposal | Vote | SyncRequest) -> dict[str, Any]:
    if isinstance(message, Proposal):
        value = message.value
        if not isinstance(value, Block):
            raise TypeError(f"a proposal on the wire carries a Block, not {type(value).__name__}")
        return {
            "t": "proposal",
            "height": message.height,
            "round": message.round,
            "value_id": message.value_id.hex(),
            "value": value.to_json(),
            "valid_round": message.valid_round,
            "proposer": message.proposer,
            "sig": message.sig.hex(),
        }
    if isinstance(message, Vote):
        return {
            "t": "vote",
            "kind": message.kind,
            "height": message.height,
            "round": message.round,
            "value_id": None if message.value_id is None else message.value_id.hex(),
            "validator": message.validator,
            "sig": message.sig.hex(),
        }
    return {"t": "sync", "height": message.height, "requester": message.requester}


def encode_blocks(blocks: list[Block]) -> dict[str, Any]:
    return {"t": "blocks", "blocks": [b.to_json() for b in blocks]}


def encode_app(payloads: list[Any]) -> dict[str, Any]:
    return {"t": "app", "payloads": payloads}


def _int(obj: dict[str, Any], name: str, low: int = 0) -> int:
    value = obj.get(name)
    if type(value) is not int or value < low:
        raise InvalidInput(name, f"must be an integer ≥ {low}, got {value!r}")
    return value


def _str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidInput(name, f"must be a non-empty string, got {value!r}")
    return value


def _hex(obj: dict[str, Any], name: str, length: int) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str) or len(value) != 2 * length:
        raise InvalidInput(name, f"must be {length} bytes of hex, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(name, f"must be {length} bytes of hex, got {value!r}") from None


def decode(obj: Any) -> Message:
    """The message ``obj`` carries."""
    if not isinstance(obj, dict):
        raise InvalidInput("message", f"must be an object, got {type(obj).__name__}")
    tag = obj.get("t")
    if tag == "vote":
        kind = obj.get("kind")
        if kind not in ("prevote", "precommit"):
            raise InvalidInput("kind", f"must be prevote or precommit, got {kind!r}")
        value_id = None if obj.get("value_id") is None else _hex(obj, "value_id", 32)
        return Vote(
            kind,
            _int(obj, "height", 1),
            _int(obj, "round"),
            value_id,
            _str(obj, "validator"),
            _hex(obj, "sig", 64),
        )
    if tag == "proposal":
        value_id = _hex(obj, "value_id", 32)
        try:
            block = block_from_json(obj.get("value"), "value")
        except PeerpowerError as err:
            raise InvalidInput("value", str(err)) from None
        if block.hash != value_id:
            raise InvalidInput("value", f"the block's hash is not value_id {value_id.hex()}")
        return Proposal(
            _int(obj, "height", 1),
            _int(obj, "round"),
            value_id,
            block,
            _int(obj, "valid_round", -1),
            _str(obj, "proposer"),
            _hex(obj, "sig", 64),
        )
    if tag == "sync":
        return SyncRequest(_int(obj, "height", 1), _str(obj, "requester"))
    if tag == "blocks":
        raw = obj.get("blocks")
        if not isinstance(raw, list) or len(raw) > MAX_BLOCKS_PER_MESSAGE:
            raise InvalidInput("blocks", f"must be a list of at most {MAX_BLOCKS_PER_MESSAGE}")
        blocks = []
        for k, b in enumerate(raw):
            try:
                blocks.append(block_from_json(b, f"blocks[{k}]"))
            except PeerpowerError as err:
                raise InvalidInput(f"blocks[{k}]", str(err)) from None
        return Blocks(tuple(blocks))
    if tag == "app":
        payloads = obj.get("payloads")
        if not isinstance(payloads, list) or len(payloads) > MAX_APP_PAYLOADS:
            raise InvalidInput("payloads", f"must be a list of at most {MAX_APP_PAYLOADS}")
        return AppMessages(tuple(payloads))
    raise InvalidInput("t", f"unknown message type {tag!r}")
