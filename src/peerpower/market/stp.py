"""Self-trade prevention: a participant's orders never cross each other (DESIGN.md §3).

An order *crosses* an order of the same participant on the other side of the same slot when
their prices meet: ``bid ≥ ask``. As on exchanges, the newer of the two gives way ("cancel
newest"): the ledger refuses such an order when it arrives (rule ``self-cross``), and a clearing
of an arbitrary book leaves it out. Orders are taken in arrival order ``(seq, position)``; an
order is left out when it crosses an earlier order of its participant that was kept.

Prices are compared without fees: a participant on the ledger has one node, where its own trade
would pay none, and fees are never negative, so every pair of a participant's orders that could
trade with each other (``bid − fee ≥ ask``) crosses. After prevention no participant can be on
both sides of a compatible pair, so every book clears on the network fast paths.
"""

from __future__ import annotations

import numpy as np

from peerpower.market.orders import Book, Side, book_arrays

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def self_crossing(book: Book) -> list[tuple[int, int]]:
    """Orders left out by self-trade prevention: ``(order, earlier order it crosses)`` as book
    indexes, in arrival order. Linear in the book after one sort."""
    mine, part, is_sell, price = _two_sided(book)
    low_ask: dict[int, tuple[int, int]] = {}  # participant → (lowest kept ask, its order)
    high_bid: dict[int, tuple[int, int]] = {}  # participant → (highest kept bid, its order)
    out: list[tuple[int, int]] = []
    for k, p, sell, x in zip(mine, part, is_sell, price, strict=True):
        if sell:
            best = high_bid.get(p)
            if best is not None and best[0] >= x:
                out.append((k, best[1]))
            elif p not in low_ask or x < low_ask[p][0]:
                low_ask[p] = (x, k)
        else:
            best = low_ask.get(p)
            if best is not None and x >= best[0]:
                out.append((k, best[1]))
            elif p not in high_bid or x > high_bid[p][0]:
                high_bid[p] = (x, k)
    return out


def _two_sided(book: Book) -> tuple[list[int], list[int], list[bool], list[int]]:
    """The orders of participants with both a buy and a sell, in arrival order ``(seq,
    position)``: their indexes, participant numbers, sides (sell) and prices."""
    if not _fits_int64(book):
        # Orders built one by one may carry numbers beyond int64 (a seq, an energy), which
        # the column view cannot hold: the same selection over the orders themselves.
        orders = book.orders
        sides: dict[str, set[bool]] = {}
        for o in orders:
            sides.setdefault(o.participant, set()).add(o.side is Side.SELL)
        number = {name: p for p, name in enumerate(sides)}
        picked = [k for k, o in enumerate(orders) if len(sides[o.participant]) == 2]
        picked.sort(key=lambda k: (orders[k].seq, k))
        return (
            picked,
            [number[orders[k].participant] for k in picked],
            [orders[k].side is Side.SELL for k in picked],
            [orders[k].price_sen_per_kwh for k in picked],
        )
    arr = book_arrays(book)
    if not len(arr.lots):
        return [], [], [], []
    sellers = np.zeros(len(arr.participants), dtype=bool)
    buyers = np.zeros(len(arr.participants), dtype=bool)
    sellers[arr.participant[arr.is_sell]] = True
    buyers[arr.participant[~arr.is_sell]] = True
    both = sellers & buyers
    if not both.any():
        return [], [], [], []
    mine = np.flatnonzero(both[arr.participant])
    mine = mine[np.lexsort((mine, arr.seq[mine]))]
    return (
        mine.tolist(),
        arr.participant[mine].tolist(),
        arr.is_sell[mine].tolist(),
        arr.price[mine].tolist(),
    )


def _fits_int64(book: Book) -> bool:
    """Whether :func:`book_arrays` can hold ``book``: a parsed book's columns always can (larger
    numbers send :func:`parse_book` order by order); a built book's orders are checked."""
    if book._columns is not None or not book.orders:
        return True
    seq = [o.seq for o in book.orders]
    energy = [o.energy_wh for o in book.orders]
    return min(min(seq), min(energy)) >= _INT64_MIN and max(max(seq), max(energy)) <= _INT64_MAX


def prevent_self_trade(book: Book) -> tuple[Book, tuple[tuple[str, str], ...]]:
    """``book`` without the orders self-trade prevention leaves out, and those orders as
    ``(order id, id of the earlier order it crosses)``."""
    crossing = self_crossing(book)
    if not crossing:
        return book, ()
    ids = book.ids
    keep = np.ones(len(ids), dtype=bool)
    keep[[k for k, _ in crossing]] = False
    return book.subset(keep), tuple((ids[k], ids[e]) for k, e in crossing)
