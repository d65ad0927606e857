"""What a site's controller knows when it bids, and what a policy returns.

A policy is a pure function of a :class:`SiteView` — forecasts for the open slots, the state of
the site's storage, forecast market prices, the retail tariff and buyback — to a list of
:class:`Bid` (slot, side, whole lots, price). Policies never see the truth of the physics, only
forecasts, so their bids can be wrong and delivery can fall short; settlement copes.

Prices are integer sen/kWh and energies whole Wh in lots (DESIGN.md §2); floats appear only in
the forecasts of storage state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from peerpower.agents.sizing import PRIOR_SAMPLES, ErrorDist, buy_ratio, sell_ratio, sure_lots
from peerpower.errors import InvalidInput
from peerpower.timeslots import Slot
from peerpower.units import DEFAULT_LOT_WH

Side = Literal["buy", "sell"]

# Retail prices by default [sen/kWh]: a Japanese household tariff of about 26 yen/kWh and the
# post-FIT buyback of about 8.5 yen/kWh.
RETAIL_TARIFF_SEN_PER_KWH = 2600
RETAIL_BUYBACK_SEN_PER_KWH = 850
# What a shortfall costs by default [sen/kWh] (the genesis' imbalance_price_sen_per_kwh).
IMBALANCE_SEN_PER_KWH = 3000
# Share of a forecast surplus or deficit the zero-intelligence baseline (zi-c) offers or bids
# for; every other policy sizes its trades on its own forecast errors (:mod:`.sizing`).
FORECAST_TRUST = 0.8


class Bid(NamedTuple):
    """One order a policy wants standing for ``slot`` (a tuple: policies make many)."""

    slot: Slot
    side: Side
    energy_wh: int
    price_sen_per_kwh: int


@dataclass(frozen=True, slots=True)
class StorageView:
    """A battery or EV as the controller sees it now.

    ``plugged`` (EV) is per open slot; a battery is always available. ``reserve_wh`` is the
    stored energy the policy must not sell below (an EV's next trip plus its floor).
    """

    capacity_wh: int
    stored_wh: float
    min_wh: float
    max_wh: float
    charge_wh: float  # per slot, at the bus [Wh]
    discharge_wh: float  # per slot, at the bus [Wh]
    efficiency: float
    plugged: tuple[bool, ...] = ()
    reserve_wh: tuple[float, ...] = ()
    trip_wh: tuple[float, ...] = ()  # energy a trip has taken when the car is back, per slot
    # stored energy above the floor the house is forecast to draw after each slot before its
    # PV refills the storage, over the whole horizon (empty: not given)
    need_wh: tuple[float, ...] = ()
    # the dearest forecast price [sen/kWh] of a later slot where the house has a forecast
    # surplus (0: none), after each slot, over the whole horizon (empty: not given)
    later_surplus_price: tuple[int, ...] = ()

    def available(self, k: int) -> bool:
        return not self.plugged or self.plugged[k]

    def soc_percent(self, stored_wh: float) -> float:
        return 100.0 * stored_wh / self.capacity_wh


@dataclass(frozen=True, slots=True)
class SiteView:
    """Forecasts for the open slots (index 0 is the next slot to be traded) and the site now."""

    site: str
    slots: tuple[Slot, ...]
    pv_wh: tuple[int, ...]
    load_wh: tuple[int, ...]
    prices_sen_per_kwh: tuple[int, ...]  # forecast market price per slot
    battery: StorageView | None = None
    ev: StorageView | None = None
    tariff_sen_per_kwh: int = RETAIL_TARIFF_SEN_PER_KWH
    buyback_sen_per_kwh: int = RETAIL_BUYBACK_SEN_PER_KWH
    lot_wh: int = DEFAULT_LOT_WH
    price_min_sen_per_kwh: int = 0
    price_max_sen_per_kwh: int = 10_000
    site_seed: int = 0  # the site's own seed (random draws: :func:`slot_draw`)
    # forecast output of a reference 1 kW PV panel per slot [Wh]: when the community's
    # supply is likely to be solar (empty: unknown)
    solar_wh_per_kw: tuple[int, ...] = ()
    # per slot: the site's forecast errors of its net position, for a surplus and for a
    # deficit (:class:`~peerpower.agents.sizing.ErrorBook`); None or missing: the prior
    errors: tuple[tuple[ErrorDist, ErrorDist] | None, ...] = ()
    imbalance_sen_per_kwh: int = IMBALANCE_SEN_PER_KWH
    # slot k → the prior of its errors for a surplus and for a deficit (the controller's sky
    # and load, :func:`peerpower.agents.sky.slot_prior`); None: the normal prior of
    # :meth:`~peerpower.agents.sizing.ErrorDist.prior`
    priors: Callable[[int], tuple[ErrorDist, ErrorDist]] | None = None

    def __post_init__(self) -> None:
        n = len(self.slots)
        for name in ("pv_wh", "load_wh", "prices_sen_per_kwh"):
            if len(getattr(self, name)) != n:
                raise InvalidInput(name, f"has {len(getattr(self, name))} values for {n} slots")

    def lots(self, energy_wh: float) -> int:
        """Whole lots in ``energy_wh`` (rounded down) [Wh]."""
        return max(0, int(energy_wh // self.lot_wh)) * self.lot_wh

    def clamp_price(self, price: float) -> int:
        lo, hi, p = self.price_min_sen_per_kwh, self.price_max_sen_per_kwh, round(price)
        return lo if p < lo else hi if p > hi else p

    def sure_wh(self, k: int, net_wh: float, price_sen_per_kwh: int) -> int:
        """Whole lots [Wh] of slot ``k``'s forecast position ``net_wh`` (> 0: a surplus to
        sell, < 0: a deficit to buy) worth trading at ``price_sen_per_kwh`` given the site's
        forecast errors (the newsvendor rule, :mod:`peerpower.agents.sizing`)."""
        if net_wh == 0:
            return 0
        dists = self.errors[k] if k < len(self.errors) else None
        if self.priors is not None:
            priors = self.priors(k)
        else:  # the normal prior is symmetric: it serves a surplus and a deficit alike
            normal = ErrorDist.prior(self.load_wh[k], self.pv_wh[k])
            priors = (normal, normal)
        if dists is None:
            dists, weight = priors, 1.0
        else:
            weight = PRIOR_SAMPLES / (PRIOR_SAMPLES + len(dists[0].values))
        # never more than the forecast, to the lot above: the prior is symmetric but PV cannot
        # beat a clear sky, and a dear price would otherwise sell on its upper tail
        most = math.ceil(abs(net_wh) / self.lot_wh)
        if net_wh > 0:
            ratio = sell_ratio(
                price_sen_per_kwh, self.buyback_sen_per_kwh, self.imbalance_sen_per_kwh
            )
            return sure_lots(net_wh, dists[0], self.lot_wh, ratio, priors[0], weight, most)
        ratio = buy_ratio(price_sen_per_kwh, self.tariff_sen_per_kwh, self.imbalance_sen_per_kwh)
        return sure_lots(-net_wh, dists[1], self.lot_wh, ratio, priors[1], weight, most)


Policy = Callable[[SiteView], list[Bid]]

_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register(name: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Add a policy factory to the catalogue under ``name``."""

    def add(factory: Callable[..., Policy]) -> Callable[..., Policy]:
        _REGISTRY[name] = factory
        return factory

    return add


def policy_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def make_policy(name: str, **options: object) -> Policy:
    """The policy ``name`` with its options; an unknown name is an error naming the choices."""
    _load_all()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise InvalidInput("policy", f"{name!r} is not one of {', '.join(sorted(_REGISTRY))}")
    return factory(**options)


def _load_all() -> None:
    # The policies register themselves on import (each is its own module).
    from peerpower.agents import policies  # noqa: F401


def slot_draw(seed: int, slot: Slot) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``slot`` (splitmix64): a site's random draw
    for a slot that stays the same however often it re-plans."""
    x = (seed * 0x9E3779B97F4A7C15 + slot.day.toordinal() * 48 + slot.index) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((x ^ (x >> 31)) >> 11) / float(1 << 53)


def prefix_consistent(policy: Policy) -> bool:
    """Whether ``policy``'s bids for the first slots of a view are the same however many slots
    the view holds (so a controller may re-plan near slots with a short view)."""
    return bool(getattr(policy, "prefix_consistent", False))


def house_need(
    storage: StorageView, net: Sequence[int], available: Sequence[bool] = ()
) -> list[float]:
    """``need[k]``: the stored energy [Wh] above the floor that the house's forecast deficits
    from slot ``k`` on (``net`` = PV − load per slot) will draw before forecast surpluses
    refill it (``need[len(net)] = 0``), within the storage's power and size; slots where the
    storage is not ``available`` (a car away) neither draw nor refill."""
    need = [0.0] * (len(net) + 1)
    room = max(0.0, storage.max_wh - storage.min_wh)
    eff, charge, discharge = storage.efficiency, storage.charge_wh, storage.discharge_wh
    for k in range(len(net) - 1, -1, -1):
        after = need[k + 1]
        n = net[k]
        if available and not available[k]:
            need[k] = after
        elif n < 0:
            need[k] = min(room, after + min(-n, discharge) / eff)
        else:
            need[k] = max(0.0, after - min(n, charge) * eff)
    return need


def later_surplus_prices(
    net: Sequence[int], prices: Sequence[int], available: Sequence[bool] = ()
) -> list[int]:
    """``out[k]``: the dearest of ``prices`` over the slots after ``k`` where ``net`` (PV −
    load) is a surplus and the storage is ``available`` (0: none)."""
    out = [0] * len(net)
    best = 0
    for k in range(len(net) - 1, -1, -1):
        out[k] = best
        if net[k] > 0 and (not available or available[k]) and prices[k] > best:
            best = prices[k]
    return out


def net_position(view: SiteView) -> list[int]:
    """Forecast PV minus load per slot [Wh] (> 0: surplus)."""
    return [p - c for p, c in zip(view.pv_wh, view.load_wh, strict=True)]
