from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from itertools import pairwise

import numpy as np
import pytest

from peerpower.devices.weather import (
    DAY_KINDS,
    DayWeather,
    Weather,
    monthly_mix,
    site_weather,
    transition_matrix,
)
from peerpower.errors import InvalidInput

START = date(2026, 1, 1)
YEARS = 8


@pytest.fixture(scope="module")
def long_run() -> list[DayWeather]:
    weather = Weather(seed=7, start=START)
    return [weather.day(START + timedelta(days=n)) for n in range(365 * YEARS)]


def _days(weather: Weather, count: int) -> list[DayWeather]:
    return [weather.day(START + timedelta(days=n)) for n in range(count)]


def test_weather_same_seed_same_days_in_any_order() -> None:
    forward = _days(Weather(3, START), 60)
    backward_weather = Weather(3, START)
    backward = [backward_weather.day(START + timedelta(days=n)) for n in reversed(range(60))]
    assert forward == backward[::-1]
    assert Weather(3, START).day(START + timedelta(days=59)) == forward[59]


def test_weather_different_seeds_differ() -> None:
    a, b = _days(Weather(1, START), 60), _days(Weather(2, START), 60)
    assert [d.kind for d in a] != [d.kind for d in b]
    assert a[0].clearness != b[0].clearness


def test_weather_days_are_consecutive(long_run: list[DayWeather]) -> None:
    assert [d.day for d in long_run[:3]] == [START + timedelta(days=n) for n in range(3)]


def test_weather_persistence_beats_unconditional_share(long_run: list[DayWeather]) -> None:
    kinds = [d.kind for d in long_run]
    share = Counter(kinds)
    after = Counter(pairwise(kinds))
    for kind in DAY_KINDS:
        stay = after[(kind, kind)] / sum(after[(kind, other)] for other in DAY_KINDS)
        unconditional = share[kind] / len(kinds)
        assert stay > unconditional + 0.2, kind
        assert 0.5 < stay < 0.85, kind


def test_weather_june_less_sunny_than_august_and_january(long_run: list[DayWeather]) -> None:
    def sunny_share(month: int) -> float:
        days = [d for d in long_run if d.day.month == month]
        return sum(d.kind == "sunny" for d in days) / len(days)

    assert sunny_share(6) + 0.1 < sunny_share(8)
    assert sunny_share(6) + 0.1 < sunny_share(1)


def test_weather_clearness_in_range_and_ordered_by_kind(long_run: list[DayWeather]) -> None:
    means: dict[str, list[float]] = {kind: [] for kind in DAY_KINDS}
    for d in long_run:
        assert len(d.clearness) == 48
        assert all(0.0 <= c <= 1.0 for c in d.clearness)
        means[d.kind].append(d.mean_clearness)
    sunny, cloudy, rainy = (float(np.mean(means[k])) for k in DAY_KINDS)
    assert 0.88 < sunny <= 1.0
    assert 0.3 < cloudy < 0.6
    assert 0.05 < rainy < 0.25
    assert min(means["sunny"]) > max(means["rainy"])


def test_weather_clearness_varies_within_a_cloudy_day(long_run: list[DayWeather]) -> None:
    cloudy = [d for d in long_run if d.kind == "cloudy"]
    spreads = [float(np.std(d.clearness)) for d in cloudy]
    assert float(np.mean(spreads)) > 0.03
    # AR(1): neighbouring slots are correlated
    lagged = [np.corrcoef(d.clearness[:-1], d.clearness[1:])[0, 1] for d in cloudy[:200]]
    assert float(np.mean(lagged)) > 0.4


def test_transition_matrix_keeps_monthly_mix() -> None:
    for month in range(1, 13):
        matrix = transition_matrix(month)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
        mix = np.asarray(monthly_mix(month))
        np.testing.assert_allclose(mix @ matrix, mix)
        assert np.all(np.diag(matrix) >= 0.55)


def test_site_weather_close_to_shared_and_seeded() -> None:
    shared = Weather(5, START).day(START + timedelta(days=10))
    a, b = site_weather(shared, 1), site_weather(shared, 2)
    assert a == site_weather(shared, 1)
    assert a.clearness != b.clearness
    assert a.kind == shared.kind and a.day == shared.day
    diff = np.abs(np.asarray(a.clearness) - np.asarray(shared.clearness))
    assert float(diff.mean()) < 0.05


def test_invalid_weather_day_before_start() -> None:
    with pytest.raises(InvalidInput) as caught:
        Weather(1, START).day(START - timedelta(days=1))
    assert caught.value.field == "day"
    assert "2025-12-31" in caught.value.message


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_invalid_weather_seed(seed: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        Weather(seed, START)  # type: ignore[arg-type]
    assert caught.value.field == "seed"


def test_invalid_day_weather() -> None:
    with pytest.raises(InvalidInput) as caught:
        DayWeather(START, "foggy", (0.5,) * 48)
    assert caught.value.field == "kind"
    with pytest.raises(InvalidInput) as caught:
        DayWeather(START, "sunny", (0.5,) * 47)
    assert caught.value.field == "clearness"
    with pytest.raises(InvalidInput) as caught:
        DayWeather(START, "sunny", (0.5,) * 47 + (1.2,))
    assert caught.value.field == "clearness[47]"


def test_invalid_persistence_and_month() -> None:
    with pytest.raises(InvalidInput) as caught:
        transition_matrix(6, persistence=1.0)
    assert caught.value.field == "persistence"
    with pytest.raises(InvalidInput) as caught:
        monthly_mix(13)
    assert caught.value.field == "month"
