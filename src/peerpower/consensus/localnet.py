"""``peerpower devnet init`` and ``peerpower devnet up``: validators as processes on one machine.

``init`` writes a folder ``D``::

    D/devnet.json          chain id, the nodes (id, home, rpc URL), the founding key files
    D/operator.key         the operator's key (registers sites, deposits), mode 0600
    D/grid.key, D/retail.key
    D/nodeK/node.json      validator K: id, listen and RPC addresses on 127.0.0.1, its peers
    D/nodeK/genesis.json   the same genesis in every home
    D/nodeK/validator.key  validator K's key, mode 0600

Ports are ``2N`` consecutive free ports from a random start in 20000–32000, below the range the
system hands out for outgoing connections (or from ``--base-port``): ``base + 2K`` for
consensus, ``base + 2K + 1`` for RPC. ``up`` starts ``peerpower node`` for
every home as a child process and, on Ctrl-C or SIGTERM, stops them all with SIGTERM (SIGKILL
after a grace period), so no process is left behind.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peerpower.consensus.ledger_app import MAX_BLOCK_TXS
from peerpower.consensus.validator import Address, NodeConfig
from peerpower.crypto import KeyPair, write_key_file
from peerpower.errors import InvalidInput
from peerpower.ledger.genesis import Genesis, GenesisAccount, MarketRules
from peerpower.market.result import GOALS
from peerpower.net.tcp import Peer

HOST = "127.0.0.1"
OPERATOR_MICROYEN = 10**15  # every µ¥ there will be on the devnet chain: 1,000,000,000 ¥
STOP_GRACE_S = 10.0


# Ports are taken below Linux's ephemeral range (32768–60999): a port the system hands out for
# outgoing connections could be held by a node's dialling socket when a stopped peer restarts.
PORT_RANGE = (20_000, 32_000)


def _free_ports(count: int) -> list[int]:
    """``count`` consecutive ports free on 127.0.0.1 now, from a random start in
    :data:`PORT_RANGE`."""
    low, high = PORT_RANGE
    rng = random.Random()
    for _ in range(50):
        start = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(start, start + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((HOST, port))
            return list(range(start, start + count))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise InvalidInput("base-port", f"no {count} free ports found in {low}–{high}; give one")


def init(
    folder: Path,
    validators: int,
    *,
    base_port: int | None = None,
    block_interval_ms: int = 1000,
    max_block_txs: int = MAX_BLOCK_TXS,
    goal: str = "welfare",
    chain_id: str = "devnet",
) -> list[dict[str, str]]:
    """Write the devnet's homes (see the module notes); returns one ``{"home", "rpc"}`` per
    node."""
    if not 4 <= validators <= 100:
        raise InvalidInput(
            "validators", f"must be 4–100 (n ≥ 4 tolerates one Byzantine), got {validators}"
        )
    if goal not in GOALS:
        raise InvalidInput("goal", f"{goal!r} is not one of {', '.join(GOALS)}")
    if base_port is not None and not 1024 <= base_port <= 65535 - 2 * validators:
        raise InvalidInput(
            "base-port", f"must leave room for {2 * validators} ports, got {base_port}"
        )
    if not 0 <= block_interval_ms <= 600_000:
        raise InvalidInput("block-interval-ms", f"must be 0–600000, got {block_interval_ms}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidInput("dir", f"{str(folder)!r} exists and is not an empty folder")
    ports = (
        list(range(base_port, base_port + 2 * validators))
        if base_port is not None
        else _free_ports(2 * validators)
    )
    names = [f"val{k}" for k in range(validators)]
    keys = {n: KeyPair.generate() for n in (*names, "operator", "grid", "retail")}
    founding: Any = goal
    genesis = Genesis(
        chain_id,
        time.time_ns() // 1_000_000,
        (
            GenesisAccount("operator", "operator", keys["operator"].public_hex, OPERATOR_MICROYEN),
            GenesisAccount("grid", "grid", keys["grid"].public_hex),
            GenesisAccount("retail", "retail", keys["retail"].public_hex),
            *(GenesisAccount(n, "validator", keys[n].public_hex) for n in names),
        ),
        MarketRules(goal=founding),
    )
    genesis_text = json.dumps(genesis.to_json(), indent=1) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    for role in ("operator", "grid", "retail"):
        write_key_file(folder / f"{role}.key", keys[role])
    peers = [Peer(n, HOST, ports[2 * k], keys[n].public) for k, n in enumerate(names)]
    out = []
    for k, n in enumerate(names):
        home = folder / f"node{k}"
        home.mkdir()
        config = NodeConfig(
            n,
            Address(HOST, ports[2 * k]),
            Address(HOST, ports[2 * k + 1]),
            tuple(p for p in peers if p.id != n),
            block_interval_ms,
            max_block_txs,
        )
        (home / "node.json").write_text(json.dumps(config.to_json(), indent=1) + "\n")
        (home / "genesis.json").write_text(genesis_text)
        write_key_file(home / "validator.key", keys[n])
        out.append({"home": str(home.resolve()), "rpc": f"http://{HOST}:{ports[2 * k + 1]}"})
    manifest = {
        "chain_id": chain_id,
        "genesis_hash": genesis.hash.hex(),
        "nodes": [{"id": n, **o} for n, o in zip(names, out, strict=True)],
        "keys": {role: f"{role}.key" for role in ("operator", "grid", "retail")},
    }
    (folder / "devnet.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def homes(folder: Path) -> list[Path]:
    """The node homes of a devnet folder, in order."""
    try:
        manifest = json.loads((folder / "devnet.json").read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput(
            "dir", f"{str(folder)!r} is not a devnet folder (no devnet.json: {err.strerror})"
        ) from None
    except json.JSONDecodeError as err:
        raise InvalidInput("devnet.json", f"is not JSON: {err}") from None
    nodes = manifest.get("nodes") if isinstance(manifest, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise InvalidInput("devnet.json.nodes", "must list the nodes")
    out = []
    for k, node in enumerate(nodes):
        home = node.get("home") if isinstance(node, dict) else None
        if not isinstance(home, str) or not Path(home).is_dir():
            raise InvalidInput(f"devnet.json.nodes[{k}].home", f"is not a folder: {home!r}")
        out.append(Path(home))
    return out


def node_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "peerpower", "node", "--home", str(home)]


def up(folder: Path, *, out: Any = None) -> int:
    """Run every node of the devnet as a child process until Ctrl-C or SIGTERM; then stop
    them all. Returns 0, or 1 if a node exited on its own with an error."""
    stream = out if out is not None else sys.stdout
    paths = homes(folder)
    stopping = False

    def ask_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, ask_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen[bytes]] = []
    failed = False
    reported: set[int] = set()
    try:
        for home in paths:
            child = subprocess.Popen(node_command(home))
            children.append(child)
            cfg = json.loads((home / "node.json").read_text(encoding="utf-8"))
            rpc = cfg["rpc"]
            line = {
                "home": str(home),
                "pid": child.pid,
                "rpc": f"http://{rpc['host']}:{rpc['port']}",
            }
            print(json.dumps(line), file=stream, flush=True)
        while not stopping:
            for k, (home, child) in enumerate(zip(paths, children, strict=True)):
                code = child.poll()
                if code is not None and k not in reported and not stopping:
                    reported.add(k)
                    print(json.dumps({"home": str(home), "exited": code}), file=stream, flush=True)
                    failed = failed or code != 0
            if all(c.poll() is not None for c in children):
                break
            time.sleep(0.2)
    finally:
        _stop_all(children)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if failed else 0


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
