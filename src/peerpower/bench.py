"""``peerpower bench clearing``: clearing time next to a lower bound measured in the same run.

For each book size a book is generated over a grid tree (substation → feeders → transformers →
sites, distance-based fees) and written as the ``peerpower clear`` JSON. Each mechanism is timed
end to end through the CLI (a fresh ``python -m peerpower clear`` process: start-up, JSON
reading, validation, clearing, JSON writing), best of ``--repeat`` runs; beside it, ``clear``
alone in this process on a freshly parsed book. The lower bound is a
process that reads the same JSON and does a NumPy sort-and-cross of the same prices — what any
clearing must at least do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LOWER_BOUND = r"""
import json, sys
import numpy as np
book = json.load(open(sys.argv[1]))
orders = book["orders"]
price = np.fromiter((o["price_sen_per_kwh"] for o in orders), dtype=np.int64, count=len(orders))
energy = np.fromiter((o["energy_wh"] for o in orders), dtype=np.int64, count=len(orders))
sell = np.fromiter((o["side"] == "sell" for o in orders), dtype=bool, count=len(orders))
ask = np.argsort(price[sell], kind="stable"); bid = np.argsort(-price[~sell], kind="stable")
supply = np.cumsum(energy[sell][ask]); demand = np.cumsum(energy[~sell][bid])
k = np.searchsorted(-price[~sell][bid], -price[sell][ask], side="right")
cross = np.minimum(supply, np.where(k > 0, demand[np.maximum(k - 1, 0)], 0))
print(int(cross.max(initial=0)))
"""

# (mechanism, goal, largest size it is run at, whether it needs a one-node book)
RUNS: tuple[tuple[str, str | None, int, bool], ...] = (
    ("cda", None, 10**9, False),
    ("call", None, 10**9, True),
    ("optimal", "welfare", 10**9, False),
    ("optimal", "volume", 10_000, False),
    ("optimal", "maxmin", 2_000, False),
)


def make_grid(sites: int, feeders: int = 10, per_transformer: int = 20) -> dict[str, Any]:
    """Substation → feeders → transformers → sites, with fees growing with distance."""
    nodes: list[dict[str, Any]] = [{"id": "sub", "parent": None}]
    transformers = max(1, sites // per_transformer)
    for f in range(feeders):
        nodes.append({"id": f"f{f}", "parent": "sub", "fee_sen_per_kwh": 150})
    for t in range(transformers):
        nodes.append({"id": f"t{t}", "parent": f"f{t % feeders}", "fee_sen_per_kwh": 40})
    for s in range(sites):
        nodes.append({"id": f"h{s}", "parent": f"t{s % transformers}", "fee_sen_per_kwh": 10})
    return {"nodes": nodes}


def make_book(n: int, sites: int, seed: int, with_grid: bool = True) -> dict[str, Any]:
    """A slot's book: each site buys or sells (never both) several orders between the
    post-FIT buyback (about 8.5 yen) and the retail tariff (about 26 yen)."""
    rng = np.random.default_rng(seed)
    site = rng.integers(0, sites, n)
    site_sells = rng.random(sites) < 0.5
    is_sell = site_sells[site]
    price = np.where(is_sell, rng.integers(850, 2400, n), rng.integers(1100, 2600, n))
    lots = rng.integers(1, 21, n)
    orders = []
    for k in range(n):
        order: dict[str, Any] = {
            "id": f"o{k}",
            "participant": f"site{site[k]}",
            "side": "sell" if is_sell[k] else "buy",
            "energy_wh": int(lots[k]) * 100,
            "price_sen_per_kwh": int(price[k]),
            "seq": k,
        }
        if with_grid:
            order["node"] = f"h{site[k]}"
        orders.append(order)
    book: dict[str, Any] = {"lot_wh": 100, "seed": f"{seed:064x}", "orders": orders}
    if with_grid:
        book["grid"] = make_grid(sites)
    return book


def _time(cmd: list[str], repeat: int) -> tuple[float, bytes]:
    """Best wall time of ``repeat`` runs, and what the last run printed."""
    best = float("inf")
    out = b""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")
        best = min(best, elapsed)
        out = proc.stdout
    return best, out


def _time_in_process(path: Path, mechanism: str, goal: str | None, repeat: int) -> float:
    """Best time of ``clear`` alone on a freshly parsed book (tie scores and the book's column
    view are computed inside, as the CLI does; reading and writing JSON are not counted)."""
    from peerpower.market.clear import clear
    from peerpower.market.orders import parse_book

    raw = json.loads(path.read_text())
    best = float("inf")
    for _ in range(repeat):
        book = parse_book(raw)
        start = time.perf_counter()
        clear(book, mechanism, goal)
        best = min(best, time.perf_counter() - start)
    return best


def _quality(printed: bytes) -> str:
    """For a rounded ``maxmin``: the objective as a share of its LP bound."""
    result = json.loads(printed)
    bound = result.get("bound")
    if not bound:
        return "exact" if result.get("goal") == "maxmin" else ""
    primary = result["objective"]["primary"]
    t = primary["num"] / primary["den"] if isinstance(primary, dict) else float(primary)
    share = t / bound["primary_upper"] if bound["primary_upper"] else 1.0
    welfare = result["objective"]["secondary"] / max(1.0, bound["secondary_upper"])
    proven = " (t proven)" if bound["primary_proven"] else ""
    return f"t {share:.1%} of bound{proven}, welfare {welfare:.1%}"


def run_clearing_bench(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in str(args.sizes).split(",") if s]
    rows: list[dict[str, Any]] = []
    print(
        f"{'orders':>8} {'mechanism':<17} {'end-to-end s':>12} {'lower bound s':>13} {'ratio':>6}"
        f" {'clear s':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            sites = min(args.sites, max(10, n // 4))
            paths = {}
            for flat in (False, True):
                path = Path(tmp) / f"book-{n}-{'flat' if flat else 'grid'}.json"
                path.write_text(json.dumps(make_book(n, sites, args.seed, with_grid=not flat)))
                paths[flat] = path
            bound = {
                flat: _time([sys.executable, "-c", LOWER_BOUND, str(p)], args.repeat)[0]
                for flat, p in paths.items()
            }
            wanted = {m.strip() for m in str(args.only).split(",") if m.strip()}
            for mechanism, goal, limit, flat in RUNS:
                label = mechanism + (f":{goal}" if goal else "")
                if n > limit or (wanted and label not in wanted):
                    continue
                cmd = [sys.executable, "-m", "peerpower", "clear", str(paths[flat])]
                cmd += ["--mechanism", mechanism] + (["--goal", goal] if goal else [])
                seconds, printed = _time(cmd, args.repeat)
                in_process = _time_in_process(paths[flat], mechanism, goal, args.repeat)
                quality = _quality(printed) if goal == "maxmin" else ""
                name = mechanism + (f":{goal}" if goal else "") + (" (1 node)" if flat else "")
                row = {
                    "orders": n,
                    "sites": 1 if flat else sites,
                    "mechanism": name,
                    "seconds": round(seconds, 3),
                    "lower_bound_seconds": round(bound[flat], 3),
                    "ratio": round(seconds / bound[flat], 2),
                    "clear_seconds": round(in_process, 3),
                }
                if quality:
                    row["quality"] = quality
                rows.append(row)
                print(
                    f"{n:>8} {name:<17} {seconds:>12.3f} {bound[flat]:>13.3f} "
                    f"{seconds / bound[flat]:>6.2f} {in_process:>8.3f}  {quality}",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0
