"""Validators as real processes on TCP: kill one with SIGKILL, the rest go on, it catches up.

Every node is ``python -m peerpower node --home …`` started by the test on 127.0.0.1 and
stopped by it; nothing else is needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peerpower.consensus.localnet import init, node_command
from peerpower.consensus.validator import HISTORY_HEIGHTS
from peerpower.crypto import KeyPair, read_key_file
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.replay import verify_path
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer

pytestmark = pytest.mark.slow
AHEAD = 3 * HISTORY_HEIGHTS


def rpc(url: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Devnet:
    def __init__(self, folder: Path, nodes: list[dict[str, str]]) -> None:
        self.folder = folder
        self.nodes = nodes
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, k: int) -> None:
        env = dict(os.environ, PEERPOWER_LOG="WARNING")
        log = open(self.folder / f"node{k}.log", "ab")  # noqa: SIM115 (kept open for the child)
        self.procs[k] = subprocess.Popen(
            node_command(Path(self.nodes[k]["home"])), stdout=log, stderr=log, env=env
        )
        log.close()

    def status(self, k: int) -> dict[str, Any]:
        code, body = rpc(self.nodes[k]["rpc"], "/status", timeout=2.0)
        assert code == 200
        assert isinstance(body, dict)
        return body

    def height(self, k: int) -> int:
        return int(self.status(k)["height"])

    def block_hash(self, k: int, h: int) -> str:
        code, body = rpc(self.nodes[k]["rpc"], f"/blocks/{h}")
        assert code == 200, body
        return str(body["hash"])

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    nodes = init(tmp_path / "net", 4, block_interval_ms=100)
    net = Devnet(tmp_path, nodes)
    try:
        yield net
    finally:
        net.stop_all()


def test_tcp_devnet_survives_sigkill_and_catches_up(devnet: Devnet, tmp_path: Path) -> None:
    for k in range(4):
        devnet.start(k)
    wait_for("4 nodes at height 3", lambda: all(devnet.height(k) >= 3 for k in range(4)))
    assert all(len(devnet.status(k)["peers"]) == 3 for k in range(4))

    # A site joins and trades through node 0's RPC; node 1 refuses a replay of the same
    # transaction once it has been relayed (the mempool drops duplicates).
    net = tmp_path / "net"
    genesis = Genesis.from_json(json.loads((net / "node0" / "genesis.json").read_text()))
    op = Signer(genesis.tx_chain, "operator", read_key_file(net / "operator.key"))
    site, meter = KeyPair.generate(), KeyPair.generate()
    register = op.register("site-a", site.public_hex, meter.public_hex, "root", "pv")
    code, body = rpc(devnet.nodes[0]["rpc"], "/tx", register)
    assert code == 200 and body["accepted"] is True
    code, body = rpc(devnet.nodes[0]["rpc"], "/tx", register)
    assert code == 400 and body["rule"] == "duplicate"
    code, body = rpc(devnet.nodes[0]["rpc"], "/tx", [op.deposit("site-a", 10**9)])
    assert code == 200 and body["accepted"] == 1

    # SIGKILL node 3 at an arbitrary moment: the others keep committing.
    killed_at = devnet.height(3)
    devnet.procs[3].send_signal(signal.SIGKILL)
    devnet.procs[3].wait()
    h0 = max(devnet.height(k) for k in range(3))
    # far enough that the node must catch up from storage (its peers keep the last
    # HISTORY_HEIGHTS in memory); every fourth height the dead node's turn to propose times out
    wait_for(
        f"the 3 survivors to commit {AHEAD} more heights",
        lambda: all(devnet.height(k) >= h0 + AHEAD for k in range(3)),
        timeout_s=120,
    )
    assert all(len(devnet.status(k)["peers"]) == 2 for k in range(3))

    # Restart node 3: it reopens its SQLite file and catches up from its peers.
    devnet.start(3)
    wait_for("node 3 to answer", lambda: devnet.height(3) >= killed_at - 1)
    target = max(devnet.height(k) for k in range(3))
    wait_for("node 3 to catch up", lambda: devnet.height(3) >= target + 3, timeout_s=120)
    assert devnet.status(3)["synced"] > 0

    # Every height has one block, the same on every node (a few sampled all the way up).
    top = min(devnet.height(k) for k in range(4))
    for h in sorted({1, 2, killed_at, killed_at + 1, h0 + AHEAD // 2, target, top}):
        hashes = {devnet.block_hash(k, h) for k in range(4)}
        assert len(hashes) == 1, f"height {h}: {hashes}"
    # The site's transactions are on the chain.
    found = set()
    for h in range(1, killed_at + 20):
        code, body = rpc(devnet.nodes[3]["rpc"], f"/blocks/{h}")
        assert code == 200
        found |= {tx["body"]["type"] for tx in body["block"]["txs"]}
    assert {"register", "deposit"} <= found

    # Stop everything cleanly; node 3's file verifies from genesis.
    devnet.stop_all()
    assert all(p.returncode == 0 for p in devnet.procs.values())
    db = Path(devnet.nodes[3]["home"]) / "chain.db"
    summary = verify_path(db)  # raises on any broken rule
    with Store(db) as store:
        assert store.head_height() >= target
        assert summary.blocks == store.head_height()


def test_rpc_errors_are_clear(devnet: Devnet) -> None:
    devnet.start(0)
    url = devnet.nodes[0]["rpc"]
    wait_for("node 0 to answer", lambda: devnet.status(0)["height"] >= 0)
    code, body = rpc(url, "/blocks/999999")
    assert code == 404 and body["field"] == "height"
    code, body = rpc(url, "/blocks/x1")
    assert code == 400 and "x1" in body["error"]
    code, body = rpc(url, "/tx", {"body": {"type": "order"}, "sig": "00"})
    assert code == 400 and body["rule"]
    req = urllib.request.Request(url + "/tx", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    info.value.close()
    # alone, node 0 cannot commit: no quorum (n = 4 needs 3)
    assert devnet.status(0)["height"] == 0


def test_devnet_up_stops_its_nodes_on_ctrl_c(tmp_path: Path) -> None:
    folder = tmp_path / "net"
    nodes = init(folder, 4, block_interval_ms=200)
    up = subprocess.Popen(
        [sys.executable, "-m", "peerpower", "devnet", "up", "--dir", str(folder)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PEERPOWER_LOG="WARNING"),
    )
    try:
        assert up.stdout is not None
        lines = [json.loads(up.stdout.readline()) for _ in nodes]
        pids = [line["pid"] for line in lines]
        assert [line["rpc"] for line in lines] == [n["rpc"] for n in nodes]
        wait_for(
            "the devnet to commit",
            lambda: all(rpc(n["rpc"], "/status", timeout=2)[1]["height"] >= 2 for n in nodes),
        )
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()
