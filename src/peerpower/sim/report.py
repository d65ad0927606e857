"""``report.html``: a simulation's results as one self-contained page, readable offline.

Everything is inline — the CSS, and charts drawn here as SVG (no script, nothing fetched):
the header with the run's checks, the price trend over the day against the retail tariff and
buyback, supply and demand, traded volume, storage (battery and EV), how much of the PV surplus
the market absorbed, bills and savings by participant type, and the order-book ladder and the
balanced units of one slot, the book rebuilt from the chain's order and cancel transactions.

The page depends only on its input: the same run and summary give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from peerpower.errors import InvalidInput
from peerpower.ledger.state import Contract
from peerpower.market.depth import LadderRow, ladder
from peerpower.market.orders import Order, Side
from peerpower.sim.runner import SimResult
from peerpower.timeslots import SLOTS_PER_DAY, Slot

LADDER_DEPTH = 10  # price levels shown per side of the ladder; the rest in OVER / UNDER

# chart geometry [px]
WIDTH = 720
HEIGHT = 260
LEFT = 64
RIGHT = 16
TOP = 30
BOTTOM = 46

COLORS = {
    "price": "#1f5fa8",
    "band": "#9cc1ea",
    "tariff": "#c0392b",
    "buyback": "#27864a",
    "pv": "#e0a100",
    "load": "#6b4fa0",
    "traded": "#1f5fa8",
    "battery": "#27864a",
    "ev": "#c0392b",
    "surplus": "#e0a100",
    "baseline": "#8a8a8a",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 760px;
  color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { padding: 0.15rem 0.6rem; border-bottom: 1px solid #e4e4e4; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.p { text-align: center; font-weight: 600; background: #f3f3f3; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.ok { color: #1d7a3e; font-weight: 600; }
.bad { color: #b3261e; font-weight: 600; }
.note { color: #555; font-size: 0.9rem; }
svg { display: block; margin: 0.5rem 0; }
svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #333; }
"""


# ---------------------------------------------------------------------------------------------
# SVG charts


@dataclass(frozen=True, slots=True)
class Axis:
    """An x axis of ``n`` unit-wide positions (slots or categories), with labelled ticks at
    positions in those units (0 = left edge, ``n`` = right edge)."""

    n: int
    ticks: tuple[tuple[float, str], ...]
    title: str


@dataclass(frozen=True, slots=True)
class Line:
    """A line over the positions (``None``: no value, the line breaks); ``band`` is a
    (low, high) range drawn behind it."""

    name: str
    values: Sequence[float | None]
    color: str
    dashed: bool = False
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None
    band_name: str = ""


@dataclass(frozen=True, slots=True)
class Bars:
    """One bar per position; several ``Bars`` in a chart are grouped side by side."""

    name: str
    values: Sequence[float]
    color: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A horizontal reference line at ``value``."""

    name: str
    value: float
    color: str


def slot_axis(slots: Sequence[Slot]) -> Axis:
    """Slots on x: hours 0, 6, 12, 18, 24 for one day; day starts (``MM-DD``) for several."""
    n = len(slots)
    if n <= SLOTS_PER_DAY:
        ticks = tuple((float(h * 2), str(h)) for h in range(0, 25, 6) if h * 2 <= n)
        return Axis(n, ticks, "hour of day (JST), half-hour slots")
    days = sorted({s.day for s in slots})
    step = max(1, math.ceil(len(days) / 8))
    ticks = tuple(
        (float(k * SLOTS_PER_DAY), d.isoformat()[5:]) for k, d in enumerate(days) if k % step == 0
    )
    return Axis(n, ticks, "day (JST), half-hour slots")


def category_axis(names: Sequence[str], title: str) -> Axis:
    return Axis(len(names), tuple((k + 0.5, name) for k, name in enumerate(names)), title)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``lo``–``hi`` (about ``count`` intervals)."""
    if not hi > lo:
        lo, hi = (lo - 1, hi + 1) if lo != 0 else (0.0, 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = 10 * mag
    for m in (1, 2, 2.5, 5):
        if m * mag >= raw:
            step = m * mag
            break
    start = math.floor(lo / step + 1e-9)
    end = math.ceil(hi / step - 1e-9)
    return [k * step for k in range(start, end + 1)]


def _tick_label(v: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    text = f"{v:,.{decimals}f}"
    return "0" if text.strip("-0.,") == "" else text


def _f(v: float) -> str:
    """A coordinate, to the tenth of a pixel."""
    text = f"{v:.1f}"
    return "0" if text in ("-0.0", "0.0") else text.removesuffix(".0")


def chart(
    title: str,
    x: Axis,
    y_title: str,
    lines: Sequence[Line] = (),
    bars: Sequence[Bars] = (),
    refs: Sequence[Ref] = (),
) -> str:
    """An SVG chart (~720×260) of bars, lines with optional bands and reference lines, with
    axes, ticks, axis titles and a legend; ``title`` is its accessible name."""
    values: list[float] = [r.value for r in refs]
    for line in lines:
        values += [v for v in line.values if v is not None]
        if line.band is not None:
            values += [v for side in line.band for v in side if v is not None]
    for b in bars:
        values += [*b.values, 0.0]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    ticks = nice_ticks(lo, hi)
    y_lo, y_hi = ticks[0], ticks[-1]
    pw = WIDTH - LEFT - RIGHT
    ph = HEIGHT - TOP - BOTTOM

    def px(pos: float) -> float:
        return LEFT + pw * pos / max(1, x.n)

    def py(v: float) -> float:
        return TOP + ph * (y_hi - v) / (y_hi - y_lo)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f"<title>{escape(title)}</title>",
    ]
    # grid and y ticks
    for t in ticks:
        y = _f(py(t))
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#e6e6e6"/>'
            f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">'
            f"{escape(_tick_label(t, ticks))}</text>"
        )
    # bars, grouped per position
    if bars:
        group = 0.8 / len(bars)
        zero = py(max(y_lo, min(0.0, y_hi)))
        for k, b in enumerate(bars):
            for i, v in enumerate(b.values):
                if v == 0:
                    continue
                x0 = px(i + 0.1 + k * group)
                w = px(i + 0.1 + (k + 1) * group) - x0
                top, bottom = min(zero, py(v)), max(zero, py(v))
                out.append(
                    f'<rect x="{_f(x0)}" y="{_f(top)}" width="{_f(max(w, 0.5))}" '
                    f'height="{_f(max(bottom - top, 0.5))}" fill="{b.color}"/>'
                )
    # bands (one step per position) and lines (breaking at None)
    for line in lines:
        if line.band is None:
            continue
        for i, (a, b_) in enumerate(zip(*line.band, strict=True)):
            if a is None or b_ is None:
                continue
            top, bottom = py(max(a, b_)), py(min(a, b_))
            out.append(
                f'<rect x="{_f(px(i))}" y="{_f(top)}" width="{_f(px(i + 1) - px(i))}" '
                f'height="{_f(max(bottom - top, 1.0))}" fill="{COLORS["band"]}" '
                f'fill-opacity="0.6"/>'
            )
    for r in refs:
        y = _f(py(r.value))
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{r.color}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
    for line in lines:
        dash = ' stroke-dasharray="4 3"' if line.dashed else ""
        vals = list(line.values)
        path: list[str] = []
        for i, val in enumerate(vals):
            if val is None:
                continue
            cmd = "L" if i > 0 and vals[i - 1] is not None else "M"
            path.append(f"{cmd}{_f(px(i + 0.5))},{_f(py(val))}")
            alone = (i == 0 or vals[i - 1] is None) and (i + 1 >= len(vals) or vals[i + 1] is None)
            if alone:
                out.append(
                    f'<circle cx="{_f(px(i + 0.5))}" cy="{_f(py(val))}" r="2.5" '
                    f'fill="{line.color}"/>'
                )
        if path:
            out.append(
                f'<path d="{" ".join(path)}" fill="none" stroke="{line.color}" '
                f'stroke-width="2"{dash}/>'
            )
    # axes (and the zero line when values go below it), x ticks, titles
    base = HEIGHT - BOTTOM
    if y_lo < 0 < y_hi:
        y0 = _f(py(0.0))
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y0}" y2="{y0}" stroke="#333"/>')
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>'
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}" stroke="#333"/>'
    )
    for pos, label in x.ticks:
        xx = _f(px(pos))
        out.append(
            f'<line x1="{xx}" x2="{xx}" y1="{base}" y2="{base + 4}" stroke="#333"/>'
            f'<text x="{xx}" y="{base + 15}" text-anchor="middle">{escape(label)}</text>'
        )
    out.append(
        f'<text x="{_f(LEFT + pw / 2)}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x.title)}</text>"
        f'<text transform="translate(14 {_f(TOP + ph / 2)}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_title)}</text>'
    )
    # legend, along the top
    items: list[tuple[str, str, str]] = []  # name, color, kind
    for b in bars:
        items.append((b.name, b.color, "box"))
    for line in lines:
        items.append((line.name, line.color, "dash" if line.dashed else "line"))
        if line.band is not None:
            items.append((line.band_name or f"{line.name} range", COLORS["band"], "box"))
    for r in refs:
        items.append((r.name, r.color, "dash"))
    lx = float(LEFT)
    for name, color, kind in items:
        if kind == "box":
            out.append(f'<rect x="{_f(lx)}" y="8" width="14" height="10" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "dash" else ""
            out.append(
                f'<line x1="{_f(lx)}" x2="{_f(lx + 14)}" y1="13" y2="13" stroke="{color}" '
                f'stroke-width="2"{dash}/>'
            )
        out.append(f'<text x="{_f(lx + 18)}" y="17">{escape(name)}</text>')
        lx += 18 + 6.2 * len(name) + 14
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# the slot's book, from the chain


def slot_orders(result: SimResult, slot: str) -> list[Order]:
    """The orders for ``slot`` on chain, less those cancelled, in chain order (``seq``)."""
    nodes = {spec.id: spec.node for spec in result.scenario.sites}
    orders: dict[str, Order] = {}
    seq = 0
    for block in result.validators.blocks:
        for tx in block.txs:
            body = tx.get("body", {})
            kind = body.get("type")
            if kind == "order" and body.get("slot") == slot:
                oid = f"{body['from']}#{body['nonce']}"
                orders[oid] = Order(
                    id=oid,
                    participant=body["from"],
                    side=Side(body["side"]),
                    energy_wh=int(body["energy_wh"]),
                    price_sen_per_kwh=int(body["price_sen_per_kwh"]),
                    node=nodes.get(body["from"], "root"),
                    seq=seq,
                )
                seq += 1
            elif kind == "cancel":
                orders.pop(str(body.get("order")), None)
    return list(orders.values())


# ---------------------------------------------------------------------------------------------
# the page


def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.3f}"


_PRICING_TEXT = {
    "nodal": "nodal — one price per grid node, the competitive equilibrium of the sealed book; "
    "a seller gets its node's price, a buyer pays its node's (fee and congestion rent included)",
    "midpoint": "midpoint — each balanced unit at its ask plus half its spread; the buyer adds "
    "the fee",
    "resting": "continuous — each trade at the resting order's limit; the buyer adds the fee",
}


def _yen_per_kwh(sen: int) -> str:
    return f"{sen / 100:,.2f}"


def _yen(v: float) -> str:
    return f"{v:,.2f}"


def _no_data(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _table(head: Sequence[tuple[str, bool]], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """A table: ``head`` (title, numeric?), rows of (text, css class)."""
    out = ["<table>", "<tr>"]
    out += [('<th class="n">' if num else "<th>") + f"{escape(t)}</th>" for t, num in head]
    out.append("</tr>")
    for row in rows:
        cells = "".join(
            (f'<td class="{cls}">' if cls else "<td>") + f"{escape(text)}</td>" for text, cls in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def choose_slot(result: SimResult, slot: str | None) -> str:
    """``slot`` if it was simulated (else :class:`InvalidInput` naming ``slot``); by default
    the slot with the most traded volume (the earliest of equals; the first if none traded)."""
    names = list(result.contracts)
    if slot is not None:
        if slot not in result.contracts:
            first, last = (names[0], names[-1]) if names else ("–", "–")
            raise InvalidInput(
                "slot", f"{slot!r} is not a simulated slot (they run from {first} to {last})"
            )
        return slot
    if not names:
        raise InvalidInput("slot", "the run has no slots to show")
    volumes = {n: sum(u.energy_wh for u in units) for n, units in result.contracts.items()}
    return max(names, key=lambda n: (volumes[n], -names.index(n)))


def _header(result: SimResult, data: dict[str, Any]) -> str:
    mech = str(data["mechanism"]) + (f" / {data['goal']}" if data.get("goal") else "")
    facts = [
        ("Scenario", str(data["scenario"])),
        ("Sites", str(data["sites"])),
        ("Days", f"{data['days']} from {result.scenario.start.isoformat()}"),
        ("Mechanism / goal", mech),
        ("Validators", str(data["validators"])),
        ("Blocks", f"{data['blocks']:,}"),
        ("Refused transactions", f"{data.get('refused_transactions', 0):,}"),
    ]
    out = [
        f"<h1>peerpower simulation: {escape(str(data['scenario']))}</h1>",
        '<dl class="facts">',
        *(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts),
        "</dl>",
        "<h2>Checks</h2>",
        "<ul>",
    ]
    names = {
        "energy_balanced": "Energy balanced at every site and slot",
        "money_conserved": "Money conserved on chain",
        "chain_verified": "Chain verified from genesis",
    }
    for key, ok in data["checks"].items():
        mark = '<span class="ok">yes</span>' if ok else '<span class="bad">NO</span>'
        out.append(f"<li>{escape(names.get(key, key))}: {mark}</li>")
    out.append("</ul>")
    return "\n".join(out)


def write_report(
    result: SimResult, data: dict[str, Any], out: Path, slot: str | None = None
) -> Path:
    """Write ``out / "report.html"`` for ``result`` and its summary ``data`` (see the module
    notes); ``slot`` (``YYYY-MM-DD#NN``) is the slot whose order book and units are shown, by
    default the one with the most traded volume. Returns the file's path."""
    chosen = choose_slot(result, slot)
    s = result.scenario
    specs = {spec.id: spec for spec in s.sites}
    site_ids = [spec.id for spec in s.sites if spec.id in result.deliveries]
    first = result.deliveries[site_ids[0]] if site_ids else []
    slots = [d.slot for d in first]
    names = [str(x) for x in slots]
    n = len(slots)
    axis = slot_axis(slots)
    contracts = [result.contracts.get(name, ()) for name in names]
    traded_wh = [sum(u.energy_wh for u in units) for units in contracts]
    any_trades = any(traded_wh)
    body: list[str] = [_header(result, data)]

    # 2. price trend
    body.append("<h2>Price over the day</h2>")
    if any_trades:
        mean: list[float | None] = []
        low: list[float | None] = []
        high: list[float | None] = []
        for cs in contracts:
            vol = sum(u.energy_wh for u in cs)
            if vol:
                mean.append(sum(u.energy_wh * u.price_sen_per_kwh for u in cs) / vol / 100)
                low.append(min(u.price_sen_per_kwh for u in cs) / 100)
                high.append(max(u.price_sen_per_kwh for u in cs) / 100)
            else:
                mean.append(None)
                low.append(None)
                high.append(None)
        body.append(
            chart(
                "Contract price per slot",
                axis,
                "price [yen/kWh]",
                lines=[
                    Line(
                        "mean contract price",
                        mean,
                        COLORS["price"],
                        band=(low, high),
                        band_name="min–max",
                    )
                ],
                refs=[
                    Ref("retail tariff", s.tariff_sen_per_kwh / 100, COLORS["tariff"]),
                    Ref("buyback", s.buyback_sen_per_kwh / 100, COLORS["buyback"]),
                ],
            )
        )
        body.append(
            _no_data(
                f"Energy-weighted mean price of each slot's contracts, and their range; retail "
                f"tariff {_yen_per_kwh(s.tariff_sen_per_kwh)} yen/kWh, buyback "
                f"{_yen_per_kwh(s.buyback_sen_per_kwh)} yen/kWh."
            )
        )
    else:
        body.append(_no_data("No trades: the market made no contracts, so there are no prices."))

    # 3. supply and demand
    pv = [sum(result.deliveries[i][k].pv_wh for i in site_ids) / 1000 for k in range(n)]
    load = [sum(result.deliveries[i][k].load_wh for i in site_ids) / 1000 for k in range(n)]
    traded = [wh / 1000 for wh in traded_wh]
    body.append("<h2>Supply and demand</h2>")
    body.append(
        chart(
            "PV, load and traded volume per slot",
            axis,
            "energy per slot [kWh]",
            lines=[
                Line("PV generation", pv, COLORS["pv"]),
                Line("load", load, COLORS["load"]),
                Line("traded", traded, COLORS["traded"], dashed=True),
            ],
        )
    )
    body.append(_no_data("Totals over all sites in the P2P run."))

    # 4. traded volume
    body.append("<h2>Traded volume</h2>")
    if any_trades:
        body.append(
            chart(
                "Traded volume per slot",
                axis,
                "traded [kWh]",
                bars=[Bars("traded volume", traded, COLORS["traded"])],
            )
        )
        m = data["market"]
        price = m.get("mean_price_yen_per_kwh")
        paid = m.get("mean_buyer_price_yen_per_kwh")
        body.append(
            _no_data(
                f"Traded in all: {m['traded_kwh']:,} kWh"
                + ("" if price is None else f" at a mean price of {price:.2f} yen/kWh to sellers")
                + ("" if paid is None else f", {paid:.2f} yen/kWh from buyers (fees and rent)")
                + f". Pricing: {_PRICING_TEXT.get(str(data.get('pricing')), 'n/a')}."
            )
        )
    else:
        body.append(_no_data("No trades in this run."))

    # 5. storage
    body.append("<h2>Battery and EV</h2>")
    bat_ids = [i for i in site_ids if specs[i].battery is not None]
    ev_ids = [i for i in site_ids if specs[i].ev is not None]
    if bat_ids or ev_ids:
        soc_lines = []
        if bat_ids:
            soc_lines.append(
                Line(
                    f"battery SOC, mean of {len(bat_ids)}",
                    [
                        _mean([result.deliveries[i][k].battery_soc_percent for i in bat_ids])
                        for k in range(n)
                    ],
                    COLORS["battery"],
                )
            )
        if ev_ids:
            soc_lines.append(
                Line(
                    f"EV SOC, mean of {len(ev_ids)}",
                    [
                        _mean([result.deliveries[i][k].ev_soc_percent for i in ev_ids])
                        for k in range(n)
                    ],
                    COLORS["ev"],
                    dashed=True,
                )
            )
        body.append(chart("State of charge", axis, "state of charge [%]", lines=soc_lines))
        if ev_ids:
            ev_charge = [
                sum(result.deliveries[i][k].charge_wh for i in ev_ids) / 1000 for k in range(n)
            ]
            body.append(
                chart(
                    "Charging at EV sites",
                    axis,
                    "charged [kWh]",
                    bars=[Bars("charging at EV sites", ev_charge, COLORS["ev"])],
                )
            )
            both = [i for i in ev_ids if specs[i].battery is not None]
            note = "Total charge energy per slot of the sites with an EV."
            if both:
                note += (
                    f" {len(both)} of them also have a stationary battery, whose charging is "
                    "included: the deliveries do not split the two."
                )
            body.append(_no_data(note))
    else:
        body.append(_no_data("No site has a battery or an EV."))

    # 6. surplus absorbed
    body.append("<h2>PV surplus absorbed</h2>")
    base_ids = [i for i in site_ids if i in result.baseline]
    surplus = [sum(result.baseline[i][k].export_wh for i in base_ids) / 1000 for k in range(n)]
    body.append(
        chart(
            "Surplus without the market vs traded volume",
            axis,
            "energy per slot [kWh]",
            bars=[
                Bars("surplus to retail without the market", surplus, COLORS["surplus"]),
                Bars("traded in the market", traded, COLORS["traded"]),
            ],
        )
    )
    m = data["market"]
    body.append(
        "<p>"
        + escape(
            f"The market traded {m['traded_kwh']:,} kWh of a PV surplus of "
            f"{m['pv_surplus_kwh']:,} kWh that would otherwise be sold to the retail provider "
            f"at the buyback: {m['surplus_absorbed_percent']:.2f} % absorbed."
        )
        + "</p>"
    )

    # 7. bills
    body.append("<h2>Bills and savings by participant type</h2>")
    types = list(data["by_type"].items())
    body.append(
        _table(
            [
                ("type", False),
                ("sites", True),
                ("baseline ¥", True),
                ("P2P ¥", True),
                ("saving", True),
            ],
            [
                [
                    (name, ""),
                    (str(t["sites"]), "n"),
                    (_yen(t["baseline_cost_yen"]), "n"),
                    (_yen(t["p2p_cost_yen"]), "n"),
                    (f"{t['saving_percent']:.2f} %", "n"),
                ]
                for name, t in types
            ],
        )
    )
    if types:
        body.append(
            chart(
                "Bills by participant type",
                category_axis([name for name, _ in types], "participant type"),
                "bill over the run [yen]",
                bars=[
                    Bars(
                        "baseline (no market)",
                        [t["baseline_cost_yen"] for _, t in types],
                        COLORS["baseline"],
                    ),
                    Bars("P2P", [t["p2p_cost_yen"] for _, t in types], COLORS["traded"]),
                ],
            )
        )
    body.append(
        _no_data(
            "Bills summed over the sites of each type; negative: the sites earned more than "
            "they paid. Saving relative to the baseline."
        )
    )

    # 8. the slot's book and units
    body.append(f"<h2>Order book and balanced units at slot {escape(chosen)}</h2>")
    rows: list[LadderRow] = ladder(slot_orders(result, chosen), LADDER_DEPTH)
    if rows:
        body.append(
            _table(
                [("SELL [kWh]", True), ("PRICE [yen/kWh]", False), ("BUY [kWh]", True)],
                [
                    [
                        (_kwh(r.sell_wh) if r.sell_wh else "", "n"),
                        (
                            r.label
                            if r.price_sen_per_kwh is None
                            else _yen_per_kwh(r.price_sen_per_kwh),
                            "p",
                        ),
                        (_kwh(r.buy_wh) if r.buy_wh else "", "n"),
                    ]
                    for r in rows
                ],
            )
        )
        body.append(
            _no_data(
                f"The slot's orders on chain, less those cancelled; {LADDER_DEPTH} price levels "
                "per side, the rest summed in OVER and UNDER. Bids include the grid fee."
            )
        )
    else:
        body.append(_no_data(f"No orders for slot {chosen}."))
    units: tuple[Contract, ...] = result.contracts.get(chosen, ())
    if units:
        body.append(
            _table(
                [
                    ("seller", False),
                    ("buyer", False),
                    ("energy [kWh]", True),
                    ("seller gets [yen/kWh]", True),
                    ("fee [yen/kWh]", True),
                    ("buyer pays [yen/kWh]", True),
                ],
                [
                    [
                        (u.seller, ""),
                        (u.buyer, ""),
                        (_kwh(u.energy_wh), "n"),
                        (_yen_per_kwh(u.price_sen_per_kwh), "n"),
                        (_yen_per_kwh(u.fee_sen_per_kwh), "n"),
                        (_yen_per_kwh(u.buyer_price_sen_per_kwh), "n"),
                    ]
                    for u in units
                ],
            )
        )
        body.append(
            _no_data(f"{len(units)} balanced unit(s), {_kwh(sum(u.energy_wh for u in units))} kWh.")
        )
    else:
        body.append(_no_data(f"Balanced units: no trades in slot {chosen}."))

    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>peerpower report: {escape(str(data['scenario']))}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
