"""Orders and the book of orders for one slot (DESIGN.md §3).

An order offers (``sell``) or asks for (``buy``) a whole number of lots at a limit price, at a
node of the grid. ``seq`` is its arrival order: earlier wins ties.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import InvalidInput, InvalidOrder
from peerpower.grid.tree import GridTree
from peerpower.units import DEFAULT_LOT_WH, PRICE_MAX_SEN_PER_KWH, PRICE_MIN_SEN_PER_KWH

ZERO_SEED = bytes(32)
MAX_LOT_WH = 1_000_000


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True, slots=True)
class Order:
    """A limit order for one slot.

    Attributes
    ----------
    id
        Unique within the book.
    participant
        Who places it; a participant never trades with itself.
    side
        ``buy`` or ``sell``.
    energy_wh
        Energy [Wh], a whole positive number of lots.
    price_sen_per_kwh
        Limit price [sen/kWh], 0–100000: the lowest a seller accepts (ask), the highest a buyer
        pays including the grid fee (bid).
    node
        Grid node the participant is connected at.
    seq
        Arrival order; earlier wins ties.
    """

    id: str
    participant: str
    side: Side
    energy_wh: int
    price_sen_per_kwh: int
    node: str
    seq: int


def tie_score(seed: bytes, order_id: str) -> int:
    """Seeded random rank ``r_k`` of an order: the first 8 bytes (big-endian) of
    SHA-256(seed ‖ order id in UTF-8). Equally good clearings are told apart by Σ r_k · filled_k.
    """
    return int.from_bytes(hashlib.sha256(seed + order_id.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Book:
    """Everything a clearing needs for one slot: orders, grid, lot size and seed.

    Build it with :meth:`build` (which validates) or :func:`parse_book` (from JSON).
    """

    orders: tuple[Order, ...]
    grid: GridTree
    lot_wh: int = DEFAULT_LOT_WH
    seed: bytes = ZERO_SEED
    by_id: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {o.id: k for k, o in enumerate(self.orders)})

    @classmethod
    def build(
        cls,
        orders: list[Order] | tuple[Order, ...],
        grid: GridTree | None = None,
        lot_wh: int = DEFAULT_LOT_WH,
        seed: bytes = ZERO_SEED,
    ) -> Book:
        """Validate and assemble a book; raises :class:`InvalidOrder` on the first bad order."""
        grid = grid or GridTree.single()
        _check_lot(lot_wh)
        seen: set[str] = set()
        for k, order in enumerate(orders):
            check_order(order, lot_wh, grid, f"orders[{k}]")
            if order.id in seen:
                raise InvalidOrder(f"orders[{k}].id", f"duplicate order id {order.id!r}")
            seen.add(order.id)
        return cls(tuple(orders), grid, lot_wh, seed)

    def scores(self) -> list[int]:
        """``r_k`` for every order, in book order."""
        return [tie_score(self.seed, o.id) for o in self.orders]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lot_wh": self.lot_wh, "seed": self.seed.hex()}
        if self.grid.size > 1 or self.grid.ids[0] != "root":
            out["grid"] = self.grid.to_json()
        out["orders"] = [
            {
                "id": o.id,
                "participant": o.participant,
                "side": o.side.value,
                "energy_wh": o.energy_wh,
                "price_sen_per_kwh": o.price_sen_per_kwh,
                "node": o.node,
                "seq": o.seq,
            }
            for o in self.orders
        ]
        if "grid" not in out:
            for o in out["orders"]:
                del o["node"]
        return out


def check_order(order: Order, lot_wh: int, grid: GridTree, where: str = "order") -> None:
    """Raise :class:`InvalidOrder` naming the field and value if ``order`` breaks a rule."""
    if not order.id:
        raise InvalidOrder(f"{where}.id", "must be a non-empty string")
    if not order.participant:
        raise InvalidOrder(f"{where}.participant", "must be a non-empty string")
    e = order.energy_wh
    if e <= 0 or e % lot_wh:
        raise InvalidOrder(
            f"{where}.energy_wh",
            f"{e} Wh is not a whole positive number of {lot_wh} Wh lots",
        )
    p = order.price_sen_per_kwh
    if not PRICE_MIN_SEN_PER_KWH <= p <= PRICE_MAX_SEN_PER_KWH:
        raise InvalidOrder(
            f"{where}.price_sen_per_kwh",
            f"{p} sen/kWh is outside {PRICE_MIN_SEN_PER_KWH}–{PRICE_MAX_SEN_PER_KWH}",
        )
    if order.node not in grid.index:
        raise InvalidOrder(f"{where}.node", f"unknown grid node {order.node!r}")


def _check_lot(lot_wh: object) -> None:
    if type(lot_wh) is not int or not 0 < lot_wh <= MAX_LOT_WH:
        raise InvalidInput("lot_wh", f"must be an integer 1–{MAX_LOT_WH} Wh, got {lot_wh!r}")


def parse_book(obj: Any) -> Book:
    """Read a book from decoded JSON (the ``peerpower clear`` input format).

    ``{"lot_wh": 100, "seed": "<hex>", "grid": {...}?, "orders": [{"id", "participant",
    "side", "energy_wh", "price_sen_per_kwh", "node"?, "seq"?}]}``. ``seq`` defaults to the
    order's position, ``seed`` to 32 zero bytes, ``node`` to the grid's root; no grid means one
    node and no fees.
    """
    if not isinstance(obj, dict):
        raise InvalidInput("$", f"the book must be a JSON object, got {type(obj).__name__}")
    lot_wh = obj.get("lot_wh", DEFAULT_LOT_WH)
    _check_lot(lot_wh)
    seed_hex = obj.get("seed")
    seed = ZERO_SEED
    if seed_hex is not None:
        if not isinstance(seed_hex, str):
            raise InvalidInput("seed", f"must be a hex string, got {seed_hex!r}")
        try:
            seed = bytes.fromhex(seed_hex)
        except ValueError:
            raise InvalidInput("seed", f"{seed_hex[:80]!r} is not hexadecimal") from None
    grid_obj = obj.get("grid")
    grid = GridTree.single() if grid_obj is None else GridTree.from_json(grid_obj)
    default_node = grid.ids[grid.root]
    raw = obj.get("orders")
    if not isinstance(raw, list):
        raise InvalidInput("orders", f"must be a list of orders, got {type(raw).__name__}")
    orders: list[Order] = []
    seen: set[str] = set()
    index = grid.index
    buy, sell = Side.BUY, Side.SELL
    for k, item in enumerate(raw):
        if type(item) is not dict:
            raise InvalidOrder(f"orders[{k}]", f"must be an object, got {_short(item)}")
        try:
            oid = item["id"]
            participant = item["participant"]
            side_text = item["side"]
            energy = item["energy_wh"]
            price = item["price_sen_per_kwh"]
        except KeyError as missing:
            raise InvalidOrder(f"orders[{k}].{missing.args[0]}", "is missing") from None
        node = item.get("node", default_node)
        seq = item.get("seq", k)
        if type(oid) is not str or not oid:
            raise InvalidOrder(f"orders[{k}].id", f"must be a non-empty string, got {_short(oid)}")
        if oid in seen:
            raise InvalidOrder(f"orders[{k}].id", f"duplicate order id {oid!r}")
        seen.add(oid)
        if type(participant) is not str or not participant:
            raise InvalidOrder(
                f"orders[{k}].participant", f"must be a non-empty string, got {_short(participant)}"
            )
        if side_text == "buy":
            side = buy
        elif side_text == "sell":
            side = sell
        else:
            raise InvalidOrder(
                f"orders[{k}].side", f"must be 'buy' or 'sell', got {_short(side_text)}"
            )
        if type(energy) is not int or energy <= 0 or energy % lot_wh:
            raise InvalidOrder(
                f"orders[{k}].energy_wh",
                f"{_short(energy)} is not a whole positive number of {lot_wh} Wh lots",
            )
        if type(price) is not int or not PRICE_MIN_SEN_PER_KWH <= price <= PRICE_MAX_SEN_PER_KWH:
            raise InvalidOrder(
                f"orders[{k}].price_sen_per_kwh",
                f"{_short(price)} is not an integer {PRICE_MIN_SEN_PER_KWH}–"
                f"{PRICE_MAX_SEN_PER_KWH} sen/kWh",
            )
        if type(node) is not str or node not in index:
            if grid_obj is None:
                raise InvalidOrder(
                    f"orders[{k}].node",
                    f"unknown grid node {_short(node)}: the book has no grid; add one or omit node",
                )
            raise InvalidOrder(f"orders[{k}].node", f"unknown grid node {_short(node)}")
        if type(seq) is not int:
            raise InvalidOrder(f"orders[{k}].seq", f"must be an integer, got {_short(seq)}")
        orders.append(Order(oid, participant, side, energy, price, node, seq))
    return Book(tuple(orders), grid, lot_wh, seed)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class BookArrays:
    """Column view of a book for vectorised clearing (index = position in ``book.orders``)."""

    is_sell: npt.NDArray[np.bool_]
    lots: npt.NDArray[np.int64]
    price: npt.NDArray[np.int64]
    node: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    participant: npt.NDArray[np.int64]
    participants: tuple[str, ...]
    score: tuple[int, ...]


def book_arrays(book: Book) -> BookArrays:
    """Columns of ``book`` with lots (not Wh), node indexes and participant indexes."""
    orders = book.orders
    n = len(orders)
    pid: dict[str, int] = {}
    index = book.grid.index
    sell = Side.SELL
    is_sell = np.fromiter((o.side is sell for o in orders), dtype=np.bool_, count=n)
    energy = np.fromiter((o.energy_wh for o in orders), dtype=np.int64, count=n)
    price = np.fromiter((o.price_sen_per_kwh for o in orders), dtype=np.int64, count=n)
    node = np.fromiter((index[o.node] for o in orders), dtype=np.int64, count=n)
    seq = np.fromiter((o.seq for o in orders), dtype=np.int64, count=n)
    part = np.fromiter(
        (pid.setdefault(o.participant, len(pid)) for o in orders), dtype=np.int64, count=n
    )
    return BookArrays(
        is_sell=is_sell,
        lots=energy // book.lot_wh,
        price=price,
        node=node,
        seq=seq,
        participant=part,
        participants=tuple(pid),
        score=tuple(book.scores()),
    )
