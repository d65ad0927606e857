"""``peerpower serve --devnet``: validators agreeing by consensus, simulated sites trading in
accelerated time, and the API in front of the first validator — over a real server."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import connect

from peerpower.api.devnet import GUEST, DevnetOptions, LiveDevnet
from peerpower.cli import main
from peerpower.client import ApiError, Client
from peerpower.consensus.ledger_app import LedgerApp
from peerpower.crypto import canonical
from peerpower.errors import InvalidInput
from peerpower.ledger.rules import from_ms
from peerpower.ledger.state import Settled
from peerpower.timeslots import Slot, slot_of
from tests.api.live import serving, until

FAST = 20_000.0  # virtual seconds a second: a slot in 0.09 s (or as fast as the machine runs)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveDevnet, str]]:
    with serving(DevnetOptions(speed=FAST, seed=3), tmp_path_factory.mktemp("keys")) as running:
        yield running


def test_the_devnet_trades_through_consensus(live: tuple[LiveDevnet, str]) -> None:
    devnet, url = live
    with httpx.Client(base_url=url, timeout=10) as http:

        def traded() -> list[dict[str, Any]]:
            return [s for s in http.get("/slots").json() if s["volume_wh"] > 0]

        slot = until(traded, "a slot cleared with trades", 120)[0]["slot"]
        status = http.get("/status").json()
        assert status["validators"] == ["val0", "val1", "val2", "val3"]
        assert devnet.error is None
        clearing = http.get(f"/slots/{quote(slot, safe='')}/clearing").json()
        units = clearing["balanced_units"]
        assert units and sum(u["energy_wh"] for u in units) == clearing["volume_wh"]
        assert all(u["energy_wh"] % 100 == 0 for u in units)  # 0.1 kWh lots
        prices = [u["price_sen_per_kwh"] for u in units]
        assert clearing["min_price_sen_per_kwh"] == min(prices)
        assert clearing["max_price_sen_per_kwh"] == max(prices)
        day = Slot.parse(slot).start.date().isoformat()
        points = http.get("/prices", params={"day": day}).json()["points"]
        assert slot in [p["slot"] for p in points]
        # every validator holds the same chain: consensus, not one node's say
        with devnet.exchange.lock:
            apps = list(devnet.chain._apps.values())
            low = min(a.height for a in apps)
            assert low >= 2
            hashes = {a.blocks[low - 1].hash for a in apps}
        assert len(hashes) == 1
        block = http.get(f"/blocks/{low}").json()
        assert len(block["commit"]) >= 3  # a quorum of the four signed it


def test_a_guest_order_goes_through_the_api_to_the_chain(live: tuple[LiveDevnet, str]) -> None:
    devnet, url = live
    with Client(url, devnet.genesis.tx_chain) as client:
        me = client.participant(GUEST, devnet.guest_key)
        now = from_ms(client.status()["time_ms"])
        slot = str(slot_of(now + timedelta(hours=8)))  # hours ahead of the chain: still open
        tx = me.signer.order(slot, "buy", 300, 2000)
        tx_id = client.submit(tx)["id"]
        assert tx_id == hashlib.sha256(canonical(tx["body"])).hexdigest()

        def committed() -> bool:
            return client.transaction(tx_id)["status"] == "committed"

        until(committed, "the guest's order in a block", 30)
        found = client.transaction(tx_id)
        assert found["tx"]["body"]["from"] == GUEST and found["tx"]["body"]["slot"] == slot
        with pytest.raises(ApiError) as refused:
            me.order(slot, "buy", 250, 2000)  # not whole lots
        assert refused.value.status == 422 and refused.value.rule


def test_the_stream_sends_blocks_books_and_trades(live: tuple[LiveDevnet, str]) -> None:
    _, url = live
    seen: set[str] = set()
    with connect(f"ws://{url.removeprefix('http://')}/stream?since=0") as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and hello["validators"]
        deadline = time.monotonic() + 60
        last = 0
        while seen != {"block", "book", "trade"} and time.monotonic() < deadline:
            event = json.loads(ws.recv(timeout=30))
            assert event["seq"] > last  # numbered, in order
            last = event["seq"]
            seen.add(event["type"])
            if event["type"] == "book":
                assert set(event) >= {"slot", "status", "rows"}
    assert seen == {"block", "book", "trade"}


def test_bad_options_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        DevnetOptions(validators=3).check()
    assert err.value.field == "devnet"
    with pytest.raises(InvalidInput) as err:
        DevnetOptions(speed=0).check()
    assert err.value.field == "speed"
    for argv, field in (
        (["serve", "--devnet", "2"], "devnet"),
        (["serve", "--devnet", "4", "--port", "0"], "port"),
        (["serve", "--devnet", "4", "--speed", "-1"], "speed"),
    ):
        assert main(argv) == 2
        assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["field"] == field


def test_the_devnet_is_fronted_by_a_consensus_validator(live: tuple[LiveDevnet, str]) -> None:
    devnet, _ = live
    assert isinstance(devnet.exchange.node, LedgerApp)
    assert devnet.exchange.node is devnet.chain.front


def test_every_clearing_is_kept_though_nobody_asks(tmp_path: Path) -> None:
    """The ledger drops a slot's contracts once it settles; the exchange indexes each block as
    it commits, so clearings, prices and settlements are there even if no client polled."""
    devnet = LiveDevnet(DevnetOptions(speed=FAST, seed=4), tmp_path)
    devnet.start()
    try:
        time.sleep(8)  # no API calls meanwhile
        devnet.pause()
        exchange = devnet.exchange
        with exchange.lock:
            settled = {
                slot: rec.volume_wh
                for slot, rec in exchange.node.state.table("settled").items()
                if isinstance(rec, Settled) and rec.volume_wh > 0
            }
            cleared = dict(exchange.cleared)
        assert len(settled) >= 3, "too few slots traded and settled to tell"
        for slot, volume in settled.items():
            assert cleared[slot]["volume_wh"] == volume, slot
            block = exchange.block(cleared[slot]["height"])
            assert block is not None
            assert any(
                tx["body"]["type"] in ("clear", "decide") and tx["body"]["slot"] == slot
                for tx in block["txs"]
            ), f"block {cleared[slot]['height']} did not clear {slot}"
    finally:
        devnet.stop()
