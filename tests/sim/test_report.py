"""report.html from a small community: self-contained and well formed, every section there,
the summary's figures and the chosen slot's ladder and units shown, deterministic."""

from __future__ import annotations

import re
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from peerpower.errors import InvalidInput
from peerpower.sim.report import nice_ticks, slot_axis, slot_orders, write_report
from peerpower.sim.runner import SimResult, run
from peerpower.sim.summary import summary
from peerpower.timeslots import Slot
from tests.sim.community import community

SECTIONS = (
    "Checks",
    "Price over the day",
    "Supply and demand",
    "Traded volume",
    "Battery and EV",
    "PV surplus absorbed",
    "Bills and savings by participant type",
    "Order book and balanced units at slot",
)

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}


@pytest.fixture(scope="module")
def run_and_data() -> tuple[SimResult, dict[str, Any]]:
    result = run(community("tiny"))
    return result, summary(result, chain_verified=True)


class _Checker(HTMLParser):
    """Every non-void tag closed in order; SVG self-closing tags allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _check_well_formed(text: str) -> int:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    return checker.svgs


def _table_rows(text: str, after: str) -> list[str]:
    """The data rows of the first table after ``after``."""
    start = text.index(after)
    table = text[text.index("<table>", start) : text.index("</table>", start)]
    return [r for r in re.findall(r"<tr>.*?</tr>", table, re.S) if "<td" in r]


def _busiest(result: SimResult) -> str:
    return max(result.contracts, key=lambda s: sum(u.energy_wh for u in result.contracts[s]))


def test_report_is_self_contained_and_complete(
    run_and_data: tuple[SimResult, dict[str, Any]], tmp_path: Path
) -> None:
    result, data = run_and_data
    path = write_report(result, data, tmp_path)
    assert path == tmp_path / "report.html"
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    svgs = _check_well_formed(text)
    assert svgs >= 6
    assert text.count("<svg") == text.count("</svg>") == svgs
    # offline: no reference outside the SVG namespace, no script, no external style
    without_ns = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns
    assert "https://" not in without_ns
    assert "<script" not in text
    assert "<link" not in text
    assert "@import" not in text
    for title in SECTIONS:
        assert f"<h2>{title}" in text, title
    # header
    assert "tiny" in text
    assert "<dt>Sites</dt><dd>8</dd>" in text
    assert f"<dt>Blocks</dt><dd>{data['blocks']:,}</dd>" in text
    assert "optimal / welfare" in text
    assert text.count('<span class="ok">yes</span>') == 3
    # bills by type, as the summary has them
    rows = _table_rows(text, "<h2>Bills and savings")
    assert len(rows) == len(data["by_type"]) == 4
    for (name, t), row in zip(data["by_type"].items(), rows, strict=True):
        assert f"<td>{name}</td>" in row
        assert f">{t['sites']}<" in row
        assert f">{t['baseline_cost_yen']:,.2f}<" in row
        assert f">{t['p2p_cost_yen']:,.2f}<" in row
        assert f">{t['saving_percent']:.2f} %<" in row
    assert f"{data['market']['surplus_absorbed_percent']:.2f} % absorbed" in text


def test_default_slot_ladder_and_units(
    run_and_data: tuple[SimResult, dict[str, Any]], tmp_path: Path
) -> None:
    result, data = run_and_data
    slot = _busiest(result)
    units = result.contracts[slot]
    assert units, "the tiny community trades somewhere"
    text = write_report(result, data, tmp_path).read_text(encoding="utf-8")
    assert f"Order book and balanced units at slot {slot}</h2>" in text
    ladder_rows = _table_rows(text, "Order book and balanced units")
    prices = [r for r in ladder_rows if re.search(r'<td class="p">\d+\.\d\d</td>', r)]
    assert prices, "at least one price level"
    # the ladder's totals are the slot's orders still standing on chain
    orders = slot_orders(result, slot)
    sell = sum(o.energy_wh for o in orders if o.side.value == "sell")
    buy = sum(o.energy_wh for o in orders if o.side.value == "buy")
    assert sell >= sum(u.energy_wh for u in units) and buy >= sum(u.energy_wh for u in units)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in ladder_rows]
    shown_sell = sum(round(float(c[0].replace(",", "")) * 1000) for c in cells if c[0])
    shown_buy = sum(round(float(c[2].replace(",", "")) * 1000) for c in cells if c[2])
    assert (shown_sell, shown_buy) == (sell, buy)
    # the units table: one row per contract, in order
    start = text.index("<th>seller</th>")
    unit_rows = _table_rows(text[start - 200 :], "<table>")
    assert len(unit_rows) == len(units)
    for u, row in zip(units, unit_rows, strict=True):
        assert f"<td>{u.seller}</td><td>{u.buyer}</td>" in row
        assert f">{u.energy_wh / 1000:,.3f}<" in row
        assert f">{u.price_sen_per_kwh / 100:,.2f}<" in row


def test_deterministic(run_and_data: tuple[SimResult, dict[str, Any]], tmp_path: Path) -> None:
    result, data = run_and_data
    a = write_report(result, data, tmp_path / "a").read_bytes()
    b = write_report(result, data, tmp_path / "b").read_bytes()
    assert a == b


def test_slot_without_trades_and_unknown_slot(
    run_and_data: tuple[SimResult, dict[str, Any]], tmp_path: Path
) -> None:
    result, data = run_and_data
    quiet = next(s for s, units in result.contracts.items() if not units)
    text = write_report(result, data, tmp_path, slot=quiet).read_text(encoding="utf-8")
    assert f"at slot {quiet}</h2>" in text
    assert f"no trades in slot {quiet}" in text
    _check_well_formed(text)
    with pytest.raises(InvalidInput) as err:
        write_report(result, data, tmp_path, slot="2030-01-01#05")
    assert err.value.field == "slot"
    assert "2030-01-01#05" in str(err.value)


def test_no_trades_at_all(run_and_data: tuple[SimResult, dict[str, Any]], tmp_path: Path) -> None:
    result, data = run_and_data
    empty = SimResult(
        result.scenario,
        result.genesis,
        result.validators,
        result.sites,
        result.baseline_sites,
        deliveries=result.deliveries,
        baseline=result.baseline,
        contracts=dict.fromkeys(result.contracts, ()),
    )
    text = write_report(empty, data, tmp_path).read_text(encoding="utf-8")
    assert "No trades: the market made no contracts" in text
    assert "No trades in this run." in text
    _check_well_formed(text)


def test_chart_helpers() -> None:
    assert nice_ticks(0, 9.3) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(-1722.9, 313.7)[0] <= -1722.9
    flat = nice_ticks(0, 0)
    assert flat[0] == 0 and flat[-1] >= 1
    axis = slot_axis(_slots(1))
    assert [label for _, label in axis.ticks] == ["0", "6", "12", "18", "24"]
    axis3 = slot_axis(_slots(3))
    assert [label for _, label in axis3.ticks] == ["08-18", "08-19", "08-20"]
    assert axis3.n == 144


def _slots(days: int) -> list[Slot]:
    return [Slot(date(2026, 8, 18) + timedelta(days=k // 48), k % 48) for k in range(48 * days)]
