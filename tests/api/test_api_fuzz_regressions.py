"""Defects the API fuzzing (test_fuzz.py) found, one test each; every test fails without its fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from peerpower.api.app import MAX_JSON_DEPTH, RateLimiter, create_app, too_deep
from peerpower.api.exchange import Exchange
from tests.api.test_api import NOW, Server, is_problem
from tests.ledger.chain_helpers import SLOT, Chain, new_chain


@pytest.fixture
def chain() -> Chain:
    return new_chain()


@pytest.fixture
def client(chain: Chain) -> Iterator[httpx.Client]:
    server = Server(create_app(Exchange(chain.node, lambda: NOW), RateLimiter(rate=0.001, burst=2)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http
    finally:
        server.stop()


def nest(depth: int, leaf: Any = 0) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_json_nested_past_the_decoders_limit_is_400_not_500(client: httpx.Client) -> None:
    """``json.loads`` raised RecursionError (not ValueError) for ``[[[[…`` a thousand deep."""
    for body in (b"[" * 100_000, b'{"a":' * 5000 + b"0" + b"}" * 5000):
        got = is_problem(client.post("/tx", content=body), 400)
        assert got["field"] == "body" and "deep" in got["detail"]
    assert client.get("/status").status_code == 200


def test_json_decoded_but_too_deep_to_encode_is_400_not_500(
    chain: Chain, client: httpx.Client
) -> None:
    """A list ~970 deep in a transaction's ``claims`` was decoded, then the canonical encoding
    of the body recursed past the limit: 500. Bodies nesting more than MAX_JSON_DEPTH are
    refused before anything reads them; the state is left as it was."""
    root = client.get("/status").json()["state_root"]
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    for depth in [MAX_JSON_DEPTH, 100, *range(940, 990)]:
        body = dict(order["body"], type="decide", claims=["DEEP"], result={})
        text = json.dumps({"body": body, "sig": "0" * 128})
        deep = "[" * depth + "0" + "]" * depth  # written out: json.dumps would recurse as deep
        r = client.post("/tx", content=text.replace('"DEEP"', deep).encode())
        got = is_problem(r, 400)
        assert got["field"] == "body", got
    assert client.get("/status").json()["state_root"] == root
    # nesting a transaction really has is taken
    assert client.post("/tx", json=order).status_code == 202


def test_too_deep_counts_arrays_and_objects() -> None:
    assert not too_deep(nest(MAX_JSON_DEPTH))
    assert too_deep(nest(MAX_JSON_DEPTH + 1))
    assert not too_deep({"a": [{"b": 1}] * 1000, "c": "[[[[[["})
    assert too_deep({"a": 1, "b": [{"c": nest(MAX_JSON_DEPTH - 2)}]})
    assert not too_deep("x") and not too_deep(None)


def test_a_rate_limited_signer_named_by_a_lone_surrogate_is_429_not_500(chain: Chain) -> None:
    """The 429 names the signer as sent; ``"\\ud800"`` (a lone surrogate, valid JSON) could
    not be written as UTF-8: 500. Problems are now written in ASCII escapes. (Refusals do not
    spend a signer's rate, so the signer here has none to start with.)"""
    exchange = Exchange(chain.node, lambda: NOW)
    server = Server(create_app(exchange, RateLimiter(rate=0.001, burst=0)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            body = {"body": {"from": "\ud800", "type": "order"}, "sig": "0" * 128}
            r = client.post("/tx", content=json.dumps(body).encode())
            got = is_problem(r, 429)
            assert got["value"] == "\ud800" and r.content.isascii()
            # the limit named is this server's (it was the default's, 200 a second)
            assert got["detail"] == "'\\ud800' sent more than 0.001 transactions a second"
    finally:
        server.stop()


def test_a_405_says_which_methods_are_allowed(client: httpx.Client) -> None:
    """RFC 9110 §15.5.6: a 405 carries Allow; the problem handler dropped the headers."""
    r = client.delete("/status")
    is_problem(r, 405)
    assert r.headers["allow"] == "GET"
    r = client.get("/tx")
    is_problem(r, 405)
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize("slot", ["2026-08-18#0", "20260818#00", "2026-08-18#٠٠", "1900-01-01#00"])
def test_a_slot_not_written_as_the_chain_writes_it_is_refused(
    chain: Chain, client: httpx.Client, slot: str
) -> None:
    """``/slots/2026-08-18#0/ladder`` answered 200 with an empty "open" ladder for a slot
    named ``2026-08-18#0`` while ``2026-08-18#00`` had orders (``Slot.parse`` reads it, the
    chain never writes it so): now 422 naming the slot."""
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    assert client.post("/tx", json=order).status_code == 202
    for what in ("ladder", "clearing"):
        got = is_problem(client.get(f"/slots/{quote(slot, safe='')}/{what}"), 422)
        assert got["field"] == "slot" and repr(slot) in got["detail"]
    assert client.get(f"/slots/{quote(SLOT, safe='')}/ladder").status_code == 200
