"""A site's forecast of the market price of each slot, learnt online from what the chain records
and following the community's expected solar supply.

The price a slot clears at depends mostly on its time of day (a noon glut of PV, an evening
without it) and, from day to day, on how sunny it will be. So the forecast has two parts:

* per slot of the day ``i``, exponentially weighted means of the prices seen (``m_i``) and of the
  community's solar forecast when they were seen (``s_i``, the output of a reference 1 kW panel
  at the site's location, the same for every site of a community);
* one slope ``β`` [sen/kWh per Wh of the reference panel], fitted by exponentially weighted
  least squares of each price's deviation from ``m_i`` against its solar forecast's deviation
  from ``s_i`` (ridge towards 0, so a few days with little variation in the weather do not make
  it up).

The forecast for slot ``i`` with solar forecast ``s`` is ``m_i + β (s − s_i)``, within the
retail buyback and tariff (beyond them the retail provider is the better counterparty). A slot
of the day never seen yet is forecast at the midpoint of buyback and tariff (no price of
another time of day says much about it). After a bid is left
unfilled, the controller nudges the next slots' forecasts (:meth:`nudge`); a price seen for a
slot of the day clears its nudge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peerpower.timeslots import SLOTS_PER_DAY

#: Weight of the newest price in a slot of the day's mean (yesterday's counts most).
PRICE_WEIGHT = 0.5
#: Forgetting factor of the slope's least squares, per observation (48 a day: about 3 days).
SLOPE_MEMORY = 0.993
#: Ridge of the slope [Wh² of the reference panel]: the slope stays near 0 until the solar
#: forecasts have varied by about this much in square sum (a noon half hour of a 1 kW panel
#: differs by some 150 Wh between a bright day and a dull one; this is one such slot).
SLOPE_RIDGE = 20_000.0


@dataclass
class PriceForecast:
    """See the module notes. Prices are integer sen/kWh."""

    buyback_sen_per_kwh: int
    tariff_sen_per_kwh: int
    mean: list[float | None] = field(default_factory=lambda: [None] * SLOTS_PER_DAY)
    solar: list[float] = field(default_factory=lambda: [0.0] * SLOTS_PER_DAY)
    nudges: list[int] = field(default_factory=lambda: [0] * SLOTS_PER_DAY)
    _sxy: float = 0.0
    _sxx: float = 0.0

    @property
    def slope(self) -> float:
        """β [sen/kWh per Wh of the reference panel's forecast]."""
        return self._sxy / (self._sxx + SLOPE_RIDGE)

    def observe(self, index: int, price_sen_per_kwh: int, solar_wh: float) -> None:
        """A price seen for a slot of the day ``index``, whose solar forecast was ``solar_wh``."""
        m = self.mean[index]
        if m is None:
            self.mean[index] = float(price_sen_per_kwh)
            self.solar[index] = float(solar_wh)
        else:
            dx, dy = solar_wh - self.solar[index], price_sen_per_kwh - m
            self._sxy = SLOPE_MEMORY * self._sxy + dx * dy
            self._sxx = SLOPE_MEMORY * self._sxx + dx * dx
            self.mean[index] = m + PRICE_WEIGHT * dy
            self.solar[index] += PRICE_WEIGHT * dx
        self.nudges[index] = 0

    def nudge(self, index: int, step_sen_per_kwh: int) -> None:
        """Move slot of the day ``index``'s forecast by ``step`` (within the retail prices)."""
        base = self._base(index, self.solar[index])
        now = base + self.nudges[index] + step_sen_per_kwh
        self.nudges[index] = self._clamp(now) - base

    def forecast(self, index: int, solar_wh: float) -> int:
        """The price [sen/kWh] of a slot of the day ``index`` with solar forecast ``solar_wh``."""
        return self._clamp(self._base(index, solar_wh) + self.nudges[index])

    def _base(self, index: int, solar_wh: float) -> int:
        m = self.mean[index]
        if m is None:
            return (self.buyback_sen_per_kwh + self.tariff_sen_per_kwh) // 2
        return self._clamp(m + self.slope * (solar_wh - self.solar[index]))

    def _clamp(self, price: float) -> int:
        # comparisons, not min/max calls: every controller prices every open slot at every plan
        lo, hi, p = self.buyback_sen_per_kwh, self.tariff_sen_per_kwh, round(price)
        return lo if p < lo else hi if p > hi else p
