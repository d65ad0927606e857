"""The HTTP API in front of a node (FastAPI; its OpenAPI schema at ``/openapi.json``).

Every write is a transaction signed on the client: the server checks it against the rules and
passes it to the chain unchanged, so it can neither alter it nor sign for anyone. Errors are
``application/problem+json`` (RFC 9457) naming the field and value, with the ledger's rule for a
refused transaction. Request bodies over :data:`MAX_BODY_BYTES` get 413, and JSON nested deeper
than :data:`MAX_JSON_DEPTH` gets 400; a signer sending more than :data:`RATE_PER_SECOND`
transactions a second (bursts of :data:`RATE_BURST`) gets 429.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from peerpower.api.dashboard import mount_dashboard
from peerpower.api.exchange import Exchange, day_of
from peerpower.errors import InvalidInput, InvalidTransaction

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 32  # a transaction nests 6 deep at most (decide: claims[k].objective.primary)
RATE_PER_SECOND = 200.0
RATE_BURST = 400.0
PROBLEM = "application/problem+json"
STREAM_POLL_S = 0.2


class ProblemResponse(JSONResponse):
    """problem+json written in ASCII, so a detail or value quoting the input always encodes
    (a lone surrogate from a JSON escape such as ``"\\ud800"`` included)."""

    media_type = PROBLEM

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def problem(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return ProblemResponse(body, status_code=status, headers=headers)


def out_of_range(field: str, value: int, allowed: str) -> JSONResponse:
    """422 for a number outside what ``field`` allows (e.g. ``"1–1000"``)."""
    detail = f"{field} must be {allowed}, got {value}"
    return problem(422, "invalid input", detail, field=field, value=value)


def not_found(field: str, value: Any, detail: str) -> JSONResponse:
    return problem(404, "not found", detail, field=field, value=value)


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON ``value`` nests arrays and objects more than ``limit`` deep (encoding it
    would recurse that deep)."""
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        inner = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in inner if isinstance(v, dict | list))
    return False


class RateLimiter:
    """A token bucket per signer (account or site): ``rate`` tokens a second, at most
    ``burst``. A transaction needs a token to be looked at (:meth:`ready`) and spends it only
    once accepted (:meth:`spend`): the name a body claims is not proof, so junk naming someone
    else cannot use up their rate."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float = RATE_PER_SECOND, burst: float = RATE_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when)
        self.lock = threading.Lock()

    def _tokens(self, key: str, t: float) -> float:
        tokens, last = self.buckets.get(key, (self.burst, t))
        return min(self.burst, tokens + (t - last) * self.rate)

    def ready(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` has a token now."""
        t = time.monotonic() if now is None else now
        with self.lock:
            return self._tokens(key, t) >= 1

    def spend(self, key: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self.lock:
            self.buckets[key] = (self._tokens(key, t) - 1, t)
            if len(self.buckets) > self.MAX_KEYS:  # forget the buckets that are full again
                for k in [k for k in self.buckets if self._tokens(k, t) >= self.burst]:
                    del self.buckets[k]

    def allow(self, key: str, now: float | None = None) -> bool:
        """Spend a token of ``key`` if it has one."""
        if not self.ready(key, now):
            return False
        self.spend(key, now)
        return True


class Front:
    """The app's outermost own layer, plain ASGI: refuses an HTTP request whose Content-Length
    is not a number (400) or is over :data:`MAX_BODY_BYTES` (413) before its body is read, and
    answers ``POST /tx`` itself with ``submit`` (the body → the response), as the ``/tx`` route
    would, without FastAPI's routing, dependency and exception layers.

    Not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs each request in a
    task group with memory streams, which cost more than the rest of the HTTP stack together
    (a third of the requests a second); and the layers skipped for ``/tx`` cost a quarter of
    the server's time an order (``peerpower bench api``: 300 instead of 420 µs of CPU). The
    ``/tx`` route stays, for the OpenAPI schema and for an app mounted under a root path."""

    def __init__(self, app: ASGIApp, submit: Callable[[bytes], Awaitable[JSONResponse]]) -> None:
        self.app = app
        self.submit = submit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                refusal = _length_refusal(value.decode("latin-1"))
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
                break
        if scope["path"] != "/tx" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:  # a chunked body says its size only as it comes
                await too_large(size)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        response = await self.submit(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await response(scope, receive, send)


def too_large(size: int, more: bool = True) -> JSONResponse:
    at_least = "more than " if more else ""
    return problem(
        413,
        "request too large",
        f"the body is {at_least}{size} bytes, the limit is {MAX_BODY_BYTES}",
        field="body",
    )


def _length_refusal(length: str) -> JSONResponse | None:
    if not length.isdigit():
        return problem(400, "bad request", f"content-length is {length!r}")
    if int(length) > MAX_BODY_BYTES:
        return too_large(int(length), more=False)
    return None


def _signer(obj: Any) -> str | None:
    body = obj.get("body") if isinstance(obj, dict) else None
    if not isinstance(body, dict):
        return None
    who = body.get("from", body.get("site"))
    return who if isinstance(who, str) else None


def create_app(exchange: Exchange, limiter: RateLimiter | None = None) -> FastAPI:
    app = FastAPI(
        title="peerpower",
        summary="A peer-to-peer electricity exchange: signed orders in, clearings out.",
        version="0.1",
    )
    rate = limiter or RateLimiter()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return problem(
            422,
            "invalid request",
            f"{loc}: {first.get('msg', 'invalid')}",
            field=loc,
            value=repr(first.get("input"))[:200],
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "error", str(exc.detail), headers=exc.headers)

    @app.exception_handler(InvalidInput)
    async def bad_input(request: Request, exc: InvalidInput) -> JSONResponse:
        return problem(422, "invalid input", exc.message, field=exc.field)

    def answer_tx(raw: bytes) -> JSONResponse:
        """The answer to ``POST /tx`` with body ``raw``."""
        if len(raw) > MAX_BODY_BYTES:
            return problem(413, "request too large", f"the body is {len(raw)} bytes", field="body")
        try:
            obj = json.loads(raw)
            deep = too_deep(obj)
        except ValueError as err:
            return problem(400, "bad request", f"the body is not JSON: {err}", field="body")
        except RecursionError:  # deeper than the decoder's own recursion limit
            deep = True
        if deep:
            return problem(
                400,
                "bad request",
                f"the body's JSON nests arrays and objects more than {MAX_JSON_DEPTH} deep",
                field="body",
            )
        who = _signer(obj)
        if who is not None and not rate.ready(who):
            return problem(
                429,
                "too many requests",
                f"{who!r} sent more than {rate.rate:g} transactions a second",
                field="body.from",
                value=who,
            )
        try:
            tx = exchange.submit(obj)
        except InvalidTransaction as err:
            return problem(
                422,
                "transaction refused",
                err.message,
                rule=err.rule,
                field=_field_of(err),
            )
        except InvalidInput as err:  # as the handler below answers it on the route
            return problem(422, "invalid input", err.message, field=err.field)
        rate.spend(tx.sender)
        return JSONResponse(
            {
                "accepted": True,
                "id": tx.id,
                "type": tx.type,
                "sender": tx.sender,
                "nonce": tx.nonce,
            },
            status_code=202,
        )

    async def answer(raw: bytes) -> JSONResponse:
        """:func:`answer_tx` on the event loop when the chain is free (the common case, and
        the fastest), else in a worker thread, so the loop never waits for the lock."""
        if exchange.lock.acquire(blocking=False):
            try:
                return answer_tx(raw)
            finally:
                exchange.lock.release()
        return await asyncio.to_thread(answer_tx, raw)

    app.add_middleware(Front, submit=answer)

    @app.post("/tx", status_code=202, summary="Submit a transaction signed on the client")
    async def submit_tx(request: Request) -> JSONResponse:
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return too_large(size)
            chunks.append(chunk)
        return await answer(b"".join(chunks))

    @app.get("/status", summary="The chain's height, time, mempool and state root")
    def status() -> dict[str, Any]:
        return exchange.status()

    @app.get("/market", summary="The market's rules and parameters (from the genesis)")
    def market() -> dict[str, Any]:
        return exchange.market()

    @app.get("/slots", summary="Slots on the chain (open, sealed, cleared) and cleared slots kept")
    def slots() -> list[dict[str, Any]]:
        return exchange.slots()

    @app.get("/blocks", summary="The latest blocks' headers, newest first")
    def blocks(limit: int = 20) -> Any:
        if not 1 <= limit <= 1000:
            return out_of_range("limit", limit, "1–1000")
        return exchange.recent_blocks(limit)

    @app.get("/blocks/{height}", summary="A committed block with its transactions")
    def block(height: int) -> Any:
        if not 1 <= height <= 2**62:
            return out_of_range("height", height, "≥ 1")
        got = exchange.block(height)
        if got is None:
            return not_found("height", height, f"no block {height} here")
        return got

    @app.get("/transactions/{tx_id}", summary="A transaction by id: committed or pending")
    def transaction(tx_id: str) -> Any:
        got = exchange.transaction(tx_id)
        if got is None:
            return not_found("tx_id", tx_id[:80], f"no transaction {tx_id[:80]!r} here")
        return got

    @app.get("/accounts/{account_id}", summary="Balance, margin, orders, contracts, defaults")
    def account(account_id: str) -> Any:
        got = exchange.account(account_id)
        if got is None:
            return not_found("account_id", account_id, f"no account {account_id!r}")
        return got

    @app.get("/slots/{slot}/ladder", summary="SELL | PRICE | BUY of a slot's open orders")
    def slot_ladder(slot: str, depth: int | None = None) -> Any:
        if depth is not None and not 1 <= depth <= 1000:
            return out_of_range("depth", depth, "1–1000")
        return exchange.ladder(slot, depth)

    @app.get("/slots/{slot}/clearing", summary="A cleared slot's balanced units and prices")
    def slot_clearing(slot: str) -> Any:
        got = exchange.clearing(slot)
        if got is None:
            return not_found("slot", slot, f"slot {slot!r} is not cleared (or no longer kept)")
        return got

    @app.get("/prices", summary="Price history: each cleared slot of a day (default: today)")
    def prices(day: str | None = None) -> dict[str, Any]:
        return exchange.prices(None if day is None else day_of(day))

    @app.websocket("/stream")
    async def stream(socket: WebSocket, since: int | None = None) -> None:
        """Events as JSON messages, numbered (``seq``): ``block``, ``trade`` (a slot's
        balanced units) and ``book`` (a slot's ladder after a block changed it). ``since``
        replays the events kept after that number; by default the stream starts with the
        newest. A ``gap`` message says events were missed (no longer kept, or ``since`` is
        from before a restart): read the state again."""
        await socket.accept()
        hello = await asyncio.to_thread(exchange.status)
        await socket.send_json({"type": "hello", **hello})
        newest = int(hello["events"])
        seq = newest if since is None or since > newest else since
        if since is not None and since > newest:
            await socket.send_json({"type": "gap", "since": since, "next": newest + 1})
        spoke = asyncio.ensure_future(socket.receive())
        try:
            while True:
                events = await asyncio.to_thread(exchange.events_since, seq)
                if events and events[0]["seq"] > seq + 1:
                    await socket.send_json({"type": "gap", "since": seq, "next": events[0]["seq"]})
                for event in events:
                    await socket.send_json(event)
                    seq = event["seq"]
                done, _ = await asyncio.wait({spoke}, timeout=STREAM_POLL_S)
                if done:  # the client closed the stream (anything else it sends is ignored)
                    if spoke.result()["type"] == "websocket.disconnect":
                        return
                    spoke = asyncio.ensure_future(socket.receive())
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            spoke.cancel()

    mount_dashboard(app)
    return app


def _field_of(err: InvalidTransaction) -> str:
    """The field a refusal names: a format error's message starts with it."""
    head, sep, _ = err.message.partition(": ")
    if err.rule == "format" and sep and " " not in head:
        return head
    return "tx"
