"""A live devnet served over a real uvicorn server on 127.0.0.1, for the devnet and browser
tests, and a wait for a condition."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peerpower.api.app import create_app
from peerpower.api.devnet import DevnetOptions, LiveDevnet
from tests.api.test_api import Server


@contextlib.contextmanager
def serving(opts: DevnetOptions, key_dir: Path) -> Iterator[tuple[LiveDevnet, str]]:
    """The devnet running and its API served; yields it and the server's URL; both stopped
    on leaving."""
    devnet = LiveDevnet(opts, key_dir)
    server = Server(create_app(devnet.exchange))
    devnet.start()
    try:
        yield devnet, server.url
    finally:
        devnet.stop()
        server.stop()


def until(check: Any, what: str, timeout: float = 60.0) -> Any:
    """``check()``'s first true answer, tried every 0.1 s (an exception counts as not yet:
    e.g. a page element re-rendered under the test); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
