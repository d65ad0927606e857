"""``maxmin`` on books too large for the exact MILP: LP bound and rounded clearing.

The rounded path is forced on small books (``EXACT_PAIRS = 0``) so that the independent MILP
oracle can say what the true optimum is: the clearing must be valid, never better than the
optimum (that would mean a broken check), and the reported bounds must hold above the optimum.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from helpers import oracle, random_book
from peerpower.bench import make_book
from peerpower.market import clear, verify
from peerpower.market import pairwise as pw
from peerpower.market.objective import maxmin_participants
from peerpower.market.optimal import _tradable
from peerpower.market.orders import book_arrays, parse_book


@pytest.fixture
def rounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pw, "EXACT_PAIRS", 0)


@pytest.mark.parametrize("case", range(25))
@pytest.mark.usefixtures("rounded")
def test_column_generation_from_a_one_pair_pool_still_bounds_the_optimum(
    monkeypatch: pytest.MonkeyPatch, case: int
) -> None:
    # With one partner per order in the first pool, the LP must price in the rest itself.
    monkeypatch.setattr(pw, "POOL_PER_ORDER", 1)
    monkeypatch.setattr(pw, "ADD_PER_ORDER", 1)
    rng = random.Random(7700 + case)
    book = random_book(
        rng, n_orders=rng.randint(10, 22), n_nodes=4, n_participants=10, capacities=False
    )
    result = clear(book, "optimal", "maxmin")
    assert verify(book, result).ok
    want = oracle(book, "maxmin")
    assert result.objective is not None
    assert result.objective.primary <= want["primary"]
    if result.bound is not None:
        assert Fraction(result.bound["primary_upper"]) >= want["primary"] * (1 - Fraction(1, 10**7))
        assert result.objective.primary <= Fraction(result.bound["primary_upper"])
        if result.bound["primary_proven"]:
            assert result.objective.primary == want["primary"]


@pytest.mark.parametrize("capacities", [False, True])
@pytest.mark.parametrize("case", range(40))
@pytest.mark.usefixtures("rounded")
def test_rounded_maxmin_is_valid_and_bounded_by_the_oracle(case: int, capacities: bool) -> None:
    rng = random.Random(5000 + case + 100 * capacities)
    book = random_book(
        rng,
        n_orders=rng.randint(4, 14),
        n_nodes=rng.randint(1, 5),
        n_participants=rng.randint(3, 10),
        capacities=capacities,
    )
    result = clear(book, "optimal", "maxmin")
    check = verify(book, result)
    assert check.ok, check.problems
    want = oracle(book, "maxmin")
    assert result.objective is not None
    got = result.objective.primary
    assert got <= want["primary"]
    if result.bound is None:  # nothing could trade: no LP was needed
        assert not result.trades
        return
    eps = 1e-6 * max(1.0, float(want["primary"]))
    assert result.bound["primary_upper"] >= float(want["primary"]) - eps
    if result.bound["primary_proven"]:
        assert got == want["primary"]
    # The welfare bound holds for every clearing, the oracle's included.
    assert result.bound["secondary_upper"] >= result.objective.secondary
    if got == want["primary"]:
        assert result.objective.secondary <= want["secondary"]


def test_rounded_maxmin_on_a_bench_book_is_deterministic_and_checked() -> None:
    book = parse_book(make_book(600, 150, 3))
    first = clear(book, "optimal", "maxmin")
    assert first.bound is not None, "600 orders must take the rounded path"
    check = verify(book, first)
    assert check.ok, check.problems
    assert first.objective is not None
    assert first.objective.primary > 0
    assert first.objective.primary <= Fraction(first.bound["primary_upper"])  # rounded up
    assert first.objective.secondary <= first.bound["secondary_upper"]
    again = clear(book, "optimal", "maxmin")
    assert again.digest() == first.digest()


def test_rounded_maxmin_respects_capacities_on_a_large_book() -> None:
    raw = make_book(600, 150, 4)
    for node in raw["grid"]["nodes"]:
        if node["id"].startswith("t"):  # each transformer passes at most 3 kWh either way
            node["capacity_wh"] = 3000
    book = parse_book(raw)
    result = clear(book, "optimal", "maxmin")
    assert result.bound is not None, "600 orders must take the rounded path"
    check = verify(book, result)
    assert check.ok, check.problems  # the capacity rule among them
    assert result.objective is not None
    assert float(result.objective.primary) <= result.bound["primary_upper"] * (1 + 1e-9)
    assert result.objective.secondary <= result.bound["secondary_upper"]


def test_solo_bound_caps_t() -> None:
    # Each participant's ratio is at most what it would earn if it had every partner to itself;
    # the LP bound can never exceed the smallest of those.
    book = parse_book(make_book(400, 100, 8))
    result = clear(book, "optimal", "maxmin")
    assert result.bound is not None
    arr = book_arrays(book)
    p = pw.build_pairs(book, arr, _tradable(arr))
    solo: dict[int, Fraction] = {}
    for side_gain, lots_self, lots_other, part, axis in (
        (p.gain_s, p.lots_s, p.lots_b, p.part_s, 1),
        (p.gain_b, p.lots_b, p.lots_s, p.part_b, 0),
    ):
        gains = side_gain if axis == 1 else side_gain.T
        ok = p.ok if axis == 1 else p.ok.T
        for k in range(gains.shape[0]):
            options = sorted(
                ((int(gains[k, m]), int(lots_other[m])) for m in range(gains.shape[1]) if ok[k, m]),
                reverse=True,
            )
            left, earned = int(lots_self[k]), 0
            for g, cap in options:
                take = min(left, cap)
                earned += g * take
                left -= take
            q = int(part[k])
            solo[q] = solo.get(q, Fraction(0)) + earned
    pid = {name: k for k, name in enumerate(arr.participants)}
    cap = min(
        Fraction(solo.get(pid[name], 0), e // book.lot_wh) * 10
        for name, e in maxmin_participants(book).items()
    )
    assert result.bound["primary_upper"] <= float(cap) * (1 + 1e-7)


@pytest.mark.parametrize("solvers", [(("glop", "use_dual_simplex: true"),), (("highs", ""),)])
@pytest.mark.usefixtures("rounded")
def test_fallback_lp_solvers_give_valid_bounds(
    monkeypatch: pytest.MonkeyPatch, solvers: tuple[tuple[str, str], ...]
) -> None:
    monkeypatch.setattr(pw, "LP_SOLVERS", solvers)
    for case in range(8):
        rng = random.Random(9100 + case)
        book = random_book(rng, n_orders=12, n_nodes=4, n_participants=8, capacities=False)
        result = clear(book, "optimal", "maxmin")
        assert verify(book, result).ok
        want = oracle(book, "maxmin")
        assert result.objective is not None
        assert result.objective.primary <= want["primary"]
        if result.bound is not None:
            assert result.bound["primary_upper"] >= float(want["primary"]) * (1 - 1e-6) - 1e-6


def test_an_exact_milp_not_proven_within_its_node_limit_gives_way_to_rounding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small books go to the exact MILP; with a limit of one node, those it cannot prove at the
    # root are cleared by rounding instead (with the bound beside), never left unanswered.
    monkeypatch.setattr(pw, "EXACT_NODES", 1)
    fell_back = exact = 0
    for case in range(40):
        rng = random.Random(9100 + case)
        book = random_book(rng, n_orders=rng.randint(8, 14), n_nodes=3, n_participants=8)
        result = clear(book, "optimal", "maxmin")
        check = verify(book, result)
        assert check.ok, check.problems
        want = oracle(book, "maxmin")
        assert result.objective is not None
        if result.bound is None:
            exact += 1
            assert result.objective.primary == want["primary"]
            assert result.objective.secondary == want["secondary"]
        else:
            fell_back += 1
            assert result.objective.primary <= want["primary"]
    assert fell_back and exact
