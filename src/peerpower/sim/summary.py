"""What a simulation shows: ``summary.json``, ``trades.csv`` and ``chain.jsonl``.

Every figure is computed from the run: bills by participant type against the no-P2P baseline,
the market's volume, prices and how much of the PV surplus it absorbed, per-slot prices, and
three checks made on the results, not assumed — every delivery balances its energy, the money
on chain adds up to the genesis supply, and the exported chain verifies from genesis.

``pv_surplus_kwh`` is what the sites would sell to the retail provider at the buyback without
the market (the baseline's exports); ``surplus_absorbed_percent`` is the share of it traded in
the market instead (the market's volume, at most all of it). ``cap_kwh`` is what a market could
trade without anyone shifting load or storage (per slot, the baseline's exports or imports,
whichever is less); ``absorbed_of_cap_percent`` the market's volume over it. ``wash_kwh``
counts energy a site bought and sold in the same slot; the midday and evening prices are
volume-weighted means of what sellers received, 10:00–15:00 and 17:00–21:00. Per type, savings
are given per site and day and as a share of the gross bill without the market (imports at the
tariff and fuel), with the storage credit inside them shown on its own.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from peerpower.agents.controller import Delivery
from peerpower.errors import PeerpowerError
from peerpower.ledger.replay import genesis_line, verify_path
from peerpower.ledger.store import block_line
from peerpower.sim.report import write_report
from peerpower.sim.runner import SimResult, costs_microyen, with_cars
from peerpower.timeslots import Slot

BALANCE_TOLERANCE_WH = 0.5 + 1e-6  # the meter rounds the net exchange to the Wh


def yen(microyen: int) -> float:
    """µ¥ → yen, rounded to the sen (for reports only; money stays integer)."""
    return round(microyen / 1_000_000, 2)


def summary(result: SimResult, chain_verified: bool) -> dict[str, Any]:
    s = result.scenario
    costs = costs_microyen(result)
    by_type: dict[str, dict[str, int]] = {}
    for spec in s.sites:
        c = costs[spec.id]
        t = by_type.setdefault(
            spec.site_type, {"sites": 0, "base": 0, "p2p": 0, "gross": 0, "storage": 0}
        )
        t["sites"] += 1
        t["base"] += c.base
        t["p2p"] += c.p2p
        t["gross"] += c.gross
        t["storage"] += c.storage
    types = {}
    for name, t in sorted(by_type.items()):
        saving = t["base"] - t["p2p"]
        site_days = t["sites"] * s.days
        types[name] = {
            "sites": t["sites"],
            "baseline_cost_yen": yen(t["base"]),
            "p2p_cost_yen": yen(t["p2p"]),
            "saving_percent": 0.0 if t["base"] == 0 else round(100 * saving / abs(t["base"]), 2),
            "saving_yen_per_site_day": yen(round(saving / site_days)),
            "saving_percent_of_gross": (
                None if t["gross"] <= 0 else round(100 * saving / t["gross"], 2)
            ),
            "gross_cost_yen": yen(t["gross"]),
            "storage_credit_yen": yen(t["storage"]),
        }
    traded_wh = 0
    money = 0
    paid = 0
    slots = []
    traded_means: list[float] = []  # per slot that traded: its mean price, its range [yen/kWh]
    traded_ranges: list[float] = []
    for slot, units in result.contracts.items():
        volume = sum(u.energy_wh for u in units)
        value = sum(u.energy_wh * u.price_sen_per_kwh for u in units)
        value_paid = sum(u.energy_wh * u.buyer_price_sen_per_kwh for u in units)
        traded_wh += volume
        money += value
        paid += value_paid
        prices = [u.price_sen_per_kwh for u in units]
        if volume:
            traded_means.append(value / volume / 100)
            traded_ranges.append((max(prices) - min(prices)) / 100)
        slots.append(
            {
                "slot": slot,
                "volume_wh": volume,
                "price_min_sen_per_kwh": min(prices) if prices else None,
                "price_max_sen_per_kwh": max(prices) if prices else None,
                "price_mean_sen_per_kwh": round(value / volume) if volume else None,
                "buyer_price_mean_sen_per_kwh": round(value_paid / volume) if volume else None,
            }
        )
    surplus_wh = sum(d.export_wh for ds in result.baseline.values() for d in ds)
    absorbed = 0.0 if surplus_wh == 0 else round(100 * min(traded_wh, surplus_wh) / surplus_wh, 2)
    cap_wh = _cap_wh(result)
    balanced = all(
        abs(d.pv_wh + d.import_wh + d.discharge_wh - d.load_wh - d.charge_wh - d.export_wh)
        <= BALANCE_TOLERANCE_WH
        for ds in (*result.deliveries.values(), *result.baseline.values())
        for d in with_cars(ds)
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
            "cap_kwh": round(cap_wh / 1000, 1),
            "absorbed_of_cap_percent": (
                None if cap_wh == 0 else round(100 * traded_wh / cap_wh, 2)
            ),
            "wash_kwh": round(_wash_wh(result) / 1000, 1),
            "midday_price_yen_per_kwh": _window_price(result, MIDDAY),
            "evening_price_yen_per_kwh": _window_price(result, EVENING),
            "price_sd_yen_per_kwh": (
                round(statistics.pstdev(traded_means), 3) if len(traded_means) > 1 else None
            ),
            "price_range_mean_yen_per_kwh": (
                round(statistics.fmean(traded_ranges), 3) if traded_ranges else None
            ),
        },
        "ev": ev_figures(result),
        "slots": slots,
        "refused_transactions": result.refused,
        "blocks": state.height,
        "checks": {
            "energy_balanced": balanced,
            "money_conserved": state.money_microyen() == result.genesis.supply_microyen,
            "chain_verified": chain_verified,
        },
    }


def renewable_share(deliveries: list[Delivery]) -> float:
    """Share of a site's electricity use that was renewable: its own PV used at home and what
    it bought from neighbours (whose sales come from PV, directly or stored), against its
    imports from the retail provider beyond what it bought."""
    green = grey = 0
    for d in deliveries:
        own = max(0, d.pv_wh - d.export_wh)
        bought = min(d.import_wh, d.bought_wh)
        green += own + bought
        grey += d.import_wh - bought
    return 0.0 if green + grey == 0 else green / (green + grey)


def ev_figures(result: SimResult) -> dict[str, float | None]:
    """The cars' traction energy and fuel [kWh], the renewable share of their driving (battery
    driving at its home's renewable share, fuel not renewable) [%], what they stored while
    plugged in [kWh] and the share of it stored 10:00–15:00 [%]; ``None`` without cars."""
    trip = fuel = green = charged = midday = 0.0
    cars = 0
    for site_id, c in result.sites.items():
        ev = c.ev
        if ev is None:
            continue
        cars += 1
        ds = result.deliveries[site_id]
        trip += ev.trip_wh
        fuel += ev.fuel_kwh * 1000
        # what the home used and what the car took at its workplace charger
        green += (ev.trip_wh - ev.fuel_kwh * 1000) * renewable_share(with_cars(ds))
        assert c.spec.ev is not None
        before: float | None = None
        for d in ds:
            soc = d.ev_soc_percent
            plugged = d.ev_plugged or d.car is not None
            if soc is not None and before is not None and plugged and soc > before:
                gained = (soc - before) * c.spec.ev.capacity_wh / 100
                charged += gained
                midday += gained if d.slot.index in MIDDAY else 0.0
            before = soc
    if not cars:
        return dict.fromkeys(
            ("trip_kwh", "fuel_kwh", "renewable_percent", "charged_kwh", "midday_charged_percent")
        )
    return {
        "trip_kwh": round(trip / 1000, 2),
        "fuel_kwh": round(fuel / 1000, 2),
        "renewable_percent": None if trip == 0 else round(100 * green / trip, 2),
        "charged_kwh": round(charged / 1000, 2),
        "midday_charged_percent": None if charged == 0 else round(100 * midday / charged, 2),
    }


#: Slot indexes of the windows whose prices the summary compares: 10:00–15:00 and 17:00–21:00.
MIDDAY = range(20, 30)
EVENING = range(34, 42)


def _cap_wh(result: SimResult) -> int:
    """What a market could trade without anyone shifting demand or storage: per slot, the
    community's exports or its imports in the no-market run, whichever is less [Wh]."""
    exports: dict[Slot, int] = {}
    imports: dict[Slot, int] = {}
    for ds in result.baseline.values():
        for d in with_cars(ds):
            exports[d.slot] = exports.get(d.slot, 0) + d.export_wh
            imports[d.slot] = imports.get(d.slot, 0) + d.import_wh
    return sum(min(e, imports.get(slot, 0)) for slot, e in exports.items())


def _wash_wh(result: SimResult) -> int:
    """Energy sites bought and sold in the same slot: Σ over sites and slots of the lesser [Wh]."""
    return sum(min(d.bought_wh, d.sold_wh) for ds in result.deliveries.values() for d in ds)


def _window_price(result: SimResult, window: range) -> float | None:
    """Volume-weighted mean price sellers received in the slots of ``window`` [yen/kWh]."""
    energy = money = 0
    for slot, units in result.contracts.items():
        if Slot.parse(slot).index in window:
            energy += sum(u.energy_wh for u in units)
            money += sum(u.energy_wh * u.price_sen_per_kwh for u in units)
    return round(money / energy / 100, 2) if energy else None


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
