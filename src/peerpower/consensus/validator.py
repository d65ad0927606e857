"""One validator as a process: consensus over TCP, storage in SQLite, a small HTTP RPC.

A node's home folder holds ``node.json`` (its id, where it listens, its peers), ``genesis.json``,
``validator.key`` (mode 0600) and, once it has run, ``chain.db``. ``peerpower node --home H``
runs it until SIGINT or SIGTERM.

The node drives :class:`peerpower.consensus.tendermint.Tendermint` with the wall clock: every
message from a peer and every timer is one input, and its actions go out through
:class:`peerpower.net.tcp.TcpTransport` (messages as :mod:`peerpower.net.wire` JSON) or to
:class:`peerpower.consensus.ledger_app.LedgerApp` (a decided block is stored with its commit
certificate before anything else happens).

Catching up: a validator that hears of heights beyond its own asks a peer how its height was
decided (``sync``); the peer answers with committed blocks from its SQLite file, up to
:data:`peerpower.net.wire.MAX_BLOCKS_PER_MESSAGE` at a time, which the laggard checks (commit
certificate, every rule, the state root), stores, and asks again until it is level. Its
consensus machine then restarts at the new height. A node killed at any moment restarts from
its last stored block and catches up the same way.

RPC (JSON over HTTP/1.1, 127.0.0.1 by default):

* ``POST /tx`` — a signed transaction; ``{"accepted": true, "id": ...}`` or 400 with the rule
  broken. A JSON array submits several in order and answers ``{"accepted": n, "results":
  [...]}`` with one entry per transaction (``{"id"}`` or ``{"error", "rule"}``).
* ``GET /status`` — id, chain, height, head hash, time, round, connected peers, mempool size.
* ``GET /blocks/{height}`` — the committed block with its hash and commit certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerpower.consensus.ledger_app import MAX_BLOCK_TXS, LedgerApp
from peerpower.consensus.tendermint import (
    Action,
    Broadcast,
    Decide,
    Proposal,
    Schedule,
    Send,
    SyncRequest,
    Tendermint,
    Timeouts,
    Vote,
)
from peerpower.crypto import KeyPair, read_key_file
from peerpower.errors import InvalidBlock, InvalidInput, InvalidTransaction, PeerpowerError
from peerpower.ledger.blocks import Block
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.store import Store
from peerpower.net import wire
from peerpower.net.http import HttpError, Request, Response, Router, json_response, serve_http
from peerpower.net.tcp import Peer, TcpTransport

log = logging.getLogger("peerpower.node")

MAX_BATCH = 2_000  # transactions in one POST /tx array
HISTORY_HEIGHTS = 8  # decided heights a machine keeps in memory (older ones come from storage)
SYNC_BYTES = 8 << 20  # blocks sent in one answer to a laggard, at most (but at least one)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Address:
        if not isinstance(obj, dict):
            raise InvalidInput(where, f"must be an object with host and port, got {obj!r}")
        host, port = obj.get("host"), obj.get("port")
        if not isinstance(host, str) or not host:
            raise InvalidInput(f"{where}.host", f"must be a host name, got {host!r}")
        if type(port) is not int or not 0 < port < 65536:
            raise InvalidInput(f"{where}.port", f"must be a port 1–65535, got {port!r}")
        return cls(host, port)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``node.json``: who this validator is, where it listens and who its peers are."""

    id: str
    listen: Address
    rpc: Address
    peers: tuple[Peer, ...]
    block_interval_ms: int = 1000
    max_block_txs: int = MAX_BLOCK_TXS

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "listen": self.listen.to_json(),
            "rpc": self.rpc.to_json(),
            "peers": [
                {"id": p.id, "host": p.host, "port": p.port, "public_key": p.public.hex()}
                for p in self.peers
            ],
            "block_interval_ms": self.block_interval_ms,
            "max_block_txs": self.max_block_txs,
        }

    @classmethod
    def from_json(cls, obj: Any) -> NodeConfig:
        if not isinstance(obj, dict):
            raise InvalidInput("node.json", "must be a JSON object")
        known = {"id", "listen", "rpc", "peers", "block_interval_ms", "max_block_txs"}
        extra = sorted(set(obj) - known)
        if extra:
            raise InvalidInput(extra[0], f"unknown key in node.json (known: {sorted(known)})")
        me = obj.get("id")
        if not isinstance(me, str) or not me:
            raise InvalidInput("id", f"must be the validator's id, got {me!r}")
        raw_peers = obj.get("peers")
        if not isinstance(raw_peers, list):
            raise InvalidInput("peers", f"must be a list, got {raw_peers!r}")
        peers = []
        for k, p in enumerate(raw_peers):
            where = f"peers[{k}]"
            addr = Address.from_json(p, where)
            pid, public = p.get("id"), p.get("public_key")
            if not isinstance(pid, str) or not pid or pid == me:
                raise InvalidInput(f"{where}.id", f"must be another validator's id, got {pid!r}")
            try:
                key = bytes.fromhex(public) if isinstance(public, str) else b""
            except ValueError:
                key = b""
            if len(key) != 32:
                raise InvalidInput(
                    f"{where}.public_key", f"must be 32 bytes of hex, got {public!r}"
                )
            peers.append(Peer(pid, addr.host, addr.port, key))
        interval = obj.get("block_interval_ms", 1000)
        if type(interval) is not int or not 0 <= interval <= 600_000:
            raise InvalidInput("block_interval_ms", f"must be 0–600000, got {interval!r}")
        cap = obj.get("max_block_txs", MAX_BLOCK_TXS)
        if type(cap) is not int or not 1 <= cap <= 20_000:
            raise InvalidInput("max_block_txs", f"must be 1–20000, got {cap!r}")
        return cls(
            me,
            Address.from_json(obj.get("listen"), "listen"),
            Address.from_json(obj.get("rpc"), "rpc"),
            tuple(peers),
            interval,
            cap,
        )


@dataclass(frozen=True, slots=True)
class Home:
    """A node's home folder, read and checked."""

    path: Path
    config: NodeConfig
    genesis: Genesis
    key: KeyPair

    @classmethod
    def load(cls, path: Path) -> Home:
        if not path.is_dir():
            raise InvalidInput("home", f"{str(path)!r} is not a folder")
        config = NodeConfig.from_json(_read_json(path / "node.json"))
        try:
            genesis = Genesis.from_json(_read_json(path / "genesis.json"))
        except InvalidInput as err:
            raise InvalidInput(f"genesis.json: {err.field}", err.message) from None
        key = read_key_file(path / "validator.key")
        validators = {v.id: v.key for v in genesis.validators}
        if validators.get(config.id) != key.public_hex:
            raise InvalidInput(
                "validator.key", f"is not the key genesis gives validator {config.id!r}"
            )
        for k, p in enumerate(config.peers):
            if validators.get(p.id) != p.public.hex():
                raise InvalidInput(
                    f"peers[{k}]", f"{p.id!r} is not a genesis validator with that public key"
                )
        return cls(path, config, genesis, key)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput(path.name, f"cannot read {str(path)!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise InvalidInput(path.name, f"{str(path)!r} is not JSON: {err}") from None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ValidatorNode:
    """One validator: consensus machine, ledger, transport and RPC (see the module notes)."""

    def __init__(self, home: Home) -> None:
        self.home = home
        cfg = home.config
        self.store = Store(home.path / "chain.db", create=True)
        self.app = LedgerApp(
            home.genesis,
            cfg.id,
            home.key,
            self.store,
            max_block_txs=cfg.max_block_txs,
            keep_blocks=False,
        )
        self.validators = [(v.id, bytes.fromhex(v.key)) for v in home.genesis.validators]
        self.timeouts = Timeouts(commit_ms=cfg.block_interval_ms)
        self.generation = 0
        self.machine = self._machine()
        self.transport = TcpTransport(
            cfg.id,
            home.key,
            home.genesis.chain_id,
            cfg.listen.host,
            cfg.listen.port,
            cfg.peers,
            self._on_peer,
        )
        self.started_ms = now_ms()
        self.committed = 0
        self.synced = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: asyncio.Server | None = None

    def _machine(self) -> Tendermint:
        m = Tendermint(
            self.validators,
            self.home.config.id,
            self.home.key,
            self.app,
            height=self.app.height + 1,
            timeouts=self.timeouts,
        )
        m.keep_heights = HISTORY_HEIGHTS
        kept = []
        for text in self.store.signed(m.height):
            with contextlib.suppress(PeerpowerError, ValueError):
                message = wire.decode(json.loads(text))
                if isinstance(message, Proposal | Vote):
                    kept.append(message)
        m.restore(kept)
        m.persist = self._persist
        return m

    def _persist(self, messages: list[Proposal | Vote]) -> None:
        self.store.keep_signed(
            messages[0].height,
            [json.dumps(wire.encode(m), separators=(",", ":")) for m in messages],
        )

    # -- running -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.start()
        cfg = self.home.config
        self._http = await serve_http(self._router(), cfg.rpc.host, cfg.rpc.port)
        self.app.now_ms = now_ms()
        self._act(self.machine.start())
        log.info(
            "%s: height %d, listening on %s:%d, rpc http://%s:%d",
            cfg.id,
            self.app.height,
            cfg.listen.host,
            cfg.listen.port,
            cfg.rpc.host,
            cfg.rpc.port,
        )

    async def stop(self) -> None:
        self.generation += 1  # every pending timer is now stale
        if self._http is not None:
            from peerpower.net.http import close_http

            await close_http(self._http)
            self._http = None
        await self.transport.close()
        self.store.close()

    # -- inputs ------------------------------------------------------------------------------
    def _on_peer(self, sender: str, obj: Any) -> None:
        try:
            message = wire.decode(obj)
        except PeerpowerError as err:
            log.debug("%s: dropped a message from %s: %s", self.home.config.id, sender, err)
            return
        self.app.now_ms = now_ms()
        if isinstance(message, wire.AppMessages):
            for payload in message.payloads:
                self.app.on_app_message(payload)
            self._flush()
        elif isinstance(message, wire.Blocks):
            self._on_blocks(sender, list(message.blocks))
        elif isinstance(message, SyncRequest):
            self._on_sync(sender, message)
        else:
            self._act(self.machine.on_message(message))

    def _on_timer(self, generation: int, kind: Any, height: int, round_: int) -> None:
        if generation != self.generation:
            return
        self.app.now_ms = now_ms()
        self._act(self.machine.on_timeout(kind, height, round_))

    def _on_sync(self, sender: str, request: SyncRequest) -> None:
        """Answer from storage with the blocks from the height asked for."""
        head = self.app.height
        if request.height > head or request.requester != sender:
            return
        last = min(head, request.height + wire.MAX_BLOCKS_PER_MESSAGE - 1)
        lines = self.store.block_lines_between(request.height, last, SYNC_BYTES)
        self.transport.send(sender, {"t": "blocks", "blocks": [json.loads(x) for x in lines]})

    def _on_blocks(self, sender: str, blocks: list[Block]) -> None:
        before = self.app.height
        for block in blocks:
            if block.height <= self.app.height:
                continue
            try:
                self.app.accept(block)
            except InvalidBlock as err:
                log.warning(
                    "%s: block %d from %s refused: %s",
                    self.home.config.id,
                    block.height,
                    sender,
                    err,
                )
                break
            self.synced += 1
        if self.app.height == before:
            return
        log.info("%s: caught up from %d to %d", self.home.config.id, before, self.app.height)
        self.generation += 1
        self.machine = self._machine()
        self._act(self.machine.start())
        if len(blocks) >= wire.MAX_BLOCKS_PER_MESSAGE:
            self.transport.send(
                sender, wire.encode(SyncRequest(self.app.height + 1, self.home.config.id))
            )

    # -- outputs -----------------------------------------------------------------------------
    def _act(self, actions: list[Action]) -> None:
        # Timers first: whatever fails below, the machine's clock keeps ticking.
        ordered: list[Action] = [a for a in actions if isinstance(a, Schedule)]
        ordered += [a for a in actions if not isinstance(a, Schedule)]
        for a in ordered:
            try:
                self._do(a)
            except Exception:  # one failed action (e.g. a frame too big) must not stop the rest
                log.exception("%s: %s failed", self.home.config.id, type(a).__name__)
        self._flush()

    def _do(self, a: Action) -> None:
        assert self._loop is not None
        if isinstance(a, Broadcast):
            self.transport.broadcast(wire.encode(a.message))
        elif isinstance(a, Send):
            if a.to != self.home.config.id:  # (its own message relayed back by a peer)
                self.transport.send(a.to, wire.encode(a.message))
        elif isinstance(a, Schedule):
            self._loop.call_later(
                a.delay_ms / 1000,
                self._on_timer,
                self.generation,
                a.kind,
                a.height,
                a.round,
            )
        elif isinstance(a, Decide):
            self._commit(a)

    def _commit(self, decision: Decide) -> None:
        if decision.height != self.app.height + 1:
            return  # already stored (caught up from a peer)
        block = self.app.commit(decision)
        self.committed += 1
        if block.txs or block.height % 60 == 0:
            log.info(
                "%s: committed height %d (%d txs, round %d)",
                self.home.config.id,
                block.height,
                len(block.txs),
                decision.round,
            )

    def _flush(self) -> None:
        payloads = self.app.take_outbox()
        if payloads:
            self.transport.broadcast(wire.encode_app(payloads))

    # -- RPC ---------------------------------------------------------------------------------
    def _router(self) -> Router:
        router = Router()
        router.add("POST", "/tx", self._rpc_tx)
        router.add("GET", "/status", self._rpc_status)
        router.add("GET", "/blocks/{height}", self._rpc_block)
        return router

    def status(self) -> dict[str, Any]:
        state = self.app.state
        return {
            "id": self.home.config.id,
            "chain_id": self.home.genesis.chain_id,
            "height": state.height,
            "head_hash": state.head_hash.hex(),
            "time_ms": state.meta.time_ms,
            "round": self.machine.round,
            "peers": self.transport.connected(),
            "mempool": self.app.waiting(),
            "committed": self.committed,
            "synced": self.synced,
        }

    async def _rpc_status(self, request: Request) -> Response:
        return json_response(self.status())

    async def _rpc_block(self, request: Request, height: str) -> Response:
        if not height.isdigit() or len(height) > 18:
            raise HttpError(400, f"height must be a positive integer, got {height!r}", "height")
        h = int(height)
        if not 1 <= h <= self.app.height:
            raise HttpError(404, f"no block {h} (head is {self.app.height})", "height")
        block = self.store.block(h)
        return json_response({"height": h, "hash": block.hash.hex(), "block": block.to_json()})

    async def _rpc_tx(self, request: Request) -> Response:
        body = request.json()
        self.app.now_ms = now_ms()
        if isinstance(body, list):
            if len(body) > MAX_BATCH:
                raise HttpError(413, f"{len(body)} transactions; at most {MAX_BATCH}", "body")
            results: list[dict[str, Any]] = []
            for obj in body:
                try:
                    results.append({"id": self.app.submit(obj).id})
                except InvalidTransaction as err:
                    results.append({"error": err.message, "rule": err.rule})
            self._flush()
            accepted = sum(1 for r in results if "id" in r)
            return json_response({"accepted": accepted, "results": results})
        try:
            tx = self.app.submit(body)
        except InvalidTransaction as err:
            return json_response({"error": err.message, "rule": err.rule, "field": "tx"}, 400)
        self._flush()
        return json_response({"accepted": True, "id": tx.id})


async def serve(home: Home, ready: asyncio.Event | None = None) -> None:
    """Run a validator until SIGINT or SIGTERM."""
    node = ValidatorNode(home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await node.stop()
        log.info("%s: stopped at height %d", home.config.id, node.app.height)


def run(home_path: Path) -> int:
    """``peerpower node --home H``."""
    home = Home.load(home_path)
    logging.basicConfig(
        level=os.environ.get("PEERPOWER_LOG", "INFO"),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(home))
    return 0
