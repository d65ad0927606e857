"""The TCP transport: delivery, order, large frames, reconnecting, authentication, garbage.

Every test runs its own event loop (``asyncio.run``) on 127.0.0.1. The protocol is also spoken
by hand here (raw clients and a raw listener), so these tests pin the wire format, not only the
transport's agreement with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import socket
import struct
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from peerpower.crypto import KeyPair, verify_signature
from peerpower.net.tcp import HANDSHAKE_DOMAIN, Peer, TcpTransport, TransportError

CHAIN = "peerpower-test"
HOST = "127.0.0.1"
FAST = (0.01, 0.1)  # retry_s: tests reconnect quickly


def key(i: int) -> KeyPair:
    return KeyPair.derive(f"test/val{i}")


def free_ports(n: int) -> list[int]:
    """``n`` ports free right now (bound together, so distinct, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def peers_on(ports: list[int]) -> list[Peer]:
    return [Peer(f"val{i}", HOST, port, key(i).public) for i, port in enumerate(ports)]


class Node:
    """A transport for ``val{i}`` that records what it receives."""

    def __init__(self, i: int, port: int, peers: list[Peer], **options: Any) -> None:
        self.got: list[tuple[str, Any]] = []
        options.setdefault("retry_s", FAST)
        self.t = TcpTransport(
            f"val{i}", key(i), CHAIN, HOST, port, peers, self._on_message, **options
        )

    def _on_message(self, sender: str, obj: Any) -> None:
        self.got.append((sender, obj))


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(15):  # a hang fails the test instead of the whole run
            await main()

    asyncio.run(guarded())


# -- the protocol by hand ---------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def jframe(obj: Any) -> bytes:
    return frame(json.dumps(obj, separators=(",", ":")).encode())


async def read_json(reader: asyncio.StreamReader) -> Any:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return json.loads(await reader.readexactly(size))


def signed(chain: str, verifier: str, signer: str, challenge: str) -> bytes:
    return json.dumps([chain, verifier, signer, challenge], separators=(",", ":")).encode()


async def raw_dial(
    port: int, claim: str, signer: KeyPair, chain: str = CHAIN
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Connect to ``port`` and send the dialler's half of the handshake as ``claim``, signed
    by ``signer``; return the reader, the writer and the challenge sent."""
    reader, writer = await asyncio.open_connection(HOST, port)
    hello = await read_json(reader)
    assert set(hello) == {"chain", "id", "challenge"}
    assert hello["chain"] == CHAIN
    assert len(bytes.fromhex(hello["challenge"])) == 32
    mine = os.urandom(32).hex()
    sig = signer.sign(HANDSHAKE_DOMAIN, signed(chain, hello["id"], claim, hello["challenge"]))
    writer.write(jframe({"chain": chain, "id": claim, "challenge": mine, "sig": sig.hex()}))
    await writer.drain()
    return reader, writer, mine


async def closed_by_other_end(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True when the other end closes the connection within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def started(*nodes: Node) -> None:
    for n in nodes:
        await n.t.start()


async def closed(*nodes: Node) -> None:
    for n in nodes:
        await n.t.close()


# -- delivery ---------------------------------------------------------------------------------


def test_mesh_broadcast_reaches_each_other_node_once() -> None:
    async def main() -> None:
        ports = free_ports(4)
        peers = peers_on(ports)
        nodes = [Node(i, ports[i], peers) for i in range(4)]
        await started(*nodes)
        try:
            for i, n in enumerate(nodes):
                n.t.broadcast({"from": i, "text": f"hello from {i}"})
            await until(lambda: all(len(n.got) == 3 for n in nodes), "3 messages each")
            await until(lambda: all(len(n.t.connected()) == 3 for n in nodes), "full mesh")
            await asyncio.sleep(0.1)  # room for a stray duplicate to show up
            for i, n in enumerate(nodes):
                others = [j for j in range(4) if j != i]
                assert sorted(n.got, key=lambda g: g[0]) == [
                    (f"val{j}", {"from": j, "text": f"hello from {j}"}) for j in others
                ]
                assert n.t.connected() == [f"val{j}" for j in others]
                assert n.t.stats["frames_sent"] == 3
                assert n.t.stats["frames_received"] == 3
                assert n.t.stats["rejected_handshakes"] == 0
        finally:
            await closed(*nodes)

    run(main)


def test_ordering_thousand_messages_arrive_in_order() -> None:
    async def main() -> None:
        ports = free_ports(2)
        a, b = (Node(i, ports[i], peers_on(ports)) for i in range(2))
        await started(a, b)
        try:
            for k in range(1000):
                a.t.send("val1", {"n": k, "pad": "x" * (k % 50)})
            await until(lambda: len(b.got) >= 1000, "1000 messages")
            assert [obj["n"] for _, obj in b.got] == list(range(1000))
            assert {sender for sender, _ in b.got} == {"val0"}
            assert a.t.stats["frames_sent"] == 1000
            assert a.t.stats["bytes_sent"] == b.t.stats["bytes_received"]
            assert a.t.stats["dropped_queue_full"] == 0
        finally:
            await closed(a, b)

    run(main)


def test_large_frame_arrives_intact() -> None:
    async def main() -> None:
        ports = free_ports(2)
        a, b = (Node(i, ports[i], peers_on(ports)) for i in range(2))
        await started(a, b)
        try:
            big = "".join(random.Random(1).choices("abcdefgh\u00e9\u20ac", k=5_000_000))
            a.t.send("val1", [big, 1])
            a.t.send("val1", "after")
            await until(lambda: len(b.got) == 2, "the large frame", timeout=10)
            assert b.got[0] == ("val0", [big, 1])
            assert b.got[1] == ("val0", "after")
        finally:
            await closed(a, b)

    run(main)


def test_oversized_frame_closes_connection_and_is_not_delivered() -> None:
    async def main() -> None:
        ports = free_ports(2)
        a = Node(0, ports[0], peers_on(ports))
        b = Node(1, ports[1], peers_on(ports), max_frame=1000)
        await started(a, b)
        try:
            a.t.send("val1", "small")
            await until(lambda: len(b.got) == 1, "the small message")
            a.t.send("val1", "y" * 2000)  # allowed by a's max_frame, not by b's
            await until(lambda: b.t.stats["oversized_frames"] == 1, "the oversized frame")
            # a dials again; a message sent once it is back gets through
            k = 0
            while len(b.got) < 2:
                a.t.send("val1", f"ping {k}")
                k += 1
                await asyncio.sleep(0.02)
                assert k < 250, "a did not reconnect"
            assert all(len(json.dumps(obj)) < 100 for _, obj in b.got)
            assert b.t.stats["oversized_frames"] == 1
            assert b.t.stats["frames_received"] == len(b.got)
            # the sender refuses what is above its own limit
            with pytest.raises(TransportError, match="above max_frame"):
                b.t.send("val0", "z" * 1001)
            with pytest.raises(TransportError, match="not a peer"):
                b.t.send("val7", "hi")
        finally:
            await closed(a, b)

    run(main)


def test_reconnect_restarted_peer_gets_queued_and_later_messages() -> None:
    async def main() -> None:
        ports = free_ports(2)
        peers = peers_on(ports)
        a, b = Node(0, ports[0], peers), Node(1, ports[1], peers)
        await started(a, b)
        b2: Node | None = None
        try:
            a.t.send("val1", "before")
            await until(lambda: b.got == [("val0", "before")], "the first message")
            await b.t.close()
            await until(lambda: a.t.connected() == [], "a to notice b is gone")
            for k in range(5):
                a.t.send("val1", f"during {k}")
            await asyncio.sleep(0.1)  # a keeps dialling the closed port meanwhile
            b2 = Node(1, ports[1], peers)  # same id, same port, a new process in effect
            await b2.t.start()
            await until(lambda: len(b2.got) == 5, "the messages queued during the outage")
            a.t.send("val1", "after")
            await until(lambda: len(b2.got) == 6, "the message after")
            assert b2.got == [("val0", f"during {k}") for k in range(5)] + [("val0", "after")]
            b2.t.send("val0", "back")
            await until(lambda: a.got == [("val1", "back")], "b2 -> a")
            assert a.t.connected() == ["val1"]
            assert b.got == [("val0", "before")]
        finally:
            await closed(a, b)
            if b2 is not None:
                await b2.t.close()

    run(main)


def test_queued_before_peer_is_up_delivered_when_it_comes_up() -> None:
    async def main() -> None:
        ports = free_ports(2)
        peers = peers_on(ports)
        a, b = Node(0, ports[0], peers), Node(1, ports[1], peers)
        a.t.send("val1", "queued before a started")
        await a.t.start()
        try:
            for k in range(3):
                a.t.send("val1", k)
            await asyncio.sleep(0.2)  # several failed dials
            assert a.t.connected() == []
            await b.t.start()
            await until(lambda: len(b.got) == 4, "the queued messages")
            assert b.got == [("val0", m) for m in ["queued before a started", 0, 1, 2]]
        finally:
            await closed(a, b)

    run(main)


def test_queue_full_drops_new_messages_and_counts_them() -> None:
    async def main() -> None:
        ports = free_ports(2)
        peers = peers_on(ports)
        a, b = Node(0, ports[0], peers, queue_limit=10), Node(1, ports[1], peers)
        await a.t.start()
        try:
            for k in range(15):
                a.t.send("val1", k)
            assert a.t.stats["dropped_queue_full"] == 5
            await b.t.start()
            await until(lambda: len(b.got) == 10, "the 10 queued messages")
            await asyncio.sleep(0.05)
            assert [obj for _, obj in b.got] == list(range(10))
        finally:
            await closed(a, b)

    run(main)


# -- authentication ---------------------------------------------------------------------------


def listener_node(**options: Any) -> Node:
    """val0 listening on a free port; it knows val1 and val2 (whose ports are closed)."""
    ports = free_ports(3)
    return Node(0, 0, peers_on(ports), **options)


def test_handshake_honest_raw_dialler_is_accepted() -> None:
    async def main() -> None:
        node = listener_node()
        await node.t.start()
        try:
            reader, writer, mine = await raw_dial(node.t.port, "val1", key(1))
            reply = await read_json(reader)
            assert verify_signature(
                key(0).public,
                HANDSHAKE_DOMAIN,
                signed(CHAIN, "val1", "val0", mine),
                bytes.fromhex(reply["sig"]),
            )
            writer.write(jframe({"hello": [1, 2]}) + jframe(None))
            await writer.drain()
            await until(lambda: len(node.got) == 2, "the raw client's messages")
            assert node.got == [("val1", {"hello": [1, 2]}), ("val1", None)]
            assert node.t.connected() == ["val1"]
            await shut(writer)
            await until(lambda: node.t.connected() == [], "the connection to end")
            assert node.t.stats["rejected_handshakes"] == 0
        finally:
            await node.t.close()

    run(main)


@pytest.mark.parametrize(
    ("claim", "signer", "chain"),
    [
        ("val1", KeyPair.derive("test/impostor"), CHAIN),  # wrong key for the id
        ("val1", key(2), CHAIN),  # another peer's key
        ("val9", key(9), CHAIN),  # unknown id
        ("val0", key(0), CHAIN),  # the listener's own id
        ("val1", key(1), "another-chain"),  # wrong chain
    ],
)
def test_handshake_bad_dialler_is_rejected(claim: str, signer: KeyPair, chain: str) -> None:
    async def main() -> None:
        node = listener_node()
        await node.t.start()
        try:
            reader, writer, _ = await raw_dial(node.t.port, claim, signer, chain)
            try:
                writer.write(jframe("let me in"))
                await writer.drain()
            except ConnectionError:
                pass
            assert await closed_by_other_end(reader)
            await shut(writer)
            assert node.t.stats["rejected_handshakes"] == 1
            assert node.got == []
            assert node.t.connected() == []
        finally:
            await node.t.close()

    run(main)


async def fake_listener(
    ident: str, signer: KeyPair, chain: str, hellos: list[Any], frames: list[Any]
) -> tuple[asyncio.Server, int]:
    """A listener speaking the protocol by hand as ``ident`` (signing with ``signer``); it
    appends to ``hellos`` the dialler's handshake messages and to ``frames`` every message
    frame received after the handshake."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            mine = os.urandom(32).hex()
            writer.write(jframe({"chain": chain, "id": ident, "challenge": mine}))
            hello = await read_json(reader)
            hellos.append(hello)
            sig = signer.sign(
                HANDSHAKE_DOMAIN, signed(chain, hello["id"], ident, hello["challenge"])
            )
            writer.write(jframe({"sig": sig.hex()}))
            while True:
                frames.append(await read_json(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("ident", "signer", "chain", "outcome"),
    [
        ("val1", key(1), CHAIN, "accepted"),  # honest: the fake listener itself is right
        ("val1", KeyPair.derive("test/impostor"), CHAIN, "bad signature"),
        ("val2", key(2), CHAIN, "refused at once"),  # not the peer dialled
        ("val1", key(1), "another-chain", "refused at once"),
    ],
)
def test_handshake_dialler_checks_listener(
    ident: str, signer: KeyPair, chain: str, outcome: str
) -> None:
    async def main() -> None:
        hellos: list[Any] = []
        frames: list[Any] = []
        server, port = await fake_listener(ident, signer, chain, hellos, frames)
        node = Node(0, 0, [Peer("val1", HOST, port, key(1).public)])
        node.t.send("val1", "for val1 only")
        await node.t.start()
        try:
            if outcome == "accepted":
                await until(lambda: frames == ["for val1 only"], "the message")
                assert node.t.connected() == ["val1"]
                assert node.t.stats["rejected_handshakes"] == 0
                assert [h["id"] for h in hellos] == ["val0"]
            else:
                await until(lambda: node.t.stats["rejected_handshakes"] >= 2, "rejections")
                assert frames == []
                assert "val1" not in node.t.connected()
                # a listener that is not the one dialled never gets the dialler's signature
                assert (hellos == []) == (outcome == "refused at once")
        finally:
            await node.t.close()
            server.close()
            await server.wait_closed()

    run(main)


# -- garbage ----------------------------------------------------------------------------------


def test_garbage_clients_disconnected_and_honest_peers_unaffected() -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = peers_on(ports)
        node = Node(0, ports[0], peers, handshake_timeout=1.0, max_frame=10_000)
        honest = Node(1, ports[1], peers)
        await started(node, honest)
        try:
            honest.t.send("val0", "first")
            await until(lambda: node.got == [("val1", "first")], "the honest peer's message")

            async def garbage(data: bytes) -> bool:
                reader, writer = await asyncio.open_connection(HOST, node.t.port)
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:
                    pass
                gone = await closed_by_other_end(reader)
                await shut(writer)
                return gone

            rng = random.Random(5)
            assert await garbage(rng.randbytes(300))  # random bytes
            assert await garbage(frame(b"\xff\xfenot json {"))  # not UTF-8, not JSON
            assert await garbage(frame(b"[1, 2, 3]"))  # JSON but not a handshake message
            assert await garbage(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)  # huge length
            assert await garbage(b"")  # says nothing: closed at the handshake timeout
            assert node.t.stats["rejected_handshakes"] == 5

            # authenticated, then garbage: not JSON, deeply nested, oversized
            async def after_handshake(data: bytes) -> bool:
                reader, writer, _ = await raw_dial(node.t.port, "val2", key(2))
                await read_json(reader)
                writer.write(jframe("valid first") + data)
                await writer.drain()
                gone = await closed_by_other_end(reader)
                await shut(writer)
                return gone

            assert await after_handshake(frame(b"\x80\x81 not utf-8"))
            assert await after_handshake(frame(b"{not json}"))
            assert await after_handshake(frame(b"[" * 5000 + b"]" * 5000))
            assert await after_handshake(struct.pack(">I", 10_001) + b"x" * 10_001)
            assert node.t.stats["oversized_frames"] == 1
            assert [m for s, m in node.got if s == "val2"] == ["valid first"] * 4

            # the node still works both ways
            honest.t.send("val0", "second")
            node.t.send("val1", "reply")
            await until(lambda: node.got[-1] == ("val1", "second"), "honest -> node")
            await until(lambda: honest.got == [("val0", "reply")], "node -> honest")
            assert node.t.connected() == ["val1"]
        finally:
            await closed(node, honest)

    run(main)


def test_replacing_connection_second_inbound_from_same_peer_wins() -> None:
    async def main() -> None:
        node = listener_node()
        await node.t.start()
        try:
            r1, w1, _ = await raw_dial(node.t.port, "val1", key(1))
            await read_json(r1)
            r2, w2, _ = await raw_dial(node.t.port, "val1", key(1))
            await read_json(r2)
            assert await closed_by_other_end(r1)  # the old connection is closed
            w2.write(jframe("on the new one"))
            await w2.drain()
            await until(lambda: node.got == [("val1", "on the new one")], "the message")
            assert node.t.connected() == ["val1"]
            await shut(w1)
            await shut(w2)
        finally:
            await node.t.close()

    run(main)


# -- closing ----------------------------------------------------------------------------------


def test_close_twice_leaves_no_tasks_sockets_or_warnings(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = peers_on(ports)  # val2 never comes up: a's dialler for it is backing off
        a, b = Node(0, ports[0], peers), Node(1, ports[1], peers)
        never = Node(2, ports[2], peers)
        await never.t.close()  # closing a transport never started is fine too
        await started(a, b)
        a.t.broadcast("x" * 3_000_000)  # in flight while closing
        a.t.send("val1", "y")
        await asyncio.sleep(0.01)
        await a.t.close()
        await a.t.close()
        await b.t.close()
        await b.t.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        a.t.send("val1", "after close: ignored")
        assert a.t.connected() == [] and b.t.connected() == []
        with pytest.raises(TransportError):
            await a.t.start()

    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main)
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_send_to_unknown_peer_and_bad_config_raise() -> None:
    with pytest.raises(TransportError, match="listed twice"):
        TcpTransport("val0", key(0), CHAIN, HOST, 0, peers_on([1, 2]) * 2, print)
    with pytest.raises(TransportError, match="retry_s"):
        TcpTransport("val0", key(0), CHAIN, HOST, 0, [], print, retry_s=(1.0, 0.5))
    t = TcpTransport("val0", key(0), CHAIN, HOST, 0, peers_on([1, 2]), print)
    with pytest.raises(TransportError, match="not a peer"):
        t.send("val0", "to myself")  # the own entry in the peer list is skipped
    with pytest.raises(TypeError):
        t.send("val1", {1.5j})
