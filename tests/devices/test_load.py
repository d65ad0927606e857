from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from peerpower.devices.load import (
    LoadConfig,
    expected_load_wh,
    forecast_load_wh,
    load_wh,
    seasonal_factor,
)
from peerpower.errors import InvalidInput

MONDAY = date(2026, 8, 17)
SATURDAY = date(2026, 8, 22)
YEAR_START = date(2026, 1, 1)

CONFIGS = [
    LoadConfig(),
    LoadConfig(occupancy="home", annual_kwh=4000.0),
    LoadConfig(occupancy="family", annual_kwh=5500.0),
    LoadConfig(kind="shop", annual_kwh=40_000.0),
    LoadConfig(kind="business", annual_kwh=60_000.0),
]


def test_load_deterministic_in_config_day_seed() -> None:
    cfg = LoadConfig()
    assert load_wh(cfg, MONDAY, 11) == load_wh(cfg, MONDAY, 11)
    assert load_wh(cfg, MONDAY, 11) != load_wh(cfg, MONDAY, 12)
    assert load_wh(cfg, MONDAY, 11) != load_wh(cfg, MONDAY + timedelta(days=7), 11)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.occupancy}")
def test_load_non_negative_ints(cfg: LoadConfig) -> None:
    for offset in range(0, 365, 30):
        energy = load_wh(cfg, YEAR_START + timedelta(days=offset), 4)
        assert len(energy) == 48
        assert all(type(e) is int and e >= 0 for e in energy)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.occupancy}")
def test_load_annual_sum_near_annual_kwh(cfg: LoadConfig) -> None:
    total_wh = sum(sum(load_wh(cfg, YEAR_START + timedelta(days=n), 21)) for n in range(365))
    assert total_wh / 1000 == pytest.approx(cfg.annual_kwh, rel=0.05)


def _mean_profile(cfg: LoadConfig, days: list[date], seed: int) -> np.ndarray:
    mean: np.ndarray = np.mean([load_wh(cfg, d, seed) for d in days], axis=0)
    return mean


def test_load_working_household_weekday_differs_from_weekend() -> None:
    cfg = LoadConfig(occupancy="working")
    weekdays = [MONDAY + timedelta(days=7 * w + i) for w in range(4) for i in range(5)]
    weekends = [SATURDAY + timedelta(days=7 * w + i) for w in range(4) for i in range(2)]
    weekday, weekend = _mean_profile(cfg, weekdays, 3), _mean_profile(cfg, weekends, 3)
    daytime = slice(20, 32)  # 10:00–16:00: nobody home on weekdays
    assert weekend[daytime].mean() > 1.5 * weekday[daytime].mean()
    assert weekday[38:42].mean() > 2 * weekday[daytime].mean()  # evening peak 19:00–21:00


def test_load_shop_mostly_daytime() -> None:
    cfg = LoadConfig(kind="shop", annual_kwh=40_000.0)
    energy = np.asarray(load_wh(cfg, MONDAY, 5), dtype=float)
    open_hours = energy[18:42].sum()  # 09:00–21:00
    assert open_hours / energy.sum() > 0.65
    assert energy[:12].min() > 0  # fridges run all night


def test_load_business_weekday_daytime() -> None:
    cfg = LoadConfig(kind="business", annual_kwh=60_000.0)
    weekday, weekend = load_wh(cfg, MONDAY, 5), load_wh(cfg, SATURDAY, 5)
    assert sum(weekday) > 2 * sum(weekend)
    assert sum(weekday[18:36]) / sum(weekday) > 0.6  # 09:00–18:00


def test_load_seeds_give_different_but_similar_sites() -> None:
    cfg = LoadConfig()
    days = [MONDAY + timedelta(days=7 * w + i) for w in range(4) for i in range(5)]
    a, b = _mean_profile(cfg, days, 1), _mean_profile(cfg, days, 2)
    assert not np.array_equal(a, b)
    assert a.sum() == pytest.approx(b.sum(), rel=0.1)
    assert float(np.corrcoef(a, b)[0, 1]) > 0.8
    shapes = {tuple(np.round(expected_load_wh(cfg, MONDAY, s), 6)) for s in range(10)}
    assert len(shapes) > 3


def test_load_season_winter_and_summer_above_spring() -> None:
    for kind in ("household", "shop", "business"):
        spring = seasonal_factor(kind, date(2026, 4, 25))
        assert seasonal_factor(kind, date(2026, 1, 25)) > spring
        assert seasonal_factor(kind, date(2026, 8, 5)) > spring
        mean = np.mean([seasonal_factor(kind, YEAR_START + timedelta(days=n)) for n in range(365)])
        assert mean == pytest.approx(1.0, abs=1e-9)
    household = LoadConfig()
    assert sum(load_wh(household, date(2026, 1, 26), 1)) > sum(load_wh(household, MONDAY, 1)) * 0.9


def test_forecast_load_mean_of_last_similar_days() -> None:
    cfg = LoadConfig()
    # history for the 9 days before MONDAY (17 Aug): 8 Aug (Sat) … 16 Aug (Sun), oldest first
    history = [[100 * (n + 1)] * 48 for n in range(9)]
    # similar to a Monday: the weekdays 14 (Fri, n=6), 13 (n=5), 12 (n=4) Aug
    assert forecast_load_wh(cfg, MONDAY, 1, history) == [round((700 + 600 + 500) / 3)] * 48
    # for a Saturday (15 Aug, with history up to 14 Aug): 9 Aug (Sun, n=1) and 8 Aug (Sat, n=0)
    assert forecast_load_wh(cfg, date(2026, 8, 15), 1, history[:7]) == [150] * 48


def test_forecast_load_falls_back_to_noise_free_profile() -> None:
    cfg = LoadConfig(occupancy="family")
    expected = [int(e) for e in np.rint(expected_load_wh(cfg, MONDAY, 8))]
    assert forecast_load_wh(cfg, MONDAY, 8, []) == expected
    # only weekend days in the history of a Monday: no similar day either
    assert forecast_load_wh(cfg, MONDAY, 8, [[1] * 48, [2] * 48]) == expected
    # the profile is what the noisy loads average to
    mondays = [MONDAY + timedelta(days=7 * w) for w in range(-3, 4)]
    noisy = np.mean([sum(load_wh(cfg, d, 8)) for d in mondays])
    assert noisy == pytest.approx(sum(expected), rel=0.15)


def test_invalid_forecast_history_length() -> None:
    with pytest.raises(InvalidInput) as caught:
        forecast_load_wh(LoadConfig(), MONDAY, 1, [[0] * 48, [0] * 24])
    assert caught.value.field == "history[1]"


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"kind": "factory"}, "kind", "household, shop, business"),
        ({"occupancy": "student"}, "occupancy", "working, home, family"),
        ({"annual_kwh": 0.0}, "annual_kwh", "0.0"),
        ({"annual_kwh": -4500.0}, "annual_kwh", "-4500.0"),
        ({"annual_kwh": math.inf}, "annual_kwh", "inf"),
    ],
)
def test_invalid_load_config(kwargs: dict[str, object], field: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        LoadConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert shown in caught.value.message


def test_invalid_load_seed() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_wh(LoadConfig(), MONDAY, -1)
    assert caught.value.field == "seed"
