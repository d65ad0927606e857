"""Transactions relayed between validators: kept unchecked until the validator proposes, and
forgotten unchecked once another validator's block holds them."""

from __future__ import annotations

from peerpower.consensus.ledger_app import LedgerApp
from peerpower.ledger.transactions import Signer
from tests.consensus.test_ledger_consensus import KEYS, METERS, T0, Cluster, genesis


def test_a_relayed_transaction_is_checked_when_the_validator_proposes() -> None:
    g = genesis()
    entry, other = LedgerApp(g, "v0", KEYS["v0"]), LedgerApp(g, "v1", KEYS["v1"])
    entry.now_ms = other.now_ms = T0 + 1000
    op = Signer(g.tx_chain, "op", KEYS["op"])
    good = op.register("a", KEYS["a"].public_hex, METERS["a"].public_hex, "root", "pv")
    entry.submit(good)
    messages = entry.take_outbox()
    assert messages == [{"tx": good}]
    bad = Signer(g.tx_chain, "op", KEYS["b"], 2).deposit("a", 5)  # signed by the wrong key
    for message in [*messages, {"tx": bad}, {"tx": {"not": "a transaction"}}]:
        other.on_app_message(message)
    assert other.waiting() == 3 and len(other.pool) == 0  # nothing checked yet
    _, block = other.propose(1, 0)
    # checked now: the good one is in the block, the others were refused and are gone
    assert list(block.txs) == [good]
    assert other.waiting() == 1 and other.pool.txs == [good]


def test_relayed_transactions_in_others_blocks_leave_unchecked() -> None:
    c = Cluster(7, {}, 0.0)
    op = Signer(c.genesis.tx_chain, "op", KEYS["op"])
    for site in ("a", "b"):
        c.submit(op.register(site, KEYS[site].public_hex, METERS[site].public_hex, "root", "pv"))
        c.submit(op.deposit(site, 10**9))
    c.net.start()
    c.run_until(T0 + 3 * 60_000)
    for v, app in c.apps.items():
        assert app.state.account("b") is not None, v
        assert app.waiting() == 0, v  # in a block: nothing left waiting anywhere
