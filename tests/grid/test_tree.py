from __future__ import annotations

import random

import numpy as np

from peerpower.grid.tree import GridTree


def _tree() -> GridTree:
    return GridTree.from_json(
        {
            "nodes": [
                {"id": "sub", "parent": None},
                {"id": "f1", "parent": "sub", "fee_sen_per_kwh": 100},
                {"id": "f2", "parent": "sub", "fee_sen_per_kwh": 120, "capacity_wh": 500},
                {"id": "t1", "parent": "f1", "fee_sen_per_kwh": 30},
                {"id": "h1", "parent": "t1", "fee_sen_per_kwh": 5},
                {"id": "h2", "parent": "t1"},
                {"id": "h3", "parent": "f2", "fee_sen_per_kwh": 7},
            ]
        }
    )


def test_fee_is_the_sum_of_edge_fees_on_the_path() -> None:
    g = _tree()
    i = g.index
    assert g.fee(i["h1"], i["h2"]) == 5
    assert g.fee(i["h1"], i["h3"]) == 5 + 30 + 100 + 120 + 7
    assert g.fee(i["h2"], i["h2"]) == 0
    assert g.path(i["h1"], i["h3"]) == ([i["h1"], i["t1"], i["f1"]], [i["f2"], i["h3"]])
    assert g.has_capacities and g.capacity_wh[i["f2"]] == 500


def test_fees_between_matches_fee() -> None:
    rng = random.Random(3)
    n = 40
    g = GridTree(
        tuple(f"n{k}" for k in range(n)),
        (-1, *(rng.randrange(k) for k in range(1, n))),
        (0, *(rng.randrange(50) for _ in range(1, n))),
        tuple([-1] * n),
    )
    us = np.array([rng.randrange(n) for _ in range(300)])
    vs = np.array([rng.randrange(n) for _ in range(300)])
    got = g.fees_between(us, vs)
    assert got.tolist() == [g.fee(int(u), int(v)) for u, v in zip(us, vs, strict=True)]


def test_grid_round_trips_through_json() -> None:
    g = _tree()
    assert GridTree.from_json(g.to_json()) == g
