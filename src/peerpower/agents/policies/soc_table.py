"""``soc-table``: the Urawa-Misono trial's state-of-charge price table (the default policy).

For each open slot the controller forecasts its storage's state of charge at the start of the
slot (no trading: PV surplus charges it, deficits draw on it, within its power and limits), and
bids the row of the table for that SOC — the highest row at or below it (below the lowest row:
the lowest; above the highest: the highest)::

    SOC [%]   SELL [yen/kWh]   BUY [yen/kWh]   amount [kWh]
      30            –               25             1.0
      40           30               20             1.0
      50           20               10             1.0
      60           15                5             1.0
      70           10                –             1.0

(Tanaka, talk slides on the Misono project, "bidding is done"; the 70 % row's amount is taken as
1.0 kWh.) A row's price is read as the least the storage takes for a sale and the most it pays
for a purchase: it asks the forecast market price less ``premium_yen`` and bids the forecast
plus ``premium_yen`` within those limits (``forecast_prices = false`` bids the rows' own
prices, as the trial's table did). A sale from storage also asks at least what refilling it
costs: the best forecast price the house's own later PV surplus could fetch (at least the
buyback), over the round trip through the storage; below that, only this slot's PV the
storage cannot take is offered. The amounts are limited by what the storage can give or take
in the slot beside the house's own forecast surplus or deficit (which it takes first): a sale
never draws it below its floor or the EV's trip reserve, a purchase never overfills it; and the
forecast SOC of later slots counts every earlier sale as made (purchases as not made), so a day
of sales never adds up to more than the storage holds. A site with no
storage (or an EV away) offers its forecast PV surplus at the forecast market price less
``premium_yen`` (at least the buyback) and bids for its forecast deficit at the forecast price
plus ``premium_yen`` (at most the tariff) — or at the fixed ``surplus_yen`` and
``deficit_yen`` when given — in whole lots, as much of either as its own forecast errors make
worth trading at that price (:mod:`peerpower.agents.sizing`: a lot it cannot deliver or take
costs the imbalance charge).

A sale also leaves in the storage what the house itself is forecast to draw from it before its
PV surplus refills it (its evening and night), and a purchase is only of what the storage will
lack for that: selling stored energy at 10–20 yen/kWh only to import it again at the tariff is
a loss, and so is buying at 20–25 yen/kWh what pushes the next day's PV out at the buyback. The
trial's table alone does not say this; peerpower's simulated Misono battery homes paid a third
more than without the market before these two limits.

Notes
-----
Full lots only: amounts are rounded down to the market lot (0.1 kWh).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peerpower.agents.policy import (
    Bid,
    Policy,
    SiteView,
    house_need,
    later_surplus_prices,
    net_position,
    register,
)
from peerpower.errors import InvalidInput

# (SOC [%], sell [yen/kWh] or None, buy [yen/kWh] or None, amount [kWh])
MISONO_TABLE: tuple[tuple[int, float | None, float | None, float], ...] = (
    (30, None, 25.0, 1.0),
    (40, 30.0, 20.0, 1.0),
    (50, 20.0, 10.0, 1.0),
    (60, 15.0, 5.0, 1.0),
    (70, 10.0, None, 1.0),
)


@dataclass(frozen=True, slots=True)
class SocTable:
    # a slot's bid depends only on the slots before it, and on the house's need after it,
    # which the controller gives over the whole horizon (StorageView.need_wh)
    prefix_consistent = True
    uses_house_need = True

    rows: tuple[tuple[int, float | None, float | None, float], ...] = MISONO_TABLE
    surplus_yen: float | None = None
    deficit_yen: float | None = None
    premium_yen: float = 1.0
    forecast_prices: bool = True

    def __post_init__(self) -> None:
        if not self.rows:
            raise InvalidInput("table", "needs at least one row")
        last = -1
        for k, (soc, sell, buy, amount) in enumerate(self.rows):
            if not last < soc <= 100:
                raise InvalidInput(
                    f"table[{k}].soc_percent", f"rows must rise within 0–100 %, got {soc}"
                )
            last = soc
            for name, price in (("sell_yen", sell), ("buy_yen", buy)):
                if price is not None and not 0 <= price <= 100:
                    raise InvalidInput(f"table[{k}].{name}", f"must be 0–100 yen/kWh, got {price}")
            if not 0 < amount <= 100:
                raise InvalidInput(f"table[{k}].amount_kwh", f"must be > 0, got {amount}")
        for name, price in (
            ("surplus_yen", self.surplus_yen),
            ("deficit_yen", self.deficit_yen),
            ("premium_yen", self.premium_yen),
        ):
            if price is not None and not 0 <= price <= 100:
                raise InvalidInput(name, f"must be 0–100 yen/kWh, got {price}")

    @property
    def premium_sen(self) -> int:
        """``premium_yen`` [sen/kWh]."""
        return round(self.premium_yen * 100)

    def __call__(self, view: SiteView) -> list[Bid]:
        storage = view.battery if view.battery is not None else view.ev
        if storage is None:
            return no_storage(view, self.surplus_yen, self.deficit_yen, self.premium_sen)
        out: list[Bid] = []
        net = net_position(view)
        # need[k + 1]: what the house will draw after slot k (given, or from this view)
        need = (0.0, *storage.need_wh) if storage.need_wh else house_need(storage, net)
        stored = storage.stored_wh
        # the loop runs for every storage site at every re-plan: locals, rows priced once
        eff, cap = storage.efficiency, storage.capacity_wh
        min_wh, max_wh = storage.min_wh, storage.max_wh
        charge_wh, discharge_wh = storage.charge_wh, storage.discharge_wh
        plugged, reserve = storage.plugged, storage.reserve_wh
        lot = view.lot_wh
        rows = [
            (
                soc - 1e-9,  # the row applies from its SOC (rounding aside)
                None if sell is None else view.clamp_price(sell * 100),
                None if buy is None else view.clamp_price(buy * 100),
                amount_kwh * 1000,
            )
            for soc, sell, buy, amount_kwh in self.rows
        ]
        first = rows[0]
        forecast, premium = view.prices_sen_per_kwh, self.premium_sen
        refill = None
        if self.forecast_prices:
            later = storage.later_surplus_price or later_surplus_prices(
                net, forecast, storage.plugged
            )
            # what energy taken from storage after each slot costs to refill: the dearest
            # later sale of the house's PV surplus (at least the buyback), over the round trip
            round_trip = eff * eff
            refill = [max(view.buyback_sen_per_kwh, p - premium) / round_trip for p in later]
        for k, slot in enumerate(view.slots):
            if plugged and not plugged[k]:
                out.extend(
                    _no_storage_slot(view, k, self.surplus_yen, self.deficit_yen, self.premium_sen)
                )
                continue
            soc = 100.0 * stored / cap
            row = first
            for r in rows:
                if soc >= r[0]:
                    row = r
            _, sell, buy, amount = row
            if self.forecast_prices:
                # the row's price is the least the storage takes, the most it pays; it asks
                # what the market is forecast to pay within that
                f = forecast[k]
                if sell is not None and f - premium > sell:
                    sell = view.clamp_price(f - premium)
                if buy is not None and f + premium < buy:
                    buy = view.clamp_price(f + premium)
            # what must stay stored after this slot: the house's own forecast need until the
            # sun refills it, and the car's next trips
            floor = min_wh + need[k + 1]
            if reserve and reserve[k] > floor:
                floor = reserve[k]
            # the house's own surplus or deficit uses the storage first in this slot
            n = net[k]
            surplus = n if n > 0 else 0
            deficit = -n if n < 0 else 0
            if sell is not None:
                can = min(discharge_wh - deficit, max(0.0, stored - floor) * eff - deficit)
                energy = max(0, int(min(amount, can) // lot)) * lot
                if energy and refill is not None and sell < refill[k]:
                    # only this slot's PV the storage cannot take is worth selling here:
                    # stored energy would be refilled by later PV worth more
                    take = min(charge_wh, max(0.0, max_wh - stored) / eff)
                    energy = min(energy, max(0, int((surplus - take) // lot)) * lot)
                if energy:
                    out.append(Bid(slot, "sell", energy, sell))
                    # the sale may fill: later slots must not sell the same energy again (it
                    # comes out of this slot's surplus first, then out of storage)
                    n -= energy
            if buy is not None:
                # what the storage holds after what a sale takes beyond this slot's surplus
                after = stored - max(0, net[k] - n - surplus) / eff
                room = max(0.0, max_wh - after) / eff - surplus
                # only what the house would otherwise import at the tariff before the sun
                # refills the storage: more would push its own PV out at the buyback. This
                # slot's own surplus charges it first; its own deficit, drawn beyond what is
                # stored above the floor, is bought directly (no storage loss)
                if n >= 0:
                    short = max(0.0, floor - stored - min(float(n), charge_wh) * eff) / eff
                else:
                    d = min(float(-n), discharge_wh)
                    short = max(0.0, d - max(0.0, stored - floor) * eff)
                    short += max(0.0, floor - stored) / eff
                energy = max(0, int(min(amount, charge_wh - surplus, room, short) // lot)) * lot
                if energy:
                    out.append(Bid(slot, "buy", energy, buy))
            # no trading beyond the sale: surplus charges, deficit discharges (purchases are
            # counted as not made)
            if n >= 0:
                stored = min(max_wh, stored + min(float(n), charge_wh) * eff)
            else:
                stored = max(min_wh, stored - min(float(-n), discharge_wh) / eff)
        return out


def house_prices(
    view: SiteView, k: int, surplus_yen: float | None, deficit_yen: float | None, premium: int
) -> tuple[int, int]:
    """Slot ``k``'s asking and bidding price [sen/kWh] for the house's own surplus and
    deficit: the fixed prices if given, else the forecast market price less and plus
    ``premium`` [sen/kWh], within the buyback and the tariff."""
    f = view.prices_sen_per_kwh[k]
    sell = max(view.buyback_sen_per_kwh, f - premium) if surplus_yen is None else surplus_yen * 100
    buy = min(view.tariff_sen_per_kwh, f + premium) if deficit_yen is None else deficit_yen * 100
    return view.clamp_price(sell), view.clamp_price(buy)


def _no_storage_slot(
    view: SiteView, k: int, surplus_yen: float | None, deficit_yen: float | None, premium: int
) -> list[Bid]:
    """The bid of a site without storage (or with its car away) for slot ``k``: what of its
    forecast surplus or deficit its own forecast errors make worth trading at its price
    (:meth:`~peerpower.agents.policy.SiteView.sure_wh`), whole lots."""
    net = view.pv_wh[k] - view.load_wh[k]
    if net == 0:
        return []
    sell, buy = house_prices(view, k, surplus_yen, deficit_yen, premium)
    price = sell if net > 0 else buy
    energy = view.sure_wh(k, net, price)
    if not energy:
        return []
    return [Bid(view.slots[k], "sell" if net > 0 else "buy", energy, price)]


def no_storage(
    view: SiteView,
    surplus_yen: float | None = None,
    deficit_yen: float | None = None,
    premium: int = 100,
) -> list[Bid]:
    """:func:`_no_storage_slot` for every slot."""
    out: list[Bid] = []
    for k in range(len(view.slots)):
        out.extend(_no_storage_slot(view, k, surplus_yen, deficit_yen, premium))
    return out


@register("soc-table")
def soc_table(
    table: Sequence[Sequence[object]] | None = None,
    surplus_yen: float | None = None,
    deficit_yen: float | None = None,
    premium_yen: float = 1.0,
    forecast_prices: bool = True,
) -> Policy:
    """The Misono SOC table policy; ``table`` rows are ``(soc_percent, sell_yen | None,
    buy_yen | None, amount_kwh)``."""
    rows = MISONO_TABLE
    if table is not None:
        parsed = []
        for k, row in enumerate(table):
            if len(row) != 4:
                raise InvalidInput(
                    f"table[{k}]", f"needs 4 values (soc, sell, buy, kWh), got {row}"
                )
            soc, sell, buy, amount = row
            if type(soc) is not int:
                raise InvalidInput(f"table[{k}].soc_percent", f"must be an integer, got {soc!r}")
            for name, v in (("sell_yen", sell), ("buy_yen", buy), ("amount_kwh", amount)):
                if v is not None and not isinstance(v, int | float):
                    raise InvalidInput(f"table[{k}].{name}", f"must be a number, got {v!r}")
            parsed.append((soc, _num(sell), _num(buy), float(amount)))  # type: ignore[arg-type]
        rows = tuple(parsed)
    if type(forecast_prices) is not bool:
        raise InvalidInput("forecast_prices", f"must be true or false, got {forecast_prices!r}")
    return SocTable(rows, surplus_yen, deficit_yen, premium_yen, forecast_prices)


def _num(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]
