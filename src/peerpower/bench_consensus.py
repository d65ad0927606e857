"""``peerpower bench consensus``: how fast validators agree.

Three parts:

* ``sim`` — ``validators`` validators (default 7) running the exchange under Tendermint on
  :class:`peerpower.net.memory.SimNetwork`, twenty sites trading every half hour, slots cleared
  by claims (``peerpower devnet simulate``), timed for ``heights`` blocks. Target: 1,000 heights
  a minute or faster.
* ``tcp`` — 4 validator processes (``peerpower node``) on 127.0.0.1; 1,000 sites registered and
  funded through the RPC, then signed orders posted by 4 client threads; blocks capped at 2,000
  transactions. Target: blocks carrying 2,000 orders at 1 block/s or faster; each validator under
  300 MB. Beside it, the bound of the same machine if each validator did nothing but check each
  order's signature once.
* ``memory`` — one validator of a 1,000-site market for a day, in a child process. Target:
  under 300 MB.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from peerpower.consensus.devnet import DevnetConfig, simulate
from peerpower.consensus.localnet import init, node_command
from peerpower.crypto import KeyPair, read_key_file, verify_signature
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.rules import from_ms
from peerpower.ledger.transactions import Signer
from peerpower.timeslots import slot_of

TARGET_HEIGHTS_PER_MINUTE = 1000


def run(validators: int = 7, heights: int = 1000, seed: int = 1, out: IO[str] = sys.stdout) -> int:
    """Time the simulated network; 0 when it meets the target, else 1."""
    start = time.perf_counter()
    summary = simulate(DevnetConfig(validators=validators, heights=heights, seed=seed))
    seconds = time.perf_counter() - start
    committed = summary["heights_committed"]
    rate = committed / seconds * 60
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"simulated network: {validators} validators, {committed} heights committed "
        f"({summary['clearing_decisions']} slots cleared by claims, "
        f"{summary['messages_delivered']} messages) in {seconds:.1f} s wall = "
        f"{rate:,.0f} heights/min (target >= {TARGET_HEIGHTS_PER_MINUTE:,}: "
        f"{'met' if rate >= TARGET_HEIGHTS_PER_MINUTE else 'NOT met'}); "
        f"safety violations {summary['safety_violations']}; peak memory of the whole "
        f"simulation (all validators in one process) {peak_mb:.0f} MB",
        file=out,
    )
    return 0 if rate >= TARGET_HEIGHTS_PER_MINUTE and not summary["safety_violations"] else 1


# -- TCP: validators as processes ------------------------------------------------------------
TARGET_BLOCKS_PER_SECOND = 1.0
TARGET_MEMORY_MB = 300


def _rpc(url: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"benchmark: timed out after {timeout_s:.0f} s waiting for {what}")


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory [MB] of a running process (VmHWM, Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass(frozen=True, slots=True)
class TcpFigures:
    orders: int
    full_blocks: int
    blocks_per_second: float
    orders_per_second: float
    seconds: float
    peak_rss_mb: tuple[float, ...]
    heights: int


def run_tcp(
    orders_per_block: int = 2000,
    blocks: int = 15,
    sites: int = 1000,
    seed: int = 1,
    out: IO[str] = sys.stdout,
) -> TcpFigures:
    """Four validator processes on 127.0.0.1; ``sites`` sites registered through the RPC, then
    ``blocks × orders_per_block`` signed orders submitted by four client threads (each site
    always to the same validator, which relays to the others), blocks capped at
    ``orders_per_block`` transactions. Measured from the chain: the rate of blocks carrying
    the full ``orders_per_block`` orders (header times, proposers' clocks) and the peak memory
    of each validator process."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="peerpower-bench-") as tmp:
        folder = Path(tmp) / "net"
        nodes = init(folder, 4, block_interval_ms=50, max_block_txs=orders_per_block)
        genesis = Genesis.from_json(json.loads((folder / "node0" / "genesis.json").read_text()))
        env = dict(os.environ, PEERPOWER_LOG="WARNING")
        procs = [
            subprocess.Popen(node_command(Path(n["home"])), env=env, stdout=subprocess.DEVNULL)
            for n in nodes
        ]
        urls = [n["rpc"] for n in nodes]
        try:
            _wait(
                lambda: all(_rpc(u, "/status", timeout=2)["height"] >= 2 for u in urls),
                60,
                "the validators to start",
            )
            op = Signer(genesis.tx_chain, "operator", read_key_file(folder / "operator.key"))
            keys = [KeyPair.derive(f"bench/site{k}") for k in range(sites)]
            admit = []
            for k, key in enumerate(keys):
                admit.append(op.register(f"site{k}", key.public_hex, key.public_hex, "root", "pv"))
                admit.append(op.deposit(f"site{k}", 10**10))
            for i in range(0, len(admit), 2000):
                got = _rpc(urls[0], "/tx", admit[i : i + 2000])
                if got["accepted"] != len(admit[i : i + 2000]):
                    raise RuntimeError(f"benchmark: registration refused: {got['results'][:3]}")
            _wait(
                lambda: all(_rpc(u, "/status", timeout=2)["mempool"] == 0 for u in urls),
                120,
                "the sites' registration to commit",
            )
            start_height = max(_rpc(u, "/status")["height"] for u in urls)
            # Orders for slots 2–22 hours ahead: open, and not sealed during the run.
            now = time.time_ns() // 1_000_000
            slots = [str(slot_of(from_ms(now + 2 * 3_600_000 + j * 1_800_000))) for j in range(40)]
            total = orders_per_block * blocks
            per_site = -(-total // sites)
            signers = [Signer(genesis.tx_chain, f"site{k}", key) for k, key in enumerate(keys)]
            batches: list[list[dict[str, Any]]] = [[] for _ in urls]
            made = 0
            for round_ in range(per_site):
                for k, signer in enumerate(signers):
                    if made == total:
                        break
                    side = "sell" if rng.random() < 0.5 else "buy"
                    batches[k % len(urls)].append(
                        signer.order(
                            slots[(k + round_) % len(slots)],
                            side,
                            rng.randrange(1, 11) * 100,
                            rng.randrange(800, 3001, 10),
                        )
                    )
                    made += 1
            refused = [0]

            def send(j: int) -> None:
                mine = batches[j]
                for i in range(0, len(mine), 250):
                    got = _rpc(urls[j], "/tx", mine[i : i + 250])
                    refused[0] += len(mine[i : i + 250]) - got["accepted"]

            t0 = time.perf_counter()
            threads = [threading.Thread(target=send, args=(j,)) for j in range(len(urls))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if refused[0]:
                raise RuntimeError(f"benchmark: {refused[0]} orders refused on submission")
            submitted_ms = time.time_ns() // 1_000_000
            seen: dict[int, tuple[int, int]] = {}  # height → (orders, header time)

            def committed() -> bool:
                head = _rpc(urls[0], "/status")["height"]
                for h in range(start_height + 1, head + 1):
                    if h not in seen:
                        block = _rpc(urls[0], f"/blocks/{h}")["block"]
                        n = sum(1 for tx in block["txs"] if tx["body"]["type"] == "order")
                        seen[h] = (n, block["header"]["time_ms"])
                return sum(n for n, _ in seen.values()) >= total

            _wait(committed, 600, "every order to commit")
            seconds = time.perf_counter() - t0
            peaks = tuple(_peak_rss_mb(p.pid) for p in procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    full = sorted(h for h, (n, _) in seen.items() if n >= orders_per_block)

    def rate(heights: list[int], since_ms: int) -> float:
        """Blocks a second from the header times, counting the interval before the first
        block (from the one before it, or ``since_ms``)."""
        if not heights:
            return float("nan")
        before = seen.get(heights[0] - 1, (0, since_ms))[1]
        span_ms = seen[heights[-1]][1] - max(before, since_ms)
        return len(heights) / (span_ms / 1000) if span_ms > 0 else float("inf")

    after = [h for h in full if seen[h][1] > submitted_ms]
    while after and after[0] - 1 in seen and seen[after[0] - 1][1] < submitted_ms:
        after = after[1:]  # the first block after submission ended was built during it
    during = [h for h in full if seen[h][1] <= submitted_ms]
    rate_after = rate(after, submitted_ms)
    rate_during = rate(during, 0)
    figures = TcpFigures(
        total,
        len(full),
        rate_after,
        total / seconds,
        seconds,
        peaks,
        max(seen) - start_height,
    )
    met = rate_after >= TARGET_BLOCKS_PER_SECOND
    bound = _signature_bound(orders_per_block, len(procs))
    print(
        f"TCP, 4 validator processes on 127.0.0.1, {sites:,} sites, blocks capped at "
        f"{orders_per_block:,} transactions: {total:,} signed orders submitted through the RPC "
        f"by 4 clients and committed in {seconds:.1f} s ({figures.heights} blocks, "
        f"{len(full)} of them full). Once the orders were in the mempools, {len(after)} full "
        f"blocks committed at {rate_after:.2f} blocks/s (target >= "
        f"{TARGET_BLOCKS_PER_SECOND:g}: {'met' if met else 'NOT met'}); while the clients "
        f"were still submitting, {len(during)} full blocks at {rate_during:.2f} blocks/s; end "
        f"to end {figures.orders_per_second:,.0f} orders/s, admission by all 4 validators "
        f"(each checks every signature) included. Lower bound of the same machine: checking "
        f"the {orders_per_block:,} signatures of a block once on each of the {len(procs)} "
        f"validators, on all {os.cpu_count()} cores, caps the rate at {bound:.2f} blocks/s. "
        f"Peak memory per validator {', '.join(f'{m:.0f}' for m in peaks)} MB",
        file=out,
    )
    return figures


def _signature_bound(orders: int, validators: int) -> float:
    """Blocks a second if every validator did nothing but check each order's signature once,
    with every core busy: measured here on one core and scaled by the core count."""
    key = KeyPair.derive("bench/bound")
    message = b"x" * 200  # about the size of an order's canonical body
    sig = key.sign(b"", message)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        verify_signature(key.public, b"", message, sig)
    per_second = n / (time.perf_counter() - t0)
    return per_second * (os.cpu_count() or 1) / (orders * validators)


def run_memory(sites: int = 1000, out: IO[str] = sys.stdout) -> float:
    """Peak memory [MB] of one validator (solo) running a ``sites``-site market for a day:
    registration, orders 3–6 h ahead, 48 slots sealed, cleared (optimal, welfare), metered and
    settled, every block stored in SQLite; in a child process so that nothing else counts."""
    code = (
        "import resource, sys, tempfile, pathlib\n"
        "from peerpower.ledger.store import Store\n"
        "from peerpower.ledger.synthetic import synthetic_chain\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    with Store(pathlib.Path(d) / 'chain.db', create=True) as s:\n"
        f"        g, blocks = synthetic_chain(1, {sites}, 1, s)\n"
        "        n = sum(len(b.txs) for b in blocks)\n"
        "print(len(blocks), n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    n_blocks, n_txs, rss_kb = (int(x) for x in done.stdout.split())
    peak = rss_kb / 1024
    print(
        f"memory: one validator of a {sites:,}-site market for a day ({n_blocks} blocks, "
        f"{n_txs:,} transactions, 48 slots cleared and settled, all blocks also kept in "
        f"memory by the generator) peaked at {peak:.0f} MB in {seconds:.0f} s (target < "
        f"{TARGET_MEMORY_MB} MB: {'met' if peak < TARGET_MEMORY_MB else 'NOT met'})",
        file=out,
    )
    return peak


def run_all(
    part: str = "all",
    validators: int = 7,
    heights: int = 1000,
    seed: int = 1,
    blocks: int = 15,
    out: IO[str] = sys.stdout,
) -> int:
    """``peerpower bench consensus``: 0 when every part run meets its target, else 1."""
    code = 0
    if part in ("all", "sim"):
        code |= run(validators=validators, heights=heights, seed=seed, out=out)
    if part in ("all", "tcp"):
        tcp = run_tcp(blocks=blocks, seed=seed, out=out)
        ok = tcp.blocks_per_second >= TARGET_BLOCKS_PER_SECOND
        code |= 0 if ok and max(tcp.peak_rss_mb) < TARGET_MEMORY_MB else 1
    if part in ("all", "memory"):
        code |= 0 if run_memory(out=out) < TARGET_MEMORY_MB else 1
    return code
