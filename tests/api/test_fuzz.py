"""Fuzzing the HTTP API from its own OpenAPI schema (issue 7): no input gets a 500.

One uvicorn server on 127.0.0.1 serves a chain with real records (orders open, a slot cleared,
one settled, meter readings). The tests read ``GET /openapi.json`` and, for every operation it
lists, draw requests from its parameters — values of the declared type and arbitrary ones
(wrong types, huge and negative numbers, empty, unicode, ``%``-escapes, ``#``, ``/``, ``..``,
long strings), some sent on a raw socket exactly as written. ``POST /tx`` (which reads a raw
JSON body its schema does not declare) gets arbitrary JSON, transaction-shaped objects, bytes
that are not JSON, odd content types, and — what reaches the deep rule code — valid signed
transactions of every type mutated field by field and signed again.

Every answer must be below 500; a 4xx is ``application/problem+json`` with status, title and
detail (a 422 from ``/tx`` names its rule or field); a 2xx is JSON; a refused transaction
leaves the state root and mempool as they were; the server stays up.
"""

from __future__ import annotations

import json
import socket
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from peerpower.api.app import RateLimiter, create_app
from peerpower.api.exchange import Exchange
from peerpower.crypto import KeyPair
from peerpower.ledger.claims import make_claim
from peerpower.ledger.transactions import Signer, meter_reading, sign_body
from peerpower.market.verify import result_from_json
from tests.api.test_api import Server
from tests.ledger.chain_helpers import KEYS, METER, SLOT, T0, Chain, jst, new_chain

FAST = 150  # examples per test in the quick run (the whole file in well under a minute)
SLOW = 1000  # examples per test in the long run (marked slow: still run by make test and CI)
PROBLEM = "application/problem+json"

# The timeline of the chain the server fronts (slot rules: tests/ledger/chain_helpers.py).
CLEARED = SLOT  # 2026-08-18#00: cleared at its gate, read by its meters, settled after 01:30
CLEARING = "2026-08-18#03"  # start 01:30, gate 01:25: cleared, not yet settled
OPEN = "2026-08-18#20"  # start 10:00: its orders stay open (a ladder with rows)
METERED = "2026-08-18#02"  # ended 01:30: meter readings still taken at the end (01:57)
NOW = jst(2026, 8, 18, 1, 57)  # the clock once the chain is built


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- the server and its chain --------------------------------------------------------------------
class Api:
    """The server under test, its chain, and what the examples draw on (not a dataclass: it
    would be printed in full with every falsifying example)."""

    def __init__(
        self,
        chain: Chain,
        exchange: Exchange,
        app: FastAPI,
        server: Server,
        client: httpx.Client,
        schema: dict[str, Any],
    ) -> None:
        self.chain, self.exchange, self.app = chain, exchange, app
        self.server, self.client, self.schema = server, client, schema
        self.known: dict[str, list[str]] = {}
        self.result: dict[str, Any] = {}  # a clearing result as recorded

    def __repr__(self) -> str:
        return f"Api({self.server.url})"

    def status(self) -> dict[str, Any]:
        r = self.client.get("/status")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def build_chain(chain: Chain, exchange: Exchange, clock: list[int]) -> None:
    """Orders in three slots; the first cleared, metered and settled, the second cleared, the
    third left open; readings of a later slot waiting in a block."""
    a, b, c = (chain.signer(p) for p in "abc")
    clock[0] = T0 + 60_000
    for slot in (CLEARED, CLEARING, OPEN):
        exchange.submit(a.order(slot, "sell", 1000, 1500))
        exchange.submit(b.order(slot, "buy", 600, 2000))
        exchange.submit(c.order(slot, "buy", 400, 1800))
    exchange.submit(a.order(OPEN, "sell", 500, 1700))
    exchange.produce()
    clock[0] = jst(2026, 8, 17, 23, 55)  # CLEARED's gate: sealed
    exchange.produce()
    clock[0] += 1000  # seeded and cleared by the validator's duty
    exchange.produce()
    clock[0] = jst(2026, 8, 18, 0, 31)  # CLEARED ended: its meters report
    tx_chain = chain.genesis.tx_chain
    for site, (imp, exp) in {"a": (0, 1000), "b": (600, 0), "c": (100, 0)}.items():
        exchange.submit(meter_reading(tx_chain, KEYS[METER[site]], site, CLEARED, imp, exp))
    exchange.produce()
    clock[0] = jst(2026, 8, 18, 1, 25)  # CLEARING's gate; CLEARED is past its meter deadline
    exchange.produce()
    clock[0] += 1000
    exchange.produce()
    clock[0] = jst(2026, 8, 18, 1, 31)
    exchange.submit(meter_reading(tx_chain, KEYS["am"], "a", METERED, 0, 300))
    exchange.produce()
    clock[0] = NOW
    assert chain.state.get("settled", CLEARED) is not None
    assert exchange.clearing(CLEARING) is not None
    assert exchange.ladder(OPEN)["orders"] == 4


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    chain = new_chain()
    clock = [T0]
    exchange = Exchange(chain.node, lambda: clock[0])
    build_chain(chain, exchange, clock)
    # a limit no example reaches: the rate limit has its own test (test_api.py)
    app = create_app(exchange, RateLimiter(rate=1e9, burst=1e9))
    server = Server(app)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            schema = client.get("/openapi.json").json()
            api = Api(chain, exchange, app, server, client, schema)
            heights = [b["height"] for b in client.get("/blocks", params={"limit": 1000}).json()]
            blocks = [client.get(f"/blocks/{h}").json() for h in heights]
            api.known = {
                "height": [str(b["header"]["height"]) for b in blocks],
                "tx_id": [i for b in blocks for i in b["tx_ids"]],
                "account_id": ["a", "b", "c", "op", "val", "grid", "retail"],
                "slot": [s["slot"] for s in client.get("/slots").json()],
                "day": ["2026-08-18", "2026-08-17"],
            }
            clear = [t for b in blocks for t in b["txs"] if t["body"]["type"] == "clear"]
            api.result = clear[-1]["body"]["result"]
            yield api
            assert api.status()["height"] >= chain.state.height  # still up at the end
    finally:
        server.stop()


# -- checking answers -----------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]
    path: str = ""  # the path as sent (httpx resolves "..")

    def json(self) -> Any:
        return json.loads(self.body)


def check_answer(answer: Answer, what: str, url: str = "http://127.0.0.1:") -> Any:
    """Below 500; a 4xx is problem+json with status, title and detail; a 2xx is JSON; a
    redirect goes to this server. Returns the decoded body."""
    assert answer.status < 500, (what, answer.status, answer.body[:500])
    if answer.status >= 400:
        assert answer.content_type.startswith(PROBLEM), (what, answer.content_type)
        body = answer.json()
        assert isinstance(body, dict), (what, body)
        assert body.get("status") == answer.status, (what, body)
        assert isinstance(body.get("title"), str) and body["title"], (what, body)
        assert isinstance(body.get("detail"), str) and body["detail"], (what, body)
        return body
    if answer.status in {307, 308}:  # e.g. a trailing slash: the path without it
        location = answer.headers.get("location", "")
        assert location.startswith(url + "/"), (what, location)
        return None
    assert 200 <= answer.status < 300, (what, answer.status)
    if answer.path == "/" and answer.content_type.startswith("text/html"):
        return None  # e.g. "/blocks/.." resolved by httpx to the dashboard's page
    assert answer.content_type.startswith("application/json"), (what, answer.content_type)
    return answer.json()


def send(
    api: Api, method: str, target: str, body: bytes | None, headers: dict[str, bytes]
) -> Answer:
    """Through httpx: ``target`` already escaped as it is to be sent (httpx may normalise it)."""
    r = api.client.request(method, target, content=body, headers=headers)
    path = r.request.url.path
    return Answer(
        r.status_code, r.headers.get("content-type", ""), r.content, dict(r.headers), path
    )


def send_raw(api: Api, method: str, target: str) -> Answer:
    """A request line written exactly as given (no normalising of ``..``, ``//`` or ``%``)."""
    host = f"127.0.0.1:{api.server.port}"
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    chunks = []
    with socket.create_connection(("127.0.0.1", api.server.port), timeout=10) as s:
        s.sendall(head.encode("ascii"))
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, body = raw.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    assert "chunked" not in fields.get("transfer-encoding", ""), fields
    length = int(fields.get("content-length", len(body)))
    assert len(body) == length, (target, fields, body[:200])
    return Answer(status, fields.get("content-type", ""), body, fields)


# -- values ---------------------------------------------------------------------------------------
EDGE_INTS = [
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**62,
    2**62 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64,
    10**18,
    10**18 + 1,
    10**100,
    -(10**100),
]
ODD_STRINGS = [
    "",
    " ",
    "%",
    "%00",
    "%zz",
    "%2F",
    "%25",
    "#",
    "/",
    "//",
    ".",
    "..",
    "../..",
    "%2e%2e",
    "?",
    "&",
    "=",
    "a" * 5000,
    "9" * 5000,
    "1e3",
    "1.5",
    "NaN",
    "Infinity",
    "-0",
    "+1",
    "0x10",
    "1_000",
    " 1 ",
    "\x00",
    "\n",
    "２",
    "١",
    "💥",
    "\u202e",
    "\ud800",
    "null",
    "true",
    "[]",
    "{}",
    "2026-08-18#00",
    "2026-08-18#1",
    "2026-08-18#48",
    "2026-08-18#-1",
    "20260818#01",
    "2026-W34-1#00",
    "0001-01-01#00",
    "9999-12-31#47",
    "2026-02-30#00",
    "2026-08-18",
    "2026-8-1",
    "0000-00-00",
    "a#1",
    "a#999",
]
odd_strings = st.sampled_from(ODD_STRINGS)
edge_ints = st.sampled_from(EDGE_INTS)
any_text = st.text(max_size=40) | st.text(st.characters(codec="utf-8"), max_size=40)
scalars = (
    st.none() | st.booleans() | st.integers() | edge_ints | st.floats() | any_text | odd_strings
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def declared_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a parameter's schema allows (``anyOf`` included)."""
    out = {schema["type"]} if "type" in schema else set()
    for alt in schema.get("anyOf", []) + schema.get("oneOf", []):
        out |= declared_types(alt)
    return out


def param_values(api: Api, name: str, schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Text for a parameter: values of its declared type, values the chain has (so reads hit
    records), and arbitrary ones."""
    typed: list[st.SearchStrategy[str]] = []
    kinds = declared_types(schema)
    if "integer" in kinds or "number" in kinds:
        typed += [st.integers(-5, 2000).map(str), edge_ints.map(str)]
    if "string" in kinds or not kinds:
        typed.append(any_text)
    if "boolean" in kinds:
        typed.append(st.sampled_from(["true", "false", "1", "0"]))
    known = api.known.get(name, [])
    if known:  # weighted: one draw in three reads a record the chain has
        typed += [st.sampled_from(known)] * (len(typed) + 2)
        typed.append(st.sampled_from(known).map(lambda v: v.upper() + " "))
    return st.one_of(*typed, odd_strings, st.text(max_size=300))


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[dict[str, Any], ...]


def operations(schema: dict[str, Any]) -> list[Operation]:
    out = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete", "head", "options"}:
                out.append(Operation(method.upper(), path, tuple(op.get("parameters", []))))
    return out


RAW_SAFE = "".join(c for c in string.printable if c not in string.whitespace + "%")


def pct(value: str, safe: str = "") -> str:
    """``value`` %-escaped as UTF-8 (a lone surrogate as the bytes it would be: not UTF-8)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe=safe)


@st.composite
def requests(draw: st.DrawFn, api: Api, op: Operation) -> tuple[str, str, bool]:
    """A request target for ``op`` (path with its parameters filled, query), and whether it
    goes on a raw socket exactly as written."""
    raw = draw(st.booleans())
    path = op.path
    query = []
    for p in op.params:
        value = draw(param_values(api, p["name"], p.get("schema", {})))
        if p["in"] == "path":
            # escaped in full, or (raw) only what a request line cannot carry
            text = pct(value, safe=RAW_SAFE if raw else "")
            path = path.replace("{" + p["name"] + "}", text)
        elif p["in"] == "query" and (p.get("required") or draw(st.booleans())):
            query.append((p["name"], value))
    if draw(st.sampled_from(range(10))) == 9:  # an unknown or repeated parameter
        query.append((draw(st.sampled_from(["x", "limit", "depth", ""])), draw(odd_strings)))
    target = path
    if query:
        target += "?" + "&".join(f"{pct(k)}={pct(v)}" for k, v in query)
    return op.method, target, raw


# -- the schema covers every route ----------------------------------------------------------------
def test_the_schema_lists_every_route_the_app_serves(api: Api) -> None:
    """So a new endpoint is fuzzed without touching this file: every HTTP route but the docs
    and the dashboard is in the schema, and the schema lists nothing the app does not serve."""
    app = api.app
    skip = {
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        app.swagger_ui_oauth2_redirect_url,
        "/",
        "/static/{name}",  # the dashboard's files, tested in test_dashboard.py
    }
    served = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path not in skip:
            served |= {(m, route.path) for m in route.methods if m != "HEAD"}
    listed = {(op.method, op.path) for op in operations(api.schema)}
    assert served == listed
    assert ("POST", "/tx") in listed and ("GET", "/accounts/{account_id}") in listed
    assert not any(path.startswith("/stream") for _, path in listed)  # the WebSocket


# -- reads ----------------------------------------------------------------------------------------
def read_example(api: Api, data: st.DataObject) -> None:
    ops = [op for op in operations(api.schema) if op.method == "GET"]
    op = data.draw(st.sampled_from(ops))
    method, target, raw = data.draw(requests(api, op))
    before = api.status()
    answer = send_raw(api, method, target) if raw else send(api, method, target, None, {})
    body = check_answer(answer, f"{method} {target}", api.server.url)
    event(f"{op.path} {answer.status}")
    if answer.status == 422:
        assert body.get("field"), body  # names what was wrong
    after = api.status()
    assert (after["state_root"], after["mempool"]) == (before["state_root"], before["mempool"])


@fuzz_settings(FAST)
@given(data=st.data())
def test_reads_drawn_from_the_schema(api: Api, data: st.DataObject) -> None:
    read_example(api, data)


@pytest.mark.slow
@fuzz_settings(SLOW)
@given(data=st.data())
def test_reads_drawn_from_the_schema_long(api: Api, data: st.DataObject) -> None:
    read_example(api, data)


def test_every_read_answers_its_own_examples(api: Api) -> None:
    """The records the chain has are found: each known value of each path parameter reads 200
    (so the fuzz above really reaches records, not only 404s)."""
    for op in operations(api.schema):
        names = [p["name"] for p in op.params if p["in"] == "path"]
        if op.method != "GET" or len(names) != 1 or names[0] not in api.known:
            continue
        for value in api.known[names[0]]:
            if names[0] == "slot" and op.path.endswith("/clearing") and value != CLEARING:
                continue  # only cleared slots kept have a clearing
            target = op.path.replace("{" + names[0] + "}", quote(value, safe=""))
            answer = send(api, "GET", target, None, {})
            assert answer.status == 200, (target, answer.body[:300])
            check_answer(answer, target)


def test_other_methods_are_405_problems(api: Api) -> None:
    allowed: dict[str, set[str]] = {}
    for op in operations(api.schema):
        allowed.setdefault(op.path, set()).add(op.method)
    for path, methods in allowed.items():
        target = path.replace("{", "").replace("}", "")  # any value will do
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - methods:
            answer = send(api, method, target, b"{}", {"content-type": b"application/json"})
            body = check_answer(answer, f"{method} {target}")
            assert answer.status == 405, (method, target, body)
            allow = set(answer.headers["allow"].split(", "))
            assert allow - {"HEAD"} == methods, (method, target, allow)


# -- transactions: arbitrary bodies ---------------------------------------------------------------
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "",
    "\xff/\xff",  # latin-1, as header values are
]


def tx_shaped(api: Api) -> st.SearchStrategy[Any]:
    """Objects like ``{"body": {...}, "sig": "..."}`` with random, missing and mistyped
    fields; the body's type and chain often right, so decoding gets past its first checks."""
    tx_chain = api.chain.genesis.tx_chain
    body = st.fixed_dictionaries(
        {},
        optional={
            "chain": st.sampled_from([tx_chain, tx_chain.upper(), ""]) | json_values,
            "type": st.sampled_from(
                [
                    *("order", "cancel", "deposit", "withdraw", "register", "reinstate"),
                    *("clear", "decide", "settle", "meter", "Order", ""),
                ]
            )
            | json_values,
            "from": st.sampled_from(["a", "b", "op", "val", "nobody"]) | json_values,
            "nonce": st.integers(-2, 1000) | edge_ints | json_values,
            "slot": st.sampled_from([OPEN, CLEARING, METERED]) | odd_strings | json_values,
            "side": st.sampled_from(["buy", "sell"]) | json_values,
            "energy_wh": st.integers(-1000, 10**7) | edge_ints | json_values,
            "price_sen_per_kwh": st.integers(-10, 10**5) | edge_ints | json_values,
            "amount_microyen": edge_ints | json_values,
            "account": st.sampled_from(["a", "zz"]) | json_values,
            "order": st.sampled_from(["a#1", "b#2"]) | odd_strings | json_values,
            "result": st.just(api.result) | json_values,
            "claims": st.lists(json_values, max_size=3) | json_values,
            "site": st.sampled_from(["a", "x"]) | json_values,
            "import_wh": edge_ints | json_values,
            "export_wh": edge_ints | json_values,
        },
    )
    sig = st.sampled_from(["0" * 128, "g" * 128, "A" * 128, "00"]) | json_values
    return st.fixed_dictionaries({}, optional={"body": body | json_values, "sig": sig}) | (
        st.fixed_dictionaries({"body": body, "sig": sig, "extra": json_values})
    )


def nested(depth: int, kind: str) -> bytes:
    """JSON nesting ``depth`` deep, written out (``json.dumps`` would recurse as deep); in a
    transaction's claims for ``decide`` (so decoding, not parsing, meets it)."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"0" + b"}" * depth
    body = {"chain": "c", "type": "decide", "from": "val", "nonce": 1, "slot": OPEN, "result": {}}
    return (
        json.dumps({"body": {**body, "claims": ["X"]}, "sig": "0" * 128})
        .encode()
        .replace(b'"X"', nested(depth, "list"))
    )


depths = st.one_of(
    st.integers(1, 3000),
    st.integers(900, 1000),  # around the interpreter's recursion limit
    st.sampled_from([31, 32, 33, 64, 1000, 5000, 100_000]),
)


def bodies(api: Api) -> st.SearchStrategy[bytes]:
    as_json = st.one_of(json_values, tx_shaped(api)).map(
        lambda v: json.dumps(v).encode()  # NaN and Infinity as Python writes them
    )
    deep = st.builds(nested, depths, st.sampled_from(["list", "dict", "tx"]))
    text = any_text.map(lambda t: t.encode("utf-8", "surrogatepass"))
    return st.one_of(
        as_json,
        as_json.map(lambda b: b.decode().encode("utf-16")),
        deep,
        deep,
        st.binary(max_size=200),
        text,
        st.sampled_from([b"", b"null", b"NaN", b"-Infinity", b"1e999999", b"9" * 5000, b"\xff"]),
    )


def post_tx(api: Api, body: bytes, content_type: str | None = "application/json") -> Any:
    """POST /tx; a refusal must name its rule or field and leave the chain as it was; an
    accepted transaction is pending, then committed in a block of its own."""
    before = api.status()
    headers = {} if content_type is None else {"content-type": content_type.encode("latin-1")}
    answer = send(api, "POST", "/tx", body, headers)
    got = check_answer(answer, f"POST /tx {body[:300]!r}")
    if currently_in_test_context():
        what = "accepted" if answer.status < 400 else got.get("rule", got.get("field", ""))
        event(f"{answer.status} {what} {got.get('field', '') if what == 'format' else ''}")
    if answer.status == 202:
        assert got["accepted"] is True and isinstance(got["id"], str), got
        pending = api.client.get(f"/transactions/{got['id']}")
        assert pending.status_code == 200 and pending.json()["status"] == "pending"
        api.exchange.produce()  # keeps the mempool empty: templates' nonces stay right
        return got
    assert answer.status in {400, 413, 415, 422}, (answer.status, got)
    if answer.status == 422:
        assert got.get("rule") or got.get("field"), got
    after = api.status()
    assert after["state_root"] == before["state_root"]
    assert after["mempool"] == before["mempool"]
    assert after["height"] == before["height"]
    return got


def tx_body_example(api: Api, data: st.DataObject) -> None:
    body = data.draw(bodies(api))
    content_type = data.draw(st.sampled_from(CONTENT_TYPES))
    post_tx(api, body, content_type)


@fuzz_settings(FAST)
@given(data=st.data())
def test_arbitrary_transaction_bodies(api: Api, data: st.DataObject) -> None:
    tx_body_example(api, data)


@pytest.mark.slow
@fuzz_settings(SLOW)
@given(data=st.data())
def test_arbitrary_transaction_bodies_long(api: Api, data: st.DataObject) -> None:
    tx_body_example(api, data)


# -- transactions: valid ones, mutated ------------------------------------------------------------
Template = Callable[[Api], tuple[dict[str, Any], KeyPair]]


def _signer(api: Api, name: str) -> Signer:
    return api.chain.signer(name)


def _open_order(api: Api, name: str) -> str:
    for rec in api.chain.state.table("orders").values():
        if getattr(rec, "account", None) == name:
            return str(rec.id)  # type: ignore[attr-defined]
    return f"{name}#1"


def _claims(api: Api) -> list[dict[str, Any]]:
    result = result_from_json(api.result)
    if result.objective is None:  # a cda/call result: a claim needs an objective
        return [{"slot": CLEARING, "seed": "0" * 64, "validator": "val", "sig": "0" * 128}]
    claim = make_claim(KEYS["val"], "val", CLEARING, "0" * 64, result)
    return [claim.to_json()]


TEMPLATES: dict[str, Template] = {
    "order": lambda api: (
        _signer(api, "a").order(OPEN, "sell", 1000, 1500)["body"],
        KEYS["a"],
    ),
    "buy": lambda api: (_signer(api, "b").order(OPEN, "buy", 500, 1600)["body"], KEYS["b"]),
    "cancel": lambda api: (
        _signer(api, "c").cancel(_open_order(api, "c"))["body"],
        KEYS["c"],
    ),
    "withdraw": lambda api: (_signer(api, "b").withdraw(1000)["body"], KEYS["b"]),
    "deposit": lambda api: (_signer(api, "op").deposit("c", 1000)["body"], KEYS["op"]),
    "register": lambda api: (
        _signer(api, "op").register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "pv")[
            "body"
        ],
        KEYS["op"],
    ),
    "reinstate": lambda api: (_signer(api, "op").reinstate("a")["body"], KEYS["op"]),
    "settle": lambda api: (_signer(api, "val").settle(CLEARING)["body"], KEYS["val"]),
    "clear": lambda api: (_signer(api, "val").clear(CLEARING, api.result)["body"], KEYS["val"]),
    "decide": lambda api: (
        _signer(api, "val").decide(CLEARING, api.result, _claims(api))["body"],
        KEYS["val"],
    ),
    "meter": lambda api: (
        meter_reading(api.chain.genesis.tx_chain, KEYS["bm"], "b", METERED, 200, 0)["body"],
        KEYS["bm"],
    ),
}


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (object keys and list indexes), the value's own first."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            out += paths_of(v, (*prefix, k))
    return out


# Values a field may take that the rules judge (not the format check): other slots, sides,
# accounts, amounts at and past the market's limits.
DOMAIN: dict[str, list[Any]] = {
    "slot": [
        *(OPEN, CLEARING, CLEARED, METERED, "2026-08-18#05", "2026-08-19#03", "2026-08-19#10"),
        *("2026-08-17#10", "2026-08-18#47", "1971-01-01#00", "9998-12-31#47"),
    ],
    "side": ["buy", "sell"],
    "from": ["a", "b", "c", "op", "val", "grid", "retail", "x", "nobody"],
    "account": ["a", "b", "c", "op", "val", "retail", "x", "nobody"],
    "site": ["a", "b", "c", "op", "x", "nobody"],
    "order": ["a#1", "b#2", "c#3", "a#999", "a#0", "op#1"],
    "node": ["root", "far", "nowhere"],
    "site_type": ["pv", "load", "battery", "wind"],
    "energy_wh": [100, 150, 0, -100, 10**6, 10**7, 10**9, 10**18],
    "price_sen_per_kwh": [0, 1, -1, 999, 1000, 5000, 10**5, 10**9],
    "amount_microyen": [1, 0, -1, 10**9, 10**12, 10**12 + 1, 10**18, 10**18 + 1],
    "import_wh": [0, 1, 10**9, 10**9 + 1, -1],
    "export_wh": [0, 1, 10**9, 10**9 + 1, -1],
    "validator": ["val", "a", "nobody"],
    "mechanism": ["cda", "call", "optimal", "Optimal"],
    "goal": ["volume", "welfare", "maxmin", None],
}


def tweaks(key: Any, value: Any) -> st.SearchStrategy[Any]:
    """A value for field ``key`` instead of ``value``: one the rules judge (same type, off by a
    little, at an edge, another the field may take) or, less often, anything."""
    near = near_values(value)
    if isinstance(key, str) and key in DOMAIN:
        near = st.sampled_from(DOMAIN[key]) | near
    return st.one_of(*[near] * 6, edge_ints, odd_strings, json_values)


def near_values(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        options: st.SearchStrategy[Any] = st.just(not value)
    elif isinstance(value, int):
        options = st.sampled_from(
            [value + 1, value - 1, -value, value * 100, value // 2, str(value), float(value)]
        )
    elif isinstance(value, str):
        options = st.sampled_from(
            [value + "x", value[:-1], value.upper(), " " + value, value * 2, [value], None]
        )
    else:
        options = st.just(None)
    return options


@st.composite
def mutated(draw: st.DrawFn, api: Api) -> dict[str, Any]:
    """A valid transaction of some type, with 0–3 of its fields replaced, deleted or added,
    then (usually) signed again so the rules, not the signature check, refuse it."""
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    body, key = TEMPLATES[kind](api)
    original = sign_body(key, body)
    body = json.loads(json.dumps(body))  # a copy to mutate
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2, 3]))):
        path = draw(st.sampled_from(paths_of(body)))
        if not path:
            continue
        *parent_path, last = path
        parent: Any = body
        for step in parent_path:
            parent = parent[step]
        action = draw(st.sampled_from(["set"] * 8 + ["delete", "add"]))
        if action == "set":
            parent[last] = draw(tweaks(last, parent[last]))
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "sig", "body", "from", ""]))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    how = draw(st.sampled_from(["resign"] * 9 + ["old", "other-key", "garbage"]))
    if how == "resign":
        tx = sign_body(key, body)
    elif how == "old":
        tx = {"body": body, "sig": original["sig"]}
    elif how == "other-key":
        tx = sign_body(KEYS[draw(st.sampled_from(["a", "b", "op", "val", "am"]))], body)
    else:
        tx = {"body": body, "sig": draw(json_values | st.text(string.hexdigits, min_size=128))}
    if draw(st.sampled_from(range(10))) == 9:  # (integers() would favour 0)
        tx[draw(st.sampled_from(["extra", "sig", "body"]))] = draw(json_values)
    return tx


def mutated_example(api: Api, data: st.DataObject) -> None:
    tx = data.draw(mutated(api))
    post_tx(api, json.dumps(tx).encode())


@fuzz_settings(FAST * 3)
@given(data=st.data())
def test_mutated_signed_transactions(api: Api, data: st.DataObject) -> None:
    mutated_example(api, data)


@pytest.mark.slow
@fuzz_settings(SLOW * 3)
@given(data=st.data())
def test_mutated_signed_transactions_long(api: Api, data: st.DataObject) -> None:
    mutated_example(api, data)


def test_every_template_is_valid_as_made(api: Api) -> None:
    """Unmutated, each template is a transaction the rules take or refuse by a rule of their
    own (not by format, signature or nonce): the mutations start from valid ground."""
    for kind, template in TEMPLATES.items():
        body, key = template(api)
        got = post_tx(api, json.dumps(sign_body(key, body)).encode())
        rule = got.get("rule")
        assert rule not in {"format", "signature", "nonce", "chain", "account", "role"}, (kind, got)


# -- the rate limit, for any signer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(api: Api) -> Iterator[httpx.Client]:
    """A second server on the same exchange whose every signer is over its rate."""
    server = Server(create_app(api.exchange, RateLimiter(rate=1e-9, burst=0)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client
    finally:
        server.stop()


signer_names = st.one_of(
    any_text,
    odd_strings,
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.text(max_size=2000),
)


@fuzz_settings(FAST)
@given(name=signer_names, key=st.sampled_from(["from", "site"]), rest=json_values)
def test_any_signer_over_its_rate_gets_a_429_naming_it(
    api: Api, limited: httpx.Client, name: str, key: str, rest: Any
) -> None:
    before = api.status()
    tx = {"body": {key: name, "type": "order", "x": rest}, "sig": "0" * 128}
    r = limited.post("/tx", content=json.dumps(tx).encode())
    got = check_answer(
        Answer(r.status_code, r.headers.get("content-type", ""), r.content, dict(r.headers)),
        f"POST /tx from {name!r}",
    )
    assert r.status_code == 429 and got["field"] == "body.from", got
    assert got["value"] == json.loads(json.dumps(name))  # (a surrogate pair reads as one)
    assert "more than 1e-09 transactions a second" in got["detail"]  # this server's rate
    assert api.status()["mempool"] == before["mempool"]


def test_the_server_is_still_up(api: Api) -> None:
    status = api.status()
    assert status["height"] == api.chain.state.height and status["mempool"] == 0
