"""The RPC's HTTP/1.1 server: routing, keep-alive, limits, JSON errors, clean shutdown.

Each test runs a server on 127.0.0.1, port 0, inside ``asyncio.run`` and talks to it over raw
asyncio streams (exact bytes, to send what a client library would refuse to) or, for the plain
round trip, the standard library's ``http.client`` in a worker thread.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peerpower.errors import InvalidInput
from peerpower.net.http import (
    HttpError,
    Request,
    Response,
    Router,
    close_http,
    json_response,
    serve_http,
)


class App:
    """Handlers for /status, /tx and /blocks/{height}, recording what they were given."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def status(self, request: Request) -> Response:
        self.calls.append("status")
        return json_response({"ok": True, "path": request.path, "query": request.query})

    async def tx(self, request: Request) -> Response:
        self.calls.append("tx")
        return json_response({"accepted": request.json()}, status=202)

    async def block(self, request: Request, height: str) -> Response:
        self.calls.append(f"block {height}")
        return json_response({"height": height})

    async def latest(self, request: Request) -> Response:
        return json_response({"height": "latest"})

    async def invalid(self, request: Request) -> Response:
        raise InvalidInput("orders[0].side", "'hold' is not 'buy' or 'sell'")

    async def bug(self, request: Request) -> Response:
        return json_response({"x": 1 / 0})

    async def slow(self, request: Request) -> Response:
        await self.release.wait()
        return json_response({"slow": "done"})

    def router(self) -> Router:
        r = Router()
        r.add("GET", "/status", self.status)
        r.add("POST", "/tx", self.tx)
        r.add("GET", "/blocks/{height}", self.block)
        r.add("GET", "/blocks/latest", self.latest)
        r.add("POST", "/invalid", self.invalid)
        r.add("GET", "/bug", self.bug)
        r.add("GET", "/slow", self.slow)
        return r


def run(test: Callable[[int, App], Awaitable[Any]], **limits: Any) -> Any:
    """Run ``test(port, app)`` against a fresh server, then close it and check nothing is left."""

    async def main() -> Any:
        # Anything reaching the loop's exception handler escaped the server.
        escaped: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: escaped.append(context))
        app = App()
        server = await serve_http(app.router(), "127.0.0.1", 0, **limits)
        try:
            return await test(server.sockets[0].getsockname()[1], app)
        finally:
            await close_http(server)
            assert asyncio.all_tasks() == {asyncio.current_task()}
            assert escaped == []

    return asyncio.run(main())


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], Any, bool]:
    """Send ``raw`` on a new connection; the response and whether the server then closed."""
    reader, writer = await connect(port)
    try:
        writer.write(raw)
        status, headers, body = await read_response(reader)
        closed = await asyncio.wait_for(reader.read(1), 5) == b""
        return status, headers, json.loads(body), closed
    finally:
        writer.close()
        await writer.wait_closed()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()


def post(path: str, body: bytes, *, close: bool = True) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


# --- the happy path ---------------------------------------------------------------------------


def test_json_round_trip_get_and_post() -> None:
    def client(port: int) -> list[tuple[int, str | None, str | None, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        out = []
        try:
            conn.request("GET", "/status")
            r = conn.getresponse()
            out.append((r.status, r.getheader("Content-Type"), None, json.loads(r.read())))
            body = json.dumps({"nonce": 7, "kind": "order", "note": "ünïcode"})
            conn.request("POST", "/tx", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            raw = r.read()
            out.append((r.status, r.getheader("Content-Type"), r.getheader("Content-Length"), raw))
        finally:
            conn.close()
        return out

    async def test(port: int, app: App) -> None:
        (s1, ct1, _, status), (s2, ct2, length, raw) = await asyncio.to_thread(client, port)
        assert (s1, ct1) == (200, "application/json")
        assert status == {"ok": True, "path": "/status", "query": {}}
        assert (s2, ct2) == (202, "application/json")
        assert length == str(len(raw))
        assert raw.endswith(b"}\n") and b": " not in raw  # compact, one trailing newline
        assert json.loads(raw) == {"accepted": {"nonce": 7, "kind": "order", "note": "ünïcode"}}
        assert app.calls == ["status", "tx"]

    run(test)


def test_path_param_passed_as_str() -> None:
    async def test(port: int, app: App) -> None:
        status, _, body, _ = await exchange(port, get("/blocks/42"))
        assert (status, body) == (200, {"height": "42"})
        # A parameter is one percent-decoded segment: an encoded slash stays inside it.
        status, _, body, _ = await exchange(port, get("/blocks/a%2Fb%20c"))
        assert (status, body) == (200, {"height": "a/b c"})
        # A literal route beats a parameter although it was added later.
        status, _, body, _ = await exchange(port, get("/blocks/latest"))
        assert (status, body) == (200, {"height": "latest"})
        assert app.calls == ["block 42", "block a/b c"]

    run(test)


def test_path_param_empty_segment_is_404() -> None:
    async def test(port: int, app: App) -> None:
        status, _, body, _ = await exchange(port, get("/blocks/"))
        assert (status, body["field"]) == (404, "path")
        assert app.calls == []

    run(test)


def test_query_string_parsed_and_path_decoded() -> None:
    async def test(port: int, app: App) -> None:
        status, _, body, _ = await exchange(port, get("/st%61tus?from=3&to=a%20b&flag&to=9"))
        assert status == 200
        assert body["path"] == "/status"
        assert body["query"] == {"from": "3", "to": "9", "flag": ""}  # last value wins

    run(test)


def test_keep_alive_several_requests_one_connection() -> None:
    async def test(port: int, app: App) -> None:
        reader, writer = await connect(port)
        for h in ("1", "2"):
            writer.write(f"GET /blocks/{h} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            status, headers, body = await read_response(reader)
            assert (status, json.loads(body)) == (200, {"height": h})
            assert "connection" not in headers
        # Pipelined: two requests in one write are answered in order on the same connection.
        writer.write(
            post("/tx", b'{"n":1}', close=False) + b"GET /blocks/3 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 202
        assert json.loads((await read_response(reader))[2]) == {"height": "3"}
        writer.write(get("/status"))
        status, headers, _ = await read_response(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await reader.read(1) == b""  # closed as asked
        writer.close()
        await writer.wait_closed()
        assert app.calls == ["block 1", "block 2", "tx", "block 3", "status"]

    run(test)


def test_keep_alive_http10_closes_unless_asked() -> None:
    async def test(port: int, app: App) -> None:
        status, headers, _, closed = await exchange(port, b"GET /status HTTP/1.0\r\n\r\n")
        assert (status, headers["connection"], closed) == (200, "close", True)
        reader, writer = await connect(port)
        for _ in range(2):
            writer.write(b"GET /status HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (200, "keep-alive")
        writer.close()
        await writer.wait_closed()

    run(test)


# --- rejections -------------------------------------------------------------------------------


def test_invalid_unknown_path_404() -> None:
    async def test(port: int, app: App) -> None:
        status, headers, body, _ = await exchange(port, get("/nope"))
        assert status == 404
        assert headers["content-type"] == "application/json"
        assert body == {"error": "no such path: /nope", "field": "path"}

    run(test)


def test_invalid_wrong_method_405_with_allow() -> None:
    async def test(port: int, app: App) -> None:
        status, headers, body, _ = await exchange(port, post("/status", b"{}"))
        assert (status, headers["allow"]) == (405, "GET")
        assert "POST" in body["error"]
        status, headers, _, _ = await exchange(port, get("/tx"))
        assert (status, headers["allow"]) == (405, "POST")
        assert app.calls == []

    run(test)


def test_invalid_body_too_large_413_without_reading_it() -> None:
    async def test(port: int, app: App) -> None:
        # Only the head is sent: the server must answer from Content-Length alone.
        raw = b"POST /tx HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n"
        status, headers, body, closed = await exchange(port, raw)
        assert (status, body["field"], headers["connection"], closed) == (
            413,
            "body",
            "close",
            True,
        )
        huge = b"POST /tx HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
        assert (await exchange(port, huge))[0] == 413
        status, _, _, _ = await exchange(port, post("/tx", b" [" + b"0," * 498 + b"0]"))
        assert status == 202  # 1000 bytes: at the limit
        assert app.calls == ["tx"]

    run(test, max_body=1000)


def test_invalid_headers_too_large_431() -> None:
    async def test(port: int, app: App) -> None:
        raw = get("/status", extra="X-Pad: " + "a" * 2000 + "\r\n")
        status, _, body, closed = await exchange(port, raw)
        assert (status, body["field"], closed) == (431, "headers", True)
        assert (await exchange(port, get("/status", extra="X-Pad: aaaa\r\n")))[0] == 200

    run(test, max_header=1024)


def test_invalid_json_body_400_names_body() -> None:
    async def test(port: int, app: App) -> None:
        for bad in (b'{"nonce": ', b"NaN", b"\xff\xfe{", b"", b"[" * 100_000):
            reader, writer = await connect(port)
            writer.write(post("/tx", bad, close=False))
            status, headers, body = await read_response(reader)
            assert status == 400, bad
            assert json.loads(body)["field"] == "body"
            assert "connection" not in headers  # the request was whole: the connection stays
            writer.write(get("/status"))
            assert (await read_response(reader))[0] == 200
            writer.close()
            await writer.wait_closed()

    run(test)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"GARBAGE\r\n\r\n", "request_line"),
        (b"GET /status\r\n\r\n", "request_line"),
        (b"GET  /status HTTP/1.1\r\n\r\n", "request_line"),
        (b"GET http://t/status HTTP/1.1\r\n\r\n", "request_line"),
        (b"GET /st\xe9tus HTTP/1.1\r\n\r\n", "request_line"),
        (b"GET /status HTTP/1.1\nHost: t\r\n\r\n", "request_line"),
        (b"GET /status HTTP/1.1\r\nHost : t\r\n\r\n", "headers"),
        (b"GET /status HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", "headers"),
        (b"GET /status HTTP/1.1\r\nX: a\rb\r\n\r\n", "headers"),
        (b"GET /status HTTP/1.1\r\nNoColon\r\n\r\n", "headers"),
        (b"POST /tx HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "headers.content-length"),
        (b"POST /tx HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}", "headers.content-length"),
        (
            b"POST /tx HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            "headers.content-length",
        ),
    ],
)
def test_invalid_request_head_400_and_close(raw: bytes, field: str) -> None:
    async def test(port: int, app: App) -> None:
        status, headers, body, closed = await exchange(port, raw)
        assert (status, body["field"], headers["connection"], closed) == (400, field, "close", True)
        assert app.calls == []

    run(test)


def test_invalid_http_version_505() -> None:
    async def test(port: int, app: App) -> None:
        status, _, body, closed = await exchange(port, b"GET /status HTTP/2.0\r\n\r\n")
        assert (status, closed) == (505, True)
        assert "field" not in body

    run(test)


def test_invalid_input_from_handler_400_with_field() -> None:
    async def test(port: int, app: App) -> None:
        status, _, body, _ = await exchange(port, post("/invalid", b"{}"))
        assert status == 400
        assert body == {
            "error": "orders[0].side: 'hold' is not 'buy' or 'sell'",
            "field": "orders[0].side",
        }

    run(test)


def test_handler_bug_500_then_next_request_works(caplog: pytest.LogCaptureFixture) -> None:
    async def test(port: int, app: App) -> None:
        reader, writer = await connect(port)
        writer.write(b"GET /bug HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = await read_response(reader)
        assert (status, json.loads(body)) == (500, {"error": "internal error: ZeroDivisionError"})
        writer.write(get("/status"))
        assert (await read_response(reader))[0] == 200
        writer.close()
        await writer.wait_closed()

    with caplog.at_level(logging.ERROR, logger="peerpower.net.http"):
        run(test)
    [record] = [r for r in caplog.records if r.name == "peerpower.net.http"]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "GET /bug" in record.getMessage()


def test_invalid_response_from_handler_500() -> None:
    async def bad_header(request: Request) -> Response:
        return Response(200, b"{}", headers=(("X-Injected", "a\r\nSet-Cookie: x"),))

    async def not_a_response(request: Request) -> Response:
        return {"not": "a response"}  # type: ignore[return-value]

    async def main() -> list[int]:
        router = Router()
        router.add("GET", "/header", bad_header)
        router.add("GET", "/dict", not_a_response)
        server = await serve_http(router, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return [(await exchange(port, get(p)))[0] for p in ("/header", "/dict")]
        finally:
            await close_http(server)

    logging.getLogger("peerpower.net.http").disabled = True
    try:
        assert asyncio.run(main()) == [500, 500]
    finally:
        logging.getLogger("peerpower.net.http").disabled = False


def test_invalid_chunked_request_411() -> None:
    async def test(port: int, app: App) -> None:
        raw = b"POST /tx HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        status, headers, body, closed = await exchange(port, raw)
        assert (status, body["field"], closed) == (411, "headers.transfer-encoding", True)
        assert headers["connection"] == "close"
        assert app.calls == []

    run(test)


# --- slow, vanishing and leftover clients -----------------------------------------------------


def test_client_disconnect_mid_body_server_keeps_serving() -> None:
    async def test(port: int, app: App) -> None:
        _, writer = await connect(port)
        writer.write(b"POST /tx HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        _, writer = await connect(port)
        writer.write(b"GET /stat")  # and a head cut short
        writer.close()
        await writer.wait_closed()
        assert (await exchange(port, get("/status")))[0] == 200
        assert app.calls == ["status"]

    run(test)


def test_client_disconnect_mid_handler_server_keeps_serving() -> None:
    async def test(port: int, app: App) -> None:
        _, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.05)  # the handler is now waiting
        writer.close()
        await writer.wait_closed()
        app.release.set()  # the handler finishes; its response has nowhere to go
        await asyncio.sleep(0.05)
        assert (await exchange(port, get("/status")))[0] == 200

    run(test)


def test_expect_100_continue_answered_before_body() -> None:
    async def test(port: int, app: App) -> None:
        reader, writer = await connect(port)
        writer.write(b"POST /tx HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        status, _, body = await read_response(reader)
        assert (status, json.loads(body)) == (202, {"accepted": {}})
        writer.close()
        await writer.wait_closed()

    run(test)


def test_idle_client_dropped_after_timeout() -> None:
    async def test(port: int, app: App) -> None:
        reader, writer = await connect(port)
        writer.write(b"GET /status HTTP/1.1\r\n")  # a head never finished
        assert await asyncio.wait_for(reader.read(1), 2) == b""
        writer.close()
        await writer.wait_closed()
        # A body that never arrives gets 408 once the head is in.
        status, _, _, closed = await exchange(
            port, b"POST /tx HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        )
        assert (status, closed) == (408, True)

    run(test, idle_timeout_s=0.2)


def test_shutdown_open_idle_connection_leaves_no_warnings() -> None:
    async def main() -> None:
        app = App()
        server = await serve_http(app.router(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await connect(port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        idle = await connect(port)  # never sends anything
        await asyncio.sleep(0.01)
        await asyncio.wait_for(close_http(server), 2)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert await reader.read(1) == b""
        assert await idle[0].read(1) == b""
        for w in (writer, idle[1]):
            w.close()
            await w.wait_closed()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_shutdown_lets_request_in_progress_finish() -> None:
    async def test(port: int, app: App) -> None:
        reader, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.05)  # the handler is now waiting
        server = next(iter(servers))
        closing = asyncio.create_task(close_http(server, grace_s=2))
        await asyncio.sleep(0.05)
        app.release.set()
        status, headers, body = await read_response(reader)
        assert (status, headers["connection"], json.loads(body)) == (
            200,
            "close",
            {"slow": "done"},
        )
        await closing
        writer.close()
        await writer.wait_closed()

    servers: list[asyncio.Server] = []

    async def main() -> None:
        app = App()
        server = await serve_http(app.router(), "127.0.0.1", 0)
        servers.append(server)
        await test(server.sockets[0].getsockname()[1], app)
        await close_http(server)  # a second close is harmless
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


# --- the parts on their own -------------------------------------------------------------------


def test_router_invalid_patterns_rejected() -> None:
    async def h(request: Request) -> Response:
        return json_response({})

    r = Router()
    r.add("GET", "/a/{x}", h)
    for method, pattern in [
        ("GET", "a"),
        ("GET", "/a/{x}/{x}"),
        ("GET", "/a/{1x}"),
        ("GET", "/a/x{y}"),
        ("GET", "/a/{y}"),  # same shape as /a/{x}
        ("G ET", "/b"),
    ]:
        with pytest.raises(ValueError, match=r"."):
            r.add(method, pattern, h)
    r.add("POST", "/a/{y}", h)


def test_http_error_json_and_invalid_status() -> None:
    e = HttpError(409, "nonce 3 already used", field="nonce")
    assert e.to_json() == {"error": "nonce 3 already used", "field": "nonce"}
    assert HttpError(503, "busy").to_json() == {"error": "busy"}
    with pytest.raises(ValueError, match="400-599"):
        HttpError(200, "fine")
    with pytest.raises(ValueError, match="204"):
        Response(204, b"")
    assert json_response({"a": [1, 2]}).body == b'{"a":[1,2]}\n'
