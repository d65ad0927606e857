"""What a simulation shows: ``summary.json``, ``trades.csv`` and ``chain.jsonl``.

Every figure is computed from the run: bills by participant type against the no-P2P baseline,
the market's volume, prices and how much of the PV surplus it absorbed, per-slot prices, and
three checks made on the results, not assumed — every delivery balances its energy, the money
on chain adds up to the genesis supply, and the exported chain verifies from genesis.

``pv_surplus_kwh`` is what the sites would sell to the retail provider at the buyback without
the market (the baseline's exports); ``surplus_absorbed_percent`` is the share of it traded in
the market instead (the market's volume, at most all of it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from peerpower.errors import PeerpowerError
from peerpower.ledger.replay import genesis_line, verify_path
from peerpower.ledger.store import block_line
from peerpower.sim.report import write_report
from peerpower.sim.runner import SimResult, costs_microyen

BALANCE_TOLERANCE_WH = 0.5 + 1e-6  # the meter rounds the net exchange to the Wh


def yen(microyen: int) -> float:
    """µ¥ → yen, rounded to the sen (for reports only; money stays integer)."""
    return round(microyen / 1_000_000, 2)


def summary(result: SimResult, chain_verified: bool) -> dict[str, Any]:
    s = result.scenario
    costs = costs_microyen(result)
    by_type: dict[str, dict[str, Any]] = {}
    for spec in s.sites:
        p2p, base = costs[spec.id]
        t = by_type.setdefault(spec.site_type, {"sites": 0, "base": 0, "p2p": 0})
        t["sites"] += 1
        t["base"] += base
        t["p2p"] += p2p
    types = {}
    for name, t in sorted(by_type.items()):
        saving = 0.0 if t["base"] == 0 else round(100 * (t["base"] - t["p2p"]) / abs(t["base"]), 2)
        types[name] = {
            "sites": t["sites"],
            "baseline_cost_yen": yen(t["base"]),
            "p2p_cost_yen": yen(t["p2p"]),
            "saving_percent": saving,
        }
    traded_wh = 0
    money = 0
    paid = 0
    slots = []
    for slot, units in result.contracts.items():
        volume = sum(u.energy_wh for u in units)
        traded_wh += volume
        money += sum(u.energy_wh * u.price_sen_per_kwh for u in units)
        paid += sum(u.energy_wh * u.buyer_price_sen_per_kwh for u in units)
        prices = [u.price_sen_per_kwh for u in units]
        slots.append(
            {
                "slot": slot,
                "volume_wh": volume,
                "price_min_sen_per_kwh": min(prices) if prices else None,
                "price_max_sen_per_kwh": max(prices) if prices else None,
                "price_mean_sen_per_kwh": (
                    round(sum(u.energy_wh * u.price_sen_per_kwh for u in units) / volume)
                    if volume
                    else None
                ),
                "buyer_price_mean_sen_per_kwh": (
                    round(sum(u.energy_wh * u.buyer_price_sen_per_kwh for u in units) / volume)
                    if volume
                    else None
                ),
            }
        )
    surplus_wh = sum(d.export_wh for ds in result.baseline.values() for d in ds)
    absorbed = 0.0 if surplus_wh == 0 else round(100 * min(traded_wh, surplus_wh) / surplus_wh, 2)
    balanced = all(
        abs(d.pv_wh + d.import_wh + d.discharge_wh - d.load_wh - d.charge_wh - d.export_wh)
        <= BALANCE_TOLERANCE_WH
        for ds in (*result.deliveries.values(), *result.baseline.values())
        for d in ds
    )
    state = result.validators.state
    return {
        "scenario": s.name,
        "sites": len(s.sites),
        "days": s.days,
        "seed": s.seed,
        "mechanism": s.mechanism,
        "goal": s.goal,
        "pricing": s.pricing,
        "validators": s.validators,
        "by_type": types,
        "market": {
            "traded_kwh": round(traded_wh / 1000, 1),
            "pv_surplus_kwh": round(surplus_wh / 1000, 1),
            "surplus_absorbed_percent": absorbed,
            "mean_price_yen_per_kwh": (round(money / traded_wh / 100, 2) if traded_wh else None),
            "mean_buyer_price_yen_per_kwh": (
                round(paid / traded_wh / 100, 2) if traded_wh else None
            ),
        },
        "slots": slots,
        "refused_transactions": result.refused,
        "blocks": state.height,
        "checks": {
            "energy_balanced": balanced,
            "money_conserved": state.money_microyen() == result.genesis.supply_microyen,
            "chain_verified": chain_verified,
        },
    }


def write_outputs(result: SimResult, out: Path) -> dict[str, Any]:
    """Write ``chain.jsonl`` (then verify it), ``trades.csv`` and ``summary.json`` to ``out``;
    return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    chain = out / "chain.jsonl"
    with chain.open("w", encoding="utf-8") as f:
        f.write(genesis_line(result.genesis) + "\n")
        for block in result.validators.blocks:
            f.write(block_line(block) + "\n")
    try:
        verify_path(chain)
        verified = True
    except PeerpowerError:
        verified = False
    with (out / "trades.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "slot",
                "seller",
                "buyer",
                "energy_wh",
                "price_sen_per_kwh",
                "fee_sen_per_kwh",
                "buyer_price_sen_per_kwh",
            ]
        )
        for slot, units in result.contracts.items():
            for u in units:
                w.writerow(
                    [
                        slot,
                        u.seller,
                        u.buyer,
                        u.energy_wh,
                        u.price_sen_per_kwh,
                        u.fee_sen_per_kwh,
                        u.buyer_price_sen_per_kwh,
                    ]
                )
    data = summary(result, verified)
    (out / "summary.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    write_report(result, data, out)
    return data


def table(data: dict[str, Any]) -> str:
    """The summary as a plain-text table for the terminal."""
    lines = [
        f"{data['scenario']}: {data['sites']} sites, {data['days']} day(s), "
        f"{data['mechanism']}{'/' + data['goal'] if data['goal'] else ''}, "
        f"{data['validators']} validator(s), {data['blocks']} blocks",
        f"{'type':<16} {'sites':>5} {'baseline ¥':>12} {'P2P ¥':>12} {'saving':>8}",
    ]
    for name, t in data["by_type"].items():
        lines.append(
            f"{name:<16} {t['sites']:>5} {t['baseline_cost_yen']:>12,.2f} "
            f"{t['p2p_cost_yen']:>12,.2f} {t['saving_percent']:>7.2f}%"
        )
    m = data["market"]
    price = m["mean_price_yen_per_kwh"]
    lines.append(
        f"traded {m['traded_kwh']:,} kWh of a PV surplus of {m['pv_surplus_kwh']:,} kWh "
        f"({m['surplus_absorbed_percent']}% absorbed), mean price "
        f"{'–' if price is None else f'{price:.2f} yen/kWh'}"
    )
    checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in data["checks"].items())
    lines.append(f"checks: {checks}")
    return "\n".join(lines)
