"""``peerpower bench api``: signed orders a second through the HTTP API into a mempool.

The server is the API as a node serves it: :func:`peerpower.api.app.create_app` (its per-signer
rate limit on: 200 a second, bursts of 400) over :class:`peerpower.api.exchange.Exchange`
fronting validator ``val0`` of a 4-validator chain (a :class:`peerpower.consensus.ledger_app.
LedgerApp`), in uvicorn with one worker (httptools and uvloop when installed, no access log),
in a child process of its own on 127.0.0.1. Before it serves, block 1 — the operator
registering ``accounts`` participants and funding each — is committed with a quorum (3) of
commit signatures, and the validator's clock is set to a time when the slots ordered are open.

The client is this process: every order is signed before timing (signing is the client's
work) and written into its HTTP/1.1 request; then ``connections`` keep-alive connections, all
open before the clock starts, each send their next order and wait for its answer (a bounded
loop: at most ``connections`` requests in flight), over asyncio streams on uvloop. Each
connection carries the orders of its own accounts, in nonce order, so every order is valid
when it arrives. Only ``202`` naming the order's transaction id counts as accepted; any other
answer makes the run invalid. Afterwards ``GET /status`` must show exactly the accepted orders
waiting in the mempool at height 1, and the first and last order must be ``pending`` under
``GET /transactions/{id}``. Nothing drains the mempool (no blocks are made) nor the
validator's outbox (one small relay message per order, referring to the order already held).
The server's CPU time per request is read from ``/proc`` (Linux).

Beside it, in the same run, the ceiling of the HTTP stack: the same loop posting the same
bodies to a path the bench server answers as the API answers ``/tx`` (uvicorn, the same ASGI
layers, the body read) with a fixed ``202`` of the same size: everything but the JSON parsing,
rate limit, decoding, signature check and rules. Target: 2,000 accepted orders a second or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from peerpower.api.app import create_app
from peerpower.api.exchange import Exchange
from peerpower.consensus.ledger_app import LedgerApp
from peerpower.crypto import KeyPair, canonical_unchecked, sha256
from peerpower.errors import InvalidInput
from peerpower.ledger.blocks import quorum, sign_commit
from peerpower.ledger.genesis import Genesis, GenesisAccount
from peerpower.ledger.mempool import MEMPOOL_LIMIT
from peerpower.ledger.rules import from_ms, to_ms
from peerpower.ledger.transactions import Signer, sign_bodies
from peerpower.timeslots import JST, slot_of

TARGET_ORDERS_PER_SECOND = 2000
VALIDATORS = ("val0", "val1", "val2", "val3")
SERVING = "val0"  # the validator the API fronts
T0 = to_ms(datetime(2026, 11, 20, 12, 0, tzinfo=JST))  # genesis
NOW = T0 + 60_000  # the validator's clock while orders arrive
SLOTS = 40  # orders go to slots 2 h to 21.5 h ahead of NOW: open, far from their gates
DEPOSIT_MICROYEN = 10**12
SINK = "/bench/sink"  # the bench server's route for the ceiling of the HTTP stack
START_TIMEOUT_S = 120.0


class BenchFailed(RuntimeError):
    """The run is invalid: an order was refused, or the mempool does not hold the orders."""


def _key(name: str) -> KeyPair:
    return KeyPair.derive(f"bench-api/{name}")


def account_name(k: int) -> str:
    return f"site{k:05d}"


def check_flags(orders: int, connections: int, accounts: int) -> None:
    """Raise ``InvalidInput`` naming the first flag out of range."""
    if not 1 <= orders <= MEMPOOL_LIMIT:
        raise InvalidInput(
            "orders", f"must be 1–{MEMPOOL_LIMIT} (the mempool's limit), got {orders}"
        )
    if not 1 <= accounts <= 100_000:
        raise InvalidInput("accounts", f"must be 1–100000, got {accounts}")
    if not 1 <= connections <= min(1024, accounts):
        raise InvalidInput(
            "connections",
            f"must be 1–{min(1024, accounts)} (each connection sends its own accounts' orders, "
            f"so at most --accounts), got {connections}",
        )


def build_genesis(accounts: int) -> Genesis:
    """The bench chain: an operator holding every deposit, grid, retail, four validators."""
    founding = (
        GenesisAccount(
            "operator", "operator", _key("operator").public_hex, DEPOSIT_MICROYEN * (accounts + 1)
        ),
        GenesisAccount("grid", "grid", _key("grid").public_hex),
        GenesisAccount("retail", "retail", _key("retail").public_hex),
        *(GenesisAccount(v, "validator", _key(v).public_hex) for v in VALIDATORS),
    )
    return Genesis("bench-api", T0, founding)


def build_exchange(accounts: int) -> Exchange:
    """The server's side: ``SERVING``'s ledger with block 1 (``accounts`` participants
    registered and funded) committed, its clock at :data:`NOW`, behind an ``Exchange``."""
    genesis = build_genesis(accounts)
    app = LedgerApp(genesis, SERVING, _key(SERVING))
    app.now_ms = T0 + 1000
    op = Signer(genesis.tx_chain, "operator", _key("operator"))
    for k in range(accounts):
        name, public = account_name(k), _key(account_name(k)).public_hex
        app.submit(op.register(name, public, public, "root", "pv"))
        app.submit(op.deposit(name, DEPOSIT_MICROYEN))
    _, block = app.propose(1, 0)
    commit = tuple(
        sign_commit(_key(v), v, block.hash) for v in VALIDATORS[: quorum(len(VALIDATORS))]
    )
    app.accept(block.with_commit(commit))
    if app.waiting() or app.state.height != 1:
        raise BenchFailed("block 1 did not take every registration and deposit")
    app.outbox.clear()
    app.now_ms = NOW
    return Exchange(app, lambda: app.now_ms)


# -- the server (a child process) -------------------------------------------------------------
class Sink:
    """Answers ``POST`` :data:`SINK` as the API answers ``POST /tx`` — the same layers, the
    body read — with a fixed ``202`` of the same size: the ceiling of the HTTP stack."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SINK or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        answer = {"accepted": True, "id": "0" * 64, "type": "order", "sender": "site00000"}
        await JSONResponse({**answer, "nonce": size}, status_code=202)(scope, receive, send)


def _serve(fd: int, accounts: int) -> None:
    """Serve the bench exchange on the listening socket ``fd`` until SIGTERM."""
    import importlib.util

    import uvicorn

    app = create_app(build_exchange(accounts))
    # innermost of the app's own layers, after the one that answers /tx
    app.user_middleware.append(Middleware(Sink))

    fast = {m: importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools")}
    config = uvicorn.Config(
        app,
        loop="uvloop" if fast["uvloop"] else "asyncio",
        http="httptools" if fast["httptools"] else "h11",
        workers=1,
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
    sock = socket.socket(fileno=fd)
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def _server(accounts: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The bench server in a child process on a port of 127.0.0.1 (the listening socket is
    made here and handed over, so the port is never free in between); yields the port and the
    process, which is stopped on leaving."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    src = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=src if not path else f"{src}{os.pathsep}{path}")
    fd = listener.fileno()
    command = [sys.executable, "-m", "peerpower.bench_api", "--serve-fd", str(fd)]
    command += ["--accounts", str(accounts)]
    proc = subprocess.Popen(command, env=env, pass_fds=(fd,), stdout=subprocess.DEVNULL)
    listener.close()  # the child holds its own copy
    try:
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the client -------------------------------------------------------------------------------
def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode("ascii") + b"\r\n" + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length body: (status, body)."""
    status_line = await reader.readline()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise BenchFailed(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    length = -1
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise BenchFailed(f"a {value.strip().decode()} response: the client reads lengths")
    if length < 0:
        raise BenchFailed(f"a response ({status}) without Content-Length")
    return status, await reader.readexactly(length)


@dataclass(slots=True)
class Loop:
    """What one bounded loop measured."""

    sent: int
    statuses: Counter[int]
    seconds: float
    latencies_ns: list[int]
    wrong_ids: int
    refusals: list[bytes]
    server_cpu_s: float = float("nan")  # the server process's CPU time during the loop

    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    def rate(self) -> float:
        return self.accepted() / self.seconds if self.seconds > 0 else 0.0

    def server_us(self) -> float:
        """The server's CPU time per request [µs]."""
        return self.server_cpu_s / self.sent * 1e6 if self.sent else float("nan")

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def _cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` [s] (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _loop(
    port: int,
    queues: Sequence[Sequence[bytes]],
    ids: Sequence[Sequence[bytes]] | None,
    server_pid: int,
) -> Loop:
    """Each queue on a keep-alive connection of its own, one request at a time, all
    connections at once; ``ids``: the transaction id each 202 must name."""
    statuses: Counter[int] = Counter()
    latencies: list[int] = []
    wrong = [0]
    refusals: list[bytes] = []
    clock = time.perf_counter_ns

    async def one(k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        want = None if ids is None else ids[k]
        for i, request in enumerate(queues[k]):
            t = clock()
            writer.write(request)
            status, body = await _answer(reader)
            latencies.append(clock() - t)
            statuses[status] += 1
            if status != 202:
                if len(refusals) < 5:
                    refusals.append(body[:400])
            elif want is not None and want[i] not in body:
                wrong[0] += 1

    # every connection is open before the clock starts: the timed part is requests only
    streams = []
    try:
        for _ in queues:
            streams.append(await asyncio.open_connection("127.0.0.1", port))
        cpu = _cpu_s(server_pid)
        start = time.perf_counter()
        await asyncio.gather(*(one(k, *rw) for k, rw in enumerate(streams)))
        seconds = time.perf_counter() - start
        cpu = _cpu_s(server_pid) - cpu
    finally:
        for _, writer in streams:
            writer.close()
        for _, writer in streams:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    sent = sum(len(q) for q in queues)
    return Loop(sent, statuses, seconds, latencies, wrong[0], refusals, cpu)


async def _get_json(port: int, path: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request("GET", path))
        status, body = await _answer(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if status != 200:
        raise BenchFailed(f"GET {path}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise BenchFailed(f"the API server exited with {proc.returncode} while starting")
        try:
            status: dict[str, Any] = await asyncio.wait_for(_get_json(port, "/status"), 5)
            return status
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            if time.monotonic() > deadline:
                raise BenchFailed("the API server did not start") from None
            await asyncio.sleep(0.1)


def _run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on uvloop if installed (a faster client), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- the orders -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Orders:
    """Signed orders as requests, one queue per connection, with their transaction ids."""

    queues: list[list[bytes]]
    ids: list[list[bytes]]
    bodies: list[list[bytes]]
    first_last: tuple[str, str]


def sign_orders(genesis: Genesis, orders: int, connections: int, accounts: int) -> Orders:
    """``orders`` valid orders (random side, 100–1,000 Wh, 8–30 ¥/kWh, over :data:`SLOTS`
    open slots) by the participants in turn; account ``k``'s go on connection
    ``k % connections``, in nonce order."""
    rng = random.Random(1)
    first = slot_of(from_ms(NOW + 2 * 3_600_000))
    slots, s = [], first
    for _ in range(SLOTS):
        slots.append(str(s))
        s = s.next()
    signers = [
        Signer(genesis.tx_chain, account_name(k), _key(account_name(k))) for k in range(accounts)
    ]
    items = []
    for i in range(orders):
        signer = signers[i % accounts]
        body = {
            "chain": genesis.tx_chain,
            "type": "order",
            "from": signer.account,
            "nonce": signer.next_nonce,
            "slot": slots[(i // accounts + i) % SLOTS],
            "side": "sell" if rng.random() < 0.5 else "buy",
            "energy_wh": rng.randrange(1, 11) * 100,
            "price_sen_per_kwh": rng.randrange(800, 3001, 10),
        }
        signer.next_nonce += 1
        items.append((signer.key, body))
    signed = sign_bodies(items)
    queues: list[list[bytes]] = [[] for _ in range(connections)]
    ids: list[list[bytes]] = [[] for _ in range(connections)]
    bodies: list[list[bytes]] = [[] for _ in range(connections)]
    tx_ids = []
    for i, tx in enumerate(signed):
        conn = (i % accounts) % connections
        raw = json.dumps(tx, separators=(",", ":")).encode()
        tx_id = sha256(canonical_unchecked(tx["body"])).hex()
        tx_ids.append(tx_id)
        queues[conn].append(_request("POST", "/tx", raw))
        ids[conn].append(tx_id.encode())
        bodies[conn].append(raw)
    return Orders(queues, ids, bodies, (tx_ids[0], tx_ids[-1]))


# -- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApiFigures:
    orders: int
    connections: int
    accounts: int
    run: Loop
    ceiling: Loop
    mempool: int
    server: str

    @property
    def met(self) -> bool:
        return self.run.rate() >= TARGET_ORDERS_PER_SECOND

    def to_json(self) -> dict[str, Any]:
        def loop(x: Loop) -> dict[str, Any]:
            return {
                "sent": x.sent,
                "accepted": x.accepted(),
                "statuses": {str(k): v for k, v in sorted(x.statuses.items())},
                "seconds": round(x.seconds, 3),
                "per_second": round(x.rate(), 1),
                "p50_ms": round(x.percentile_ms(0.50), 3),
                "p90_ms": round(x.percentile_ms(0.90), 3),
                "p99_ms": round(x.percentile_ms(0.99), 3),
                "max_ms": round(max(x.latencies_ns, default=0) / 1e6, 3),
                "server_cpu_us_per_request": round(x.server_us(), 1),
            }

        return {
            "orders": self.orders,
            "connections": self.connections,
            "accounts": self.accounts,
            "server": self.server,
            "orders_run": loop(self.run),
            "http_ceiling": loop(self.ceiling),
            "mempool_after": self.mempool,
            "target_per_second": TARGET_ORDERS_PER_SECOND,
            "target_met": self.met,
        }


def measure(orders: int = 20_000, connections: int = 32, accounts: int = 300) -> ApiFigures:
    """Start the server, sign the orders, run the ceiling loop then the orders loop, check the
    mempool; raise ``BenchFailed`` if any order was refused or the mempool disagrees."""
    check_flags(orders, connections, accounts)
    genesis = build_genesis(accounts)
    with _server(accounts) as (port, proc):
        signed = sign_orders(genesis, orders, connections, accounts)  # while the server sets up
        figures: ApiFigures = _run_async(
            _measure(port, proc, genesis, signed, orders, connections, accounts)
        )
        return figures


async def _measure(
    port: int,
    proc: subprocess.Popen[bytes],
    genesis: Genesis,
    signed: Orders,
    orders: int,
    connections: int,
    accounts: int,
) -> ApiFigures:
    status = await _wait_ready(port, proc)
    if status["tx_chain"] != genesis.tx_chain or status["height"] != 1 or status["mempool"]:
        raise BenchFailed(f"the API server is not on the bench chain at height 1: {status}")
    sink = [[_request("POST", SINK, b) for b in q] for q in signed.bodies]
    ceiling = await _loop(port, sink, None, proc.pid)
    if ceiling.accepted() != ceiling.sent:
        raise BenchFailed(f"the ceiling route answered {dict(ceiling.statuses)}")
    run = await _loop(port, signed.queues, signed.ids, proc.pid)
    refused = {k: v for k, v in run.statuses.items() if k != 202}
    if refused:
        detail = b" | ".join(run.refusals).decode(errors="replace")
        raise BenchFailed(
            f"{sum(refused.values())} of {run.sent} orders not accepted, by status "
            f"{dict(sorted(refused.items()))}: {detail}"
        )
    if run.wrong_ids:
        raise BenchFailed(f"{run.wrong_ids} accepted orders were answered with another id")
    after = await _get_json(port, "/status")
    if after["mempool"] != run.accepted() or after["height"] != 1:
        raise BenchFailed(
            f"the mempool holds {after['mempool']} transactions at height {after['height']}, "
            f"{run.accepted()} orders were accepted"
        )
    for tx_id in signed.first_last:
        found = await _get_json(port, f"/transactions/{tx_id}")
        if found.get("status") != "pending":
            raise BenchFailed(f"transaction {tx_id} is {found.get('status')!r}, not pending")
    server = "uvicorn, 1 worker, " + _stack()
    return ApiFigures(orders, connections, accounts, run, ceiling, after["mempool"], server)


def _stack() -> str:
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{http} + {loop}"


def run(
    orders: int = 20_000,
    connections: int = 32,
    accounts: int = 300,
    out: IO[str] = sys.stdout,
    json_out: str | None = None,
) -> int:
    """Measure and print; 0 when the target is met, 1 if not or if the run is invalid."""
    try:
        figures = measure(orders, connections, accounts)
    except BenchFailed as err:
        print(f"api: the benchmark is INVALID: {err}", file=sys.stderr)
        return 1
    r, c = figures.run, figures.ceiling
    print(
        f"api: {r.sent:,} signed orders POSTed to /tx over {connections} keep-alive connections "
        f"({accounts:,} accounts; {figures.server}, own process; client on uvloop): "
        f"{r.accepted():,} accepted (202) in {r.seconds:.2f} s = {r.rate():,.0f} orders/s "
        f"(target >= {TARGET_ORDERS_PER_SECOND:,}: {'met' if figures.met else 'NOT met'}); "
        f"latency p50 {r.percentile_ms(0.5):.1f} ms, p90 {r.percentile_ms(0.9):.1f} ms, "
        f"p99 {r.percentile_ms(0.99):.1f} ms, max {max(r.latencies_ns) / 1e6:.1f} ms; "
        f"server CPU {r.server_us():.0f} µs an order; "
        f"mempool after: {figures.mempool:,} (= accepted)",
        file=out,
    )
    print(
        f"api: ceiling of the HTTP stack in the same run (the same bodies, answered by the same "
        f"layers with a fixed 202, no checks): {c.rate():,.0f} requests/s, p50 "
        f"{c.percentile_ms(0.5):.1f} ms, p99 {c.percentile_ms(0.99):.1f} ms, server CPU "
        f"{c.server_us():.0f} µs a request; the orders ran at {r.rate() / c.rate():.0%} of it",
        file=out,
    )
    if json_out is not None:
        Path(json_out).write_text(json.dumps(figures.to_json(), indent=2) + "\n")
    return 0 if figures.met else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The server child's entry point (``python -m peerpower.bench_api --serve-fd FD``)."""
    parser = argparse.ArgumentParser(prog="peerpower.bench_api")
    parser.add_argument("--serve-fd", type=int, required=True)
    parser.add_argument("--accounts", type=int, required=True)
    args = parser.parse_args(argv)
    _serve(args.serve_fd, args.accounts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
