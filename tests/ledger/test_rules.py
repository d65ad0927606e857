"""Every rejection rule of the exchange contract (``peerpower.ledger.rules``), one by one.

Each test checks the rule name, that the message names the offending value, and that the state
is unchanged: on a draft after a valid transaction, and for a whole block (``assert_rejected``).
Boundaries are checked from the accepting side too, so a rule that refuses everything fails.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

import pytest

from peerpower.errors import InvalidTransaction
from peerpower.ledger.genesis import Params
from peerpower.ledger.rules import apply_tx, begin_block
from peerpower.ledger.transactions import Signer, decode_tx, sign_body
from tests.ledger.chain_helpers import (
    DEADLINE,
    DEPOSIT,
    END,
    GATE,
    KEYS,
    OP_SUPPLY,
    SLOT,
    SLOT2,
    START,
    T0,
    Chain,
    assert_block_rejected,
    assert_rejected,
    new_chain,
    reading,
    tx_chain,
)

T1 = T0 + 2000  # the block after registration


def accepts(chain: Chain, time_ms: int, *txs: dict[str, Any]) -> None:
    """The transactions are all accepted, in order, in a block at ``time_ms``."""
    ctx = chain.ctx(time_ms)
    draft = chain.state.draft()
    begin_block(draft, chain.genesis, ctx)
    for tx in txs:
        apply_tx(draft, decode_tx(tx, chain.genesis.tx_chain), chain.genesis, ctx)
    assert draft.freeze().root != chain.state.root


@pytest.fixture
def chain() -> Chain:
    """a, b, c registered at the root node with DEPOSIT each (block 1)."""
    return new_chain()


@pytest.fixture
def ordered(chain: Chain) -> Chain:
    """Block 2: a sells 1000 Wh at 1500 (a#1), b buys 800 Wh at 2500 (b#1) for SLOT."""
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    return chain


@pytest.fixture
def sealed(ordered: Chain) -> Chain:
    """Block 3 at the gate seals SLOT; the next block gives it its seed."""
    ordered.produce(GATE)
    return ordered


@pytest.fixture
def sealed_midpoint() -> Chain:
    """``sealed`` on a welfare market that prices by ``midpoint`` (genesis.market.pricing)."""
    chain = new_chain(pricing="midpoint")
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)
    return chain


@pytest.fixture
def cleared(sealed: Chain) -> Chain:
    """Block 4 clears SLOT: a#1 → b#1, 800 Wh at the node price 1500 sen/kWh."""
    block = sealed.produce(GATE + 1000)
    assert [tx["body"]["type"] for tx in block.txs] == ["clear"]
    return sealed


def r_k(seed: bytes, order_id: str) -> int:
    """The tie-break rank of DESIGN.md §3, from hashlib: first 8 bytes of SHA-256(seed ‖ id)."""
    return int.from_bytes(hashlib.sha256(seed + order_id.encode()).digest()[:8], "big")


def honest_result(seed: bytes = bytes(32), pricing: str = "nodal") -> dict[str, Any]:
    """The clearing of the ``ordered`` book written out by hand: one unit a#1 → b#1 of 800 Wh
    (all of the buy); welfare (2500 − 1500) × 800 × 10 = 8 000 000 µ¥, and its objective
    (welfare, volume, seeded score for the slot's ``seed``).

    ``nodal`` (the default market's rule): a#1 is left partly unfilled, so the one node's
    price is its ask, 1500 sen/kWh (filled sells ask at most the price, unfilled ones at
    least), which b#1's bid of 2500 covers: both sides trade at 1500, no rent. The price is the
    proof of optimality.

    ``midpoint``: 1500 + (2500 − 0 − 1500) // 2 = 2000 sen/kWh, and the certificate: one node
    price of 1500 sen/kWh bounds the welfare by (2500 − 1500) × 800 × 10, what the unit
    achieves."""
    score = (r_k(seed, "a#1") + r_k(seed, "b#1")) * 800
    price = 1500 if pricing == "nodal" else 2000
    result: dict[str, Any] = {
        "mechanism": "optimal",
        "goal": "welfare",
        "pricing": pricing,
        "trades": [
            {
                "sell_order": "a#1",
                "buy_order": "b#1",
                "seller": "a",
                "buyer": "b",
                "energy_wh": 800,
                "price_sen_per_kwh": price,
                "fee_sen_per_kwh": 0,
                "buyer_price_sen_per_kwh": price,
            }
        ],
        "totals": {
            "volume_wh": 800,
            "welfare_microyen": 8_000_000,
            "fees_microyen": 0,
            "rent_microyen": 0,
        },
        "objective": {"primary": 8_000_000, "secondary": 800, "score": str(score)},
    }
    if pricing == "nodal":
        result["node_prices_sen_per_kwh"] = {"root": 1500}
    else:
        result["certificate"] = {
            "kind": "welfare-node-prices",
            "price_sen_per_kwh": {"root": 1500},
            "rent_sen_per_kwh": {},
        }
    return result


# -- format, chain ------------------------------------------------------------------------------


def test_invalid_format_unknown_field(chain: Chain) -> None:
    body = {
        "chain": tx_chain(),
        "type": "order",
        "from": "a",
        "nonce": 1,
        "slot": SLOT,
        "side": "sell",
        "energy_wh": 1000,
        "price_sen_per_kwh": 1500,
        "memo": "hi",
    }
    bad = sign_body(KEYS["a"], body)
    with pytest.raises(InvalidTransaction) as info:
        decode_tx(bad, tx_chain())
    assert info.value.rule == "format"
    assert "unknown ['memo']" in info.value.message
    valid = chain.signer("c").withdraw(1)
    assert_block_rejected(chain, T1, [valid, bad], "format", "txs[1].body", "unknown ['memo']")


def test_invalid_format_field_type(chain: Chain) -> None:
    bad = chain.signer("a").order(SLOT, "sell", "1000", 1500)  # type: ignore[arg-type]
    with pytest.raises(InvalidTransaction) as info:
        decode_tx(bad, tx_chain())
    assert info.value.rule == "format"
    assert "energy_wh: must be an integer, got '1000'" in info.value.message
    valid = chain.signer("c").withdraw(1)
    assert_block_rejected(chain, T1, [valid, bad], "format", "txs[1].body.energy_wh", "'1000'")


def test_invalid_format_objective_zero_denominator(sealed: Chain) -> None:
    """A clearing result whose objective is the fraction 1/0 is a malformed transaction, not a
    crash of the node (it raised ZeroDivisionError)."""
    result = honest_result()
    result["objective"] = {"primary": {"num": 1, "den": 0}, "secondary": 800, "score": "0"}
    bad = sealed.signer("val").clear(SLOT, result)
    with pytest.raises(InvalidTransaction) as info:
        decode_tx(bad, tx_chain())
    assert info.value.rule == "format"
    assert "objective.primary.den" in info.value.message
    valid = sealed.signer("c").withdraw(1)
    assert_block_rejected(
        sealed, GATE + 1000, [valid, bad], "format", "result.objective.primary.den", "got 0"
    )


def test_invalid_format_float_in_result(sealed: Chain) -> None:
    result = honest_result()
    result["certificate"] = {"kind": "welfare-node-prices", "price_sen_per_kwh": {"root": 1500.5}}
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(sealed, GATE + 1000, bad, "format", "1500.5", "price_sen_per_kwh")


def test_invalid_chain(chain: Chain) -> None:
    body = {
        "chain": "other",
        "type": "withdraw",
        "from": "a",
        "nonce": 1,
        "amount_microyen": 5,
    }
    bad = sign_body(KEYS["a"], body)
    with pytest.raises(InvalidTransaction) as info:
        decode_tx(bad, tx_chain())
    assert info.value.rule == "chain"
    valid = chain.signer("c").withdraw(1)
    assert_block_rejected(chain, T1, [valid, bad], "chain", "'other'", chain.genesis.tx_chain)


def test_invalid_chain_same_name_other_genesis(chain: Chain) -> None:
    # a chain with the same chain_id but another genesis (other parameters): its transactions
    # name its genesis hash, so they are refused here even though the keys are the same
    other = dataclasses.replace(chain.genesis, params=Params(default_limit=7))
    assert other.chain_id == chain.genesis.chain_id and other.hash != chain.genesis.hash
    bad = Signer(other.tx_chain, "c", KEYS["c"], 1).withdraw(1)
    valid = chain.signer("a").withdraw(1)
    assert_block_rejected(chain, T1, [valid, bad], "chain", other.tx_chain)


# -- account, role, signature, nonce -----------------------------------------------------------


def test_invalid_account_unregistered_sender(chain: Chain) -> None:
    bad = chain.signer("x").order(SLOT, "sell", 1000, 1500)
    assert_rejected(chain, T1, bad, "account", "sender 'x' is not registered")


def test_invalid_account_deposit_to_unregistered(chain: Chain) -> None:
    bad = chain.signer("op").deposit("x", 5)
    assert_rejected(chain, T1, bad, "account", "'x' is not a registered participant")


def test_invalid_account_deposit_to_non_participant(chain: Chain) -> None:
    bad = chain.signer("op").deposit("grid", 5)
    assert_rejected(chain, T1, bad, "account", "'grid' is not a registered participant")


def test_invalid_account_meter_of_unregistered_site(cleared: Chain) -> None:
    bad = reading("x", SLOT, 0, 0, key="xm")
    assert_rejected(cleared, END + 1, bad, "account", "site 'x' is not registered")


def any_tx(s: Signer, kind: str) -> dict[str, Any]:
    """A well-formed transaction of type ``kind`` from ``s``."""
    x = KEYS["x"].public_hex
    return {
        "register": lambda: s.register("d", x, KEYS["xm"].public_hex, "root", "pv"),
        "reinstate": lambda: s.reinstate("b"),
        "deposit": lambda: s.deposit("b", 5),
        "withdraw": lambda: s.withdraw(5),
        "order": lambda: s.order(SLOT, "buy", 100, 1000),
        "cancel": lambda: s.cancel("b#1"),
        "clear": lambda: s.clear(SLOT, honest_result()),
        "settle": lambda: s.settle(SLOT),
    }[kind]()


@pytest.mark.parametrize(
    ("sender", "kind", "role"),
    [
        ("a", "register", "operator"),
        ("a", "reinstate", "operator"),
        ("a", "deposit", "operator"),
        ("val", "deposit", "operator"),
        ("op", "withdraw", "participant"),
        ("val", "order", "participant"),
        ("retail", "order", "participant"),
        ("grid", "cancel", "participant"),
        ("op", "clear", "validator"),
        ("a", "settle", "validator"),
    ],
)
def test_invalid_role(chain: Chain, sender: str, kind: str, role: str) -> None:
    bad = any_tx(chain.signer(sender), kind)
    is_a = chain.acct(sender).kind
    assert is_a != role
    needle = f"{kind} must be sent by the {role}, {sender!r} is {is_a}"
    assert_rejected(chain, T1, bad, "role", needle)


def test_invalid_role_meter_of_non_site(cleared: Chain) -> None:
    bad = reading("op", SLOT, 0, 0, key="op")
    assert_rejected(cleared, END + 1, bad, "role", "'op' is not a site with a meter")


def test_invalid_signature_other_participants_key(chain: Chain) -> None:
    bad = chain.signer("a", key="b").order(SLOT, "sell", 1000, 1500)
    assert_rejected(chain, T1, bad, "signature", "order is not signed by the key of 'a'")


def test_invalid_signature_meter_signed_by_account_key(cleared: Chain) -> None:
    bad = reading("a", SLOT, 0, 1000, key="a")
    assert_rejected(
        cleared, END + 1, bad, "signature", "meter is not signed by the meter key of 'a'"
    )
    accepts(cleared, END + 1, reading("a", SLOT, 0, 1000))


def test_invalid_signature_altered_body(chain: Chain) -> None:
    bad = copy.deepcopy(chain.signer("a").order(SLOT, "sell", 1000, 1500))
    bad["body"]["price_sen_per_kwh"] = 1400  # changed after signing
    assert_rejected(chain, T1, bad, "signature", "not signed by the key of 'a'")


def test_invalid_nonce_replayed(ordered: Chain) -> None:
    # the very transaction of block 2, sent again
    bad = Signer(tx_chain(), "a", KEYS["a"], 1).order(SLOT, "sell", 1000, 1500)
    assert bad in ordered.blocks[1].txs
    assert_rejected(
        ordered, T1 + 1000, bad, "nonce", "nonce 1 replays", "'a' last used 1", "must be 2"
    )


def test_invalid_nonce_repeated_in_block(chain: Chain) -> None:
    valid = chain.signer("a").order(SLOT, "sell", 100, 1500)
    bad = chain.signer("a").withdraw(5)  # nonce 1 as well
    assert_rejected(
        chain, T1, bad, "nonce", "nonce 1 replays", "'a' last used 1", "must be 2", valid=valid
    )


def test_invalid_nonce_skipped(ordered: Chain) -> None:
    bad = ordered.signer("a", skip=1).withdraw(5)
    assert bad["body"]["nonce"] == 3
    assert_rejected(ordered, T1 + 1000, bad, "nonce", "nonce 3 skips ahead", "must be 2")
    accepts(ordered, T1 + 1000, ordered.signer("a").withdraw(5))


# -- register, reinstate, deposit, withdraw ------------------------------------------------------


def test_invalid_duplicate_account(chain: Chain) -> None:
    bad = chain.signer("op").register(
        "a", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "pv"
    )
    assert_rejected(chain, T1, bad, "duplicate-account", "account 'a' is already registered")


def test_invalid_duplicate_account_in_one_block(chain: Chain) -> None:
    op = chain.signer("op")
    valid = op.register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "shop")
    bad = op.register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "shop")
    assert_rejected(
        chain, T1, bad, "duplicate-account", "account 'x' is already registered", valid=valid
    )


def test_invalid_node() -> None:
    chain = new_chain(
        grid={"nodes": [{"id": "root", "parent": None}, {"id": "f1", "parent": "root"}]}
    )
    op = chain.signer("op")
    bad = op.register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "nowhere", "pv")
    assert_rejected(chain, T1, bad, "node", "grid node 'nowhere' is not in the genesis grid")
    good = chain.signer("op").register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "f1", "pv")
    accepts(chain, T1, good)


def test_invalid_not_suspended(chain: Chain) -> None:
    bad = chain.signer("op").reinstate("a")
    assert_rejected(chain, T1, bad, "not-suspended", "'a' is active, not suspended")


def test_invalid_funds_deposit(chain: Chain) -> None:
    left = OP_SUPPLY - 3 * DEPOSIT  # the operator funded a, b and c in block 1
    bad = chain.signer("op").deposit("a", left + 1)
    valid = chain.signer("c").order(SLOT, "sell", 100, 1500)  # (a withdrawal would pay the op)
    assert_rejected(
        chain,
        T1,
        bad,
        "funds",
        f"deposit of {left + 1} µ¥ exceeds the operator's {left} µ¥",
        valid=valid,
    )
    accepts(chain, T1, chain.signer("op").deposit("a", left))


def test_invalid_funds_withdraw(ordered: Chain) -> None:
    # a's sell of 1000 Wh locks 3000 sen/kWh × 1000 Wh × 10 = 30 000 000 µ¥
    locked = 3000 * 1000 * 10
    free = DEPOSIT - locked
    bad = ordered.signer("a").withdraw(free + 1)
    assert_rejected(
        ordered,
        T1 + 1000,
        bad,
        "funds",
        f"withdrawal of {free + 1} µ¥ exceeds the free balance {free} µ¥",
        f"{locked} µ¥ locked",
    )
    accepts(ordered, T1 + 1000, ordered.signer("a").withdraw(free))


# -- order ---------------------------------------------------------------------------------------


def test_invalid_order_window(chain: Chain) -> None:
    # SLOT2 starts 2026-08-19 00:00 and opens for orders 24 h before
    bad = chain.signer("a").order(SLOT2, "sell", 1000, 1500)
    assert_rejected(
        chain,
        START - 1,
        bad,
        "order-window",
        "slot 2026-08-19#00 opens for orders at 2026-08-18T00:00:00+09:00",
        "2026-08-17T23:59:59.999000+09:00",
    )
    accepts(chain, START, bad)


def test_invalid_gate_order(chain: Chain) -> None:
    bad = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    assert_rejected(
        chain, GATE, bad, "gate", "the gate of slot 2026-08-18#00 closed at 2026-08-17T23:55:00"
    )
    accepts(chain, GATE - 1, bad)


def test_invalid_gate_cancel(ordered: Chain) -> None:
    bad = ordered.signer("a").cancel("a#1")
    assert_rejected(
        ordered,
        GATE,
        bad,
        "gate",
        "closed at 2026-08-17T23:55:00+09:00",
        "order 'a#1' can no longer be cancelled",
    )
    accepts(ordered, GATE - 1, bad)


@pytest.mark.parametrize(("price", "ok"), [(10_001, 10_000), (-1, 0)])
def test_invalid_price_band(chain: Chain, price: int, ok: int) -> None:
    bad = chain.signer("a").order(SLOT, "sell", 1000, price)
    assert_rejected(
        chain, T1, bad, "price-band", f"price_sen_per_kwh {price} is outside the band 0–10000"
    )
    accepts(chain, T1, chain.signer("a").order(SLOT, "sell", 1000, ok))


@pytest.mark.parametrize("energy", [150, 0, -100, 1])
def test_invalid_lot(chain: Chain, energy: int) -> None:
    bad = chain.signer("a").order(SLOT, "sell", energy, 1500)
    assert_rejected(
        chain, T1, bad, "lot", f"energy_wh {energy} is not a whole positive number of 100 Wh lots"
    )


def test_invalid_order_size() -> None:
    chain = new_chain(deposits={"a": 10**10, "c": DEPOSIT})
    bad = chain.signer("a").order(SLOT, "sell", 100_100, 1500)
    assert_rejected(chain, T1, bad, "order-size", "energy_wh 100100 exceeds 100000 Wh")
    # 3000 sen/kWh × 100 000 Wh × 10 = 3 000 000 000 µ¥ of margin: within a's 10^10
    accepts(chain, T1, chain.signer("a").order(SLOT, "sell", 100_000, 1500))


def test_invalid_margin(chain: Chain) -> None:
    # a buy of 10 000 Wh at 7000 locks (7000 + 3000) × 10 000 × 10 = 10^9 µ¥: all of a's deposit
    a = chain.signer("a")
    valid = a.order(SLOT, "buy", 10_000, 7000)
    # above its own bid, so it does not cross it (rule self-cross); a sell's margin does not
    # depend on its price
    bad = a.order(SLOT, "sell", 100, 7500)  # 3000 × 100 × 10 = 3 000 000 µ¥ more
    assert_rejected(
        chain,
        T1,
        bad,
        "margin",
        "the order locks 3000000 µ¥ of margin, 'a' has 0 µ¥ free",
        valid=valid,
    )
    big = chain.signer("b").order(SLOT, "buy", 10_100, 7000)  # 1 010 000 000 µ¥
    assert_rejected(chain, T1, big, "margin", "locks 1010000000 µ¥", "'b' has 1000000000 µ¥ free")


# a has an open sell a#1 at 1500 and b an open buy b#1 at 2500 (the ``ordered`` book)
SELF_CROSSING = {
    "buy": ("a", "buy", 1600, 1499),  # a's bid meets its own ask; 1 sen/kWh less does not
    "buy-equal": ("a", "buy", 1500, 1499),  # bid = ask crosses (bid ≥ ask)
    "sell": ("b", "sell", 2400, 2501),  # b's ask meets its own bid
    "sell-equal": ("b", "sell", 2500, 2501),
}


@pytest.mark.parametrize("case", SELF_CROSSING)
def test_invalid_self_cross(ordered: Chain, case: str) -> None:
    """Self-trade prevention: an order may not meet its account's open order on the other side
    of the slot. The message names both orders and both prices; the state is left as it was
    (assert_rejected); one sen/kWh short of crossing is accepted, and so is the same order from
    another account or for another slot."""
    who, side, price, ok = SELF_CROSSING[case]
    mine, other, theirs, their_price = (
        ("bid", "sell 'a#1'", "ask", 1500) if side == "buy" else ("ask", "buy 'b#1'", "bid", 2500)
    )
    bad = ordered.signer(who).order(SLOT, side, 100, price)
    err = assert_rejected(
        ordered,
        T1 + 1000,
        bad,
        "self-cross",
        f"order '{who}#2' ({side}, {mine} {price} sen/kWh) would cross the open {other} "
        f"({theirs} {their_price} sen/kWh) of the same account '{who}' in slot 2026-08-18#00",
        f"cancel '{who}#1' first",
    )
    assert err.message.startswith(f"order '{who}#2'")
    accepts(ordered, T1 + 1000, ordered.signer(who).order(SLOT, side, 100, ok))
    accepts(ordered, T1 + 1000, ordered.signer("c").order(SLOT, side, 100, price))
    accepts(ordered, START, ordered.signer(who).order(SLOT2, side, 100, price))


def test_invalid_self_cross_in_the_same_block(chain: Chain) -> None:
    # the open order it crosses is only in the block so far (the draft), not in the state
    a = chain.signer("a")
    valid = a.order(SLOT, "sell", 1000, 1500)
    bad = a.order(SLOT, "buy", 100, 1700)
    assert_rejected(
        chain, T1, bad, "self-cross", "'a#2' (buy, bid 1700", "sell 'a#1' (ask 1500", valid=valid
    )


def test_invalid_self_cross_names_the_order_crossed_furthest(ordered: Chain) -> None:
    # a sells at 1500 (a#1) and 1200 (a#2); a buy at 1600 crosses both: a#2 is named
    a = ordered.signer("a")
    ordered.produce(T1 + 1000, a.order(SLOT, "sell", 100, 1200))
    bad = ordered.signer("a").order(SLOT, "buy", 100, 1600)
    assert_rejected(ordered, T1 + 2000, bad, "self-cross", "open sell 'a#2' (ask 1200")


def test_self_cross_cancelled_or_cleared_order_no_longer_counts(ordered: Chain) -> None:
    a = ordered.signer("a")
    crossing = ordered.signer("a", skip=1).order(SLOT, "buy", 100, 1600)  # a#3, after a cancel
    accepts(ordered, T1 + 1000, a.cancel("a#1"), crossing)
    ordered.produce(T1 + 1000, ordered.signer("a").cancel("a#1"))
    ordered.produce(T1 + 2000, ordered.signer("a").order(SLOT, "buy", 100, 1600))
    assert ordered.state.get("orders", "a#3") is not None
    # the same in the state index: a's open orders in the slot are a#3 alone
    assert ordered.state.own_order_ids(SLOT, "a") == {"a#3"}
    assert ordered.state.own_order_ids(SLOT, "b") == {"b#1"}
    # cleared (the orders become contracts or are released): nothing open is left to cross
    ordered.produce(GATE)
    ordered.produce(GATE + 1000)
    assert ordered.state.get("slots", SLOT).status == "cleared"  # type: ignore[union-attr]
    assert ordered.state.own_order_ids(SLOT, "a") == ordered.state.order_ids(SLOT) == set()


def test_invalid_unknown_order(ordered: Chain) -> None:
    bad = ordered.signer("a").cancel("a#9")
    assert_rejected(ordered, T1 + 1000, bad, "unknown-order", "order 'a#9' is not open")


def test_invalid_unknown_order_cancelled_twice(ordered: Chain) -> None:
    a = ordered.signer("a")
    valid = a.cancel("a#1")
    bad = a.cancel("a#1")
    assert_rejected(
        ordered, T1 + 1000, bad, "unknown-order", "order 'a#1' is not open", valid=valid
    )


def test_invalid_owner(ordered: Chain) -> None:
    bad = ordered.signer("b").cancel("a#1")
    assert_rejected(ordered, T1 + 1000, bad, "owner", "order 'a#1' belongs to 'a', not 'b'")


# -- suspended and indebted participants ------------------------------------------------------


def defaulted_chain(params: Params, deposit_a: int) -> Chain:
    """a sells 1000 Wh at 1500, b buys 800 Wh at 2500; 800 Wh clear at the node price 1500 (a's
    ask: a is left partly unfilled); a exports nothing,
    b imports 800 Wh; SLOT settles in the block after its meter deadline."""
    chain = new_chain(params, deposits={"a": deposit_a, "b": DEPOSIT, "c": DEPOSIT})
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)
    chain.produce(GATE + 1000)
    chain.produce(END + 1000, reading("a", SLOT, 0, 0), reading("b", SLOT, 800, 0))
    block = chain.produce(DEADLINE + 1000)
    assert [tx["body"]["type"] for tx in block.txs] == ["settle"]
    return chain


def test_invalid_status_suspended() -> None:
    chain = defaulted_chain(Params(default_limit=1), DEPOSIT)
    assert chain.acct("a").status == "suspended"
    bad = chain.signer("a").order(SLOT2, "sell", 100, 1500)
    t = DEADLINE + 2000
    assert_rejected(chain, t, bad, "status", "'a' is suspended after 1 defaults")
    accepts(chain, t, chain.signer("op").reinstate("a"), bad)


def test_invalid_unsettled_default() -> None:
    # sell margin 10 % of 3000: 300 sen/kWh; a deposits exactly the 3 000 000 µ¥ its order locks
    chain = defaulted_chain(Params(sell_margin_percent=10), 300 * 1000 * 10)
    # penalty 3000 × 800 × 10 = 24 000 000; margin kept 300 × 800 × 10 = 2 400 000; balance
    # = released 600 000 + proceeds 1500 × 800 × 10 = 12 000 000; unpaid = 24.0 − 2.4 − 12.6 M
    # (at the midpoint price of 2000 the proceeds were 16 000 000 and 5 000 000 went unpaid)
    assert chain.acct("a").unpaid_microyen == 9_000_000
    assert chain.acct("a").status == "active"
    bad = chain.signer("a").order(SLOT2, "sell", 100, 1500)
    t = DEADLINE + 2000
    assert_rejected(
        chain, t, bad, "unsettled-default", "'a' owes 9000000 µ¥ from a default; a deposit pays it"
    )
    # a deposit of the debt plus the new order's margin (300 × 100 × 10) makes it acceptable
    accepts(chain, t, chain.signer("op").deposit("a", 9_000_000 + 300_000), bad)
    # one µ¥ short of the debt: still refused
    short = chain.signer("op").deposit("a", 8_999_999)
    draft = chain.state.draft()
    ctx = chain.ctx(t)
    apply_tx(draft, decode_tx(short, chain.genesis.tx_chain), chain.genesis, ctx)
    with pytest.raises(InvalidTransaction) as info:
        apply_tx(draft, decode_tx(bad, chain.genesis.tx_chain), chain.genesis, ctx)
    assert info.value.rule == "unsettled-default"
    assert "'a' owes 1 µ¥" in info.value.message


# -- clear --------------------------------------------------------------------------------------


def test_invalid_slot_state_clear_without_orders(sealed: Chain) -> None:
    bad = sealed.signer("val").clear("2026-08-18#05", honest_result())
    assert_rejected(sealed, GATE + 1000, bad, "slot-state", "slot 2026-08-18#05 has no orders")


def test_invalid_slot_state_clear_before_gate(ordered: Chain) -> None:
    bad = ordered.signer("val").clear(SLOT, honest_result())
    assert_rejected(
        ordered, GATE - 1, bad, "slot-state", "slot 2026-08-18#00 cannot be cleared", "gate"
    )


def test_invalid_slot_state_clear_without_seed(ordered: Chain) -> None:
    # the block at the gate seals the slot; its seed (that block's hash) exists from the next on
    bad = ordered.signer("val").clear(SLOT, honest_result())
    assert_rejected(ordered, GATE, bad, "slot-state", "the hash of block 3")


def test_invalid_slot_state_clear_twice(cleared: Chain) -> None:
    bad = cleared.signer("val").clear(SLOT, honest_result())
    assert_rejected(cleared, GATE + 2000, bad, "slot-state", "it is already cleared")


def test_clear_honest_result_accepted(sealed: Chain) -> None:
    seed = sealed.state.head_hash  # the sealing block's hash
    accepts(sealed, GATE + 1000, sealed.signer("val").clear(SLOT, honest_result(seed)))


def test_clear_honest_midpoint_result_accepted(sealed_midpoint: Chain) -> None:
    chain = sealed_midpoint
    result = honest_result(chain.state.head_hash, "midpoint")
    accepts(chain, GATE + 1000, chain.signer("val").clear(SLOT, result))


@pytest.mark.parametrize(
    ("market", "given"), [("nodal", "midpoint"), ("midpoint", "nodal")], ids=["nodal", "midpoint"]
)
def test_invalid_pricing_mismatch_clear(market: str, given: str) -> None:
    """A result priced by another rule than the genesis market's is refused before it is
    verified, whatever its merits: each rule's result is honest for its own rule."""
    chain = new_chain(pricing=market)
    assert chain.genesis.market.pricing == market
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
    )
    chain.produce(GATE)
    seed = chain.state.head_hash
    bad = chain.signer("val").clear(SLOT, honest_result(seed, given))
    assert_rejected(
        chain,
        GATE + 1000,
        bad,
        "pricing",
        f"the result is priced {given!r}",
        f"the market (genesis.market.pricing) prices {market!r}",
    )
    accepts(chain, GATE + 1000, chain.signer("val").clear(SLOT, honest_result(seed, market)))


def test_invalid_optimality_without_objective(sealed: Chain) -> None:
    result = honest_result(sealed.state.head_hash)
    del result["objective"]
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(sealed, GATE + 1000, bad, "optimality", "must state its objective")


def _empty(pricing: str) -> dict[str, Any]:
    return {
        "mechanism": "optimal",
        "goal": "welfare",
        "pricing": pricing,
        "trades": [],
        "totals": {"volume_wh": 0, "welfare_microyen": 0, "fees_microyen": 0, "rent_microyen": 0},
        "objective": {"primary": 0, "secondary": 0, "score": "0"},
    }


def test_invalid_optimality_empty_clearing_without_certificate(sealed_midpoint: Chain) -> None:
    # valid (no trade breaks a rule) and honest about its objective, but not optimal: the book
    # admits a welfare certificate, and none proves 0 µ¥ optimal
    chain = sealed_midpoint
    empty = _empty("midpoint")
    bad = chain.signer("val").clear(SLOT, empty)
    assert_rejected(chain, GATE + 1000, bad, "optimality", "no certificate proving its welfare")
    # the same result with the honest certificate: the dual bound exposes it
    empty["certificate"] = honest_result(pricing="midpoint")["certificate"]
    bad = chain.signer("val").clear(SLOT, empty)
    assert_rejected(chain, GATE + 1000, bad, "clearing", "certificate")


@pytest.mark.parametrize("price", [1500, 2000, 2500])
def test_invalid_clearing_empty_nodal_clearing(sealed: Chain, price: int) -> None:
    # Under nodal pricing the node prices are the proof: no price makes trading nothing an
    # equilibrium here (a#1 left unfilled needs a price ≤ its ask 1500, b#1 one ≥ its bid 2500)
    empty = _empty("nodal")
    empty["node_prices_sen_per_kwh"] = {"root": price}
    bad = sealed.signer("val").clear(SLOT, empty)
    # (the message names the first of the broken conditions: at 2000 both are)
    needle = (
        "buy 'b#1' is left unfilled at bid 2500 above"
        if price == 1500
        else "sell 'a#1' is left unfilled at ask 1500 below"
    )
    assert_rejected(
        sealed, GATE + 1000, bad, "pricing", "pricing: not a competitive equilibrium", needle
    )
    del empty["node_prices_sen_per_kwh"]
    bad = sealed.signer("val").clear(SLOT, empty)
    assert_rejected(sealed, GATE + 1000, bad, "pricing", "pricing: a nodal result must carry")


def test_invalid_mechanism(sealed: Chain) -> None:
    result = honest_result()
    result["goal"] = "volume"
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(
        sealed,
        GATE + 1000,
        bad,
        "mechanism",
        "the result is optimal/volume, the market clears by optimal/welfare",
    )


def test_invalid_clearing_inflated_trade(sealed: Chain) -> None:
    result = honest_result()
    result["trades"][0]["energy_wh"] = 900  # b#1 bids for 800 Wh
    result["totals"] = {
        "volume_wh": 900,
        "welfare_microyen": 9_000_000,
        "fees_microyen": 0,
        "rent_microyen": 0,
    }
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(
        sealed, GATE + 1000, bad, "clearing", "slot 2026-08-18#00", "'b#1' filled 900 Wh of its 800"
    )


def test_invalid_clearing_order_not_in_book(sealed: Chain) -> None:
    result = honest_result()
    result["trades"][0]["sell_order"] = "a#7"
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(sealed, GATE + 1000, bad, "clearing", "order 'a#7' is not in the book")


def test_invalid_clearing_cancelled_order_not_in_sealed_book(chain: Chain) -> None:
    c = chain.signer("c")
    chain.produce(
        T1,
        chain.signer("a").order(SLOT, "sell", 1000, 1500),
        chain.signer("b").order(SLOT, "buy", 800, 2500),
        c.order(SLOT, "sell", 800, 1000),
    )
    chain.produce(T1 + 1000, c.cancel("c#1"))
    chain.produce(GATE)
    result = honest_result()
    # c#1 at 1000 would have been the better sell, but it was cancelled before the gate
    result["trades"][0].update(sell_order="c#1", seller="c", price_sen_per_kwh=1750)
    result["totals"]["welfare_microyen"] = (2500 - 1000) * 800 * 10
    bad = chain.signer("val").clear(SLOT, result)
    assert_rejected(chain, GATE + 1000, bad, "clearing", "order 'c#1' is not in the book")


def test_invalid_clearing_forged_volume(sealed: Chain) -> None:
    result = honest_result()
    result["totals"]["volume_wh"] = 1000  # claims more than its trades
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(
        sealed, GATE + 1000, bad, "clearing", "totals are volume 1000 Wh", "recomputed volume 800"
    )


def test_invalid_clearing_price_not_midpoint(sealed_midpoint: Chain) -> None:
    chain = sealed_midpoint
    result = honest_result(pricing="midpoint")
    result["trades"][0].update(price_sen_per_kwh=2400, buyer_price_sen_per_kwh=2400)  # favours a
    bad = chain.signer("val").clear(SLOT, result)
    assert_rejected(chain, GATE + 1000, bad, "clearing", "price 2400 is not the midpoint 2000")


def test_invalid_clearing_price_not_node_price(sealed: Chain) -> None:
    # the unit priced above the node's price, within both limits: a would gain what b loses
    result = honest_result()
    result["trades"][0].update(price_sen_per_kwh=2000, buyer_price_sen_per_kwh=2000)
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(
        sealed,
        GATE + 1000,
        bad,
        "pricing",
        "pricing: trades[0]: prices 2000/2000 sen/kWh, the nodes 'root'/'root' are priced "
        "1500/1500",
    )
    # ... and the node priced there too: a#1, left partly unfilled, asks less than that price,
    # so it is no equilibrium (a would have sold more at 2000)
    result["node_prices_sen_per_kwh"] = {"root": 2000}
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(
        sealed,
        GATE + 1000,
        bad,
        "pricing",
        "pricing: not a competitive equilibrium: sell 'a#1' is left unfilled at ask 1500 below",
    )


def test_invalid_clearing_buyer_price_not_node_price(sealed: Chain) -> None:
    # the seller paid the node price but the buyer charged more: the difference is no rent
    # (nothing is congested on one node)
    result = honest_result()
    result["trades"][0]["buyer_price_sen_per_kwh"] = 1600
    result["totals"]["rent_microyen"] = 100 * 800 * 10
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(sealed, GATE + 1000, bad, "pricing", "prices 1500/1600 sen/kWh")


def test_invalid_clearing_seller_not_owner(sealed: Chain) -> None:
    result = honest_result()
    result["trades"][0]["seller"] = "c"  # c would be paid for a's energy
    bad = sealed.signer("val").clear(SLOT, result)
    assert_rejected(sealed, GATE + 1000, bad, "clearing", "'c'/'b' do not own the orders")


# -- meter, settle ----------------------------------------------------------------------------


def test_invalid_meter_early(cleared: Chain) -> None:
    bad = reading("a", SLOT, 0, 1000)
    assert_rejected(
        cleared,
        END - 1,
        bad,
        "meter-early",
        "slot 2026-08-18#00 ends at 2026-08-18T00:30:00+09:00",
        "the block is at 2026-08-18T00:29:59.999000+09:00",
    )
    accepts(cleared, END, bad)


def test_invalid_meter_deadline(cleared: Chain) -> None:
    bad = reading("a", SLOT, 0, 1000)
    assert_rejected(
        cleared,
        DEADLINE + 1,
        bad,
        "meter-deadline",
        "readings of slot 2026-08-18#00 closed at 2026-08-18T01:30:00+09:00",
    )
    accepts(cleared, DEADLINE, bad)


def test_invalid_duplicate_reading(cleared: Chain) -> None:
    valid = reading("a", SLOT, 0, 1000)
    bad = reading("a", SLOT, 0, 900)
    assert_rejected(
        cleared,
        END + 1,
        bad,
        "duplicate-reading",
        "site 'a' already reported slot 2026-08-18#00",
        valid=valid,
    )


def test_invalid_duplicate_reading_in_later_block(cleared: Chain) -> None:
    first = reading("a", SLOT, 0, 1000)
    cleared.produce(END + 1, first)
    assert_rejected(cleared, END + 2, first, "duplicate-reading", "site 'a' already reported")


def test_invalid_settle_early(cleared: Chain) -> None:
    bad = cleared.signer("val").settle(SLOT)
    assert_rejected(
        cleared,
        DEADLINE,
        bad,
        "settle-early",
        "slot 2026-08-18#00 settles after its meter deadline 2026-08-18T01:30:00+09:00",
    )
    accepts(cleared, DEADLINE + 1, bad)


def test_invalid_slot_state_settle_unknown(chain: Chain) -> None:
    bad = chain.signer("val").settle(SLOT)
    assert_rejected(chain, T1, bad, "slot-state", "slot 2026-08-18#00 has no orders or readings")


def test_invalid_slot_state_settle_twice(cleared: Chain) -> None:
    cleared.produce(DEADLINE + 1)  # the solo node settles the slot as its duty
    assert cleared.state.get("settled", SLOT) is not None
    bad = cleared.signer("val").settle(SLOT)
    assert_rejected(cleared, DEADLINE + 2, bad, "slot-state", "2026-08-18#00 is already settled")


def test_invalid_submit_keeps_the_mempool(ordered: Chain) -> None:
    node = ordered.node
    good = ordered.signer("b").cancel("b#1")
    node.submit(good, T1 + 1000)
    with pytest.raises(InvalidTransaction) as info:
        node.submit(ordered.signer("b", skip=1).cancel("a#1"), T1 + 1000)
    assert info.value.rule == "owner"
    assert node.mempool == [good]
    block = ordered.produce(T1 + 1000)
    assert list(block.txs) == [good]
    assert ordered.acct("b").locked_microyen == 0


def test_invalid_clear_late(sealed: Chain) -> None:
    # the seed is known from the next block on, but a block at the slot's start is too late:
    # contracts made now could not be delivered
    bad = sealed.signer("val").clear(SLOT, honest_result(sealed.state.head_hash))
    assert_rejected(sealed, START, bad, "clear-late", "slot 2026-08-18#00 began delivery")
    accepts(sealed, START - 1, bad)


def test_invalid_unsettled_default_withdraw() -> None:
    chain = defaulted_chain(Params(sell_margin_percent=10), 300 * 1000 * 10)
    assert chain.acct("a").unpaid_microyen == 9_000_000  # see test_invalid_unsettled_default
    bad = chain.signer("a").withdraw(1)
    assert_rejected(chain, DEADLINE + 2000, bad, "unsettled-default", "'a' owes 9000000 µ¥")
