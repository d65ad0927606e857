"""``peerpower simulate --compare``: one scenario under several mechanisms, goals and pricings.

Each variant runs the same community (same seeds, weather and policies) with only the market's
mechanism, goal and pricing rule changed (``optimal:welfare`` is nodal, its default;
``optimal:welfare:midpoint`` the same clearing priced pair by pair), writes its outputs to
``OUT/<variant>/`` and adds a row: traded energy, the market's welfare (what the trades gained
against the orders' limit prices), the worst-off participant's market profit per kWh offered
(what ``maxmin`` raises), the community's saving against the no-P2P baseline (penalties
included), the lowest site's saving, and the mean price. The seeds' claim is that a continuous
double auction does not optimise matches; the table shows by how much, as measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from peerpower.errors import InvalidInput
from peerpower.ledger.transactions import order_id
from peerpower.sim.runner import SimResult, costs_microyen, run
from peerpower.sim.scenario import Scenario
from peerpower.sim.summary import write_outputs, yen

VARIANTS = (
    "cda",
    "call",
    "optimal:volume",
    "optimal:welfare",
    "optimal:welfare:midpoint",
    "optimal:maxmin",
)

Variant = tuple[str, str | None, str | None]  # mechanism, goal, pricing (None: the default)


def parse_variants(text: str) -> list[Variant]:
    out: list[Variant] = []
    for part in text.split(","):
        name = part.strip()
        if name not in VARIANTS:
            raise InvalidInput("compare", f"{name!r} is not one of {', '.join(VARIANTS)}")
        mechanism, goal, pricing = ([*name.split(":"), None, None])[:3]
        assert mechanism is not None
        out.append((mechanism, goal, pricing))
    if not out:
        raise InvalidInput("compare", "name at least one variant")
    return out


def variant_name(variant: Variant | None) -> str:
    """``"optimal:welfare"`` for a variant; ``"scenario"`` for the scenario's own market."""
    if variant is None:
        return "scenario"
    return ":".join(x for x in variant if x is not None)


def market_profits(result: SimResult) -> tuple[int, dict[str, Fraction]]:
    """From the chain: the welfare of every recorded clearing [µ¥] (what the trades gained
    against the orders' limit prices, fees deducted), and each participant's market profit per
    Wh it offered at the gates over the run [µ¥/Wh] — the run's version of ``maxmin``'s
    objective."""
    orders: dict[str, tuple[str, int, int]] = {}  # id → (account, limit price, energy)
    cleared: list[dict[str, Any]] = []
    for block in result.validators.blocks:
        for tx in block.txs:
            body = tx["body"]
            kind = body["type"]
            if kind == "order":
                oid = order_id(body["from"], body["nonce"])
                orders[oid] = (body["from"], body["price_sen_per_kwh"], body["energy_wh"])
            elif kind == "cancel":
                orders.pop(body["order"], None)
            elif kind in ("clear", "decide"):
                cleared.append(body["result"])
    welfare = 0
    profit: dict[str, int] = {}
    offered: dict[str, int] = {}
    for account, _, energy in orders.values():
        offered[account] = offered.get(account, 0) + energy
    for res in cleared:
        welfare += res["totals"]["welfare_microyen"]
        for t in res["trades"]:
            e, price, paid = t["energy_wh"], t["price_sen_per_kwh"], t["buyer_price_sen_per_kwh"]
            ask = orders[t["sell_order"]][1]
            bid = orders[t["buy_order"]][1]
            # sen/kWh × Wh = 10 µ¥
            profit[t["seller"]] = profit.get(t["seller"], 0) + (price - ask) * e * 10
            profit[t["buyer"]] = profit.get(t["buyer"], 0) + (bid - paid) * e * 10
    per_wh = {a: Fraction(profit.get(a, 0), e) for a, e in offered.items() if e > 0}
    return welfare, per_wh


def row(name: str, result: SimResult, data: dict[str, Any]) -> dict[str, Any]:
    costs = costs_microyen(result)
    savings = {site: c.saving for site, c in costs.items()}
    lowest = min(savings.values()) if savings else 0
    welfare, per_wh = market_profits(result)
    lowest_profit = min(per_wh.values()) if per_wh else Fraction(0)
    return {
        "variant": name,
        "traded_kwh": data["market"]["traded_kwh"],
        "welfare_yen": yen(welfare),
        # µ¥/Wh = yen/kWh
        "lowest_profit_yen_per_kwh_offered": round(float(lowest_profit), 4),
        "community_saving_yen": yen(sum(savings.values())),
        "lowest_site_saving_yen": yen(lowest),
        "mean_price_yen_per_kwh": data["market"]["mean_price_yen_per_kwh"],
        "checks": all(data["checks"].values()),
    }


def compare(
    scenario: Scenario,
    variants: list[Variant],
    out: Path,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for mechanism, goal, pricing in variants:
        name = variant_name((mechanism, goal, pricing))
        variant = scenario.with_overrides(mechanism=mechanism, goal=goal, pricing=pricing)
        result = run(variant, None if progress is None else progress(name))
        data = write_outputs(result, out / name.replace(":", "-"))
        rows.append(row(name, result, data))
        rows[-1]["pricing"] = variant.pricing
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'variant':<24} {'traded kWh':>10} {'welfare ¥':>10} {'lowest ¥/kWh':>12} "
        f"{'saving ¥':>10} {'lowest site ¥':>14} {'mean ¥/kWh':>10} {'checks':>6}"
    ]
    for r in rows:
        price = r["mean_price_yen_per_kwh"]
        lines.append(
            f"{r['variant']:<24} {r['traded_kwh']:>10,.1f} {r['welfare_yen']:>10,.2f} "
            f"{r['lowest_profit_yen_per_kwh_offered']:>12,.3f} "
            f"{r['community_saving_yen']:>10,.2f} {r['lowest_site_saving_yen']:>14,.2f} "
            f"{'–' if price is None else f'{price:.2f}':>10} {'ok' if r['checks'] else 'FAIL':>6}"
        )
    lines.append(
        "welfare: what the trades gained against the orders' limit prices, fees deducted; "
        "lowest ¥/kWh: the worst-off participant's market profit per kWh it offered; saving: "
        "against the no-market baseline"
    )
    return "\n".join(lines)
