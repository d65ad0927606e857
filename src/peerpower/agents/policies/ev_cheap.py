"""``ev-cheap-charging``: charge the car when the market is cheap within the driver's plug-in
windows, and never let it leave for a trip below what the trip needs.

The car charges from the site's own PV first: in every plugged slot it is forecast to take the
house's surplus, up to the charger's power and the room left in it (its stored energy followed
through the horizon, less what returning trips used), and only the surplus beyond that is
offered. Selling that PV at the market's noon price and buying it back for the car at the
tariff at night lost the misono PV + PHEV homes 15 yen a day on average over 10 seeds × 7 days.

For each window of consecutive plugged slots ending at a departure, the energy still needed at
departure (the trip reserve the controller gives in ``reserve_wh``, less what is stored and what
own PV will give it) is bought in the window's cheapest slots by forecast price, each up to the
charger's power left after own PV, at the forecast price plus ``premium_yen`` (never above the
tariff: beyond it the retail supply is cheaper). Any plugged slot whose forecast price is at or
below ``cheap_yen`` also buys as much as the car can still take. A slot that offers surplus
never also buys for the car: there own PV has filled the car or its charger. The house's own
surplus and deficit are offered and bid for as a site without storage would (see
:mod:`.soc_table`: at the forecast price ∓ ``premium_yen``, or the fixed ``surplus_yen`` and
``deficit_yen`` when given, sized on the site's forecast errors). Whether the car is full
enough at departure is finally the controller's duty: it charges from the retail supply if
the market did not deliver.
"""

from __future__ import annotations

from dataclasses import replace

from peerpower.agents.policies.soc_table import no_storage
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


def own_pv(view: SiteView) -> list[float]:
    """What the car is forecast to take of the house's own surplus in each slot [Wh at the
    bus]: up to the charger's power and the room in the car, whose stored energy is followed
    through the horizon (own PV in, trips out). A house battery takes the surplus first, as
    the site's physics does (followed likewise: surplus in, the house's deficits out)."""
    return pooled(view)[0]


def pooled(view: SiteView) -> tuple[list[float], list[float]]:
    """:func:`own_pv`, and what the house battery is forecast to hold after each slot [Wh]
    (none: zeros)."""
    n = len(view.slots)
    ev, battery = view.ev, view.battery
    take = [0.0] * n
    after = [0.0] * n
    if ev is None:
        return take, after
    stored = ev.stored_wh
    held = 0.0 if battery is None else battery.stored_wh
    for k in range(n):
        if ev.trip_wh:
            stored = max(ev.min_wh, stored - ev.trip_wh[k])
        surplus = float(max(0, view.pv_wh[k] - view.load_wh[k]))
        if battery is not None:
            eff = battery.efficiency
            if surplus:
                into = min(surplus, battery.charge_wh, max(0.0, battery.max_wh - held) / eff)
                held += into * eff
                surplus -= into
            else:
                draw = min(view.load_wh[k] - view.pv_wh[k], battery.discharge_wh)
                held = max(battery.min_wh, held - draw / eff)
            after[k] = held
        if not ev.available(k):
            continue
        room = max(0.0, (ev.max_wh - stored) / ev.efficiency)
        take[k] = min(surplus, ev.charge_wh, room)
        stored += take[k] * ev.efficiency
    return take, after


def ev_cheap_bids(
    view: SiteView,
    premium_yen: float,
    cheap_yen: float,
    surplus_yen: float | None,
    deficit_yen: float | None,
) -> list[Bid]:
    take = own_pv(view)
    buy = car_purchases(view, take, cheap_yen)
    premium = round(premium_yen * 100)
    house = without_car(view, take)
    return no_storage(house, surplus_yen, deficit_yen, premium) + car_bids(view, buy, premium)


def without_car(view: SiteView, take: list[float]) -> SiteView:
    """The house as it is, less what the car takes of its surplus (``take``, :func:`own_pv`),
    and without the car."""
    pv = tuple(round(p - t) for p, t in zip(view.pv_wh, take, strict=True))
    return replace(view, pv_wh=pv, ev=None)


def car_bids(view: SiteView, buy: dict[int, float], premium: int) -> list[Bid]:
    """The car's purchases ``buy`` (slot index → Wh) as bids at the forecast price plus
    ``premium`` [sen/kWh], never above the tariff."""
    out = []
    for k, want in sorted(buy.items()):
        energy = view.lots(want)
        if energy:
            price = min(view.tariff_sen_per_kwh, view.prices_sen_per_kwh[k] + premium)
            out.append(Bid(view.slots[k], "buy", energy, view.clamp_price(price)))
    return out


def car_purchases(
    view: SiteView, take: list[float], cheap_yen: float, spare: list[float] | None = None
) -> dict[int, float]:
    """What the car buys in each plugged slot [Wh at the bus] (see the module notes), given
    what it takes of the house's own surplus in each (``take``) and, where the site has a
    battery, what the battery can give it by the end of each slot (``spare`` [Wh into the
    car]): a trip's need is bought only beyond that."""
    n = len(view.slots)
    ev = view.ev
    buy: dict[int, float] = {}
    if ev is not None:
        eff = ev.efficiency
        # the most the car may hold at the start of each slot: what it holds now, with own PV
        # and the purchases planned so far, less returning trips (a purchase it has no room
        # for is charged the imbalance price)
        high, at = ev.stored_wh, 0

        def fullest(upto: int) -> float:
            nonlocal high, at
            for k in range(at, upto):
                high = min(ev.max_wh, high + (take[k] + buy.get(k, 0.0)) * eff)
                if ev.trip_wh and k + 1 < n:
                    high = max(ev.min_wh, high - ev.trip_wh[k + 1])
            at = max(at, upto)
            return high

        if ev.trip_wh:
            high = max(ev.min_wh, high - ev.trip_wh[0])
        for w, (first, last) in enumerate(_windows(ev, n)):
            own = sum(take[first : last + 1]) * eff
            # the least it may hold: back from a trip, plan for the worst
            stored = ev.min_wh if w > 0 or first > 0 else ev.stored_wh
            stored += own
            need = _reserve(ev, last) - stored - (spare[last] if spare else 0.0)
            by_price = sorted(range(first, last + 1), key=lambda k: (view.prices_sen_per_kwh[k], k))
            room = ev.max_wh - fullest(first) - own
            for k in by_price:
                cheap = view.prices_sen_per_kwh[k] <= round(cheap_yen * 100)
                if need <= 0 and not cheap:
                    continue
                cap = view.lots(ev.charge_wh - take[k])
                # whole lots; what the trip needs rounded up
                lots_needed = -(-max(0.0, need / eff) // view.lot_wh) * view.lot_wh
                want = float(cap if cheap else min(cap, lots_needed))
                want = min(want, view.lots(room / eff))
                if want <= 0:
                    continue
                buy[k] = want
                need -= want * eff
                room -= want * eff
    return buy


def _reserve(ev: StorageView, k: int) -> float:
    return ev.reserve_wh[k] if ev.reserve_wh else ev.min_wh


@register("ev-cheap-charging")
def ev_cheap_charging(
    premium_yen: float = 1.0,
    cheap_yen: float = 12.0,
    surplus_yen: float | None = None,
    deficit_yen: float | None = None,
) -> Policy:
    for name, v in (
        ("premium_yen", premium_yen),
        ("cheap_yen", cheap_yen),
        ("surplus_yen", surplus_yen),
        ("deficit_yen", deficit_yen),
    ):
        if v is not None and not 0 <= v <= 100:
            raise InvalidInput(name, f"must be 0–100 yen/kWh, got {v}")

    def policy(view: SiteView) -> list[Bid]:
        return ev_cheap_bids(view, premium_yen, cheap_yen, surplus_yen, deficit_yen)

    return policy
