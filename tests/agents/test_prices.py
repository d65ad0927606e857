"""The price forecast (agents/prices.py): learnt from the prices seen by time of day, following
the community's solar forecast, within the retail prices."""

from __future__ import annotations

import random

import pytest

from peerpower.agents.prices import PRICE_WEIGHT, PriceForecast

BUYBACK, TARIFF = 850, 2600


def fresh() -> PriceForecast:
    return PriceForecast(BUYBACK, TARIFF)


def test_before_any_price_every_slot_is_the_retail_midpoint() -> None:
    f = fresh()
    assert {f.forecast(i, s) for i in range(48) for s in (0.0, 450.0)} == {(BUYBACK + TARIFF) // 2}


def test_prices_by_time_of_day_are_weighted_means() -> None:
    f = fresh()
    f.observe(24, 1000, 400.0)
    assert f.forecast(24, 400.0) == 1000  # the first price seen is the mean
    assert f.forecast(25, 400.0) == (BUYBACK + TARIFF) // 2  # another time of day: unknown
    f.observe(24, 2000, 400.0)
    assert f.forecast(24, 400.0) == round(1000 + PRICE_WEIGHT * 1000)


def synthetic_day(rng: random.Random) -> list[tuple[float, int]]:
    """(solar forecast of a 1 kW panel, price) per slot: a clear day's solar scaled by the
    day's clearness; the price falls by 2 sen/kWh per Wh of it from an evening-high profile."""
    clearness = rng.uniform(0.2, 1.0)
    out = []
    for i in range(48):
        clear = max(0.0, 480.0 * (1 - ((i - 24) / 12) ** 2)) if 12 <= i <= 36 else 0.0
        solar = clearness * clear
        base = 2400 if 34 <= i < 42 else 1900
        out.append((solar, int(base - 2.0 * solar)))
    return out


def test_the_slope_is_learnt_from_days_of_different_weather() -> None:
    rng = random.Random(5)
    f = fresh()
    for _ in range(30):
        for i, (solar, price) in enumerate(synthetic_day(rng)):
            f.observe(i, price, solar)
    assert f.slope == pytest.approx(-2.0, abs=0.25)
    # a new day: noon on a dull day and on a bright one, against the truth
    for clearness in (0.2, 1.0):
        solar = clearness * 480.0
        truth = 1900 - 2.0 * solar
        assert abs(f.forecast(24, solar) - truth) < 60
    assert f.forecast(24, 96.0) - f.forecast(24, 480.0) > 600  # the glut is cheaper
    assert f.forecast(38, 0.0) > f.forecast(24, 480.0)  # the evening dearer than a sunny noon


def test_the_slope_stays_near_zero_without_weather_to_learn_from() -> None:
    f = fresh()
    for day in range(3):
        for i in range(48):
            f.observe(i, 1500 + 10 * day, 300.0 if 14 <= i < 34 else 0.0)
    assert f.slope == 0.0


def test_nudges_move_forecasts_within_retail_and_a_price_clears_them() -> None:
    f = fresh()
    f.observe(30, 2500, 100.0)
    f.nudge(30, 100)
    assert f.forecast(30, 100.0) == TARIFF  # 2500 + 100, at the tariff
    f.nudge(30, 100)
    assert f.forecast(30, 100.0) == TARIFF  # never above
    f.nudge(30, -300)
    assert f.forecast(30, 100.0) == TARIFF - 300
    f.observe(30, 2000, 100.0)
    assert f.forecast(30, 100.0) == round(2500 + PRICE_WEIGHT * (2000 - 2500))  # nudge gone


@pytest.mark.parametrize("price", [0, 500, 5000, 9999])
def test_forecasts_stay_within_the_retail_prices(price: int) -> None:
    f = fresh()
    for i in range(48):
        f.observe(i, price, 0.0)
    assert all(BUYBACK <= f.forecast(i, s) <= TARIFF for i in range(48) for s in (0.0, 500.0))


def test_a_forecast_is_the_mean_moved_by_the_slope_clamped_then_nudged_and_clamped() -> None:
    rng = random.Random(16)
    f = fresh()
    for _ in range(400):
        i = rng.randrange(48)
        if rng.random() < 0.8:
            f.observe(i, rng.randrange(0, 6000), rng.uniform(0, 600))
        else:
            f.nudge(i, rng.choice((-300, -100, 100, 300)))
    checked = 0
    for i in range(48):
        for s in (0.0, 50.0, 333.3, 600.0):
            m = f.mean[i]
            base = (BUYBACK + TARIFF) // 2
            if m is not None:
                base = min(TARIFF, max(BUYBACK, round(m + f.slope * (s - f.solar[i]))))
            assert f.forecast(i, s) == min(TARIFF, max(BUYBACK, base + f.nudges[i]))
            checked += m is not None
    assert checked > 100 and f.slope != 0
