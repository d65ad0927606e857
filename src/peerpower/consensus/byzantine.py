"""Byzantine validators for the simulated network: what the protocol must withstand.

Beside the network-level behaviours of :mod:`peerpower.net.memory` (``silent``,
``equivocate``), a :class:`ByzantineLedgerApp` misbehaves in the ledger:

* ``inflate`` — claims more than its clearing achieves (a validly signed claim whose result does
  not back it), and as proposer records an inflated clearing: a result with a unit the book
  cannot fill, under its own claim. Honest validators verify results before taking claims and
  refuse the block (``apply_block`` fails), so it never wins;
* ``withhold`` — never shares its claims (the others still reach a quorum without it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from peerpower.consensus.ledger_app import LedgerApp
from peerpower.ledger.blocks import Block, Header, tx_root
from peerpower.ledger.claims import Claim, claim_from_json
from peerpower.ledger.transactions import sign_body
from peerpower.market.result import Objective

APP_BEHAVIOURS = ("inflate", "withhold")


@dataclass
class ByzantineLedgerApp(LedgerApp):
    behaviour: str = "inflate"

    def take_outbox(self) -> list[dict[str, Any]]:
        out = super().take_outbox()
        if self.behaviour == "withhold" or self.key is None:
            return []
        if self.behaviour == "inflate":
            return [self._inflated(m) if "claim" in m else m for m in out]
        return out

    def _inflated(self, message: dict[str, Any]) -> dict[str, Any]:
        """The same claim with twice the primary objective, signed anew."""
        assert self.key is not None
        claim = claim_from_json(message["claim"], "claim")
        bigger = Objective(claim.objective.primary * 2 + 1, claim.objective.secondary, 0)
        unsigned = Claim(claim.slot, claim.seed, bigger, claim.digest, self.validator)
        signed = Claim(
            claim.slot,
            claim.seed,
            bigger,
            claim.digest,
            self.validator,
            self.key.sign(b"", unsigned.signed_bytes()),
        )
        return {"claim": signed.to_json(), "result": message["result"]}

    def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
        value_id, block = super().propose(height, round_)
        if self.behaviour != "inflate" or self.key is None:
            return value_id, block
        assert isinstance(block, Block)
        txs = list(block.txs)
        forged = False
        for k, tx in enumerate(txs):
            if tx["body"]["type"] != "decide":
                continue
            body = copy.deepcopy(tx["body"])
            trades = body["result"]["trades"]
            if not trades:
                continue
            # a unit of energy nobody offered: more volume and welfare than the book holds
            trades.append(dict(trades[0], energy_wh=trades[0]["energy_wh"] + 100_000))
            txs[k] = sign_body(self.key, body)
            forged = True
        if not forged:
            return value_id, block
        h = block.header
        header = Header(
            h.chain,
            h.height,
            h.prev_hash,
            h.time_ms,
            h.proposer,
            tx_root(txs),
            len(txs),
            h.state_root,
        )
        forged_block = Block(header, tuple(txs))
        return forged_block.hash, forged_block
