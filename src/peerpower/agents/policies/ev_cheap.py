"""``ev-cheap-charging``: charge the car when the market is cheap within the driver's plug-in
windows, and never let it leave for a trip below what the trip needs.

For each window of consecutive plugged slots ending at a departure, the energy still needed at
departure (the trip reserve the controller gives in ``reserve_wh``, less what is stored) is
bought in the window's cheapest slots by forecast price, each up to the charger's power, at the
forecast price plus ``premium_yen`` (never above the tariff: beyond it the retail supply is
cheaper). Any plugged slot whose forecast price is at or below ``cheap_yen`` also buys as much
as the car can take. The house's own surplus and deficit are offered and bid for as a site
without storage would (``surplus_yen``, ``deficit_yen``). Whether the car is full enough at
departure is finally the controller's duty: it charges from the retail supply if the market did
not deliver.
"""

from __future__ import annotations

from peerpower.agents.policies.soc_table import _no_storage
from peerpower.agents.policy import Bid, Policy, SiteView, StorageView, register
from peerpower.errors import InvalidInput


def _windows(ev: StorageView, n: int) -> list[tuple[int, int]]:
    """(first, last) slot indices of each run of plugged slots."""
    out = []
    k = 0
    while k < n:
        if ev.available(k):
            first = k
            while k + 1 < n and ev.available(k + 1):
                k += 1
            out.append((first, k))
        k += 1
    return out


def ev_cheap_bids(
    view: SiteView, premium_yen: float, cheap_yen: float, surplus_yen: float, deficit_yen: float
) -> list[Bid]:
    n = len(view.slots)
    ev = view.ev
    buy: dict[int, float] = {}
    if ev is not None:
        stored = ev.stored_wh
        for w, (first, last) in enumerate(_windows(ev, n)):
            if w > 0 or first > 0:
                stored = ev.min_wh  # back from a trip: plan for the worst
            need = _reserve(ev, last) - stored
            by_price = sorted(range(first, last + 1), key=lambda k: (view.prices_sen_per_kwh[k], k))
            room = ev.max_wh - stored
            for k in by_price:
                cheap = view.prices_sen_per_kwh[k] <= cheap_yen * 100
                if need <= 0 and not cheap:
                    continue
                cap = view.lots(ev.charge_wh)
                # whole lots; what the trip needs rounded up
                lots_needed = -(-max(0.0, need / ev.efficiency) // view.lot_wh) * view.lot_wh
                want = float(cap if cheap else min(cap, lots_needed))
                want = min(want, view.lots(room / ev.efficiency))
                if want <= 0:
                    continue
                buy[k] = want
                need -= want * ev.efficiency
                room -= want * ev.efficiency
    out = _no_storage(view, surplus_yen, deficit_yen)  # the house as it is
    premium = round(premium_yen * 100)
    for k, want in sorted(buy.items()):
        energy = view.lots(want)
        if energy:
            price = min(view.tariff_sen_per_kwh, view.prices_sen_per_kwh[k] + premium)
            out.append(Bid(view.slots[k], "buy", energy, view.clamp_price(price)))
    return out


def _reserve(ev: StorageView, k: int) -> float:
    return ev.reserve_wh[k] if ev.reserve_wh else ev.min_wh


@register("ev-cheap-charging")
def ev_cheap_charging(
    premium_yen: float = 1.0,
    cheap_yen: float = 12.0,
    surplus_yen: float = 10.0,
    deficit_yen: float = 25.0,
) -> Policy:
    for name, v in (
        ("premium_yen", premium_yen),
        ("cheap_yen", cheap_yen),
        ("surplus_yen", surplus_yen),
        ("deficit_yen", deficit_yen),
    ):
        if not 0 <= v <= 100:
            raise InvalidInput(name, f"must be 0–100 yen/kWh, got {v}")

    def policy(view: SiteView) -> list[Bid]:
        return ev_cheap_bids(view, premium_yen, cheap_yen, surplus_yen, deficit_yen)

    return policy
