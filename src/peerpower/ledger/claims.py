"""Claims: a validator's signed statement of the best clearing it found for a sealed slot.

Proof of optimal clearing (DESIGN.md §5): once a slot is sealed, every validator clears its book
with its own solver and signs a claim — slot, seed, objective (primary, secondary, tie-break
score) and the digest of its trades — and shares it with the trades. The block that records the
slot's clearing carries at least a quorum (more than two thirds) of claims from distinct
validators and the winning result in full; it is valid only if the result passes
``market.verify``, no included claim beats it (higher primary, then secondary, then score, then
the lower digest) and every claim's signature holds. Among a quorum of claims at least one is
honest, so a Byzantine minority can neither win with an invalid or inflated result (it would not
verify) nor hide the best one (an honest claim would beat what is recorded).

A claim is ``{"slot", "seed", "objective", "digest", "validator", "sig"}``; ``sig`` is Ed25519
over ``"peerpower/claim/1\\0" ‖ canonical(claim without sig)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from peerpower.crypto import (
    HASH_HEX_LENGTH,
    SIGNATURE_HEX_LENGTH,
    KeyPair,
    canonical_unchecked,
    parse_hex,
    verify_signature,
)
from peerpower.errors import InvalidInput
from peerpower.market.result import ClearingResult, Objective

CLAIM_DOMAIN = b"peerpower/claim/1\x00"


@dataclass(frozen=True, slots=True)
class Claim:
    slot: str
    seed: str
    objective: Objective
    digest: str
    validator: str
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "seed": self.seed,
            "objective": self.objective.to_json(),
            "digest": self.digest,
            "validator": self.validator,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "sig": self.sig.hex()}

    def signed_bytes(self) -> bytes:
        return CLAIM_DOMAIN + canonical_unchecked(self.body())

    def rank(self) -> tuple[Fraction, int, int, str]:
        """Larger is better: primary, secondary, score, then the lower digest."""
        return rank(self.objective, self.digest)

    def check_signature(self, public: bytes) -> bool:
        return verify_signature(public, b"", self.signed_bytes(), self.sig)


def rank(objective: Objective, digest: str) -> tuple[Fraction, int, int, str]:
    """The order of claims: primary, secondary, score (higher wins), then the lower digest
    (its bytes complemented, so that a larger key still wins)."""
    inverted = "".join("0123456789abcdef"[15 - int(c, 16)] for c in digest)
    return (objective.primary, objective.secondary, objective.score, inverted)


def make_claim(key: KeyPair, validator: str, slot: str, seed: str, result: ClearingResult) -> Claim:
    """Sign a claim for ``result`` (which must carry its objective)."""
    assert result.objective is not None
    claim = Claim(slot, seed, result.objective, result.digest(), validator)
    return Claim(
        slot, seed, claim.objective, claim.digest, validator, key.sign(b"", claim.signed_bytes())
    )


def claim_from_json(obj: Any, where: str) -> Claim:
    """Read a claim, naming the field that is wrong."""
    if not isinstance(obj, dict) or set(obj) != {
        "slot",
        "seed",
        "objective",
        "digest",
        "validator",
        "sig",
    }:
        raise InvalidInput(where, "must be {slot, seed, objective, digest, validator, sig}")
    for name in ("slot", "validator"):
        if type(obj[name]) is not str:
            raise InvalidInput(f"{where}.{name}", f"must be a string, got {obj[name]!r}")
    parse_hex(obj["seed"], HASH_HEX_LENGTH, f"{where}.seed")
    parse_hex(obj["digest"], HASH_HEX_LENGTH, f"{where}.digest")
    sig = parse_hex(obj["sig"], SIGNATURE_HEX_LENGTH, f"{where}.sig")
    try:
        objective = Objective.from_json(obj["objective"])
    except InvalidInput as err:
        raise InvalidInput(f"{where}.{err.field}", err.message) from None
    return Claim(obj["slot"], obj["seed"], objective, obj["digest"], obj["validator"], sig)
