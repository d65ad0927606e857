"""Orders and the book of orders for one slot (DESIGN.md §3).

An order offers (``sell``) or asks for (``buy``) a whole number of lots at a limit price, at a
node of the grid. ``seq`` is its arrival order: earlier wins ties.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import FrozenInstanceError, dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from peerpower.errors import InvalidInput, InvalidOrder
from peerpower.grid.tree import GridTree
from peerpower.units import DEFAULT_LOT_WH, PRICE_MAX_SEN_PER_KWH, PRICE_MIN_SEN_PER_KWH

ZERO_SEED = bytes(32)
MAX_LOT_WH = 1_000_000
#: Most energy one book may hold [Wh], all orders together (1 TWh: Japan's whole demand in a
#: half-hour is about 50 GWh). It keeps every sum a clearing forms — lots × prices over the
#: book — inside 64-bit integers.
MAX_BOOK_WH = 10**12
#: ``seq`` must lie strictly within ± this (inside 64-bit integers).
MAX_SEQ = 2**62


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


def tie_scores(seed: bytes, ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """:func:`tie_score` of every id in ``ids``, as one array (hashed in one pass)."""
    sha = hashlib.sha256
    digests = b"".join([sha(seed + oid.encode()).digest() for oid in ids])
    first8 = np.frombuffer(digests, dtype=">u8").reshape(len(ids), 4)[:, 0]
    scores: npt.NDArray[np.uint64] = first8.astype(np.uint64)
    return scores


@dataclass(frozen=True, slots=True)
class _Columns:
    """Orders of a parsed book held as columns; :attr:`Book.orders` is built from them on demand,
    since the clearings themselves only need the columns."""

    ids: list[str]
    participants: list[str]
    is_sell: list[bool]
    energy_wh: list[int]
    price_sen_per_kwh: list[int]
    nodes: list[str]
    node_index: list[int]
    seq: list[int]

    def orders(self) -> tuple[Order, ...]:
        sides = [Side.SELL if s else Side.BUY for s in self.is_sell]
        return tuple(
            map(
                Order,
                self.ids,
                self.participants,
                sides,
                self.energy_wh,
                self.price_sen_per_kwh,
                self.nodes,
                self.seq,
            )
        )


class Book:
    """Everything a clearing needs for one slot: orders, grid, lot size and seed.

    Build it with :meth:`build` (which validates) or :func:`parse_book` (from JSON). It is
    immutable; equality and hashing compare ``(orders, grid, lot_wh, seed)``. ``by_id`` and the
    column view (:func:`book_arrays`) are computed once, when first asked for.
    """

    __slots__ = ("_arrays", "_by_id", "_columns", "_orders", "_scores", "grid", "lot_wh", "seed")

    grid: GridTree
    lot_wh: int
    seed: bytes
    _orders: tuple[Order, ...] | None
    _columns: _Columns | None
    _by_id: dict[str, int] | None
    _arrays: BookArrays | None
    _scores: npt.NDArray[np.uint64] | None

    def __init__(
        self,
        orders: tuple[Order, ...],
        grid: GridTree,
        lot_wh: int = DEFAULT_LOT_WH,
        seed: bytes = ZERO_SEED,
    ) -> None:
        self._init(tuple(orders), None, grid, lot_wh, seed)

    def _init(
        self,
        orders: tuple[Order, ...] | None,
        columns: _Columns | None,
        grid: GridTree,
        lot_wh: int,
        seed: bytes,
    ) -> None:
        put = object.__setattr__
        put(self, "_orders", orders)
        put(self, "_columns", columns)
        put(self, "grid", grid)
        put(self, "lot_wh", lot_wh)
        put(self, "seed", seed)
        put(self, "_by_id", None)
        put(self, "_arrays", None)
        put(self, "_scores", None)

    @classmethod
    def _from_columns(cls, columns: _Columns, grid: GridTree, lot_wh: int, seed: bytes) -> Book:
        book = cls.__new__(cls)
        book._init(None, columns, grid, lot_wh, seed)
        return book

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Book)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Book(orders={self.orders!r}, grid={self.grid!r}, lot_wh={self.lot_wh!r}, "
            f"seed={self.seed!r})"
        )

    def _key(self) -> tuple[tuple[Order, ...], GridTree, int, bytes]:
        return (self.orders, self.grid, self.lot_wh, self.seed)

    @property
    def orders(self) -> tuple[Order, ...]:
        """The orders, in book order."""
        orders: tuple[Order, ...] | None = self._orders
        if orders is None:
            assert self._columns is not None
            orders = self._columns.orders()
            object.__setattr__(self, "_orders", orders)
        return orders

    @property
    def ids(self) -> list[str]:
        """Order ids, in book order."""
        if self._columns is not None:
            return self._columns.ids
        return [o.id for o in self.orders]

    @property
    def by_id(self) -> dict[str, int]:
        """Order id → position in :attr:`orders`."""
        by_id: dict[str, int] | None = self._by_id
        if by_id is None:
            by_id = {oid: k for k, oid in enumerate(self.ids)}
            object.__setattr__(self, "_by_id", by_id)
        return by_id

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
        _check_total(orders)
        return cls(tuple(orders), grid, lot_wh, seed)

    def subset(self, keep: npt.NDArray[np.bool_]) -> Book:
        """The same book with only the orders where ``keep`` is true (same grid, lot, seed)."""
        columns = self._columns
        if columns is None:
            return Book(
                tuple(o for o, k in zip(self.orders, keep.tolist(), strict=True) if k),
                self.grid,
                self.lot_wh,
                self.seed,
            )
        idx = np.flatnonzero(keep).tolist()

        def pick(values: list[Any]) -> list[Any]:
            return [values[k] for k in idx]

        sub = _Columns(
            pick(columns.ids),
            pick(columns.participants),
            pick(columns.is_sell),
            pick(columns.energy_wh),
            pick(columns.price_sen_per_kwh),
            pick(columns.nodes),
            pick(columns.node_index),
            pick(columns.seq),
        )
        return Book._from_columns(sub, self.grid, self.lot_wh, self.seed)

    def score_array(self) -> npt.NDArray[np.uint64]:
        """``r_k`` for every order, in book order (read-only; computed once)."""
        scores: npt.NDArray[np.uint64] | None = self._scores
        if scores is None:
            scores = tie_scores(self.seed, self.ids)
            scores.flags.writeable = False
            object.__setattr__(self, "_scores", scores)
        return scores

    def scores(self) -> list[int]:
        """``r_k`` for every order, in book order."""
        scores: list[int] = self.score_array().tolist()
        return scores

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
    if e > MAX_BOOK_WH:
        raise InvalidOrder(
            f"{where}.energy_wh", f"{e} Wh is more than a book may hold ({MAX_BOOK_WH} Wh)"
        )
    if not -MAX_SEQ < order.seq < MAX_SEQ:
        raise InvalidOrder(f"{where}.seq", f"{order.seq} is outside ±{MAX_SEQ}")
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
    columns = _fast_columns(raw, lot_wh, grid, default_node)
    if columns is not None:
        return Book._from_columns(columns, grid, lot_wh, seed)
    # Something is wrong (or a number is too large for the column view): check order by order,
    # which names the first bad field and value.
    orders = _checked_orders(raw, lot_wh, grid, default_node, grid_obj is None)
    return Book(tuple(orders), grid, lot_wh, seed)


def _fast_columns(
    raw: list[Any], lot_wh: int, grid: GridTree, default_node: str
) -> _Columns | None:
    """The orders as columns if every one is valid (and every number is well inside int64);
    ``None`` if :func:`_checked_orders` must look at them one by one.

    Whole columns are checked at once, so this accepts exactly what :func:`_checked_orders`
    accepts, without a Python-level check per order and field.
    """
    if raw and set(map(type, raw)) != {dict}:
        return None
    try:
        ids: list[str] = [item["id"] for item in raw]
        participants: list[str] = [item["participant"] for item in raw]
        sides: list[str] = [item["side"] for item in raw]
        energy: list[int] = [item["energy_wh"] for item in raw]
        price: list[int] = [item["price_sen_per_kwh"] for item in raw]
    except KeyError:
        return None
    nodes: list[str] = [item.get("node", default_node) for item in raw]
    seq: list[int] = [item.get("seq", k) for k, item in enumerate(raw)]
    if not raw:
        return _Columns([], [], [], [], [], [], [], [])
    str_only, int_only = {str}, {int}
    if not (
        set(map(type, ids)) == str_only
        and set(map(type, participants)) == str_only
        and set(map(type, nodes)) == str_only
        and set(map(type, energy)) == int_only
        and set(map(type, price)) == int_only
        and set(map(type, seq)) == int_only
    ):
        return None
    id_set = set(ids)
    if len(id_set) != len(ids) or "" in id_set or not all(participants):
        return None
    try:
        if not set(sides) <= {"buy", "sell"}:
            return None
    except TypeError:  # an unhashable side
        return None
    if not (
        min(energy) > 0
        and sum(energy) <= MAX_BOOK_WH
        and min(price) >= PRICE_MIN_SEN_PER_KWH
        and max(price) <= PRICE_MAX_SEN_PER_KWH
        and min(seq) > -MAX_SEQ
        and max(seq) < MAX_SEQ
    ):
        return None
    if np.any(np.array(energy, dtype=np.int64) % lot_wh):
        return None
    index = grid.index
    try:
        node_index = [index[name] for name in nodes]
    except KeyError:
        return None
    is_sell = [side == "sell" for side in sides]
    return _Columns(ids, participants, is_sell, energy, price, nodes, node_index, seq)


def _checked_orders(
    raw: list[Any], lot_wh: int, grid: GridTree, default_node: str, no_grid: bool
) -> list[Order]:
    """Read and check the orders one by one; raises :class:`InvalidOrder` on the first bad one."""
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
        if energy > MAX_BOOK_WH:
            raise InvalidOrder(
                f"orders[{k}].energy_wh",
                f"{energy} Wh is more than a book may hold ({MAX_BOOK_WH} Wh)",
            )
        if type(price) is not int or not PRICE_MIN_SEN_PER_KWH <= price <= PRICE_MAX_SEN_PER_KWH:
            raise InvalidOrder(
                f"orders[{k}].price_sen_per_kwh",
                f"{_short(price)} is not an integer {PRICE_MIN_SEN_PER_KWH}–"
                f"{PRICE_MAX_SEN_PER_KWH} sen/kWh",
            )
        if type(node) is not str or node not in index:
            if no_grid:
                raise InvalidOrder(
                    f"orders[{k}].node",
                    f"unknown grid node {_short(node)}: the book has no grid; add one or omit node",
                )
            raise InvalidOrder(f"orders[{k}].node", f"unknown grid node {_short(node)}")
        if type(seq) is not int or not -MAX_SEQ < seq < MAX_SEQ:
            raise InvalidOrder(
                f"orders[{k}].seq", f"must be an integer within ±{MAX_SEQ}, got {_short(seq)}"
            )
        orders.append(Order(oid, participant, side, energy, price, node, seq))
    _check_total(orders)
    return orders


def _check_total(orders: Sequence[Order]) -> None:
    total = sum(o.energy_wh for o in orders)
    if total > MAX_BOOK_WH:
        raise InvalidInput(
            "orders", f"the orders hold {total} Wh in all, more than a book may ({MAX_BOOK_WH} Wh)"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class BookArrays:
    """Column view of a book for vectorised clearing (index = position in ``book.orders``).

    The arrays are read-only: one view is shared by everything that clears the book.
    ``score_u64`` holds the same ``r_k`` as ``score``, as an array.
    """

    is_sell: npt.NDArray[np.bool_]
    lots: npt.NDArray[np.int64]
    price: npt.NDArray[np.int64]
    node: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    participant: npt.NDArray[np.int64]
    participants: tuple[str, ...]
    score: tuple[int, ...]
    score_u64: npt.NDArray[np.uint64]


def book_arrays(book: Book) -> BookArrays:
    """Columns of ``book`` with lots (not Wh), node indexes and participant indexes.

    Computed once per book and cached.
    """
    arrays: BookArrays | None = book._arrays
    if arrays is None:
        arrays = _book_arrays(book)
        for column in (arrays.is_sell, arrays.lots, arrays.price, arrays.node, arrays.seq):
            column.flags.writeable = False
        arrays.participant.flags.writeable = False
        object.__setattr__(book, "_arrays", arrays)
    return arrays


def _book_arrays(book: Book) -> BookArrays:
    columns = book._columns
    if columns is not None:
        names = list(dict.fromkeys(columns.participants))
        pid = {name: k for k, name in enumerate(names)}
        is_sell = np.array(columns.is_sell, dtype=np.bool_)
        energy = np.array(columns.energy_wh, dtype=np.int64)
        price = np.array(columns.price_sen_per_kwh, dtype=np.int64)
        node = np.array(columns.node_index, dtype=np.int64)
        seq = np.array(columns.seq, dtype=np.int64)
        part = np.array([pid[name] for name in columns.participants], dtype=np.int64)
        participants = tuple(names)
    else:
        orders = book.orders
        n = len(orders)
        ids: dict[str, int] = {}
        index = book.grid.index
        sell = Side.SELL
        is_sell = np.fromiter((o.side is sell for o in orders), dtype=np.bool_, count=n)
        energy = np.fromiter((o.energy_wh for o in orders), dtype=np.int64, count=n)
        price = np.fromiter((o.price_sen_per_kwh for o in orders), dtype=np.int64, count=n)
        node = np.fromiter((index[o.node] for o in orders), dtype=np.int64, count=n)
        seq = np.fromiter((o.seq for o in orders), dtype=np.int64, count=n)
        part = np.fromiter(
            (ids.setdefault(o.participant, len(ids)) for o in orders), dtype=np.int64, count=n
        )
        participants = tuple(ids)
    score_u64 = book.score_array()
    return BookArrays(
        is_sell=is_sell,
        lots=energy // book.lot_wh,
        price=price,
        node=node,
        seq=seq,
        participant=part,
        participants=participants,
        score=tuple(score_u64.tolist()),
        score_u64=score_u64,
    )
