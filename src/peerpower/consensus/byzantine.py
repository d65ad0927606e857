"""Byzantine validators for the simulated network: what the protocol must withstand.

Beside the network-level behaviours of :mod:`peerpower.net.memory` (``silent``,
``equivocate``), a :class:`ByzantineLedgerApp` misbehaves in the ledger:

* ``inflate`` — claims more than its clearing achieves (a validly signed claim whose result does
  not back it), and as proposer records an inflated clearing: a result with a unit the book
  cannot fill, under its own claim. Honest validators verify results before taking claims and
  refuse the block (``apply_block`` fails), so it never wins;
* ``withhold`` — never shares its claims (the others still reach a quorum without it);
* ``repair`` — re-pairs its clearing's units: the same fills (so the same objective and
  tie-break score) paired otherwise, choosing the pairing whose digest wins the last tie-break,
  and claims and records that. Before pairings were canonical this let one validator decide who
  was paid what; now honest validators refuse its claims and its blocks (``market.verify``,
  rule ``pairing``), and under nodal pricing no pairing moves money anyway.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from peerpower.consensus.ledger_app import LedgerApp
from peerpower.ledger.blocks import Block, Header, tx_root
from peerpower.ledger.claims import Claim, claim_from_json, make_claim
from peerpower.ledger.transactions import sign_body
from peerpower.market.objective import midpoint_price
from peerpower.market.orders import Book
from peerpower.market.result import ClearingResult, Objective, Trade
from peerpower.market.verify import result_from_json

APP_BEHAVIOURS = ("inflate", "withhold", "repair")
# a re-pairing validator tries swaps among this many of a clearing's first units (bounded work)
_REPAIR_UNITS = 64


@dataclass
class ByzantineLedgerApp(LedgerApp):
    behaviour: str = "inflate"
    # ``repair``: slot's book seed → (the honest clearing's digest, the re-paired one's)
    repaired: dict[str, tuple[str, str]] = field(default_factory=dict)
    # ``repair``: digest → the other clearing of the pair (honest ↔ re-paired)
    _twin: dict[str, ClearingResult] = field(init=False, default_factory=dict)

    def clearing(self, book: Book) -> ClearingResult:
        honest = super().clearing(book)
        if self.behaviour != "repair":
            return honest
        forged = repaired(book, honest)
        if forged is None:
            return honest
        self.repaired[book.seed.hex()] = (honest.digest(), forged.digest())
        self._twin[honest.digest()] = forged
        self._twin[forged.digest()] = honest
        return forged

    def decisions(self) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
        """``repair``: the decisions built as an honest proposer would (its own block builder
        refuses the re-paired clearing); :meth:`propose` swaps it in afterwards."""
        out = super().decisions()
        if self.behaviour != "repair":
            return out
        return {
            slot: self._swapped(result, claims, honest=True)
            for slot, (result, claims) in out.items()
        }

    def _swapped(
        self, result: dict[str, Any], claims: list[dict[str, Any]], honest: bool
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``result``, and this validator's own claim among ``claims``, turned into the honest
        clearing (``honest=True``) or into the re-paired one (``honest=False``) when they are
        the other of the two."""
        assert self.key is not None
        mine = result_from_json(result)
        is_forged = mine.digest() in self._forged_digests()
        if is_forged == honest and mine.digest() in self._twin:
            mine = self._twin[mine.digest()]
            result = mine.to_json()
            result.pop("bound", None)
        out = []
        for obj in claims:
            claim = claim_from_json(obj, "claim")
            if claim.validator == self.validator and claim.digest != mine.digest():
                obj = make_claim(self.key, self.validator, claim.slot, claim.seed, mine).to_json()
            out.append(obj)
        return result, out

    def _forged_digests(self) -> set[str]:
        return {forged for _, forged in self.repaired.values()}

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
        if self.behaviour not in ("inflate", "repair") or self.key is None:
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
            if self.behaviour == "inflate":
                # a unit of energy nobody offered: more volume and welfare than the book holds
                trades.append(dict(trades[0], energy_wh=trades[0]["energy_wh"] + 100_000))
            else:
                result, claims = self._swapped(body["result"], body["claims"], honest=False)
                if result == body["result"]:
                    continue
                body["result"], body["claims"] = result, claims
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


def repaired(book: Book, result: ClearingResult) -> ClearingResult | None:
    """The clearing with ``result``'s fills whose digest is lowest among those made by moving
    some lots between two of its units onto the crossed pairs — two units whose buyers are at
    one grid node, so every flow, fee, fill and total stays as it was (prices are recomputed
    for ``midpoint``). ``None`` when no two units can be swapped."""
    orders = book.orders
    node = {o.id: o.node for o in orders}
    limit = {o.id: o.price_sen_per_kwh for o in orders}
    units = result.trades
    best: ClearingResult | None = None
    for i, t in enumerate(units[:_REPAIR_UNITS]):
        for u in units[i + 1 : _REPAIR_UNITS]:
            if t.seller == u.seller or t.buyer == u.buyer:
                continue
            if t.seller == u.buyer or u.seller == t.buyer:
                continue
            if node[t.buy_order] != node[u.buy_order]:
                continue
            most = min(t.energy_wh, u.energy_wh)
            for k in sorted({book.lot_wh, most}):
                crossed = [
                    _pair(t, u, k, limit, result.pricing),
                    _pair(u, t, k, limit, result.pricing),
                    dataclasses.replace(t, energy_wh=t.energy_wh - k),
                    dataclasses.replace(u, energy_wh=u.energy_wh - k),
                ]
                rest = [w for w in units if w is not t and w is not u]
                trades = (*rest, *(w for w in crossed if w.energy_wh))
                candidate = dataclasses.replace(result, trades=trades)
                if best is None or candidate.digest() < best.digest():
                    best = candidate
    return best


def _pair(sell: Trade, buy: Trade, energy_wh: int, limit: dict[str, int], pricing: str) -> Trade:
    """``sell``'s seller with ``buy``'s buyer (at the node of ``sell``'s buyer: same fee)."""
    price, paid = sell.price_sen_per_kwh, sell.buyer_price_sen_per_kwh
    if pricing == "midpoint":
        fee = sell.fee_sen_per_kwh
        price = midpoint_price(limit[sell.sell_order], limit[buy.buy_order], fee)
        paid = price + fee
    return dataclasses.replace(
        sell,
        buy_order=buy.buy_order,
        buyer=buy.buyer,
        energy_wh=energy_wh,
        price_sen_per_kwh=price,
        buyer_price_sen_per_kwh=paid,
    )
