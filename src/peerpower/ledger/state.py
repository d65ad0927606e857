"""The state of the exchange contract, its records, and its root hash.

The state is six tables of frozen records, each keyed by a string:

==========  =========================  ===========================================================
table       key                        record
==========  =========================  ===========================================================
meta        ``chain``                  :class:`Meta`: height, time, next order seq, settled money
accounts    account id                 :class:`Account`: balance, locked margin, nonce, status, …
orders      order id ``<acct>#<n>``    :class:`OrderRec`: an open order and the margin it locks
slots       slot ``YYYY-MM-DD#NN``     :class:`SlotRec`: a slot not yet settled (open → sealed →
                                       cleared) and its seed
contracts   slot                       :class:`Contracts`: the balanced units of a cleared slot
readings    ``<slot>|<site>``          :class:`Reading`: a meter reading awaiting settlement
settled     slot                       :class:`Settled`: what a settled slot moved
==========  =========================  ===========================================================

State root
----------
Each entry is a leaf ``SHA-256(canonical([table, key, record]))``. The entries of a table are
spread over 256 buckets by ``crc32(key) mod 256``; a bucket's hash is SHA-256 of its leaves
sorted and concatenated (32 zero bytes for an empty bucket), a table's hash SHA-256 of its 256
bucket hashes in order, and the state root ``SHA-256(canonical({table: table hash hex}))``.
Changing one entry rehashes one leaf, one bucket and one table, so the root of a large state is
kept up to date at the cost of what a block changed. The root commits to every entry: two
states with the same root are equal unless SHA-256 collides.

A :class:`State` is never changed. A :class:`Draft` collects changes on top of one (copying a
table the first time it writes to it) and :meth:`Draft.freeze` makes the next state.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, ClassVar, Literal, TypeVar

from peerpower.crypto import canonical_unchecked

TABLES = ("meta", "accounts", "orders", "slots", "contracts", "readings", "settled")
BUCKETS = 256
_ZERO = bytes(32)

Status = Literal["active", "suspended"]
SlotStatus = Literal["open", "sealed", "cleared"]


class Record:
    """A state entry: a frozen dataclass of JSON-native fields."""

    __slots__ = ()
    table: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        names: tuple[str, ...] = self.__slots__
        return {f: getattr(self, f) for f in names}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        return cls(**obj)


@dataclass(frozen=True, slots=True)
class Meta(Record):
    """Chain-wide counters: last block height and time [ms], the next order's ``seq``, the money
    moved by settlements [µ¥] and the genesis hash (hex)."""

    table: ClassVar[str] = "meta"
    height: int
    time_ms: int
    next_seq: int
    settled_microyen: int
    genesis: str


@dataclass(frozen=True, slots=True)
class Account(Record):
    """An account: free balance and locked margin [µ¥], last nonce, status, defaults.

    ``unpaid_microyen`` is what a defaulter still owes the retail provider after its margin and
    balance ran out; it is paid from the next deposit, and no order is accepted until it is.
    Participants also carry their site: grid node, meter key (hex) and type.
    """

    table: ClassVar[str] = "accounts"
    id: str
    kind: str
    key: str
    balance_microyen: int = 0
    locked_microyen: int = 0
    nonce: int = 0
    status: Status = "active"
    defaults: int = 0
    unpaid_microyen: int = 0
    node: str | None = None
    meter_key: str | None = None
    site_type: str | None = None


@dataclass(frozen=True, slots=True)
class OrderRec(Record):
    """An open order; ``margin_microyen`` is locked in its owner's account."""

    table: ClassVar[str] = "orders"
    id: str
    account: str
    slot: str
    side: str
    energy_wh: int
    price_sen_per_kwh: int
    node: str
    seq: int
    margin_microyen: int


@dataclass(frozen=True, slots=True)
class SlotRec(Record):
    """A slot with orders or readings that is not settled yet.

    ``sealed_height`` is the first block at or past the gate; its hash, recorded by the next
    block, is the slot's ``seed`` (hex) for the clearing's tie-break.
    """

    table: ClassVar[str] = "slots"
    slot: str
    status: SlotStatus = "open"
    sealed_height: int = 0
    seed: str = ""


@dataclass(frozen=True, slots=True)
class Contract:
    """A balanced unit that became a contract; the locks are the margin [µ¥] held against it.

    ``price_sen_per_kwh`` is what the seller receives, ``buyer_price_sen_per_kwh`` what the buyer
    pays; the difference goes to the grid operator: the path's fee ``fee_sen_per_kwh`` and,
    under nodal pricing, the congestion rent (:attr:`rent_sen_per_kwh`).
    """

    sell_order: str
    buy_order: str
    seller: str
    buyer: str
    energy_wh: int
    price_sen_per_kwh: int
    fee_sen_per_kwh: int
    buyer_price_sen_per_kwh: int
    seller_lock_microyen: int
    buyer_lock_microyen: int

    @property
    def rent_sen_per_kwh(self) -> int:
        """Congestion rent [sen/kWh]: what the buyer pays beyond the seller's price and fee."""
        return self.buyer_price_sen_per_kwh - self.price_sen_per_kwh - self.fee_sen_per_kwh

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Contracts(Record):
    """The contracts of one cleared slot, and the clearing's digest (hex)."""

    table: ClassVar[str] = "contracts"
    slot: str
    digest: str
    units: tuple[Contract, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "digest": self.digest,
            "units": [c.to_json() for c in self.units],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Contracts:
        return cls(obj["slot"], obj["digest"], tuple(Contract(**u) for u in obj["units"]))


@dataclass(frozen=True, slots=True)
class Reading(Record):
    """A site's meter reading for a slot: import and export [Wh]."""

    table: ClassVar[str] = "readings"
    site: str
    slot: str
    import_wh: int
    export_wh: int


@dataclass(frozen=True, slots=True)
class Settled(Record):
    """What settling a slot moved [µ¥] and who defaulted.

    ``paid_microyen``: buyers to sellers (the sellers' price); ``fees_microyen``: buyers to the
    grid operator, the paths' fees; ``rent_microyen``: buyers to the grid operator, the
    congestion rent of nodal pricing (what buyers pay beyond price and fee);
    ``penalties_microyen``: defaulters to the retail provider; ``unpaid_microyen``: penalties
    that neither margin nor balance could cover; ``void``: the slot was never cleared and its
    orders' margin was released. Buyers paid ``paid + fees + rent`` in all.
    """

    table: ClassVar[str] = "settled"
    slot: str
    volume_wh: int
    paid_microyen: int
    fees_microyen: int
    rent_microyen: int
    penalties_microyen: int
    unpaid_microyen: int
    shortfall_wh: int
    defaulters: tuple[str, ...]
    void: bool

    def to_json(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__slots__}
        out["defaulters"] = list(self.defaulters)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Settled:
        return cls(**{**obj, "defaulters": tuple(obj["defaulters"])})


R = TypeVar("R", bound=Record)
_new = object.__new__
_set = object.__setattr__


def evolve(record: R, **changes: Any) -> R:
    """``dataclasses.replace(record, **changes)`` for state records, in a third of the time.

    Records are frozen dataclasses of plain fields without ``__post_init__``: setting the
    fields is all their ``__init__`` does, so the copy is made field by field. A name that is
    not a field raises ``AttributeError``.
    """
    new = _new(type(record))
    names: tuple[str, ...] = record.__slots__
    for name in names:
        _set(new, name, getattr(record, name))
    for changed, value in changes.items():
        _set(new, changed, value)
    return new


RECORD_TYPES: dict[str, type[Record]] = {
    cls.table: cls for cls in (Meta, Account, OrderRec, SlotRec, Contracts, Reading, Settled)
}


def leaf_hash(table: str, key: str, record: Record) -> bytes:
    """SHA-256 of the canonical JSON of ``[table, key, record]``."""
    return hashlib.sha256(leaf_bytes(table, key, record)).digest()


def leaf_bytes(table: str, key: str, record: Record) -> bytes:
    """The canonical JSON of ``[table, key, record]`` — written out directly for records of
    plain fields (integers, strings, booleans, null: most of them), else by the encoder."""
    fields_ = _PLAIN_FIELDS.get(type(record))
    if fields_ is None:
        fields_ = _plain_fields(type(record))
    if fields_:
        parts = []
        for name, quoted in fields_:
            v = getattr(record, name)
            t = type(v)
            if t is int:
                parts.append(quoted + str(v))
            elif t is str:
                parts.append(quoted + _quote(v))
            elif v is None:
                parts.append(quoted + "null")
            elif t is bool:
                parts.append(quoted + ("true" if v else "false"))
            else:
                break
        else:
            text = f"[{_quote(table)},{_quote(key)},{{{','.join(parts)}}}]"
            return text.encode()
    return canonical_unchecked([table, key, record.to_json()])


# record type → its fields in canonical (sorted) order with their quoted names, or () when its
# JSON is not simply its fields
_PLAIN_FIELDS: dict[type[Record], tuple[tuple[str, str], ...]] = {}


def _plain_fields(cls: type[Record]) -> tuple[tuple[str, str], ...]:
    plain = cls.to_json is Record.to_json
    names: tuple[str, ...] = cls.__slots__ if plain else ()
    found = tuple((n, _quote(n) + ":") for n in sorted(names))
    _PLAIN_FIELDS[cls] = found
    return found


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) & (BUCKETS - 1)


def _bucket_hash(bucket: dict[str, bytes]) -> bytes:
    if not bucket:
        return _ZERO
    return hashlib.sha256(b"".join(sorted(bucket.values()))).digest()


def _root(table_hashes: dict[str, bytes]) -> bytes:
    return hashlib.sha256(
        canonical_unchecked({name: table_hashes[name].hex() for name in TABLES})
    ).digest()


class State:
    """An immutable state of the exchange contract with its root.

    ``head_hash`` is the hash of the block that produced it (the genesis hash at first); it is
    not part of the root, since a block's hash covers its state root. ``changes`` lists the keys
    of each table that the last block wrote or deleted (what storage must write).
    """

    __slots__ = (
        "_buckets",
        "_by_owner",
        "_by_slot",
        "_tables",
        "bucket_hashes",
        "changes",
        "head_hash",
        "root",
        "table_hashes",
    )

    _tables: dict[str, dict[str, Record]]
    _buckets: dict[str, list[dict[str, bytes]]]
    bucket_hashes: dict[str, list[bytes]]
    table_hashes: dict[str, bytes]
    root: bytes
    head_hash: bytes
    changes: dict[str, frozenset[str]]
    _by_slot: dict[str, frozenset[str]]  # slot → ids of its open orders
    _by_owner: dict[tuple[str, str], frozenset[str]]  # (slot, account) → ids of its open orders

    def __init__(
        self,
        tables: dict[str, dict[str, Record]],
        buckets: dict[str, list[dict[str, bytes]]],
        bucket_hashes: dict[str, list[bytes]],
        table_hashes: dict[str, bytes],
        head_hash: bytes,
        changes: dict[str, frozenset[str]],
        by_slot: dict[str, frozenset[str]] | None = None,
        by_owner: dict[tuple[str, str], frozenset[str]] | None = None,
    ) -> None:
        if by_slot is None or by_owner is None:
            found: dict[str, set[str]] = {}
            owned: dict[tuple[str, str], set[str]] = {}
            for key, rec in tables["orders"].items():
                assert isinstance(rec, OrderRec)
                found.setdefault(rec.slot, set()).add(key)
                owned.setdefault((rec.slot, rec.account), set()).add(key)
            by_slot = {slot: frozenset(keys) for slot, keys in found.items()}
            by_owner = {group: frozenset(keys) for group, keys in owned.items()}
        self._by_slot = by_slot
        self._by_owner = by_owner
        self._tables = tables
        self._buckets = buckets
        self.bucket_hashes = bucket_hashes
        self.table_hashes = table_hashes
        self.root = _root(table_hashes)
        self.head_hash = head_hash
        self.changes = changes

    @classmethod
    def build(cls, tables: dict[str, dict[str, Record]], head_hash: bytes) -> State:
        """A state holding ``tables`` (every table name present), hashed from scratch."""
        full = {name: dict(tables.get(name, {})) for name in TABLES}
        buckets: dict[str, list[dict[str, bytes]]] = {}
        bucket_hashes: dict[str, list[bytes]] = {}
        table_hashes: dict[str, bytes] = {}
        for name in TABLES:
            bs: list[dict[str, bytes]] = [{} for _ in range(BUCKETS)]
            for key, rec in full[name].items():
                bs[bucket_of(key)][key] = leaf_hash(name, key, rec)
            buckets[name] = bs
            bucket_hashes[name] = [_bucket_hash(b) for b in bs]
            table_hashes[name] = hashlib.sha256(b"".join(bucket_hashes[name])).digest()
        changes = {name: frozenset(full[name]) for name in TABLES}
        return cls(full, buckets, bucket_hashes, table_hashes, head_hash, changes)

    def get(self, table: str, key: str) -> Record | None:
        return self._tables[table].get(key)

    def table(self, table: str) -> dict[str, Record]:
        """A read-only view of ``table`` (do not change it)."""
        return self._tables[table]

    @property
    def meta(self) -> Meta:
        meta = self._tables["meta"]["chain"]
        assert isinstance(meta, Meta)
        return meta

    @property
    def height(self) -> int:
        return self.meta.height

    def account(self, account_id: str) -> Account | None:
        rec = self._tables["accounts"].get(account_id)
        assert rec is None or isinstance(rec, Account)
        return rec

    def with_head(self, head_hash: bytes) -> State:
        """The same state, produced by the block ``head_hash``."""
        return State(
            self._tables,
            self._buckets,
            self.bucket_hashes,
            self.table_hashes,
            head_hash,
            self.changes,
            self._by_slot,
            self._by_owner,
        )

    def order_ids(self, slot: str) -> frozenset[str]:
        """The ids of ``slot``'s open orders."""
        return self._by_slot.get(slot, frozenset())

    def own_order_ids(self, slot: str, account: str) -> frozenset[str]:
        """The ids of ``account``'s open orders in ``slot``."""
        return self._by_owner.get((slot, account), frozenset())

    def draft(self) -> Draft:
        return Draft(self)

    def to_json(self) -> dict[str, Any]:
        """Every table as ``{table: {key: record}}`` (sorted keys)."""
        return {
            name: {k: self._tables[name][k].to_json() for k in sorted(self._tables[name])}
            for name in TABLES
        }

    def money_microyen(self) -> int:
        """All money held: balances plus locked margin of every account [µ¥]."""
        total = 0
        for rec in self._tables["accounts"].values():
            assert isinstance(rec, Account)
            total += rec.balance_microyen + rec.locked_microyen
        return total


G = TypeVar("G", str, tuple[str, str])


def _slot_of(rec: OrderRec) -> str:
    return rec.slot


def _owner_of(rec: OrderRec) -> tuple[str, str]:
    return (rec.slot, rec.account)


def _reindex(
    index: dict[G, frozenset[str]],
    group: Callable[[OrderRec], G],
    old: dict[str, Record],
    new: dict[str, Record],
    keys: set[str],
) -> dict[G, frozenset[str]]:
    """``index`` (``group`` of an open order → the ids of the open orders in it) after the
    orders ``keys`` changed from table ``old`` to table ``new``."""
    gone: dict[G, set[str]] = {}
    came: dict[G, set[str]] = {}
    for key in keys:
        before, after = old.get(key), new.get(key)
        if isinstance(before, OrderRec):
            gone.setdefault(group(before), set()).add(key)
        if isinstance(after, OrderRec):
            came.setdefault(group(after), set()).add(key)
    out = dict(index)
    for g in gone.keys() | came.keys():
        ids = (out.get(g, frozenset()) - gone.get(g, set())) | came.get(g, set())
        if ids:
            out[g] = frozenset(ids)
        else:
            out.pop(g, None)
    return out


class Draft:
    """Changes being made on top of a :class:`State`; the state itself is never touched."""

    __slots__ = ("_dirty", "_owned", "_written", "base")

    def __init__(self, base: State) -> None:
        self.base = base
        self._written: dict[str, dict[str, Record]] = {}
        self._dirty: dict[str, set[str]] = {name: set() for name in TABLES}
        # (slot, account) → ids of orders this draft wrote or deleted in that group
        self._owned: dict[tuple[str, str], set[str]] = {}

    def _read(self, table: str) -> dict[str, Record]:
        written = self._written.get(table)
        return written if written is not None else self.base._tables[table]

    def get(self, table: str, key: str) -> Record | None:
        return self._read(table).get(key)

    def items(self, table: str) -> Iterator[tuple[str, Record]]:
        return iter(list(self._read(table).items()))

    def _write(self, table: str) -> dict[str, Record]:
        written = self._written.get(table)
        if written is None:
            written = dict(self.base._tables[table])
            self._written[table] = written
        return written

    def put(self, record: Record, key: str) -> None:
        table = record.table
        if table == "orders":
            self._own(key)
            assert isinstance(record, OrderRec)
            self._owned.setdefault((record.slot, record.account), set()).add(key)
        self._write(table)[key] = record
        self._dirty[table].add(key)

    def delete(self, table: str, key: str) -> None:
        if table == "orders":
            self._own(key)
        del self._write(table)[key]
        self._dirty[table].add(key)

    def _own(self, key: str) -> None:
        """Note the order now at ``key`` (if any) in its group, before it changes."""
        before = self._read("orders").get(key)
        if isinstance(before, OrderRec):
            self._owned.setdefault((before.slot, before.account), set()).add(key)

    def order_ids(self, slot: str) -> set[str]:
        """The ids of ``slot``'s open orders, with this draft's changes."""
        ids = set(self.base.order_ids(slot))
        dirty = self._dirty["orders"]
        if dirty:
            table = self._written["orders"]
            for key in dirty:
                rec = table.get(key)
                if isinstance(rec, OrderRec) and rec.slot == slot:
                    ids.add(key)
                else:
                    ids.discard(key)
        return ids

    def own_order_ids(self, slot: str, account: str) -> set[str]:
        """The ids of ``account``'s open orders in ``slot``, with this draft's changes: work
        in proportion to that account's orders in the slot, whatever the size of the book."""
        group = (slot, account)
        ids = set(self.base.own_order_ids(slot, account))
        touched = self._owned.get(group)
        if touched:
            table = self._read("orders")
            for key in touched:
                rec = table.get(key)
                if isinstance(rec, OrderRec) and (rec.slot, rec.account) == group:
                    ids.add(key)
                else:
                    ids.discard(key)
        return ids

    # Typed reads of the tables the rules use most.
    def account(self, account_id: str) -> Account | None:
        rec = self._read("accounts").get(account_id)
        assert rec is None or isinstance(rec, Account)
        return rec

    def set_account(self, account: Account) -> None:
        self.put(account, account.id)

    def update_account(self, account: Account, **changes: Any) -> Account:
        new = evolve(account, **changes)
        self.put(new, account.id)
        return new

    @property
    def meta(self) -> Meta:
        meta = self._read("meta")["chain"]
        assert isinstance(meta, Meta)
        return meta

    def freeze(self, head_hash: bytes | None = None) -> State:
        """The state with every change applied, its root recomputed where something changed.

        The draft then continues on top of that state (later changes never reach it)."""
        base = self.base
        tables = dict(base._tables)
        buckets = dict(base._buckets)
        bucket_hashes = dict(base.bucket_hashes)
        table_hashes = dict(base.table_hashes)
        changes: dict[str, frozenset[str]] = {}
        by_slot = base._by_slot
        by_owner = base._by_owner
        if self._dirty["orders"]:
            old, new, keys = base._tables["orders"], self._written["orders"], self._dirty["orders"]
            by_slot = _reindex(by_slot, _slot_of, old, new, keys)
            by_owner = _reindex(by_owner, _owner_of, old, new, keys)
        for name in TABLES:
            dirty = self._dirty[name]
            changes[name] = frozenset(dirty)
            if not dirty:
                continue
            table = self._written[name]
            tables[name] = table
            bs = list(buckets[name])
            copied: set[int] = set()
            for key in dirty:
                b = bucket_of(key)
                if b not in copied:
                    bs[b] = dict(bs[b])
                    copied.add(b)
                rec = table.get(key)
                if rec is None:
                    bs[b].pop(key, None)
                else:
                    bs[b][key] = leaf_hash(name, key, rec)
            hs = list(bucket_hashes[name])
            for b in copied:
                hs[b] = _bucket_hash(bs[b])
            buckets[name] = bs
            bucket_hashes[name] = hs
            table_hashes[name] = hashlib.sha256(b"".join(hs)).digest()
        frozen = State(
            tables,
            buckets,
            bucket_hashes,
            table_hashes,
            base.head_hash if head_hash is None else head_hash,
            changes,
            by_slot,
            by_owner,
        )
        # The new state owns the tables written so far: the draft goes on from it, copying a
        # table again before its next write, so the state it returned never changes.
        self.base = frozen
        self._written = {}
        self._dirty = {name: set() for name in TABLES}
        self._owned = {}
        return frozen
