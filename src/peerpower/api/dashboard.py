"""The live dashboard at ``/``: one page of our own HTML, CSS and JavaScript (no third-party code,
nothing fetched from another host) reading the JSON API and the ``/stream`` WebSocket.

The page and its assets are package files under ``peerpower/api/static``; only the files named
in :data:`ASSETS` are served, under ``/static/<name>``, each with its media type.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Everything the page loads comes from this server; the stream is a same-origin WebSocket.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def static_file(name: str) -> bytes:
    """The bytes of a file of the dashboard (``index.html`` or one of :data:`ASSETS`)."""
    return (files("peerpower.api") / "static" / name).read_bytes()


def mount_dashboard(app: FastAPI) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` (its scripts, styles and icon)."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(static_file("index.html"), headers=HEADERS)

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            body = {
                "type": "about:blank",
                "title": "not found",
                "status": 404,
                "detail": f"no file {name[:80]!r} here",
                "field": "name",
            }
            return JSONResponse(body, status_code=404, media_type="application/problem+json")
        return Response(static_file(name), media_type=media, headers=HEADERS)
