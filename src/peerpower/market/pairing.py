"""The canonical pairing of a clearing's fills into balanced units on the grid tree.

Equally good clearings can pair the same fills differently; where prices are per pair
(``midpoint``) that would move money between participants, and anywhere it would let a validator
grind the digest. So the rules define one pairing for given fills, and :func:`verify` refuses any
other (rule ``pairing``):

1. each edge carries the net energy of its subtree, ``sold − bought`` below it, in one direction
   (no energy crosses an edge both ways: the pairing with the least fee the fills allow when
   every path is compatible, as it is for a welfare-optimal clearing);
2. units form bottom-up as :func:`peerpower.market.flow.decompose` splits that flow: at every
   node the sells' lots present — the node's own filled sells in book order, then the lots
   arriving over its edges as the nodes are taken in turn — serve first the node's own filled
   buys in book order, then its edge to the parent, then the edges to the children that import,
   in grid order; first come, first served.

The book order is the ledger's arrival order, which no validator chooses.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

from peerpower.grid.tree import GridTree
from peerpower.market import flow as fl

I64 = npt.NDArray[np.int64]


def tree_units(grid: GridTree, is_sell: npt.NDArray[np.bool_], node: I64, filled: I64) -> fl.Units:
    """Balanced units ``(sell order, buy order, lots)`` of the fills ``filled`` [lots per order,
    book indexes], sorted by (sell, buy); see the module notes. The sells' and the buys' fills
    must be equal in total."""
    n = grid.size
    sells = np.flatnonzero(is_sell & (filled > 0))
    buys = np.flatnonzero(~is_sell & (filled > 0))
    empty = np.zeros(0, dtype=np.int64)
    if not len(sells) or not len(buys):
        return empty, empty.copy(), empty.copy()
    balance = np.zeros(n, dtype=np.int64)
    np.add.at(balance, node[sells], filled[sells])
    np.subtract.at(balance, node[buys], filled[buys])
    net = grid.subtree_sums(balance)
    child = np.array(grid.order[1:], dtype=np.int64)
    child.sort()
    par = np.array([grid.parent[c] for c in child.tolist()], dtype=np.int64)
    s_node, t_node = n, n + 1
    ns, nb, ne = len(sells), len(buys), len(child)
    tail = np.concatenate([child, par, np.full(ns, s_node), node[buys]])
    head = np.concatenate([par, child, node[sells], np.full(nb, t_node)])
    flow = np.concatenate(
        [np.maximum(net[child], 0), np.maximum(-net[child], 0), filled[sells], filled[buys]]
    ).astype(np.int64)
    order = np.concatenate([np.full(2 * ne, -1), sells, buys]).astype(np.int64)
    supply = int(filled[sells].sum())
    network = fl.Network(n + 2, tail, head, flow.copy(), order, s_node, t_node, supply)
    return fl.decompose(network, flow)


def midpoint_units(
    grid: GridTree,
    is_sell: npt.NDArray[np.bool_],
    node: I64,
    price: I64,
    filled: I64,
) -> fl.Units | None:
    """The canonical pairing of ``midpoint`` fills, or ``None`` when the fills admit none.

    Bottom-up, with energy crossing each edge one way only: at every node the sells present
    (its own filled sells, at their ask, and the sells its children send up, at ask + the fees
    climbed) and the buys present (its own, at their bid, and the buys its children send up, at
    bid − the fees descended) are matched so that what the node sends up is the best it can be:

    * if the subtree sells more than it buys, every buy present is matched — the dearest buy
      first, each with the dearest sell it can pay — and the cheapest sells go up;
    * otherwise every sell present is matched — the cheapest first, each with the cheapest buy
      that can pay it — and the dearest buys go up.

    Among equal prices the earlier order (book order) goes first. A pair formed at a node meets
    there, so it pays exactly the fee of its path, and every pair is compatible. The sells sent
    up are the lowest the node could send (a greedy basis of a matroid, optimal for every
    threshold an ancestor applies), so the rule pairs every set of fills that some compatible
    pairing without energy crossing an edge both ways pairs; other fills get ``None``.
    """
    n = grid.size
    kids: list[list[int]] = [[] for _ in range(n)]
    for v in grid.order[1:]:
        kids[grid.parent[v]].append(v)
    # pieces: [level, order, lots]
    own_s: list[list[list[int]]] = [[] for _ in range(n)]
    own_b: list[list[list[int]]] = [[] for _ in range(n)]
    for k in np.flatnonzero(filled > 0).tolist():
        piece = [int(price[k]), k, int(filled[k])]
        (own_s if is_sell[k] else own_b)[int(node[k])].append(piece)
    up_s: list[list[list[int]]] = [[] for _ in range(n)]  # what a node sends to its parent
    up_b: list[list[list[int]]] = [[] for _ in range(n)]
    units: dict[tuple[int, int], int] = {}
    fee = grid.fee_sen_per_kwh
    for v in reversed(grid.order):
        sells = [p[:] for p in own_s[v]]
        buys = [p[:] for p in own_b[v]]
        for c in kids[v]:
            sells.extend([p[0] + fee[c], p[1], p[2]] for p in up_s[c])
            buys.extend([p[0] - fee[c], p[1], p[2]] for p in up_b[c])
        supply = sum(p[2] for p in sells)
        demand = sum(p[2] for p in buys)
        if supply >= demand:
            left = _match(buys, sells, units, buy_first=True)
            if left is None:
                return None
            up_s[v] = left
        else:
            left = _match(sells, buys, units, buy_first=False)
            if left is None:
                return None
            up_b[v] = left
    if up_s[grid.root] or up_b[grid.root]:
        return None  # sells and buys do not balance
    table = np.array(
        [(s, b, lots) for (s, b), lots in sorted(units.items())], dtype=np.int64
    ).reshape(-1, 3)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy()


def _match(
    lead: list[list[int]],
    other: list[list[int]],
    units: dict[tuple[int, int], int],
    buy_first: bool,
) -> list[list[int]] | None:
    """Match every lot of ``lead`` with ``other`` (see :func:`midpoint_units`); the pieces of
    ``other`` left over, or ``None`` if a lead piece finds no partner.

    ``buy_first``: ``lead`` are buys, taken dearest first, each with the dearest sell at or
    below it; else ``lead`` are sells, cheapest first, each with the cheapest buy at or above.
    Used-up partners are skipped through a union-find over positions, so a match costs about
    O(log n).
    """
    if buy_first:
        lead.sort(key=lambda p: (-p[0], p[1]))
        # by (price, −order): the rightmost at or below a bid is the dearest sell, earliest
        # among equals
        other.sort(key=lambda p: (p[0], -p[1]))
    else:
        lead.sort(key=lambda p: (p[0], p[1]))
        other.sort(key=lambda p: (p[0], p[1]))  # the leftmost at or above an ask
    keys = [p[0] for p in other]
    m = len(other)
    # next live position at or after i (sell-first), or at or before i (buy-first): position
    # m (or −1 as m + 1) stands for none
    link = list(range(m + 2))

    def live(i: int) -> int:
        root = i
        while link[root] != root:
            root = link[root]
        while link[i] != root:
            link[i], i = root, link[i]
        return root

    step = -1 if buy_first else 1
    none = m + 1 if buy_first else m  # the sentinel: index m + 1 stands for position −1
    for piece in lead:
        need = piece[2]
        while need:
            if buy_first:
                at = bisect.bisect_right(keys, piece[0]) - 1
                at = live(at if at >= 0 else m + 1)
            else:
                at = live(bisect.bisect_left(keys, piece[0]))
            if at == none:
                return None
            partner = other[at]
            take = min(need, partner[2])
            key = (partner[1], piece[1]) if buy_first else (piece[1], partner[1])
            units[key] = units.get(key, 0) + take
            partner[2] -= take
            need -= take
            if partner[2] == 0:
                nxt = at + step
                link[at] = nxt if 0 <= nxt < m else none
    return [p for p in other if p[2] > 0]
