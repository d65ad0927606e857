"""A small HTTP/1.1 server for a validator's RPC, on asyncio streams in the node's own loop.

The node already runs consensus, gossip and timers as tasks of one event loop, so the RPC server
is one more set of tasks there rather than a framework with a loop of its own (and the standard
library is enough for three JSON routes).

Design
------
* One task per connection. Requests on a connection are read, handled and answered in order;
  the handler is awaited in that task, so pipelined requests wait in the reader's buffer.
* Framing by ``Content-Length`` only. A request with any ``Transfer-Encoding`` gets 411 (Length
  Required) and the connection closes: without decoding the chunks there is no way to find where
  the next request starts, and an RPC client always knows the length of the JSON it sends. A
  request without ``Content-Length`` has an empty body. Every response carries
  ``Content-Length`` and ``Content-Type``, so statuses without a body (1xx, 204, 304) are not
  offered.
* Keep-alive: HTTP/1.1 connections persist unless a side says ``Connection: close``; HTTP/1.0
  ones close after the response unless the client asked for ``keep-alive``.
* Limits are checked before anything is buffered: the head (request line and headers) may be
  ``max_header`` bytes (431 otherwise); a body is refused with 413 from its ``Content-Length``
  alone, before it is read. When a request is refused before its end was read (400, 411, 413,
  431, 505, 408) the connection cannot be reused, so the response says ``Connection: close``;
  the server then half-closes and discards what the client still sends for a moment, so the
  client reads the error instead of a connection reset.
* Errors are JSON ``{"error": ..., "field": ...}`` (``field`` names the offending part of the
  request, e.g. ``body`` or ``headers.content-length``, and is left out when there is none). A
  handler may raise :class:`HttpError` (its status) or :class:`~peerpower.errors.InvalidInput`
  (400 with its field). Any other exception is a bug: it is logged with its traceback on the
  ``peerpower.net.http`` logger, the client gets 500 ``internal error: <ExceptionType>`` and
  the connection keeps serving.
* Timeouts: a client has ``idle_timeout_s`` to send each request head, then as long again for
  the body, and as long to take each response; otherwise it is dropped (408 if the head had
  arrived). Handlers are not timed: their time is the node's, not the client's.
* Shutdown: ``asyncio.Server.close`` in Python 3.11 stops accepting but leaves open connections
  running, and ``wait_closed`` does not wait for them. :func:`close_http` stops accepting, closes
  idle connections at once, lets requests in progress finish (up to ``grace_s``; their responses
  say ``Connection: close``), then cancels what is left and closes every transport, so no task or
  socket outlives it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from peerpower.errors import InvalidInput

__all__ = [
    "Handler",
    "HttpError",
    "Request",
    "Response",
    "Router",
    "close_http",
    "json_response",
    "serve_http",
]

log = logging.getLogger("peerpower.net.http")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Origin-form targets only ("/path?query"); the absolute form is for proxies.
_REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[\x21-\x7e]*) HTTP/([0-9])\.([0-9])")
# Control characters other than HTAB: a stray CR or LF inside a header value is how requests
# are smuggled past a proxy that splits lines differently.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Headers the server writes itself; a handler setting them would contradict the framing.
_RESERVED = frozenset({"connection", "content-length", "content-type", "date", "transfer-encoding"})
_LINGER_S = 1.0  # how long a refused request's remainder is read and thrown away
_CLOSE_WAIT_S = 1.0  # how long a closing connection may take to flush before it is aborted


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True, slots=True)
class Request:
    """One request as read from the connection.

    ``path`` is percent-decoded and without the query string; ``query`` maps each name to its
    last value; header names are lower-cased (repeated headers are joined with ``", "``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises
        ------
        HttpError
            400 with field ``body`` if the body is empty or not JSON (NaN and Infinity are not
            JSON).
        """
        if not self.body:
            raise HttpError(400, "body is empty; expected JSON", field="body")
        try:
            return json.loads(self.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # ValueError covers JSON and UTF-8 errors
            raise HttpError(400, f"body is not valid JSON: {e}", field="body") from None


def _check_header(name: str, value: str) -> None:
    if not value.isascii() or _BAD_VALUE.search(value):
        raise ValueError(f"header {name}: {value!r} must be printable ASCII")


def _check_headers(headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or name.lower() in _RESERVED:
            raise ValueError(f"header name {name!r} is malformed or set by the server")
        _check_header(name, value)


@dataclass(frozen=True, slots=True)
class Response:
    """A response; the server adds ``Content-Length``, ``Date`` and ``Connection``.

    Raises
    ------
    ValueError
        If the status is not 200-599 (204 and 304 excluded: they cannot carry the body and
        ``Content-Length`` every response has), or a header is malformed or one the server sets.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599 or self.status in (204, 304):
            raise ValueError(f"status {self.status} must be 200-599 and not 204 or 304")
        if not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes, not {type(self.body).__name__}")
        _check_header("Content-Type", self.content_type)
        _check_headers(self.headers)


def _dumps(obj: Any) -> bytes:
    return (
        json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()


def json_response(obj: Any, status: int = 200) -> Response:
    """``obj`` as compact JSON (UTF-8, one trailing newline)."""
    return Response(status, _dumps(obj))


class HttpError(Exception):
    """Raised by a handler (or the server) to answer with ``status`` and a JSON error.

    Parameters
    ----------
    status
        400-599.
    message
        What was wrong and what is allowed.
    field
        The offending part of the request (``body``, ``query``, a field path), if any.
    headers
        Extra response headers, e.g. ``Allow`` for 405 or ``Retry-After`` for 503.
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HttpError status {status} must be 400-599")
        _check_headers(headers)
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out

    def to_response(self) -> Response:
        return Response(self.status, _dumps(self.to_json()), headers=self.headers)


Handler = Callable[..., Awaitable[Response]]
"""``await handler(request, **path_params)``; path parameters are passed as ``str``."""


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    segments: tuple[str, ...]  # literal segments, decoded; "" in parameter positions
    params: tuple[str | None, ...]  # parameter name per segment, None for a literal
    handler: Handler

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for want, name, got in zip(self.segments, self.params, segments, strict=True):
            if name is None:
                if got != want:
                    return None
            elif not got:
                return None
            else:
                found[name] = got
        return found

    @property
    def rank(self) -> tuple[bool, ...]:
        # Literal segments beat parameters at the first position where two routes differ, so
        # "/blocks/latest" wins over "/blocks/{height}" whichever was added first.
        return tuple(name is not None for name in self.params)


def _decode(raw: str, field: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, f"{raw!r} is not percent-encoded UTF-8", field=field) from None


class Router:
    """Maps a method and a path pattern to a handler.

    A pattern is ``/``-separated; a segment ``{name}`` matches one non-empty path segment
    (percent-decoded, so ``%2F`` stays inside it) and passes it as the keyword ``name``. Other
    segments match literally. Method names are case-sensitive, as in HTTP.
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Route ``method`` requests for ``pattern`` to ``handler``.

        Raises
        ------
        ValueError
            If the method is not a token, the pattern does not start with ``/``, has a
            malformed or repeated parameter, or is already routed for this method.
        """
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"method {method!r} is not an HTTP token")
        if not pattern.startswith("/"):
            raise ValueError(f"pattern {pattern!r} must start with '/'")
        segments: list[str] = []
        params: list[str | None] = []
        for part in pattern[1:].split("/"):
            m = _PARAM.fullmatch(part)
            if m is not None:
                if m[1] in params:
                    raise ValueError(f"pattern {pattern!r} repeats parameter {m[1]!r}")
                segments.append("")
                params.append(m[1])
            elif "{" in part or "}" in part:
                raise ValueError(f"pattern {pattern!r}: {part!r} is not a {{name}} parameter")
            else:
                segments.append(part)
                params.append(None)
        route = _Route(method, tuple(segments), tuple(params), handler)
        for r in self._routes:
            same_shape = r.rank == route.rank and r.segments == route.segments
            if r.method == method and same_shape:
                raise ValueError(f"{method} {pattern} is already routed")
        self._routes.append(route)

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters for ``path`` as sent (percent-encoded, no query).

        Raises
        ------
        HttpError
            404 if no route matches the path; 405 with ``Allow`` if routes match it but not for
            this method; 400 if a segment is not percent-encoded UTF-8.
        """
        segments = [_decode(s, "path") for s in path[1:].split("/")]
        best: tuple[_Route, dict[str, str]] | None = None
        allowed: set[str] = set()
        for route in self._routes:
            found = route.match(segments)
            if found is None:
                continue
            if route.method != method:
                allowed.add(route.method)
            elif best is None or route.rank < best[0].rank:
                best = (route, found)
        if best is not None:
            return best[0].handler, best[1]
        if allowed:
            allow = ", ".join(sorted(allowed))
            raise HttpError(
                405,
                f"method {method} is not allowed here; allowed: {allow}",
                field="method",
                headers=(("Allow", allow),),
            )
        raise HttpError(404, f"no such path: {_decode(path, 'path')}", field="path")


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str]


def _parse_head(head: bytes) -> _Head:
    """The request line and headers of ``head`` (which ends with the blank line)."""
    lines = head[:-4].decode("latin-1").split("\r\n")  # latin-1 maps every byte; checked below
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        shown = lines[0][:80]
        raise HttpError(400, f"malformed request line {shown!r}", field="request_line")
    if m[3] != "1":
        raise HttpError(505, f"HTTP/{m[3]}.{m[4]} is not supported; use HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        # A name must touch its colon, and a line starting with whitespace (obsolete folding)
        # has no name: both are rejected, as RFC 9112 asks of a server.
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise HttpError(400, f"malformed header line {line[:80]!r}", field="headers")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return _Head(m[1], m[2], (1, int(m[4])), headers)


def _content_length(headers: dict[str, str], max_body: int) -> int:
    raw = headers.get("content-length")
    if raw is None:
        return 0
    # Digits only: "+5", "5, 5", "0x10" would be read differently by different parsers.
    if not raw.isascii() or not raw.isdigit():
        raise HttpError(
            400, f"Content-Length {raw[:40]!r} is not a number", field="headers.content-length"
        )
    digits = raw.lstrip("0") or "0"
    n = int(digits) if len(digits) <= 18 else max_body + 1  # int() refuses 4,300+ digits
    if n > max_body:
        raise HttpError(
            413, f"body of {raw[:40]} bytes is over the limit of {max_body} bytes", field="body"
        )
    return n


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in value.split(",")} if value else set()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _Connection:
    __slots__ = ("idle", "task", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.idle = True  # waiting for a request: may be closed at once on shutdown
        self.task: asyncio.Task[None] | None = None


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    try:
        async with asyncio.timeout(_CLOSE_WAIT_S):
            await writer.wait_closed()
    except (TimeoutError, OSError, asyncio.CancelledError):
        # A client that stopped reading keeps close() flushing forever; drop what is left.
        writer.transport.abort()


class _HttpServer:
    """The state behind one :func:`serve_http` server: settings and open connections."""

    def __init__(self, router: Router, max_body: int, idle_timeout_s: float) -> None:
        self.router = router
        self.max_body = max_body
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[_Connection] = set()
        self.closing = False

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: asyncio's own task for a coroutine callback would
        # report a cancelled connection as an error, and this way the task is ours to track.
        if self.closing:
            writer.transport.abort()
            return
        conn = _Connection(writer)
        task = asyncio.get_running_loop().create_task(self._run(conn, reader))
        conn.task = task
        self.connections.add(conn)
        task.add_done_callback(lambda _: self.connections.discard(conn))

    async def _run(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        try:
            await self._serve(conn, reader)
        except (asyncio.CancelledError, TimeoutError, OSError):
            pass  # shutdown, a client too slow to take its response, or a client gone
        except Exception:
            log.exception("HTTP connection failed")  # a bug here; the server keeps serving
        finally:
            await _close_writer(conn.writer)

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        writer = conn.writer
        while not self.closing:
            conn.idle = True
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, TimeoutError):
                return  # the client left, or sent nothing (or not a whole head) in time
            except asyncio.LimitOverrunError:
                await self._refuse(conn, reader, HttpError(431, "headers too large", "headers"))
                return
            conn.idle = False
            # RFC 9112 asks a server to ignore empty lines before a request line (some clients
            # send CRLF after a body).
            head = head.lstrip(b"\r\n")
            if not head:
                return
            try:
                h = _parse_head(head)
                if "transfer-encoding" in h.headers:
                    raise HttpError(
                        411,
                        "Transfer-Encoding is not supported; send the body with Content-Length",
                        field="headers.transfer-encoding",
                    )
                length = _content_length(h.headers, self.max_body)
            except HttpError as e:
                await self._refuse(conn, reader, e)
                return
            connection = _tokens(h.headers.get("connection"))
            keep_alive = "close" not in connection
            announce = h.version == (1, 0)  # 1.0 clients must be told the connection stays
            if announce:
                keep_alive = "keep-alive" in connection
            body = b""
            if length:
                if h.version >= (1, 1) and h.headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        body = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    return  # the client left mid-body; nothing to answer
                except TimeoutError:
                    await self._refuse(conn, reader, HttpError(408, "body not sent in time"))
                    return
            response = await self._respond(h, body)
            keep_alive = keep_alive and not self.closing
            await self._send(writer, _render(response, keep_alive, announce))
            if not keep_alive:
                return

    async def _respond(self, h: _Head, body: bytes) -> Response:
        raw_path, _, raw_query = h.target.partition("?")
        try:
            try:
                query = dict(parse_qsl(raw_query, keep_blank_values=True, errors="strict"))
            except UnicodeDecodeError:
                raise HttpError(400, "query is not percent-encoded UTF-8", "query") from None
            request = Request(h.method, _decode(raw_path, "path"), query, h.headers, body)
            handler, params = self.router.resolve(h.method, raw_path)
            response = await handler(request, **params)
            if not isinstance(response, Response):
                raise TypeError(f"handler returned {type(response).__name__}, not Response")
            return response
        except HttpError as e:
            return e.to_response()
        except InvalidInput as e:
            return json_response(e.to_json(), 400)
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this connection is being closed
            return self._internal_error(h, raw_path, e)  # the handler awaited something cancelled
        except Exception as e:
            return self._internal_error(h, raw_path, e)

    @staticmethod
    def _internal_error(h: _Head, raw_path: str, e: BaseException) -> Response:
        log.error("%s %s: handler failed", h.method, raw_path, exc_info=e)
        return json_response({"error": f"internal error: {type(e).__name__}"}, 500)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            return  # the client left while its request was handled
        writer.write(data)
        async with asyncio.timeout(self.idle_timeout_s):
            await writer.drain()

    async def _refuse(self, conn: _Connection, reader: asyncio.StreamReader, e: HttpError) -> None:
        """Answer a request whose end was not read, then close the connection gently."""
        writer = conn.writer
        await self._send(writer, _render(e.to_response(), keep_alive=False, announce=False))
        if writer.is_closing() or not writer.can_write_eof():
            return
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # response before the client reads it: half-close and discard the rest for a moment.
        writer.write_eof()
        conn.idle = True
        try:
            async with asyncio.timeout(min(_LINGER_S, self.idle_timeout_s)):
                while await reader.read(1 << 16):
                    pass
        except (TimeoutError, OSError):
            pass


def _render(response: Response, keep_alive: bool, announce: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Date: {formatdate(usegmt=True)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    if not keep_alive:
        lines.append("Connection: close")
    elif announce:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + response.body


_servers: weakref.WeakKeyDictionary[asyncio.Server, _HttpServer] = weakref.WeakKeyDictionary()


async def serve_http(
    router: Router,
    host: str,
    port: int,
    *,
    max_body: int = 8 << 20,
    max_header: int = 16 << 10,
    idle_timeout_s: float = 30.0,
) -> asyncio.Server:
    """Start serving ``router`` on ``host:port`` in the running loop.

    ``port=0`` picks a free port: ``server.sockets[0].getsockname()[1]``. Shut the server down
    with :func:`close_http`, which also closes open connections (``server.close()`` alone
    leaves them running).

    Parameters
    ----------
    max_body
        Largest request body in bytes (413 above it).
    max_header
        Largest request head (request line and headers) in bytes (431 above it).
    idle_timeout_s
        How long a client may take to send a request head, a body, or to take a response.
    """
    if max_body < 0 or max_header < 64 or idle_timeout_s <= 0:
        raise ValueError("need max_body >= 0, max_header >= 64 and idle_timeout_s > 0")
    state = _HttpServer(router, max_body, idle_timeout_s)
    # The reader's limit is what makes readuntil refuse a head longer than max_header.
    server = await asyncio.start_server(state.accept, host, port, limit=max_header)
    _servers[server] = state
    return server


async def close_http(server: asyncio.Server, *, grace_s: float = 5.0) -> None:
    """Stop ``server`` and close its connections; no task or socket of it outlives this.

    Idle connections close at once; requests in progress get up to ``grace_s`` seconds to
    finish (their responses say ``Connection: close``), then are cancelled.
    """
    server.close()
    state = _servers.pop(server, None)
    if state is not None:
        state.closing = True
        connections = list(state.connections)
        tasks = [c.task for c in connections if c.task is not None]
        for c in connections:
            if c.idle and c.task is not None:
                c.task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_CLOSE_WAIT_S + 1.0)
        aborted = False
        for c in connections:
            # A task cancelled before its first step never ran its own cleanup.
            if not c.writer.is_closing():
                c.writer.transport.abort()
                aborted = True
        if aborted:
            await asyncio.sleep(0)  # let the transports' connection_lost run (closes sockets)
    await server.wait_closed()
