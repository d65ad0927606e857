"""SQLite storage of one node: the genesis, every block, and the current state.

One file per node, in WAL mode with ``synchronous=FULL``. :meth:`Store.append` writes a block,
the state rows it changed and the new head in **one** SQLite transaction: a node killed at any
moment reopens at its last committed block, with that block's state and nothing half-written
(SQLite rolls back an unfinished transaction when the file is next opened). On open the stored
state is re-hashed and must match the head block's state root.

Tables: ``chain(key, value)`` (genesis, head), ``blocks(height, hash, data)`` (the block as one
JSON line, exactly as exported), ``state(tbl, key, value)`` (canonical JSON of each record),
``signed(seq, height, data)`` (a validator's consensus messages at the height in progress, kept
so that after a crash it never signs a conflicting vote; cleared when the height commits).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peerpower.crypto import canonical_unchecked
from peerpower.errors import InvalidInput, PeerpowerError
from peerpower.ledger.blocks import Block, block_from_json
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.rules import genesis_state
from peerpower.ledger.state import RECORD_TYPES, TABLES, Record, State

SCHEMA = """
CREATE TABLE IF NOT EXISTS chain (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, height INTEGER NOT NULL, data TEXT NOT NULL);
"""


class StorageError(PeerpowerError):
    """The database is missing, of another kind, or does not agree with itself."""


def block_line(block: Block) -> str:
    """The block as one line of canonical JSON (the export format)."""
    return canonical_unchecked(block.to_json()).decode()


class Store:
    """A node's chain in one SQLite file."""

    def __init__(self, path: Path | str, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise InvalidInput("db", f"{str(self.path)!r} does not exist")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.DatabaseError as err:
            raise StorageError(f"{str(self.path)!r} is not a peerpower database: {err}") from None
        try:
            if not create:
                # Look before writing anything: opening a file that is not ours must not
                # turn it into a database (WAL mode and the schema are writes).
                found = {
                    str(row[0])
                    for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                missing = sorted({"chain", "blocks", "state"} - found)
                if missing:
                    raise StorageError(
                        f"{str(self.path)!r} is not a peerpower database: "
                        f"no table {', '.join(missing)}"
                    )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise StorageError(f"{str(self.path)!r} is not a peerpower database: {err}") from None
        except StorageError:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM chain WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def genesis(self) -> Genesis | None:
        text = self._get("genesis")
        return None if text is None else Genesis.from_json(json.loads(text))

    def initialise(self, genesis: Genesis) -> State:
        """Start a new chain at ``genesis`` (the file must be empty), or reopen this chain."""
        stored = self.genesis()
        if stored is not None:
            if stored.hash != genesis.hash:
                raise StorageError(f"{str(self.path)!r} holds another chain ({stored.chain_id!r})")
            return self.load()[1]
        state = genesis_state(genesis)
        with self._transaction():
            self.db.execute(
                "INSERT INTO chain VALUES ('genesis', ?)",
                (canonical_unchecked(genesis.to_json()).decode(),),
            )
            self._write_state(state)
            self._set_head(state)
        return state

    def load(self) -> tuple[Genesis, State]:
        """The genesis and the state at the last committed block, checked against its root."""
        genesis = self.genesis()
        if genesis is None:
            raise StorageError(f"{str(self.path)!r} holds no chain")
        tables = self._state_rows()
        head = self.head_height()
        head_hash = genesis.hash
        expected = genesis_state(genesis).root
        if head > 0:
            try:
                block = self.block(head)
            except (PeerpowerError, ValueError) as err:
                raise StorageError(
                    f"{str(self.path)!r}: the head block {head} cannot be read: {err}"
                ) from None
            head_hash = block.hash
            expected = block.header.state_root
        state = State.build(tables, head_hash)
        if state.root != expected or state.height != head:
            raise StorageError(
                f"stored state (root {state.root.hex()}, height {state.height}) does not match "
                f"block {head} (root {expected.hex()})"
            )
        return genesis, state

    def head_height(self) -> int:
        text = self._get("head")
        if text is None:
            return 0
        try:
            return int(text)
        except ValueError:
            raise StorageError(f"{str(self.path)!r}: the head {text!r} is not a height") from None

    def append(self, block: Block, state: State) -> None:
        """Commit ``block`` and the ``state`` it produced, together or not at all."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?)",
                (block.height, block.hash.hex(), block_line(block)),
            )
            self._write_state(state)
            self._set_head(state)
            self.db.execute("DELETE FROM signed WHERE height <= ?", (block.height,))

    def keep_signed(self, height: int, messages: list[str]) -> None:
        """Keep consensus messages (JSON text) of ``height`` until it commits — durably, before
        they are sent."""
        with self._transaction():
            self.db.executemany(
                "INSERT INTO signed (height, data) VALUES (?, ?)", [(height, m) for m in messages]
            )

    def signed(self, height: int) -> list[str]:
        """The messages kept at ``height``, in the order they were kept."""
        rows = self.db.execute("SELECT data FROM signed WHERE height = ? ORDER BY seq", (height,))
        return [str(data) for (data,) in rows]

    def _write_state(self, state: State) -> None:
        for name in TABLES:
            keys = state.changes.get(name, frozenset())
            if not keys:
                continue
            table = state.table(name)
            rows = []
            gone = []
            for key in keys:
                rec = table.get(key)
                if rec is None:
                    gone.append((name, key))
                else:
                    rows.append((name, key, canonical_unchecked(rec.to_json()).decode()))
            self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", rows)
            self.db.executemany("DELETE FROM state WHERE tbl = ? AND key = ?", gone)

    def _set_head(self, state: State) -> None:
        self.db.execute("INSERT OR REPLACE INTO chain VALUES ('head', ?)", (str(state.height),))

    def _transaction(self) -> _Tx:
        return _Tx(self.db)

    def block(self, height: int) -> Block:
        row = self.db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise InvalidInput("height", f"no block {height} (head is {self.head_height()})")
        return block_from_json(json.loads(row[0]))

    def block_lines_between(self, first: int, last: int, max_bytes: int) -> list[str]:
        """Stored lines of blocks ``first``…``last`` adding up to at most ``max_bytes`` (at
        least one block)."""
        out: list[str] = []
        size = 0
        rows = self.db.execute(
            "SELECT data FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height", (first, last)
        )
        for (data,) in rows:
            if out and size + len(data) > max_bytes:
                break
            out.append(str(data))
            size += len(data)
        return out

    def block_lines(self) -> Iterator[str]:
        """Every block as its stored JSON line, in height order."""
        for (data,) in self.db.execute("SELECT data FROM blocks ORDER BY height"):
            yield str(data)

    def stored_root(self) -> bytes:
        """Root of the state rows as stored (to compare with a replay)."""
        return State.build(self._state_rows(), b"").root

    def _state_rows(self) -> dict[str, dict[str, Record]]:
        """The state rows decoded into records; a row that is not a record is a StorageError."""
        tables: dict[str, dict[str, Record]] = {name: {} for name in TABLES}
        for tbl, key, value in self.db.execute("SELECT tbl, key, value FROM state"):
            try:
                tables[tbl][key] = RECORD_TYPES[tbl].from_json(json.loads(value))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise StorageError(
                    f"{str(self.path)!r}: state row ({tbl!r}, {key!r}) is not a record of that "
                    f"table: {type(err).__name__}: {err}"
                ) from None
        return tables


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *rest: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
