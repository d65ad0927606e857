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
