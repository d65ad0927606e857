"""``peerpower sweep``: one scenario over many seeds (and market variants) on Dask.

One seed is one community: its weather, loads, cars and the differences between its sites. A
figure is evidence only when it holds across seeds, so a sweep runs every (variant, seed) as its
own task — a whole simulation, in its own worker process — and reports each figure's mean with a
95 % confidence interval over the seeds (Student's t, n − 1 degrees of freedom).

The tasks run on a Dask cluster: a local one of ``workers`` processes by default, or the
scheduler at ``scheduler`` (``tcp://host:port``) for a user who outgrows one machine; its
workers need peerpower installed. Each task gets the scenario itself (not a path), writes its
outputs in a temporary folder of the worker, verifies the chain it exported and returns the
summary; the client writes ``sweep.json``: every run's summary and seconds, and per variant
every numeric figure of the summaries (``market.*``, ``by_type.<type>.*``) with its mean,
interval and number of runs.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peerpower.errors import InvalidInput
from peerpower.sim.compare import Variant, variant_name
from peerpower.sim.scenario import MAX_SEED, Scenario

#: The most runs one sweep may hold (seeds × variants).
MAX_RUNS = 10_000
#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT_S = 10


def parse_seeds(text: str) -> list[int]:
    """``"1-10"``, ``"7"`` or ``"1-3,8,20-21"`` → the seeds, in order, each once; anything else
    is :class:`InvalidInput` naming ``--seeds``."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise InvalidInput(
                "--seeds", f"{part.strip()!r} is not a seed or a range like 1-10 (in {text!r})"
            )
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise InvalidInput("--seeds", f"range {part.strip()!r} ends before it starts")
        if hi > MAX_SEED:
            raise InvalidInput("--seeds", f"{hi} is above the largest seed, {MAX_SEED}")
        if len(seeds) + hi - lo + 1 > MAX_RUNS:
            raise InvalidInput("--seeds", f"{text!r} names more than {MAX_RUNS} seeds")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise InvalidInput("--seeds", f"{text!r} names a seed twice")
    return seeds


def run_one(scenario: Scenario, seed: int, variant: Variant | None) -> dict[str, Any]:
    """One task: ``scenario`` with ``seed`` (and ``variant``'s market), simulated, its chain
    exported and verified; its summary and the seconds it took."""
    from peerpower.sim.runner import run
    from peerpower.sim.summary import write_outputs

    start = time.perf_counter()
    case = scenario.with_overrides(seed=seed)
    if variant is not None:
        mechanism, goal, pricing = variant
        case = case.with_overrides(mechanism=mechanism, goal=goal, pricing=pricing)
    result = run(case)
    with tempfile.TemporaryDirectory(prefix="peerpower-sweep-") as tmp:
        summary = write_outputs(result, Path(tmp))
    return {
        "variant": variant_name(variant),
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 3),
        "summary": summary,
    }


@contextmanager
def cluster(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client: of a local cluster of ``workers`` single-threaded processes on
    127.0.0.1, or of the scheduler at ``scheduler``; closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if workers is not None:
            raise InvalidInput("--workers", "give --workers or --scheduler, not both")
        if not re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", scheduler):
            raise InvalidInput(
                "--scheduler", f"{scheduler!r} is not an address like tcp://host:8786"
            )
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as err:
            raise InvalidInput(
                "--scheduler", f"no Dask scheduler answered at {scheduler} ({err})"
            ) from None
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return
    n = 2 if workers is None else workers
    if not 1 <= n <= 256:
        raise InvalidInput("--workers", f"must be 1–256, got {n}")
    local = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # no dashboard, and the scheduler's own HTTP routes on a free port of 127.0.0.1 (by
        # default they take 8787, and a second sweep at the same time would warn and move)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=40,  # logging.ERROR
    )
    client = Client(local)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
        local.close()


def sweep(
    scenario: Scenario,
    seeds: list[int],
    variants: list[Variant] | None,
    client: Any,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every (variant, seed) on ``client``'s cluster; the content of ``sweep.json``."""
    from distributed import as_completed

    cases: list[Variant | None] = list(variants) if variants else [None]
    if len(cases) * len(seeds) > MAX_RUNS:
        raise InvalidInput("--seeds", f"{len(cases) * len(seeds)} runs; at most {MAX_RUNS}")
    start = time.perf_counter()
    remote = client.scatter(scenario, broadcast=True)
    futures = [client.submit(run_one, remote, seed, v, pure=False) for v in cases for seed in seeds]
    runs: list[dict[str, Any]] = []
    for done, future in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call]
        runs.append(future.result())
        if progress is not None:
            progress(done, len(futures))
    wall = time.perf_counter() - start
    order = {variant_name(v): k for k, v in enumerate(cases)}
    runs.sort(key=lambda r: (order[r["variant"]], r["seed"]))
    figures = {
        name: intervals([r["summary"] for r in runs if r["variant"] == name]) for name in order
    }
    return {
        "scenario": scenario.name,
        "days": scenario.days,
        "seeds": seeds,
        "variants": list(order),
        "wall_seconds": round(wall, 3),
        "run_seconds": round(sum(r["seconds"] for r in runs), 3),
        "figures": figures,
        "runs": runs,
    }


def intervals(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every numeric figure of ``summaries`` (``market.*``, ``ev.*``, ``by_type.<type>.*``) →
    its mean, 95 % interval and the number of runs that had it (a figure ``null`` in a run,
    such as a price where nothing traded, is left out of that run)."""
    values: dict[str, list[float]] = {}
    for s in summaries:
        for key, value in _figures(s):
            values.setdefault(key, []).append(value)
    return {key: interval(values[key]) for key in sorted(values)}


def interval(xs: list[float]) -> dict[str, Any]:
    """The mean of ``xs``, its 95 % interval (Student's t; ``None`` for one value) and n."""
    mean = sum(xs) / len(xs)
    half = None
    if len(xs) > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        half = _t975(len(xs) - 1) * sd / math.sqrt(len(xs))
    return {
        "mean": round(mean, 4),
        "ci95": None if half is None else [round(mean - half, 4), round(mean + half, 4)],
        "n": len(xs),
    }


def _figures(summary: dict[str, Any]) -> Iterator[tuple[str, float]]:
    for section in ("market", "ev"):
        for key, value in summary.get(section, {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield f"{section}.{key}", float(value)
    for name, t in summary["by_type"].items():
        for key, value in t.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield f"by_type.{name}.{key}", float(value)


def _t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def write(data: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def table(data: dict[str, Any]) -> str:
    """The headline figures per variant, mean [95 % interval]."""
    keys = (
        "market.traded_kwh",
        "market.absorbed_of_cap_percent",
        "market.wash_kwh",
        "market.midday_price_yen_per_kwh",
        "market.evening_price_yen_per_kwh",
    )
    lines = [f"{data['scenario']}: {len(data['seeds'])} seed(s) × {data['days']} day(s)"]
    for name, figures in data["figures"].items():
        lines.append(f"{name}:")
        shown = list(keys) + sorted(
            k
            for k in figures
            if k.startswith("by_type.") and k.endswith(".saving_yen_per_site_day")
        )
        for key in shown:
            f = figures.get(key)
            if f is None:
                continue
            ci = "" if f["ci95"] is None else f" [{f['ci95'][0]:g}, {f['ci95'][1]:g}]"
            lines.append(f"  {key:<52} {f['mean']:>10g}{ci}  (n={f['n']})")
    lines.append(
        f"{len(data['runs'])} run(s): {data['wall_seconds']:g} s wall, "
        f"{data['run_seconds']:g} s summed over the runs"
    )
    return "\n".join(lines)
