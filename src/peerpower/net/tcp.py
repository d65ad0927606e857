"""The TCP transport validator processes use to talk to each other (asyncio).

Frames
------
Every message is one frame: a 4-byte big-endian unsigned length, then that many bytes of
payload, the UTF-8 JSON text of the message (``json.dumps(obj, separators=(",", ":"))``). A frame
announced longer than ``max_frame`` closes the connection before anything is allocated for it; a
payload that is not UTF-8 JSON closes it too. Nothing else is ever sent on a connection.

Connections
-----------
Each node **dials** every peer and uses that outbound connection only to send; it **accepts**
inbound connections only to receive. So each ordered pair of validators has its own connection,
there is never a question of which of two crossing connections to keep, and reconnecting is the
dialler's job alone: after a failure or a disconnect it dials again with exponential backoff from
``retry_s[0]`` to ``retry_s[1]`` seconds, until :meth:`TcpTransport.close`. A listener never sends
after the handshake; the dialler reads from its connection only to notice at once when the peer
has gone (end of stream), rather than on the next write.

Handshake
---------
Both ends prove they hold their validator key, each by signing the other's fresh random
challenge (one JSON frame per step)::

    listener -> dialler   {"chain", "id": listener, "challenge": 32 random bytes, hex}
    dialler  -> listener  {"chain", "id": dialler, "challenge": ..., "sig": sign([chain, listener,
                           dialler, listener's challenge])}
    listener -> dialler   {"sig": sign([chain, dialler, listener, dialler's challenge])}

under :data:`HANDSHAKE_DOMAIN`, each signed list written as compact JSON. The listener accepts
only a known peer (not itself) on the same chain; the dialler only the peer it meant to dial.
Any failure, or no handshake within ``handshake_timeout`` seconds, closes the connection. Frames
before authentication are at most :data:`HANDSHAKE_MAX_FRAME` bytes, so a stranger cannot make
a node allocate ``max_frame`` bytes. When a peer authenticates a second inbound connection (it
restarted), the new connection replaces the old one.

The handshake authenticates the two ends; it does not encrypt or authenticate the bytes that
follow, so an attacker who can rewrite traffic in flight can still drop or alter frames. That is
tolerable here because everything consensus relies on is signed by its author and verified by
the receiver; the handshake keeps strangers and misconfigured nodes out.

Sending
-------
:meth:`TcpTransport.send` never blocks: it appends the encoded frame to the peer's bounded
queue, which the dialler drains whenever it is connected. While a peer is down its messages wait
(up to ``queue_limit`` frames); beyond that new messages are dropped and counted. Messages may
be lost (a frame the kernel accepted just before the connection died is gone): consensus re-sends
by gossip and tolerates duplicates, so a batch of frames whose write failed is written once more
on the next connection, and then given up (a frame the peer refuses must not block the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from peerpower.crypto import KeyPair, parse_hex, verify_signature
from peerpower.errors import InvalidInput, PeerpowerError

log = logging.getLogger("peerpower.net.tcp")

HANDSHAKE_DOMAIN = b"peerpower/handshake/1\x00"
MAX_FRAME = 32 * 1024 * 1024
QUEUE_LIMIT = 10_000
HANDSHAKE_TIMEOUT_S = 5.0
# Handshake messages are a few hundred bytes; a stranger gets no more than this.
HANDSHAKE_MAX_FRAME = 4096
# The dialler writes queued frames in batches of about this many bytes before waiting for the
# socket to drain: one system call for many small consensus messages.
BATCH_BYTES = 256 * 1024
# How long closing a socket may wait to flush what is buffered before the socket is aborted.
CLOSE_TIMEOUT_S = 1.0
_HEADER = 4
_CHALLENGE_BYTES = 32

STAT_NAMES = (
    "frames_sent",
    "frames_received",
    "bytes_sent",
    "bytes_received",
    "dropped_queue_full",
    "rejected_handshakes",
    "oversized_frames",
)


class TransportError(PeerpowerError):
    """A transport is misconfigured or misused (unknown peer, message above ``max_frame``)."""


class _Refused(Exception):
    """The other end broke the protocol; the message says how. Closes that connection."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A validator to connect to: its id, where it listens, and its Ed25519 public key."""

    id: str
    host: str
    port: int
    public: bytes


def encode_frame(obj: Any) -> bytes:
    """The frame of ``obj``: 4-byte big-endian length, then its compact JSON as UTF-8."""
    payload = json.dumps(obj, separators=(",", ":")).encode()
    return len(payload).to_bytes(_HEADER, "big") + payload


def _signed_bytes(chain: str, verifier: str, signer: str, challenge: str) -> bytes:
    """What ``signer`` signs to prove itself to ``verifier``, who sent ``challenge``."""
    return json.dumps([chain, verifier, signer, challenge], separators=(",", ":")).encode()


async def _read_payload(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The payload of the next frame, or None when its announced length is above ``limit``
    (then nothing more is read)."""
    size = int.from_bytes(await reader.readexactly(_HEADER), "big")
    if size > limit:
        return None
    return await reader.readexactly(size)


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise _Refused(f"frame is not UTF-8 JSON ({type(err).__name__})") from None


async def _read_handshake(reader: asyncio.StreamReader) -> dict[str, Any]:
    payload = await _read_payload(reader, HANDSHAKE_MAX_FRAME)
    if payload is None:
        raise _Refused(f"handshake frame above {HANDSHAKE_MAX_FRAME} bytes")
    obj = _decode(payload)
    if type(obj) is not dict:
        raise _Refused(f"handshake message is not a JSON object: {payload[:80]!r}")
    return obj


def _text(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if type(value) is not str:
        raise _Refused(f"handshake field {key!r} must be a string, got {value!r:.80}")
    return value


def _hex(msg: dict[str, Any], key: str, length: int) -> bytes:
    try:
        return parse_hex(msg.get(key), length, key)
    except InvalidInput as err:
        raise _Refused(f"handshake field {err}"[:200]) from None


async def _write(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write(encode_frame(obj))
    await writer.drain()


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    # Consensus messages are small and latency-bound: never hold them back (Nagle).
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _shut(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket: flush briefly, then abort, so no socket outlives its task
    (an unflushed socket left to the garbage collector warns "unclosed transport")."""
    try:
        writer.close()
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except Exception:  # the connection failing as it closes is no news
        pass
    finally:
        writer.transport.abort()  # does nothing when the socket is already closed


async def _finish(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it is done, marking any exception as seen."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()


class TcpTransport:
    """Authenticated framed TCP connections from one validator to its peers (see the module
    notes).

    Parameters
    ----------
    me
        This validator's id; a peer with this id in ``peers`` is skipped, so every node can be
        given the same list.
    key
        This validator's key pair; peers know its public key.
    chain_id
        Both ends of a connection must be on the same chain.
    host, port
        Where to listen. ``port=0`` picks a free port; :attr:`port` holds it after
        :meth:`start`.
    peers
        The other validators, with the public keys they must prove they hold.
    on_message
        ``on_message(sender_id, obj)``, called on the event loop for every message received, in
        arrival order per connection. An exception it raises is logged and the message skipped.
    max_frame
        Largest payload, in bytes, sent or accepted.
    queue_limit
        Frames waiting per peer before new ones are dropped.
    retry_s
        First and longest wait, in seconds, between attempts to dial a peer.
    handshake_timeout
        Seconds a connection may take to connect and authenticate.

    Attributes
    ----------
    stats
        Counters: ``frames_sent``, ``frames_received``, ``bytes_sent``, ``bytes_received``
        (message frames only, 4-byte headers included; sent means handed to the kernel),
        ``dropped_queue_full``, ``rejected_handshakes`` (connections this node refused or gave
        up on during the handshake, either direction) and ``oversized_frames``.
    """

    def __init__(
        self,
        me: str,
        key: KeyPair,
        chain_id: str,
        host: str,
        port: int,
        peers: Sequence[Peer],
        on_message: Callable[[str, Any], None],
        *,
        max_frame: int = MAX_FRAME,
        queue_limit: int = QUEUE_LIMIT,
        retry_s: tuple[float, float] = (0.05, 2.0),
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        if not 0 < max_frame < 2 ** (8 * _HEADER):
            raise TransportError(f"max_frame must be from 1 to 2**32 - 1 bytes, got {max_frame}")
        if queue_limit < 1:
            raise TransportError(f"queue_limit must be at least 1, got {queue_limit}")
        if not 0 < retry_s[0] <= retry_s[1]:
            raise TransportError(
                f"retry_s must be (first, longest) with 0 < first <= longest, got {retry_s!r}"
            )
        if not 0 <= port < 65536:
            raise TransportError(f"port must be from 0 to 65535, got {port}")
        self.me = me
        self.key = key
        self.chain_id = chain_id
        self.host = host
        self.port = port
        self.max_frame = max_frame
        self._on_message = on_message
        self._retry_s = retry_s
        self._handshake_timeout = handshake_timeout
        self._peers: dict[str, Peer] = {}
        for peer in peers:
            if peer.id == me:
                continue
            if peer.id in self._peers:
                raise TransportError(f"peer {peer.id!r} is listed twice")
            if len(peer.public) != 32:
                raise TransportError(
                    f"peer {peer.id!r}: a public key is 32 bytes, got {len(peer.public)}"
                )
            self._peers[peer.id] = peer
        self._queues: dict[str, asyncio.Queue[bytes]] = {
            pid: asyncio.Queue(queue_limit) for pid in self._peers
        }
        # Frames taken from a peer's queue and not yet known to be written, and on how many
        # connections they have been written so far.
        self._inflight: dict[str, list[bytes]] = {pid: [] for pid in self._peers}
        self._attempts: dict[str, int] = dict.fromkeys(self._peers, 0)
        self._outbound: set[str] = set()
        self._inbound: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closed = False
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # -- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` and begin dialling every peer (in background tasks)."""
        if self._closed or self._server is not None:
            raise TransportError(f"{self.me}: start() on a transport already started or closed")
        self._server = await asyncio.start_server(self._accepted, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        for peer in self._peers.values():
            self._spawn(self._dial(peer))

    def send(self, to: str, obj: Any) -> None:
        """Queue ``obj`` (any JSON value) for peer ``to``; never blocks. After :meth:`close`
        this does nothing.

        Raises
        ------
        TransportError
            ``to`` is not a peer, or the encoded ``obj`` is larger than ``max_frame``.
        TypeError, ValueError
            ``obj`` cannot be encoded as JSON.
        """
        if to not in self._queues:
            raise TransportError(f"{self.me}: send to {to!r}, which is not a peer")
        self._enqueue(to, self._frame(obj))

    def broadcast(self, obj: Any) -> None:
        """:meth:`send` ``obj`` to every peer (encoded once)."""
        frame = self._frame(obj)
        for pid in self._queues:
            self._enqueue(pid, frame)

    def connected(self) -> list[str]:
        """Ids of the peers with an authenticated connection in either direction, sorted."""
        return sorted(self._outbound | self._inbound.keys())

    async def close(self) -> None:
        """Stop listening, stop dialling and close every connection. Queued messages are
        dropped. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # A connection accepted while the tasks finish starts no new task (see _accepted).
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- internals --------------------------------------------------------------------------

    def _frame(self, obj: Any) -> bytes:
        frame = encode_frame(obj)
        if len(frame) - _HEADER > self.max_frame:
            raise TransportError(
                f"{self.me}: a message of {len(frame) - _HEADER} bytes is above max_frame "
                f"{self.max_frame}"
            )
        return frame

    def _enqueue(self, to: str, frame: bytes) -> None:
        if self._closed:
            return
        try:
            self._queues[to].put_nowait(frame)
        except asyncio.QueueFull:
            self.stats["dropped_queue_full"] += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _refused(self, where: str, reason: object) -> None:
        self.stats["rejected_handshakes"] += 1
        log.debug("%s: handshake %s refused: %s", self.me, where, reason)

    # Sending side: one task per peer dials, authenticates and drains the queue.

    async def _dial(self, peer: Peer) -> None:
        delay = self._retry_s[0]
        where = f"with {peer.id} at {peer.host}:{peer.port}"
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                try:
                    async with asyncio.timeout(self._handshake_timeout):
                        reader, writer = await asyncio.open_connection(peer.host, peer.port)
                        _set_nodelay(writer)
                        await self._handshake_as_dialler(peer, reader, writer)
                except _Refused as err:
                    self._refused(where, err)
                except TimeoutError:  # before OSError: TimeoutError is one
                    if writer is None:
                        log.debug("%s: connecting to %s timed out", self.me, peer.id)
                    else:
                        self._refused(where, "timed out")
                except (OSError, asyncio.IncompleteReadError) as err:
                    log.debug("%s: cannot connect %s: %r", self.me, where, err)
                else:
                    assert writer is not None
                    delay = self._retry_s[0]
                    log.debug("%s: connected %s", self.me, where)
                    self._outbound.add(peer.id)
                    try:
                        await self._pump(peer.id, reader, writer)
                    except (OSError, _Refused) as err:
                        log.debug("%s: connection %s lost: %r", self.me, where, err)
                    finally:
                        self._outbound.discard(peer.id)
                        if self._inflight[peer.id] and self._attempts[peer.id] >= 2:
                            self._inflight[peer.id].clear()
            except Exception:  # a bug: log it, keep the transport alive
                log.exception("%s: unexpected error %s", self.me, where)
            finally:
                if writer is not None:
                    await _shut(writer)
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._retry_s[1])

    async def _handshake_as_dialler(
        self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hello = await _read_handshake(reader)
        chain = _text(hello, "chain")
        if chain != self.chain_id:
            raise _Refused(f"listener is on chain {chain!r:.80}, not {self.chain_id!r}")
        listener = _text(hello, "id")
        if listener != peer.id:
            raise _Refused(f"listener says it is {listener!r:.80}, not {peer.id!r}")
        _hex(hello, "challenge", 2 * _CHALLENGE_BYTES)
        theirs: str = hello["challenge"]
        mine = secrets.token_hex(_CHALLENGE_BYTES)
        sig = self.key.sign(HANDSHAKE_DOMAIN, _signed_bytes(chain, peer.id, self.me, theirs))
        await _write(writer, {"chain": chain, "id": self.me, "challenge": mine, "sig": sig.hex()})
        reply = await _read_handshake(reader)
        their_sig = _hex(reply, "sig", 128)
        signed = _signed_bytes(chain, self.me, peer.id, mine)
        if not verify_signature(peer.public, HANDSHAKE_DOMAIN, signed, their_sig):
            raise _Refused(f"listener's signature is not by {peer.id!r}'s key")

    async def _pump(
        self, pid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write ``pid``'s queued frames to ``writer`` until the connection ends."""
        queue = self._queues[pid]
        batch = self._inflight[pid]
        # The listener sends nothing after the handshake: data or end of stream means it is gone.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            while not gone.done():
                if not batch:
                    if queue.empty():
                        getter = asyncio.ensure_future(queue.get())
                        try:
                            await asyncio.wait((getter, gone), return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            # Queue.get is cancel-safe: an item not yet taken stays queued.
                            await _finish(getter)
                        if getter.cancelled():
                            continue
                        batch.append(getter.result())
                        self._attempts[pid] = 0
                        if gone.done():  # keep it for the next connection
                            break
                    size = sum(map(len, batch))
                    while size < BATCH_BYTES and not queue.empty():
                        frame = queue.get_nowait()
                        batch.append(frame)
                        size += len(frame)
                    self._attempts[pid] = 0
                # A batch left over from a failed connection is written here a second time.
                self._attempts[pid] += 1
                writer.writelines(batch)
                await writer.drain()
                self.stats["frames_sent"] += len(batch)
                self.stats["bytes_sent"] += sum(map(len, batch))
                batch.clear()
        finally:
            await _finish(gone)
        if gone.exception() is None and gone.result():
            raise _Refused(f"{pid} sent data on a connection that only receives")

    # Receiving side: one task per accepted connection authenticates it and reads frames.

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine, so that the task is ours to track and cancel.
        if self._closed:
            writer.transport.abort()
            return
        self._spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        where = f"from {writer.get_extra_info('peername')}"
        pid: str | None = None
        try:
            _set_nodelay(writer)
            try:
                async with asyncio.timeout(self._handshake_timeout):
                    pid = await self._handshake_as_listener(reader, writer)
            except _Refused as err:
                self._refused(where, err)
                return
            except TimeoutError:
                self._refused(where, "timed out")
                return
            except (OSError, asyncio.IncompleteReadError) as err:
                log.debug("%s: connection %s lost during the handshake: %r", self.me, where, err)
                return
            assert this is not None
            old = self._inbound.get(pid)
            self._inbound[pid] = this
            if old is not None:
                log.debug("%s: new connection from %s replaces the old one", self.me, pid)
                old.cancel()
            await self._receive(pid, reader)
        except (OSError, asyncio.IncompleteReadError) as err:
            log.debug("%s: connection from %s ended: %r", self.me, pid, err)
        except _Refused as err:
            log.debug("%s: closing connection from %s: %s", self.me, pid, err)
        except Exception:
            log.exception("%s: unexpected error on a connection %s", self.me, where)
        finally:
            if pid is not None and self._inbound.get(pid) is this:
                del self._inbound[pid]
            await _shut(writer)

    async def _handshake_as_listener(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        mine = secrets.token_hex(_CHALLENGE_BYTES)
        await _write(writer, {"chain": self.chain_id, "id": self.me, "challenge": mine})
        hello = await _read_handshake(reader)
        chain = _text(hello, "chain")
        if chain != self.chain_id:
            raise _Refused(f"dialler is on chain {chain!r:.80}, not {self.chain_id!r}")
        pid = _text(hello, "id")
        peer = self._peers.get(pid)
        if peer is None:
            raise _Refused(f"dialler says it is {pid!r:.80}, which is not a peer")
        _hex(hello, "challenge", 2 * _CHALLENGE_BYTES)
        theirs: str = hello["challenge"]
        sig = _hex(hello, "sig", 128)
        signed = _signed_bytes(chain, self.me, pid, mine)
        if not verify_signature(peer.public, HANDSHAKE_DOMAIN, signed, sig):
            raise _Refused(f"dialler's signature is not by {pid!r}'s key")
        mine_sig = self.key.sign(HANDSHAKE_DOMAIN, _signed_bytes(chain, pid, self.me, theirs))
        await _write(writer, {"sig": mine_sig.hex()})
        return pid

    async def _receive(self, pid: str, reader: asyncio.StreamReader) -> None:
        """Deliver ``pid``'s frames until the connection ends or breaks the protocol."""
        while True:
            payload = await _read_payload(reader, self.max_frame)
            if payload is None:
                self.stats["oversized_frames"] += 1
                raise _Refused(f"frame announced above max_frame {self.max_frame}")
            obj = _decode(payload)
            self.stats["frames_received"] += 1
            self.stats["bytes_received"] += _HEADER + len(payload)
            try:
                self._on_message(pid, obj)
            except Exception:  # the application's bug must not cut the peer off
                log.exception("%s: on_message failed on a message from %s", self.me, pid)
