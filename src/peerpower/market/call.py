"""Uniform-price call auction at the gate, split by grid node (market splitting).

Orders that cross an earlier order of their own participant are left out first (self-trade
prevention, :mod:`.stp`). The auction fills the orders that maximise the participants' total
gain — on one node, the textbook crossing of the supply and the demand curves — taking orders of
equal merit in time priority ``(seq, −score)``, and prices them at the book's competitive
equilibrium (:mod:`.pricing`): one price per grid node, the midpoint (rounded down) of the
interval where supply and demand meet at that node. As JEPX splits its areas when an
interconnector is congested, node prices differ by the grid's fees and, where a capacity binds,
by congestion rent. A sale is paid its node's price and a purchase pays its node's; the path fee
and any rent go to the grid operator. With no fees and no binding capacity every node has the
same price, reported as ``clearing_price_sen_per_kwh``.

The textbook vector — buys 10.00 and 6.50, sells 6.50 and 11.00 yen/kWh, 0.2 kWh each — clears
0.2 kWh at 8.25 yen/kWh: the curves meet on the vertical segment 6.50–10.00. Where the marginal
order is filled only in part, the curves meet at its price, and that is the price (the interval of
prices that would reach the same volume can be wider, but at those prices the marginal order
would want to trade more).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from peerpower.market.orders import Book, BookArrays, book_arrays
from peerpower.market.result import ClearingResult
from peerpower.market.stp import prevent_self_trade


def clear_call(book: Book) -> ClearingResult:
    """Clear ``book`` as a call auction; see the module notes."""
    from peerpower.market.optimal import _welfare_flow, priced
    from peerpower.market.pairing import tree_units

    book, excluded = prevent_self_trade(book)
    arr = book_arrays(book)
    everyone = np.ones(len(arr.lots), dtype=bool)
    filled, _ = _welfare_flow(book, arr, everyone, time_priority(arr))
    units = tree_units(book.grid, arr.is_sell, arr.node, filled)
    trades, totals, prices = priced(book, arr, units, "nodal")
    assert prices is not None
    uniform = set(prices.values())
    return ClearingResult(
        "call",
        trades,
        totals,
        clearing_price_sen_per_kwh=uniform.pop() if len(uniform) == 1 and trades else None,
        pricing="nodal",
        node_prices=prices,
        excluded=excluded,
    )


def time_priority(arr: BookArrays) -> npt.NDArray[np.uint64]:
    """A rank per order for the flow's tie-break, highest first by ``(seq, −score, index)``,
    spread over 64 bits so that the flow keeps the order in its top bits."""
    n = len(arr.lots)
    score_desc = np.iinfo(np.uint64).max - arr.score_u64
    by_rank = np.lexsort((np.arange(n), score_desc, arr.seq))
    rank = np.empty(n, dtype=np.uint64)
    rank[by_rank] = np.arange(n, 0, -1, dtype=np.uint64)
    step = np.uint64((2**64 - 1) // (n + 1))
    out: npt.NDArray[np.uint64] = rank * step
    return out
