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

from peerpower.market.orders import Book, book_arrays


def self_crossing(book: Book) -> list[tuple[int, int]]:
    """Orders left out by self-trade prevention: ``(order, earlier order it crosses)`` as book
    indexes, in arrival order. Linear in the book after one sort."""
    arr = book_arrays(book)
    n = len(arr.lots)
    if not n:
        return []
    sellers = np.zeros(len(arr.participants), dtype=bool)
    buyers = np.zeros(len(arr.participants), dtype=bool)
    sellers[arr.participant[arr.is_sell]] = True
    buyers[arr.participant[~arr.is_sell]] = True
    both = sellers & buyers
    if not both.any():
        return []
    mine = np.flatnonzero(both[arr.participant])
    mine = mine[np.lexsort((mine, arr.seq[mine]))]
    part = arr.participant[mine].tolist()
    is_sell = arr.is_sell[mine].tolist()
    price = arr.price[mine].tolist()
    low_ask: dict[int, tuple[int, int]] = {}  # participant → (lowest kept ask, its order)
    high_bid: dict[int, tuple[int, int]] = {}  # participant → (highest kept bid, its order)
    out: list[tuple[int, int]] = []
    for k, p, sell, x in zip(mine.tolist(), part, is_sell, price, strict=True):
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
