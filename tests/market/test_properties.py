"""Conservation laws and determinism of every mechanism (Hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import random_book
from peerpower.market import clear, verify
from peerpower.market.orders import Side

RUNS = [
    ("cda", None),
    ("call", None),
    ("optimal", "volume"),
    ("optimal", "welfare"),
    ("optimal", "maxmin"),
]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 14), st.sampled_from(RUNS))
def test_clearing_conserves_energy_and_is_rational(seed: int, n: int, run: tuple) -> None:
    rng = random.Random(seed)
    # one node keeps the call auction applicable
    book = random_book(rng, n_orders=n, n_nodes=1 if run[0] == "call" else 4)
    result = clear(book, *run)
    sold: dict[str, int] = {}
    bought: dict[str, int] = {}
    for t in result.trades:
        sold[t.sell_order] = sold.get(t.sell_order, 0) + t.energy_wh
        bought[t.buy_order] = bought.get(t.buy_order, 0) + t.energy_wh
        s = book.orders[book.by_id[t.sell_order]]
        b = book.orders[book.by_id[t.buy_order]]
        assert s.price_sen_per_kwh <= t.price_sen_per_kwh  # seller gets at least its ask
        assert t.price_sen_per_kwh + t.fee_sen_per_kwh <= b.price_sen_per_kwh  # buyer ≤ bid
        assert s.participant != b.participant
    assert sum(sold.values()) == sum(bought.values()) == result.totals.volume_wh
    for o in book.orders:
        filled = (sold if o.side is Side.SELL else bought).get(o.id, 0)
        assert filled <= o.energy_wh
    assert verify(book, result).ok
    again = clear(book, *run)
    assert again.to_json() == result.to_json()
    assert again.digest() == result.digest()
