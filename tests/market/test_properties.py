"""Conservation laws and determinism of every mechanism (Hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import random_book, stp_kept
from peerpower.market import clear, verify
from peerpower.market.orders import Side

RUNS = [
    ("cda", None, None),
    ("call", None, None),
    ("optimal", "volume", None),
    ("optimal", "welfare", None),
    ("optimal", "welfare", "midpoint"),
    ("optimal", "maxmin", None),
]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 14), st.integers(1, 4), st.sampled_from(RUNS))
def test_clearing_conserves_energy_and_is_rational(
    seed: int, n: int, nodes: int, run: tuple
) -> None:
    rng = random.Random(seed)
    book = random_book(rng, n_orders=n, n_nodes=nodes)
    result = clear(book, *run)
    sold: dict[str, int] = {}
    bought: dict[str, int] = {}
    paid = received = 0
    for t in result.trades:
        sold[t.sell_order] = sold.get(t.sell_order, 0) + t.energy_wh
        bought[t.buy_order] = bought.get(t.buy_order, 0) + t.energy_wh
        s = book.orders[book.by_id[t.sell_order]]
        b = book.orders[book.by_id[t.buy_order]]
        assert s.price_sen_per_kwh <= t.price_sen_per_kwh  # seller gets at least its ask
        assert t.buyer_price_sen_per_kwh <= b.price_sen_per_kwh  # buyer pays at most its bid
        assert t.rent_sen_per_kwh >= 0  # the buyer's price covers the seller's and the fee
        if result.pricing != "nodal":
            assert t.rent_sen_per_kwh == 0
        assert s.participant != b.participant
        paid += t.buyer_price_sen_per_kwh * t.energy_wh * 10
        received += t.price_sen_per_kwh * t.energy_wh * 10
    assert sum(sold.values()) == sum(bought.values()) == result.totals.volume_wh
    # money sums to zero: buyers pay sellers, the fees and the congestion rent
    assert paid == received + result.totals.fees_microyen + result.totals.rent_microyen
    # self-trade prevention (call, optimal) leaves out what the plain rule leaves out
    left_out = {o.id for k, o in enumerate(book.orders) if k not in stp_kept(book)}
    if run[0] == "cda":
        assert result.excluded == ()
    else:
        assert {o for o, _ in result.excluded} == left_out
        assert not left_out & (set(sold) | set(bought))
    for o in book.orders:
        filled = (sold if o.side is Side.SELL else bought).get(o.id, 0)
        assert filled <= o.energy_wh
    assert verify(book, result).ok
    again = clear(book, *run)
    assert again.to_json() == result.to_json()
    assert again.digest() == result.digest()
