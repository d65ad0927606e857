"""The HTTP API over a real server on 127.0.0.1: signed transactions in, problem+json out."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect

from peerpower.api.app import MAX_BODY_BYTES, RateLimiter, create_app
from peerpower.api.exchange import Exchange
from peerpower.crypto import canonical
from tests.ledger.chain_helpers import (
    DEADLINE,
    DEPOSIT,
    END,
    GATE,
    SLOT,
    T0,
    Chain,
    new_chain,
    reading,
)

NOW = T0 + 60_000


class Server:
    """uvicorn on a free port of 127.0.0.1, in a thread; stopped by :meth:`stop`."""

    def __init__(self, app: object) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def chain() -> Chain:
    return new_chain()


@pytest.fixture
def api(chain: Chain) -> Iterator[tuple[Exchange, httpx.Client]]:
    exchange = Exchange(chain.node, lambda: NOW)
    server = Server(create_app(exchange, RateLimiter(rate=1000, burst=5)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield exchange, client
    finally:
        server.stop()


def is_problem(r: httpx.Response, status: int) -> dict:  # type: ignore[type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


def test_a_signed_order_goes_in_and_the_account_shows_it(
    chain: Chain, api: tuple[Exchange, httpx.Client]
) -> None:
    exchange, client = api
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    r = client.post("/tx", json=order)
    tx_id = hashlib.sha256(canonical(order["body"])).hexdigest()  # the signed bytes' hash
    assert r.status_code == 202 and r.json() == {
        "accepted": True,
        "id": tx_id,
        "type": "order",
        "sender": "a",
        "nonce": 1,
    }
    assert client.get("/status").json()["mempool"] == 1
    assert client.get(f"/transactions/{tx_id}").json()["status"] == "pending"
    header = exchange.produce()
    block = client.get(f"/blocks/{header['height']}").json()
    assert block["txs"] == [order]  # passed on unchanged
    found = client.get(f"/transactions/{tx_id}").json()
    assert found == {
        "id": tx_id,
        "status": "committed",
        "height": header["height"],
        "index": 0,
        "tx": order,
    }
    assert client.get("/blocks", params={"limit": 1}).json()[0]["height"] == header["height"]
    acct = client.get("/accounts/a").json()
    assert acct["nonce"] == 1 and [o["id"] for o in acct["orders"]] == ["a#1"]
    assert acct["margin_microyen"] > 0
    assert acct["balance_microyen"] + acct["margin_microyen"] == DEPOSIT
    # the slot's "#" is sent encoded (else it would start the URL's fragment)
    ladder = client.get(f"/slots/{quote(SLOT, safe='')}/ladder").json()
    assert ladder["slot"] == SLOT and ladder["orders"] == 1
    assert ladder["rows"] == [
        {"label": "", "price_sen_per_kwh": 1500, "sell_wh": 1000, "buy_wh": 0}
    ]


def test_replayed_and_foreign_signed_transactions_are_refused_by_rule(
    chain: Chain, api: tuple[Exchange, httpx.Client]
) -> None:
    exchange, client = api
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    assert client.post("/tx", json=order).status_code == 202
    exchange.produce()
    root = client.get("/status").json()["state_root"]
    replay = is_problem(client.post("/tx", json=order), 422)
    assert replay["rule"] == "nonce"
    forged = chain.signer("a", key="b").order(SLOT, "sell", 1000, 1500)  # b's key, a's name
    refused = is_problem(client.post("/tx", json=forged), 422)
    assert refused["rule"] == "signature"
    assert client.get("/status").json()["state_root"] == root  # nothing changed


def test_bad_input_names_the_field(chain: Chain, api: tuple[Exchange, httpx.Client]) -> None:
    _, client = api
    r = client.post("/tx", content=b"{not json", headers={"content-type": "application/json"})
    assert is_problem(r, 400)["field"] == "body"
    order = chain.signer("a").order(SLOT, "sell", 1000, 1500)
    order["body"]["price_sen_per_kwh"] = "15"
    bad = is_problem(client.post("/tx", json=order), 422)
    assert bad["rule"] == "format" and bad["field"] == "tx.body.price_sen_per_kwh"
    assert is_problem(client.get("/slots/tomorrow/ladder"), 422)["field"] == "slot"
    assert is_problem(client.get("/accounts/nobody"), 404)["field"] == "account_id"
    assert is_problem(client.get("/blocks/999"), 404)["field"] == "height"
    assert is_problem(client.get("/blocks/x"), 422)["field"] == "path.height"
    big = b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]"
    assert is_problem(client.post("/tx", content=big), 413)["field"] == "body"
    assert client.get("/openapi.json").json()["info"]["title"] == "peerpower"


def test_a_signer_over_its_rate_gets_429(chain: Chain) -> None:
    exchange = Exchange(chain.node, lambda: NOW)
    server = Server(create_app(exchange, RateLimiter(rate=0.001, burst=3)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            signer = chain.signer("a")
            codes = [
                client.post("/tx", json=signer.order(SLOT, "sell", 100, 1500)).status_code
                for _ in range(5)
            ]
            assert codes == [202, 202, 202, 429, 429]
            # another signer is not held back
            other = chain.signer("b").order(SLOT, "buy", 100, 2000)
            assert client.post("/tx", json=other).status_code == 202
            body = json.loads(client.post("/tx", json=signer.order(SLOT, "sell", 100, 1500)).text)
            assert body["status"] == 429 and body["value"] == "a"
    finally:
        server.stop()


def test_the_python_client_signs_locally_and_reports_refusals(
    chain: Chain, api: tuple[Exchange, httpx.Client]
) -> None:
    from peerpower.client import ApiError, Client
    from tests.ledger.chain_helpers import KEYS

    exchange, http = api
    with Client(str(http.base_url), chain.genesis.tx_chain) as client:
        me = client.participant("a", KEYS["a"])
        oid = me.order(SLOT, "sell", 1000, 1500)
        assert oid == "a#1"
        exchange.produce()
        assert [o["id"] for o in client.account("a")["orders"]] == ["a#1"]
        assert client.ladder(SLOT)["orders"] == 1
        # a refusal names its rule and field; the nonce stays free for the next order
        with pytest.raises(ApiError) as info:
            me.order(SLOT, "sell", 150, 1500)  # not a whole number of 100 Wh lots
        assert info.value.status == 422 and info.value.rule == "lot"
        assert me.order(SLOT, "sell", 200, 1600) == "a#2"
        me.cancel("a#1")
        exchange.produce()
        assert [o["id"] for o in client.account("a")["orders"]] == ["a#2"]
        with pytest.raises(ApiError) as missing:
            client.account("nobody")
        assert missing.value.status == 404 and missing.value.field == "account_id"


def test_order_book_and_account_commands(
    chain: Chain,
    api: tuple[Exchange, httpx.Client],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from peerpower.cli import main
    from peerpower.crypto import write_key_file
    from tests.ledger.chain_helpers import KEYS

    exchange, http = api
    url = str(http.base_url)
    key = tmp_path / "a.key"
    write_key_file(key, KEYS["a"])
    common = ["--api", url, "--key", str(key), "--account", "a"]
    sell = ["--slot", SLOT, "--side", "sell", "--price", "1500"]
    assert main(["order", "submit", *common, *sell, "--energy-wh", "1000"]) == 0
    assert json.loads(capsys.readouterr().out) == {"order": "a#1"}
    exchange.produce()
    assert main(["book", SLOT, "--api", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{SLOT} (open, 1 orders)") and "SELL kWh" in out
    assert main(["account", "a", "--api", url]) == 0
    assert json.loads(capsys.readouterr().out)["nonce"] == 1
    # refused by a rule: exit 1, the rule and field on stderr
    assert main(["order", "submit", *common, *sell, "--energy-wh", "150"]) == 1
    err = json.loads(capsys.readouterr().err)
    assert err["rule"] == "lot" and err["status"] == 422
    assert main(["order", "cancel", *common, "--order", "a#1"]) == 0
    capsys.readouterr()
    # no API there: bad input naming the flag
    assert main(["account", "a", "--api", "http://127.0.0.1:9"]) == 2
    assert json.loads(capsys.readouterr().err)["field"] == "api"


def test_a_slot_cleared_and_settled_reads_back(chain: Chain) -> None:
    """Orders in, the gate, the clearing (800 Wh a → b at the nodal price 1500 sen/kWh: a's
    1 kWh at 15 yen is more than b's 0.8 kWh, so a's ask, partly filled, is the price), meter
    readings, settlement: each step as the reads and the stream show it."""
    now = [T0 + 2000]
    exchange = Exchange(chain.node, lambda: now[0])
    server = Server(create_app(exchange))
    slot = quote(SLOT, safe="")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for tx in (
                chain.signer("a").order(SLOT, "sell", 1000, 1500),
                chain.signer("b").order(SLOT, "buy", 800, 2500),
            ):
                assert client.post("/tx", json=tx).status_code == 202
            exchange.produce()
            assert is_problem(client.get(f"/slots/{slot}/clearing"), 404)["field"] == "slot"
            assert [s["status"] for s in client.get("/slots").json()] == ["open"]
            for now[0] in (GATE, GATE + 1000):  # the gate seals the slot; the next block clears
                exchange.produce()
            clearing = client.get(f"/slots/{slot}/clearing").json()
            assert clearing["balanced_units"] == [
                {
                    "seller": "a",
                    "buyer": "b",
                    "sell_order": "a#1",
                    "buy_order": "b#1",
                    "energy_wh": 800,
                    "price_sen_per_kwh": 1500,
                    "fee_sen_per_kwh": 0,
                    "buyer_price_sen_per_kwh": 1500,
                    "rent_sen_per_kwh": 0,
                }
            ]
            assert clearing["pricing"] == "nodal"
            assert clearing["node_prices_sen_per_kwh"] == {"root": 1500}
            assert clearing["volume_wh"] == 800 and clearing["mean_price_sen_per_kwh"] == 1500
            assert clearing["mean_buyer_price_sen_per_kwh"] == 1500
            points = client.get("/prices", params={"day": "2026-08-18"}).json()["points"]
            assert [(p["slot"], p["mean_price_sen_per_kwh"]) for p in points] == [(SLOT, 1500)]
            assert client.get("/prices", params={"day": "2026-08-19"}).json()["points"] == []
            assert is_problem(client.get("/prices", params={"day": "18/08"}), 422)["field"] == "day"
            assert client.get(f"/slots/{slot}/ladder").json()["rows"] == []  # orders matched
            assert client.get("/accounts/a").json()["contracts"][0]["energy_wh"] == 800
            now[0] = END + 1000
            for tx in (reading("a", SLOT, 0, 800), reading("b", SLOT, 800, 0)):
                assert client.post("/tx", json=tx).status_code == 202
            exchange.produce()
            now[0] = DEADLINE + 1000
            exchange.produce()  # settles
            assert [s["status"] for s in client.get("/slots").json()] == ["settled"]
            # 800 Wh at 1500 sen/kWh = 0.8 kWh × 15 yen = 12 yen = 12,000,000 µ¥
            a = client.get("/accounts/a").json()
            assert a["settlements"] == [
                {
                    "slot": SLOT,
                    "sold_wh": 800,
                    "bought_wh": 0,
                    "received_microyen": 12_000_000,
                    "paid_microyen": 0,
                    "defaulted": False,
                }
            ]
            assert a["balance_microyen"] == DEPOSIT + 12_000_000 and a["margin_microyen"] == 0
            b = client.get("/accounts/b").json()["settlements"][0]
            assert (b["bought_wh"], b["paid_microyen"]) == (800, 12_000_000)
            with connect(f"ws://127.0.0.1:{server.port}/stream?since=0") as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "hello"
                events = [json.loads(ws.recv(timeout=10)) for _ in range(exchange.event_seq)]
            kinds = [e["type"] for e in events]
            assert kinds.count("block") == 5 and kinds.count("trade") == 1
            books = [e for e in events if e["type"] == "book"]
            assert [
                (r["price_sen_per_kwh"], r["sell_wh"], r["buy_wh"]) for r in books[0]["rows"]
            ] == [
                (2500, 0, 800),
                (1500, 1000, 0),
            ]  # the book after block 2
            assert (books[-1]["status"], books[-1]["rows"]) == ("cleared", [])  # off the book
    finally:
        server.stop()


def test_the_operator_registers_and_funds_a_participant_who_withdraws(
    chain: Chain, api: tuple[Exchange, httpx.Client]
) -> None:
    """Every write is a transaction signed on the client: the operator's register and deposit,
    the participant's withdrawal and its meter's reading."""
    from peerpower.client import ApiError, Client
    from tests.ledger.chain_helpers import KEYS

    exchange, http = api
    with Client(str(http.base_url), chain.genesis.tx_chain) as client:
        op = client.participant("op", KEYS["op"])
        op.register("x", KEYS["x"].public_hex, KEYS["xm"].public_hex, "root", "consumer")
        op.deposit("x", 5_000_000)
        exchange.produce()
        x = client.participant("x", KEYS["x"])
        assert client.account("x")["balance_microyen"] == 5_000_000
        with pytest.raises(ApiError) as too_much:
            x.withdraw(5_000_001)
        assert too_much.value.rule and too_much.value.status == 422
        tx_id = x.withdraw(2_000_000)
        exchange.produce()
        assert client.account("x")["balance_microyen"] == 3_000_000
        assert client.transaction(tx_id)["status"] == "committed"
        with pytest.raises(ApiError) as not_operator:
            x.deposit("x", 1)  # only the operator credits deposits
        assert not_operator.value.status == 422 and not_operator.value.rule
        # a meter reading is signed by the site's meter key, not its account key
        with pytest.raises(ApiError) as wrong_key:
            client.meter("x", KEYS["x"], SLOT, 0, 0)
        assert wrong_key.value.rule == "signature"
        assert client.market()["market"]["lot_wh"] == 100


def test_a_slot_never_cleared_settles_void_and_says_so(chain: Chain) -> None:
    now = [T0 + 2000]
    exchange = Exchange(chain.node, lambda: now[0])
    exchange.submit(chain.signer("a").order(SLOT, "sell", 1000, 1500))
    exchange.submit(chain.signer("b").order(SLOT, "buy", 800, 2500))
    # blocks at the gate and then only after the slot started: too late to clear it
    for now[0] in (T0 + 2000, GATE, END, DEADLINE + 1000):
        exchange.produce()
    assert exchange.slots() == [{"slot": SLOT, "status": "void", "orders": 0, "volume_wh": 0}]
    assert exchange.ladder(SLOT)["status"] == "void"
    assert exchange.clearing(SLOT) is None
    books = [e for e in exchange.events_since(0) if e["type"] == "book"]
    assert books[-1]["status"] == "void"
    assert exchange.ladder("2026-08-17#10")["status"] == "closed"  # its gate passed, no orders
    assert exchange.ladder("2026-08-20#10")["status"] == "open"


def test_junk_naming_a_signer_does_not_use_up_its_rate(chain: Chain) -> None:
    """The rate is spent by accepted transactions only: a body's ``from`` is a claim until
    its signature is checked."""
    exchange = Exchange(chain.node, lambda: NOW)
    server = Server(create_app(exchange, RateLimiter(rate=0.001, burst=3)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            forged = chain.signer("a", key="b").order(SLOT, "sell", 100, 1500)
            for _ in range(10):
                assert is_problem(client.post("/tx", json=forged), 422)["rule"] == "signature"
            signer = chain.signer("a")
            codes = [
                client.post("/tx", json=signer.order(SLOT, "sell", 100, 1500)).status_code
                for _ in range(4)
            ]
            assert codes == [202, 202, 202, 429]
    finally:
        server.stop()


def test_a_chunked_body_over_the_limit_is_refused_as_it_comes(
    api: tuple[Exchange, httpx.Client],
) -> None:
    _, client = api
    sent = [0]

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no Content-Length
            sent[0] += 1
            yield b" " * 65536

    got = is_problem(client.post("/tx", content=chunks()), 413)
    assert got["field"] == "body" and "limit" in got["detail"]
    assert client.get("/status").json()["mempool"] == 0


def test_the_stream_says_when_events_were_missed_and_stops_with_its_client(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [T0 + 2000]
    exchange = Exchange(chain.node, lambda: now[0])
    calls = [0]
    real = exchange.events_since

    def counted(seq: int) -> list[dict]:  # type: ignore[type-arg]
        calls[0] += 1
        return real(seq)

    monkeypatch.setattr(exchange, "events_since", counted)
    server = Server(create_app(exchange))
    try:
        exchange.produce()
        ws_url = f"ws://127.0.0.1:{server.port}/stream"
        with connect(f"{ws_url}?since=1000") as ws:  # from before a restart, say
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and hello["error"] is None
            gap = json.loads(ws.recv(timeout=10))
            assert gap == {"type": "gap", "since": 1000, "next": hello["events"] + 1}
            now[0] += 60_000
            exchange.produce()
            assert json.loads(ws.recv(timeout=10))["type"] == "block"
        for _ in range(5):
            with connect(ws_url) as ws:
                ws.recv(timeout=10)
        time.sleep(0.5)
        before = calls[0]
        time.sleep(1.0)
        assert calls[0] == before  # no stream polls for a client that left
    finally:
        server.stop()
