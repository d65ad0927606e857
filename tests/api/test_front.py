"""``POST /tx`` is answered by the app's plain-ASGI front layer (the hot path); the FastAPI
route it stands in for (reached when the app is mounted under a root path) answers the same."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from peerpower.api.app import create_app
from peerpower.api.exchange import Exchange
from tests.ledger.chain_helpers import SLOT, T0, Chain, new_chain

NOW = T0 + 60_000


def _requests(chain: Chain) -> list[dict[str, Any]]:
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    bad_field = chain.signer("b").order(SLOT, "sell", 1000, 1500)
    bad_field["body"]["price_sen_per_kwh"] = "15"
    forged = chain.signer("c", key="a").order(SLOT, "buy", 1000, 1500)
    return [
        {"json": order},  # accepted
        {"json": order},  # the same again: refused
        {"content": b"{not json"},
        {"json": bad_field},
        {"json": forged},
        {"json": [1, 2]},
        {"content": b""},
    ]


async def _answers(root_path: str) -> list[tuple[int, str | None, bytes]]:
    chain = new_chain()
    app = create_app(Exchange(chain.node, lambda: NOW))
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for request in _requests(chain):
            r = await client.post(f"{root_path}/tx", **request)
            out.append((r.status_code, r.headers.get("content-type"), r.content))
    return out


def test_the_front_layer_answers_tx_as_the_route_does() -> None:
    fast = asyncio.run(_answers(""))
    routed = asyncio.run(_answers("/api"))
    assert [status for status, _, _ in fast] == [202, 422, 400, 422, 422, 422, 400]
    assert fast == routed
