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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Run:
    """One row kind of the benchmark: how the book is cleared and on what grid."""

    mechanism: str
    goal: str | None = None
    pricing: str | None = None
    capacities: bool = False
    flat: bool = False  # the same orders on one node
    largest: int = 10**9  # largest book size it is run at, unless --only names it

    @property
    def name(self) -> str:
        parts = [self.mechanism, self.goal, self.pricing]
        text = ":".join(x for x in parts if x)
        if self.capacities:
            text += " +cap"
        return text + (" (1 node)" if self.flat else "")


RUNS: tuple[Run, ...] = (
    Run("cda"),
    Run("call", flat=True),
    Run("call"),
    Run("optimal", "welfare", "nodal"),
    Run("optimal", "welfare", "midpoint"),
    Run("optimal", "welfare", "nodal", capacities=True),
    Run("optimal", "volume", largest=100_000),
    Run("optimal", "volume", capacities=True, largest=100_000),
    Run("optimal", "maxmin", largest=100_000),
    # over 2 minutes a run at 100,000 orders: run there only when --only names it
    Run("optimal", "maxmin", capacities=True, largest=10_000),
)


def make_grid(
    sites: int,
    feeders: int = 10,
    per_transformer: int = 20,
    transformer_capacity_wh: int | None = None,
) -> dict[str, Any]:
    """Substation → feeders → transformers → sites, with fees growing with distance and,
    if given, a capacity on every transformer's edge to its feeder."""
    nodes: list[dict[str, Any]] = [{"id": "sub", "parent": None}]
    transformers = max(1, sites // per_transformer)
    for f in range(feeders):
        nodes.append({"id": f"f{f}", "parent": "sub", "fee_sen_per_kwh": 150})
    for t in range(transformers):
        node: dict[str, Any] = {"id": f"t{t}", "parent": f"f{t % feeders}", "fee_sen_per_kwh": 40}
        if transformer_capacity_wh is not None:
            node["capacity_wh"] = transformer_capacity_wh
        nodes.append(node)
    for s in range(sites):
        nodes.append({"id": f"h{s}", "parent": f"t{s % transformers}", "fee_sen_per_kwh": 10})
    return {"nodes": nodes}


def make_book(
    n: int,
    sites: int,
    seed: int,
    with_grid: bool = True,
    both_share: float = 0.0,
    transformer_capacity_wh: int | None = None,
    self_cross: bool = False,
) -> dict[str, Any]:
    """A slot's book: each site buys or sells several orders between the post-FIT buyback
    (about 8.5 yen) and the retail tariff (about 26 yen). A share ``both_share`` of the sites
    (homes with a battery) place both, selling at 18–24 yen and buying at 8.5–17 yen, so that
    their own orders never cross. ``self_cross`` adds one more participant whose buy at 25
    yen crosses its own earlier sell at 9 yen (self-trade prevention leaves the buy out)."""
    rng = np.random.default_rng(seed)
    site = rng.integers(0, sites, n)
    site_sells = rng.random(sites) < 0.5
    is_sell = site_sells[site]
    price = np.where(is_sell, rng.integers(850, 2400, n), rng.integers(1100, 2600, n))
    if both_share > 0:
        both = rng.random(sites) < both_share
        two = both[site]
        is_sell = np.where(two, rng.random(n) < 0.5, is_sell)
        price = np.where(
            two, np.where(is_sell, rng.integers(1800, 2400, n), rng.integers(850, 1700, n)), price
        )
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
    if self_cross:
        where = {"node": "h0"} if with_grid else {}
        orders.append(
            {
                "id": "x-sell",
                "participant": "crosser",
                "side": "sell",
                "energy_wh": 2000,
                "price_sen_per_kwh": 900,
                "seq": n,
                **where,
            }
        )
        orders.append(
            {
                "id": "x-buy",
                "participant": "crosser",
                "side": "buy",
                "energy_wh": 2000,
                "price_sen_per_kwh": 2500,
                "seq": n + 1,
                **where,
            }
        )
    book: dict[str, Any] = {"lot_wh": 100, "seed": f"{seed:064x}", "orders": orders}
    if with_grid:
        book["grid"] = make_grid(sites, transformer_capacity_wh=transformer_capacity_wh)
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


def _time_in_process(path: Path, run: Run, repeat: int) -> float:
    """Best time of ``clear`` alone on a freshly parsed book (tie scores and the book's column
    view are computed inside, as the CLI does; reading and writing JSON are not counted)."""
    from peerpower.market.clear import clear
    from peerpower.market.orders import parse_book

    raw = json.loads(path.read_text())
    best = float("inf")
    for _ in range(repeat):
        book = parse_book(raw)
        start = time.perf_counter()
        clear(book, run.mechanism, run.goal, run.pricing)
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


def _clear_cmd(path: Path, run: Run) -> list[str]:
    cmd = [sys.executable, "-m", "peerpower", "clear", str(path), "--mechanism", run.mechanism]
    cmd += ["--goal", run.goal] if run.goal else []
    return cmd + (["--pricing", run.pricing] if run.pricing else [])


def run_clearing_bench(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in str(args.sizes).split(",") if s]
    wanted = {m.strip() for m in str(args.only).split(",") if m.strip()}
    rows: list[dict[str, Any]] = []
    print(
        f"{'orders':>8} {'run':<28} {'end-to-end s':>12} {'lower bound s':>13} {'ratio':>6}"
        f" {'clear s':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            sites = min(args.sites, max(10, n // 4))
            paths: dict[tuple[bool, bool], Path] = {}
            for flat, caps in ((False, False), (True, False), (False, True)):
                path = Path(tmp) / f"book-{n}-{flat}-{caps}.json"
                book = make_book(
                    n,
                    sites,
                    args.seed,
                    with_grid=not flat,
                    both_share=args.both_share,
                    transformer_capacity_wh=args.capacity_wh if caps else None,
                )
                path.write_text(json.dumps(book))
                paths[(flat, caps)] = path
            bound = {
                key: _time([sys.executable, "-c", LOWER_BOUND, str(p)], args.repeat)[0]
                for key, p in paths.items()
            }
            for run in RUNS:
                if (wanted and run.name not in wanted) or (n > run.largest and not wanted):
                    continue
                key = (run.flat, run.capacities)
                seconds, printed = _time(_clear_cmd(paths[key], run), args.repeat)
                in_process = _time_in_process(paths[key], run, args.repeat)
                quality = _quality(printed) if run.goal == "maxmin" else ""
                row = {
                    "orders": n,
                    "sites": 1 if run.flat else sites,
                    "run": run.name,
                    "seconds": round(seconds, 3),
                    "lower_bound_seconds": round(bound[key], 3),
                    "ratio": round(seconds / bound[key], 2),
                    "clear_seconds": round(in_process, 3),
                }
                if quality:
                    row["quality"] = quality
                rows.append(row)
                print(
                    f"{n:>8} {run.name:<28} {seconds:>12.3f} {bound[key]:>13.3f} "
                    f"{seconds / bound[key]:>6.2f} {in_process:>8.3f}  {quality}",
                    flush=True,
                )
        if args.self_cross:
            rows.extend(_self_cross_rows(Path(tmp), args))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _self_cross_rows(tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same 2,000-order book with and without one participant whose buy crosses its own
    sell: ``optimal``/``welfare`` end to end on both."""
    out = []
    run = Run("optimal", "welfare")
    times = {}
    for crossing in (False, True):
        path = tmp / f"cross-{crossing}.json"
        book = make_book(2000, 500, args.seed, both_share=args.both_share, self_cross=crossing)
        path.write_text(json.dumps(book))
        times[crossing] = _time(_clear_cmd(path, run), args.repeat)[0]
    ratio = times[True] / times[False]
    print(
        f"self-cross: 2,000 orders optimal:welfare {times[False]:.3f} s, with one self-crossing "
        f"participant {times[True]:.3f} s, ratio {ratio:.2f}",
        flush=True,
    )
    out.append(
        {
            "orders": 2000,
            "run": "self-cross",
            "seconds_without": round(times[False], 3),
            "seconds_with": round(times[True], 3),
            "ratio": round(ratio, 2),
        }
    )
    return out
