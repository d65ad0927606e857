"""Grid tree: substation → feeders → transformers → sites (DESIGN.md §3).

Every node but the root has one parent; the edge from a node to its parent carries a consignment
fee [sen/kWh] (default 0) and optionally a capacity [Wh per slot] on the net energy crossing it.
The fee of a trade is the sum of the edge fees on the path between seller and buyer — the
distance-based wheeling charge of the seeds, on the real network distance.

Edges are named by their child node: edge ``k`` joins node ``k`` to ``parent[k]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import InvalidGrid
from peerpower.units import PRICE_MAX_SEN_PER_KWH

ROOT_ID = "root"
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class GridTree:
    """A rooted tree of grid nodes.

    Attributes
    ----------
    ids
        Node names; index ``k`` in every array below is node ``ids[k]``.
    parent
        Parent index per node, ``-1`` for the root.
    fee_sen_per_kwh
        Fee of the edge to the parent [sen/kWh]; 0 for the root.
    capacity_wh
        Capacity of the edge to the parent on net energy [Wh]; ``-1`` for none (and for the root).
    """

    ids: tuple[str, ...]
    parent: tuple[int, ...]
    fee_sen_per_kwh: tuple[int, ...]
    capacity_wh: tuple[int, ...]
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    depth: tuple[int, ...] = field(init=False, repr=False, compare=False)
    dist_sen_per_kwh: tuple[int, ...] = field(init=False, repr=False, compare=False)
    order: tuple[int, ...] = field(init=False, repr=False, compare=False)
    has_capacities: bool = field(init=False, repr=False, compare=False)
    has_fees: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        index = {name: k for k, name in enumerate(self.ids)}
        children: list[list[int]] = [[] for _ in range(n)]
        root = -1
        for k, p in enumerate(self.parent):
            if p < 0:
                root = k
            else:
                children[p].append(k)
        order: list[int] = []
        stack = [root]
        while stack:
            v = stack.pop()
            order.append(v)
            stack.extend(reversed(children[v]))
        depth = [0] * n
        dist = [0] * n
        for v in order[1:]:
            p = self.parent[v]
            depth[v] = depth[p] + 1
            dist[v] = dist[p] + self.fee_sen_per_kwh[v]
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "depth", tuple(depth))
        object.__setattr__(self, "dist_sen_per_kwh", tuple(dist))
        object.__setattr__(self, "order", tuple(order))
        object.__setattr__(self, "has_capacities", any(c >= 0 for c in self.capacity_wh))
        object.__setattr__(self, "has_fees", any(f != 0 for f in self.fee_sen_per_kwh))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def single(cls, name: str = ROOT_ID) -> GridTree:
        """One node, no edges, no fees: the grid of a book that gives none."""
        return cls((name,), (-1,), (0,), (-1,))

    @classmethod
    def from_json(cls, obj: Any, path: str = "grid") -> GridTree:
        """Read ``{"nodes": [{"id", "parent", "fee_sen_per_kwh"?, "capacity_wh"?}]}``.

        Raises :class:`InvalidGrid` naming the field and value when the nodes are not one tree.
        """
        if not isinstance(obj, dict):
            raise InvalidGrid(path, f"must be an object with 'nodes', got {_show(obj)}")
        nodes = obj.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise InvalidGrid(f"{path}.nodes", f"must be a non-empty list, got {_show(nodes)}")
        ids: list[str] = []
        parents: list[str | None] = []
        fees: list[int] = []
        caps: list[int] = []
        seen: dict[str, int] = {}
        for k, node in enumerate(nodes):
            where = f"{path}.nodes[{k}]"
            if not isinstance(node, dict):
                raise InvalidGrid(where, f"must be an object, got {_show(node)}")
            name = node.get("id")
            if not isinstance(name, str) or not name:
                raise InvalidGrid(f"{where}.id", f"must be a non-empty string, got {_show(name)}")
            if name in seen:
                raise InvalidGrid(f"{where}.id", f"duplicate node id {name!r}")
            seen[name] = k
            if "parent" not in node:
                raise InvalidGrid(f"{where}.parent", "is missing (use null for the root)")
            par = node["parent"]
            if par is not None and (not isinstance(par, str) or not par):
                raise InvalidGrid(f"{where}.parent", f"must be a node id or null, got {_show(par)}")
            fee = node.get("fee_sen_per_kwh", 0)
            if type(fee) is not int or not 0 <= fee <= PRICE_MAX_SEN_PER_KWH:
                raise InvalidGrid(
                    f"{where}.fee_sen_per_kwh",
                    f"must be an integer 0–{PRICE_MAX_SEN_PER_KWH} sen/kWh, got {_show(fee)}",
                )
            cap = node.get("capacity_wh")
            if cap is not None and (type(cap) is not int or cap < 0):
                raise InvalidGrid(
                    f"{where}.capacity_wh", f"must be a non-negative integer Wh, got {_show(cap)}"
                )
            if par is None and (fee != 0 or cap is not None):
                raise InvalidGrid(
                    where, f"root node {name!r} has no edge, so no fee or capacity may be given"
                )
            ids.append(name)
            parents.append(par)
            fees.append(fee)
            caps.append(-1 if cap is None else cap)
        roots = [ids[k] for k, p in enumerate(parents) if p is None]
        if len(roots) != 1:
            raise InvalidGrid(
                f"{path}.nodes", f"must have exactly one root (parent null), found {roots!r}"
            )
        parent_index: list[int] = []
        for k, par in enumerate(parents):
            if par is None:
                parent_index.append(-1)
            elif par not in seen:
                raise InvalidGrid(f"{path}.nodes[{k}].parent", f"unknown node {par!r}")
            elif par == ids[k]:
                raise InvalidGrid(f"{path}.nodes[{k}].parent", f"node {par!r} is its own parent")
            else:
                parent_index.append(seen[par])
        _check_acyclic(ids, parent_index, path)
        return cls(tuple(ids), tuple(parent_index), tuple(fees), tuple(caps))

    def to_json(self) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = []
        for k, name in enumerate(self.ids):
            node: dict[str, Any] = {
                "id": name,
                "parent": None if self.parent[k] < 0 else self.ids[self.parent[k]],
            }
            if self.parent[k] >= 0:
                node["fee_sen_per_kwh"] = self.fee_sen_per_kwh[k]
                if self.capacity_wh[k] >= 0:
                    node["capacity_wh"] = self.capacity_wh[k]
            nodes.append(node)
        return {"nodes": nodes}

    # -- queries ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def root(self) -> int:
        return self.order[0]

    def lca(self, u: int, v: int) -> int:
        """Lowest common ancestor of nodes ``u`` and ``v`` (indexes)."""
        depth, parent = self.depth, self.parent
        while depth[u] > depth[v]:
            u = parent[u]
        while depth[v] > depth[u]:
            v = parent[v]
        while u != v:
            u = parent[u]
            v = parent[v]
        return u

    def fee(self, u: int, v: int) -> int:
        """Fee [sen/kWh] of the path between nodes ``u`` and ``v``: the sum of its edge fees."""
        d = self.dist_sen_per_kwh
        return d[u] + d[v] - 2 * d[self.lca(u, v)]

    def path(self, u: int, v: int) -> tuple[list[int], list[int]]:
        """Edges on the path from ``u`` to ``v``: ``(up, down)``.

        ``up`` are the edges climbed from ``u`` to the common ancestor (crossed child → parent),
        ``down`` those descended to ``v`` (crossed parent → child); edges named by child node.
        """
        depth, parent = self.depth, self.parent
        up: list[int] = []
        down: list[int] = []
        while depth[u] > depth[v]:
            up.append(u)
            u = parent[u]
        while depth[v] > depth[u]:
            down.append(v)
            v = parent[v]
        while u != v:
            up.append(u)
            down.append(v)
            u = parent[u]
            v = parent[v]
        down.reverse()
        return up, down

    def fees_between(self, us: IntArray, vs: IntArray) -> IntArray:
        """Vectorised :meth:`fee` over arrays of node indexes (same shape)."""
        dist = np.asarray(self.dist_sen_per_kwh, dtype=np.int64)
        a = np.asarray(us, dtype=np.int64)
        b = np.asarray(vs, dtype=np.int64)
        result: IntArray = dist[a] + dist[b] - 2 * dist[self.lcas(a, b)]
        return result

    def lcas(self, us: IntArray, vs: IntArray) -> IntArray:
        """Vectorised :meth:`lca` over arrays of node indexes (same shape)."""
        parent = np.asarray(self.parent, dtype=np.int64)
        depth = np.asarray(self.depth, dtype=np.int64)
        a = np.array(us, dtype=np.int64, copy=True)
        b = np.array(vs, dtype=np.int64, copy=True)
        while True:
            deeper_a = depth[a] > depth[b]
            deeper_b = depth[b] > depth[a]
            if not (deeper_a.any() or deeper_b.any()):
                break
            a = np.where(deeper_a, parent[a], a)
            b = np.where(deeper_b, parent[b], b)
        while True:
            differ = a != b
            if not differ.any():
                break
            a = np.where(differ, parent[a], a)
            b = np.where(differ, parent[b], b)
        return a

    def subtree_sums(self, values: IntArray) -> IntArray:
        """Σ of ``values`` (one per node) over each node's subtree."""
        out = np.array(values, dtype=np.int64, copy=True)
        parent = self.parent
        for v in reversed(self.order[1:]):
            out[parent[v]] += out[v]
        return out


def _check_acyclic(ids: Sequence[str], parent: Sequence[int], path: str) -> None:
    state = [0] * len(ids)  # 0 unknown, 1 on the current walk, 2 reaches the root
    for start in range(len(ids)):
        walk: list[int] = []
        v = start
        while v >= 0 and state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = parent[v]
        if v >= 0 and state[v] == 1:
            raise InvalidGrid(
                f"{path}.nodes",
                f"the parents of node {ids[v]!r} form a cycle; the grid must be a tree",
            )
        for w in walk:
            state[w] = 2


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
