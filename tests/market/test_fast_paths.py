"""The fast paths give what the plain ones give: column parsing, tie scores, result JSON."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from helpers import random_book
from peerpower.bench import make_book
from peerpower.errors import InvalidOrder
from peerpower.market import clear, flow, parse_book, stp
from peerpower.market.orders import Book, book_arrays, tie_score, tie_scores
from peerpower.market.result import ClearingResult


def _plain_text(result: ClearingResult) -> str:
    return json.dumps(result.to_json(), separators=(",", ":"))


def test_tie_scores_match_tie_score() -> None:
    ids = ["a", "o1", "é", "x" * 300, "日本"]
    for seed in (bytes(32), b"\x01\x02", b""):
        assert tie_scores(seed, ids).tolist() == [tie_score(seed, i) for i in ids]


@pytest.mark.parametrize("seed", range(12))
def test_parsed_book_clears_like_the_built_one(seed: int) -> None:
    rng = random.Random(seed)
    built = random_book(rng, n_orders=rng.randint(0, 30), n_nodes=rng.randint(1, 5))
    parsed = parse_book(built.to_json())
    assert parsed._columns is not None or not built.orders
    assert parsed == built and hash(parsed) == hash(built)
    assert parsed.by_id == built.by_id and parsed.scores() == built.scores()
    # (self-trade prevention reads the columns of a parsed book, the orders of a built one)
    for mechanism, goal, pricing in (
        ("cda", None, None),
        ("call", None, None),
        ("optimal", "welfare", None),
        ("optimal", "welfare", "midpoint"),
        ("optimal", "volume", None),
    ):
        fresh = parse_book(built.to_json())
        assert _plain_text(clear(fresh, mechanism, goal, pricing)) == _plain_text(
            clear(built, mechanism, goal, pricing)
        )
    a, b = book_arrays(parsed), book_arrays(built)
    for name in ("is_sell", "lots", "price", "node", "seq", "participant"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist()
    assert a.participants == b.participants and a.score == b.score


def test_invalid_huge_numbers_are_refused_naming_the_field() -> None:
    # A clearing sums lots × prices over the book in 64-bit integers: a book is bounded to
    # MAX_BOOK_WH in all, and seq to ±MAX_SEQ, each refusal naming the field and value.
    from peerpower.errors import InvalidInput
    from peerpower.market.orders import MAX_BOOK_WH, MAX_SEQ

    def order(oid: str, energy: int, seq: int) -> dict[str, object]:
        return {
            "id": oid,
            "participant": oid.upper(),
            "side": "sell",
            "energy_wh": energy,
            "price_sen_per_kwh": 5,
            "seq": seq,
        }

    with pytest.raises(InvalidInput) as err:
        parse_book({"orders": [order("s", 10**30, 0)]})
    assert err.value.field == "orders[0].energy_wh" and str(10**30) in err.value.message
    with pytest.raises(InvalidInput) as err:
        parse_book({"orders": [order("s", 100, 0), order("t", 100, -(10**25))]})
    assert err.value.field == "orders[1].seq"
    half = MAX_BOOK_WH // 2 + 100
    with pytest.raises(InvalidInput) as err:
        parse_book({"orders": [order("s", half, 0), order("t", half, 1)]})
    assert err.value.field == "orders"
    # at the bounds, still a book
    book = parse_book({"orders": [order("s", MAX_BOOK_WH, MAX_SEQ - 1)]})
    assert book._columns is not None and book.orders[0].energy_wh == MAX_BOOK_WH


@pytest.mark.parametrize("seed", range(12))
def test_self_crossing_over_orders_matches_the_columns(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Books with numbers beyond int64 take self-trade prevention over the order objects.
    rng = random.Random(seed)
    book = random_book(rng, n_orders=rng.randint(0, 40), n_nodes=3, n_participants=5)
    fast = stp.self_crossing(book)
    monkeypatch.setattr(stp, "_fits_int64", lambda book: False)
    assert stp.self_crossing(book) == fast
    assert stp.self_crossing(parse_book(book.to_json())) == fast


def test_book_is_immutable() -> None:
    book = parse_book({"orders": []})
    with pytest.raises(AttributeError):
        book.lot_wh = 5  # type: ignore[misc]
    assert book.orders == () and book == Book((), book.grid)


@pytest.mark.parametrize(
    "names",
    [
        ("s1", "b1", "A", "B"),
        ('s"1', "b\\1", "Ä", "日本"),
        ("s\n", "b\x7f", "A\t", "~ !"),
    ],
)
def test_result_text_is_json_dumps(names: tuple[str, str, str, str]) -> None:
    s, b, p, q = names
    book = parse_book(
        {
            "seed": "0102",
            "orders": [
                {
                    "id": s,
                    "participant": p,
                    "side": "sell",
                    "energy_wh": 300,
                    "price_sen_per_kwh": 650,
                },
                {
                    "id": b,
                    "participant": q,
                    "side": "buy",
                    "energy_wh": 200,
                    "price_sen_per_kwh": 1000,
                },
            ],
        }
    )
    runs = (("cda", None), ("call", None), ("optimal", None), ("optimal", "midpoint"))
    for mechanism, pricing in runs:
        result = clear(book, mechanism, None, pricing)
        assert result.trades
        assert result.to_json_text() == _plain_text(result)


@pytest.mark.parametrize(
    ("change", "field", "names"),
    [
        ({"energy_wh": 250}, "energy_wh", "250"),
        ({"price_sen_per_kwh": True}, "price_sen_per_kwh", "True"),
        ({"side": ["buy"]}, "side", "['buy']"),
        ({"id": "o3"}, "id", "'o3'"),
        ({"node": "nowhere"}, "node", "'nowhere'"),
        ({"seq": 1.5}, "seq", "1.5"),
        ({"participant": ""}, "participant", "''"),
    ],
)
def test_a_bad_order_deep_in_a_big_book_is_named(
    change: dict[str, object], field: str, names: str
) -> None:
    orders = [
        {
            "id": f"o{k}",
            "participant": f"p{k % 7}",
            "side": ("buy", "sell")[k % 2],
            "energy_wh": 100 * (1 + k % 3),
            "price_sen_per_kwh": 500 + k,
        }
        for k in range(1000)
    ]
    orders[700].update(change)
    with pytest.raises(InvalidOrder) as err:
        parse_book({"orders": orders})
    assert err.value.field == f"orders[700].{field}" and names in str(err.value)


@pytest.mark.parametrize("seed", range(8))
def test_both_flow_decompositions_agree(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = []

    def both(net: flow.Network, f: flow.I64) -> flow.Units:
        a = flow._decompose_arrays(net, f)
        b = flow._decompose_pieces(net, f)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        checked.append(len(a[0]))
        return a

    monkeypatch.setattr(flow, "decompose", both)
    # Sites that only buy or only sell: the networks, not the pairwise program, clear them.
    data = make_book(400, 12 + 10 * seed, seed)
    if seed % 2:
        for k, node in enumerate(data["grid"]["nodes"]):
            if node["parent"] is not None and k % 3 == 0:
                node["capacity_wh"] = 2000 * (k % 5)
    book = parse_book(data)
    clear(book, "optimal", "welfare")  # the tree's flow, decomposed into nodal units
    clear(book, "call")  # the same network in time priority
    assert len(checked) == 2 and min(checked) > 0
