"""``peerpower simulate --compare``: one scenario under several mechanisms and goals.

Each variant runs the same community (same seeds, weather and policies) with only the market's
mechanism and goal changed, writes its outputs to ``OUT/<variant>/`` and adds a row: traded
energy, the community's saving against the no-P2P baseline (the welfare trading created, in
yen, penalties included), the lowest site's saving (the worst-off participant), and the mean
price. The seeds' claim is that a continuous double auction does not optimise matches; the
table shows by how much, as measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peerpower.errors import InvalidInput
from peerpower.sim.runner import SimResult, costs_microyen, run
from peerpower.sim.scenario import Scenario
from peerpower.sim.summary import write_outputs, yen

VARIANTS = ("cda", "call", "optimal:volume", "optimal:welfare", "optimal:maxmin")


def parse_variants(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in text.split(","):
        name = part.strip()
        if name not in VARIANTS:
            raise InvalidInput("compare", f"{name!r} is not one of {', '.join(VARIANTS)}")
        mechanism, _, goal = name.partition(":")
        out.append((mechanism, goal or None))
    if not out:
        raise InvalidInput("compare", "name at least one variant")
    return out


def row(name: str, result: SimResult, data: dict[str, Any]) -> dict[str, Any]:
    costs = costs_microyen(result)
    savings = {site: base - p2p for site, (p2p, base) in costs.items()}
    lowest = min(savings.values()) if savings else 0
    return {
        "variant": name,
        "traded_kwh": data["market"]["traded_kwh"],
        "community_saving_yen": yen(sum(savings.values())),
        "lowest_site_saving_yen": yen(lowest),
        "mean_price_yen_per_kwh": data["market"]["mean_price_yen_per_kwh"],
        "checks": all(data["checks"].values()),
    }


def compare(
    scenario: Scenario,
    variants: list[tuple[str, str | None]],
    out: Path,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for mechanism, goal in variants:
        name = mechanism if goal is None else f"{mechanism}:{goal}"
        variant = scenario.with_overrides(mechanism=mechanism, goal=goal)
        result = run(variant, None if progress is None else progress(name))
        data = write_outputs(result, out / name.replace(":", "-"))
        rows.append(row(name, result, data))
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'variant':<16} {'traded kWh':>10} {'saving ¥':>10} {'lowest site ¥':>14} "
        f"{'mean ¥/kWh':>10} {'checks':>6}"
    ]
    for r in rows:
        price = r["mean_price_yen_per_kwh"]
        lines.append(
            f"{r['variant']:<16} {r['traded_kwh']:>10,.1f} {r['community_saving_yen']:>10,.2f} "
            f"{r['lowest_site_saving_yen']:>14,.2f} "
            f"{'–' if price is None else f'{price:.2f}':>10} {'ok' if r['checks'] else 'FAIL':>6}"
        )
    return "\n".join(lines)
