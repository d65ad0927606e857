"""``make demo``: clear the sample books in ``examples/`` with each mechanism, as tables.

Until the simulator exists this is the main job: for every book it prints the order-book ladder
(SELL | PRICE | BUY, as on the Urawa-Misono screen), then for each mechanism the balanced units
(seller, buyer, kWh, price, fee) and the totals, and whether ``verify`` accepts the result.
"""

from __future__ import annotations

import json
from pathlib import Path

from peerpower.errors import ClearingError, InvalidInput
from peerpower.market import clear, parse_book, verify
from peerpower.market.depth import ladder
from peerpower.market.orders import Book
from peerpower.market.result import ClearingResult
from peerpower.units import MicroYen, Wh, kwh_str, price_str, yen_str

RUNS: tuple[tuple[str, str | None, str | None], ...] = (
    ("cda", None, None),
    ("call", None, None),
    ("optimal", "volume", None),
    ("optimal", "welfare", None),
    ("optimal", "welfare", "midpoint"),
    ("optimal", "maxmin", None),
)


def table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """A plain-text table; ``align`` has one ``l`` or ``r`` per column."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  " + " | ".join(parts).rstrip()

    rule = "  " + "-+-".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def ladder_table(book: Book, depth: int) -> str:
    rows = []
    for row in ladder(book.orders, depth):
        price = row.label if row.price_sen_per_kwh is None else price_str(row.price_sen_per_kwh)
        rows.append(
            [
                kwh_str(Wh(row.sell_wh)) if row.sell_wh else "",
                price,
                kwh_str(Wh(row.buy_wh)) if row.buy_wh else "",
            ]
        )
    return table(["SELL kWh", "PRICE ¥/kWh", "BUY kWh"], rows, "rcl")


def result_table(book: Book, result: ClearingResult) -> str:
    if not result.trades:
        return "  no balanced units: no bid meets an ask"
    rows = [
        [
            t.seller,
            t.buyer,
            kwh_str(Wh(t.energy_wh)),
            price_str(t.price_sen_per_kwh),
            price_str(t.fee_sen_per_kwh),
            price_str(t.buyer_price_sen_per_kwh),
        ]
        for t in result.trades
    ]
    return table(
        ["seller", "buyer", "kWh", "seller gets ¥/kWh", "fee ¥/kWh", "buyer pays ¥/kWh"],
        rows,
        "llrrrr",
    )


def totals_line(book: Book, result: ClearingResult) -> str:
    t = result.totals
    text = (
        f"  totals: {kwh_str(Wh(t.volume_wh))} kWh traded, welfare "
        f"¥{yen_str(MicroYen(t.welfare_microyen))}, fees ¥{yen_str(MicroYen(t.fees_microyen))}"
    )
    if t.rent_microyen:
        text += f", congestion rent ¥{yen_str(MicroYen(t.rent_microyen))}"
    if result.clearing_price_sen_per_kwh is not None:
        text += f", clearing price {price_str(result.clearing_price_sen_per_kwh)} ¥/kWh"
    elif result.node_prices and result.trades:
        prices = sorted(set(result.node_prices.values()))
        text += (
            f", node prices {price_str(prices[0])}–{price_str(prices[-1])} ¥/kWh"
            if len(prices) > 1
            else f", price {price_str(prices[0])} ¥/kWh at every node"
        )
    check = verify(book, result)
    if check.ok:
        text += "; verified" + (" optimal" if check.proven_optimal else "")
    else:
        rule, message = check.problems[0]
        text += f"; VERIFY FAILED ({rule}: {message})"
    return text


def run_demo(examples: Path, depth: int = 10) -> str:
    files = sorted(examples.glob("*.json"))
    if not files:
        raise InvalidInput("examples", f"no sample books (*.json) in {str(examples)!r}")
    out: list[str] = []
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        book = parse_book(raw)
        out.append("=" * 78)
        out.append(f"{path.name}: {len(book.orders)} orders, grid of {book.grid.size} node(s)")
        about = raw.get("_about") if isinstance(raw, dict) else None
        if about:
            out.append(f"  {about}")
        out.append("")
        out.append(ladder_table(book, depth))
        for mechanism, goal, pricing in RUNS:
            name = mechanism + (f" --goal {goal}" if goal else "")
            name += f" --pricing {pricing}" if pricing else ""
            out.append("")
            out.append(f"[{name}]")
            try:
                result = clear(book, mechanism, goal, pricing)
            except ClearingError as err:
                out.append(f"  cannot clear: {err.message}")
                continue
            out.append(result_table(book, result))
            out.append(totals_line(book, result))
        out.append("")
    out.extend(ledger_demo())
    return "\n".join(out) + "\n"


def ledger_demo() -> list[str]:
    """Write the example chain to a temporary folder, verify it, show what settled."""
    import tempfile

    from peerpower.ledger.example import write_example
    from peerpower.ledger.replay import verify_path
    from peerpower.ledger.state import Account, Settled
    from peerpower.units import MicroYen, yen_str

    out = ["=" * 78, "ledger example (peerpower ledger example): 5 sites, 2 slots, solo mode", ""]
    with tempfile.TemporaryDirectory(prefix="peerpower-chain-") as tmp:
        db, jsonl, node = write_example(Path(tmp))
        out.append(verify_path(jsonl).line())
        out.append(verify_path(db).line())
    state = node.state
    out.append("")
    out.append(
        f"{'slot':<15}{'kWh':>6}{'paid yen':>11}{'fees yen':>10}{'rent yen':>10}"
        f"{'penalty yen':>13}  defaulters"
    )
    for _, rec in sorted(state.table("settled").items()):
        assert isinstance(rec, Settled)
        out.append(
            f"{rec.slot:<15}{rec.volume_wh / 1000:>6.1f}{yen_str(MicroYen(rec.paid_microyen)):>11}"
            f"{yen_str(MicroYen(rec.fees_microyen)):>10}"
            f"{yen_str(MicroYen(rec.rent_microyen)):>10}"
            f"{yen_str(MicroYen(rec.penalties_microyen)):>13}  {', '.join(rec.defaulters) or '-'}"
        )
    out.append("")
    out.append(f"{'account':<13}{'kind':<13}{'balance yen':>15}{'defaults':>10}")
    for _, acct in sorted(state.table("accounts").items()):
        assert isinstance(acct, Account)
        held = MicroYen(acct.balance_microyen + acct.locked_microyen)
        out.append(f"{acct.id:<13}{acct.kind:<13}{yen_str(held):>15}{acct.defaults:>10}")
    out.append("")
    return out
