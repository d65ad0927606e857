"""The dashboard at ``/`` over a real server on 127.0.0.1: the page, its own assets with their
media types, and nothing loaded from another host."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from peerpower.api.app import create_app
from peerpower.api.exchange import Exchange
from tests.api.test_api import NOW, Server
from tests.ledger.chain_helpers import new_chain

ASSETS = {
    "/static/dashboard.js": ("text/javascript", "application/javascript"),
    "/static/dashboard.css": ("text/css",),
    "/static/favicon.svg": ("image/svg+xml",),
}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    exchange = Exchange(new_chain().node, lambda: NOW)
    server = Server(create_app(exchange))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http
    finally:
        server.stop()


def page(client: httpx.Client) -> str:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def test_the_page_references_its_own_assets(client: httpx.Client) -> None:
    html = page(client)
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert "/static/dashboard.js" in refs and "/static/dashboard.css" in refs
    for ref in refs:  # same server only: a path, never a scheme or //host
        assert ref.startswith("/static/") and not ref.startswith("//"), ref
        assert client.get(ref).status_code == 200, ref
    for needle in ('id="ladders"', 'id="units"', 'id="prices"', 'id="blocks"', 'id="account"'):
        assert needle in html
    assert "/" not in client.get("/openapi.json").json()["paths"]  # not part of the API


def test_assets_are_served_with_their_media_types(client: httpx.Client) -> None:
    for path, types in ASSETS.items():
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].split(";")[0] in types, (path, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff"
    policy = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    for missing in ("/static/app.py", "/static/..%2Fapp.py", "/static/index.html.bak"):
        r = client.get(missing)
        assert r.status_code == 404, missing
        assert r.headers["content-type"].startswith("application/problem+json")


def test_no_external_urls_and_every_element_the_script_uses_is_on_the_page(
    client: httpx.Client,
) -> None:
    html = page(client)
    js = client.get("/static/dashboard.js").text
    css = client.get("/static/dashboard.css").text
    for name, text in (("js", js), ("css", css), ("html", html)):
        assert not re.search(r"https?://", text), name  # no CDN, no other host
        assert "@import" not in text and "//cdn" not in text, name
    assert "url(" not in css
    # the stream is this server's: ws(s):// + location.host
    assert "location.host" in js and "/stream" in js
    ids = set(re.findall(r'\$\("([\w-]+)"\)', js))
    assert ids, "the script looks elements up by id"
    for element_id in ids:
        assert f'id="{element_id}"' in html, element_id
