"""How much a site without storage should offer or bid for: the newsvendor rule on its own
forecast errors.

A site trades against a forecast of its net position ``n̂`` (PV − load of a half hour). What it
really has is ``n̂ + e``, ``e`` the forecast's error. One more lot ``[a, a + L]`` of a sale at
price ``p`` earns ``p − B`` on each Wh the site turns out to have (it would have gone to the
retailer at the buyback ``B``) and ``p − I`` on each it does not (paid ``p``, charged the
imbalance price ``I``); one more lot of a purchase saves ``T − p`` on each Wh the site needs
(else bought at the tariff ``T``) and costs ``p + I`` on each it does not. With ``m`` the
lot's expected filled part, ``E[clip(n̂ + e − a, 0, L)]`` for a sale (with the deficit for a
purchase), the lot is worth trading when

    sale:      m / L > (I − p) / (I − B)
    purchase:  m / L > (p + I) / (T + I)

— the newsvendor's critical ratio, taken a whole lot at a time, so a deficit of 97 Wh a half
hour still bids for one 100 Wh lot when the forecast is good and the price low, and a lot that
is likely to be short is not traded whatever the forecast's point value. A purchase the site
might not take is charged ``I`` here, as if its PV could not be curtailed instead: the
conservative side.

The errors ``e`` are the site's own: per slot of the day, the last days' actual net position
less the forecast the controller traded on (:class:`ErrorBook`), with the neighbouring slots of
the day, mixed with a prior that keeps the weight of :data:`PRIOR_SAMPLES` samples (alone
while there are none). A controller's prior is the load's normal error, :data:`PRIOR_LOAD_CV` of
the forecast load (assumed: the half-hourly load of one home varies by about half its mean
around a similar-day forecast), plus its sky's (:func:`peerpower.agents.sky.slot_prior`: after
a sunny day PV may fall far, and cannot rise much); without one, :meth:`ErrorDist.prior` is
normal, its standard deviation :data:`PRIOR_LOAD_CV` of the forecast load plus
:data:`PRIOR_PV_CV` of the forecast PV (a day-ahead forecast from yesterday's clearness misses
by about a third). The prior stays because a site's errors are
alike across neighbouring slots and across days of the same weather: a few days of them miss
the change of weather that makes the costly tail (measured on misono, 7 days: PV homes sizing
on their errors alone from the sixth sample on were short of 11 % of what they sold, 64 % on
the first cloudy day after sunny ones, at 30 yen/kWh against a 2 yen/kWh gain).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate
from statistics import NormalDist

from peerpower.timeslots import SLOTS_PER_DAY

#: The weight of the normal prior beside the site's own errors, in samples (a week of a slot of
#: the day and its two neighbours).
PRIOR_SAMPLES = 21
#: Days of errors kept per slot of the day.
ERROR_DAYS = 14
PRIOR_LOAD_CV = 0.5
PRIOR_PV_CV = 0.35
# the standard normal's 40 quantiles at (i + 0.5) / 40: the prior's shape
_Z = tuple(NormalDist().inv_cdf((i + 0.5) / 40) for i in range(40))


@dataclass(frozen=True, slots=True)
class ErrorDist:
    """A forecast error distribution [Wh]: ``scale`` × the sorted ``values`` (equally likely)."""

    values: tuple[float, ...]
    scale: float = 1.0
    cum: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cum", (0.0, *accumulate(self.values)))

    @staticmethod
    def prior(load_wh: float, pv_wh: float) -> ErrorDist:
        """The normal prior for a slot forecast at ``load_wh`` and ``pv_wh`` (see the module
        notes); it is symmetric, so it serves a surplus and a deficit alike."""
        return _STANDARD.scaled(PRIOR_LOAD_CV * load_wh + PRIOR_PV_CV * pv_wh + 1.0)

    def scaled(self, scale: float) -> ErrorDist:
        """The same shape at ``scale`` (the values and their sums shared, not copied)."""
        new = object.__new__(ErrorDist)
        object.__setattr__(new, "values", self.values)
        object.__setattr__(new, "scale", scale)
        object.__setattr__(new, "cum", self.cum)
        return new

    def filled(self, x: float, lot: float) -> float:
        """``E[clip(x + e, 0, lot)]`` [Wh]: what of a lot starting ``x`` below the forecast
        position is expected to be there."""
        v, s, n = self.values, self.scale, len(self.values)
        lo = bisect.bisect_right(v, -x / s)  # x + e > 0 from here
        hi = bisect.bisect_left(v, (lot - x) / s)  # x + e ≥ lot from here
        inside = (hi - lo) * x + s * (self.cum[hi] - self.cum[lo])
        return (inside + (n - hi) * lot) / n

    def negated(self) -> ErrorDist:
        return ErrorDist(tuple(-x for x in reversed(self.values)), self.scale)


_STANDARD = ErrorDist(_Z)


def sure_lots(
    position_wh: float,
    errors: ErrorDist,
    lot_wh: int,
    ratio: float,
    prior: ErrorDist | None = None,
    prior_weight: float = 0.0,
    most_lots: int | None = None,
) -> int:
    """Whole lots [Wh] of ``position_wh`` (a forecast surplus, or a deficit with ``errors``
    negated) worth trading: each lot's expected filled share above ``ratio``, the errors
    mixed with ``prior`` at ``prior_weight`` (0–1) when given; at most ``most_lots``."""
    parts = [(1.0 - prior_weight, errors)]
    if prior is not None and prior_weight > 0:
        parts.append((prior_weight, prior))
    highest = max(d.scale * d.values[-1] for _, d in parts)
    if ratio >= 1.0 or position_wh + highest <= 0:
        return 0
    threshold = max(ratio, 0.0) * lot_wh

    def worth(j: int) -> bool:
        x = position_wh - j * lot_wh
        return sum(w * d.filled(x, lot_wh) for w, d in parts) > threshold

    # the lots are worth less and less: the first that is not worth it, by bisection
    top = int((position_wh + highest) // lot_wh) + 1
    if most_lots is not None:
        top = max(0, min(top, most_lots))
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi) // 2
        if worth(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo * lot_wh


def sell_ratio(price: int, buyback: int, imbalance: int) -> float:
    """The share of a lot a sale at ``price`` must expect to deliver [1] (prices in sen/kWh)."""
    if imbalance <= buyback:
        return 0.0 if price >= buyback else 1.0
    return (imbalance - price) / (imbalance - buyback)


def buy_ratio(price: int, tariff: int, imbalance: int) -> float:
    """The share of a lot a purchase at ``price`` must expect to use [1]."""
    if tariff + imbalance <= 0:
        return 0.0 if price <= 0 else 1.0
    return (price + imbalance) / (tariff + imbalance)


@dataclass
class ErrorBook:
    """A site's forecast errors of its net position, per slot of the day, the last
    :data:`ERROR_DAYS` days (the controller adds each delivered slot's, and commits them at the
    end of each day, when its forecasts start again)."""

    errors: list[deque[float]] = field(
        default_factory=lambda: [deque(maxlen=ERROR_DAYS) for _ in range(SLOTS_PER_DAY)]
    )
    _dists: dict[int, tuple[ErrorDist, ErrorDist] | None] = field(default_factory=dict)
    _pending: list[tuple[int, float]] = field(default_factory=list)

    def add(self, index: int, error_wh: float) -> None:
        """A delivered slot's error; it counts from the next :meth:`commit` (the day's end),
        so the orders standing for a slot are not re-sized at every delivery."""
        self._pending.append((index, error_wh))

    def commit(self) -> None:
        for index, error in self._pending:
            self.errors[index].append(error)
        self._pending.clear()
        self._dists.clear()

    def dists(self, index: int) -> tuple[ErrorDist, ErrorDist] | None:
        """The errors of slot of the day ``index`` and its neighbours, for a surplus and for a
        deficit (negated); None while there are none."""
        if index in self._dists:
            return self._dists[index]
        samples: list[float] = []
        for k in (index - 1, index, index + 1):
            samples.extend(self.errors[k % SLOTS_PER_DAY])
        got = None
        if samples:
            d = ErrorDist(tuple(sorted(samples)))
            got = (d, d.negated())
        self._dists[index] = got
        return got
