"""The controller's sky (agents/sky.py) against the weather model it claims to know: days drawn
by :mod:`peerpower.devices.weather` are the oracle."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from peerpower.agents.sizing import PRIOR_LOAD_CV
from peerpower.agents.sky import _Z10, day_sky, slot_prior
from peerpower.devices.weather import (
    DAY_KINDS,
    draw_clearness,
    draw_kind,
    kind_of,
    next_day_levels,
)
from peerpower.errors import InvalidInput

MONTH = 9
SUNLIT = range(12, 36)  # 06:00-18:00


def _days(n: int, seed: int) -> list[tuple[str, float, tuple[float, ...]]]:
    """``n`` pairs of consecutive days: yesterday's kind and mean clearness, today's slots."""
    rng = np.random.default_rng(seed)
    out = []
    kind = draw_kind(None, MONTH, rng)
    for _ in range(n):
        today = draw_kind(kind, MONTH, rng)
        yesterday = statistics.fmean(draw_clearness(kind, rng))
        out.append((kind_of(yesterday), yesterday, draw_clearness(today, rng)))
        kind = today
    return out


@pytest.mark.parametrize("kind", DAY_KINDS)
def test_next_day_levels_are_the_quantiles_of_days_the_model_draws(kind: str) -> None:
    rng = np.random.default_rng(11)
    drawn = sorted(
        statistics.fmean(draw_clearness(draw_kind(kind, MONTH, rng), rng)) for _ in range(6000)
    )
    levels = next_day_levels(MONTH, kind)
    assert levels == tuple(sorted(levels)) and len(levels) == 40
    for i in (3, 9, 19, 29, 36):
        q = drawn[int((i + 0.5) / 40 * len(drawn))]
        assert abs(levels[i] - q) < 0.04, (i, levels[i], q)


def test_the_sky_forecast_beats_tomorrow_like_today_and_sharpens_as_the_day_is_measured() -> None:
    days = _days(3000, seed=5)
    persistence, ahead, after_two, after_six = [], [], [], []
    for kind, yesterday, slots in days:
        truth = statistics.fmean(slots[k] for k in SUNLIT)
        persistence.append((yesterday - truth) ** 2)
        ahead.append((day_sky(MONTH, kind)[0] - truth) ** 2)
        for n, errs in ((2, after_two), (6, after_six)):
            seen = statistics.fmean(slots[12 : 12 + n])
            errs.append((day_sky(MONTH, kind, round(100 * seen), n)[0] - truth) ** 2)
    # mean squared errors: the forecast is the mean of what the sky may be
    mse = [statistics.fmean(x) for x in (persistence, ahead, after_two, after_six)]
    assert mse[0] > mse[1] > mse[2] > mse[3], mse
    assert mse[1] < 0.8 * mse[0] and mse[3] < 0.1 * mse[0], mse


@pytest.mark.parametrize("measured", [0, 1, 2, 6, 12, 20])
def test_the_sky_forecast_error_is_calibrated_for_a_slot_ahead(measured: int) -> None:
    # what a seller risks is the lower tail: a slot's clearness two slots after the last one
    # measured (from 06:00) should fall below the forecast's 11th and 26th percentiles no more
    # often than they say, however much of the day has been seen (less often after a few
    # slots: a slot near them is like them, which the forecast does not count on)
    below = {4: 0, 10: 0}
    days = _days(3000, seed=9)
    for kind, _, slots in days:
        truth = slots[12 + measured + 1]
        seen = statistics.fmean(slots[12 : 12 + measured]) if measured else 0.0
        mean, spread = day_sky(MONTH, kind, round(100 * seen), measured)
        for i in below:
            below[i] += truth < mean + spread.values[i]
    for i, count in below.items():
        share, nominal = count / len(days), (i + 0.5) / 40
        assert nominal - 0.1 < share < nominal + 0.02, (i, share)


def test_the_day_after_tomorrow_is_less_like_yesterday_than_tomorrow() -> None:
    rng = np.random.default_rng(3)
    drawn = []
    for _ in range(6000):
        first = draw_kind("sunny", MONTH, rng)
        drawn.append(statistics.fmean(draw_clearness(draw_kind(first, MONTH, rng), rng)))
    levels = next_day_levels(MONTH, "sunny", steps=2)
    drawn.sort()
    for i in (3, 9, 19, 29, 36):
        assert abs(levels[i] - drawn[int((i + 0.5) / 40 * len(drawn))]) < 0.04, i
    assert day_sky(MONTH, "sunny", steps=2)[0] < day_sky(MONTH, "sunny")[0] - 0.05


def test_a_dark_morning_after_a_sunny_day_is_believed_after_two_slots() -> None:
    mean, spread = day_sky(MONTH, "sunny", 12, 2)
    assert mean < 0.3
    assert mean + spread.values[-1] < 0.6
    before, _ = day_sky(MONTH, "sunny")
    assert before > 0.6


def test_a_slot_prior_adds_the_load_error_and_the_sky_error() -> None:
    _, sky = day_sky(MONTH, "sunny")
    load, clear = 400.0, 1500.0
    surplus, deficit = slot_prior(load, clear, sky)
    sd_load = PRIOR_LOAD_CV * load + 1.0
    want_mean = clear * statistics.fmean(sky.values)
    want_var = sd_load**2 * statistics.pvariance(_Z10) + clear**2 * statistics.pvariance(sky.values)
    got = [surplus.scale * v for v in surplus.values]
    assert abs(statistics.fmean(got) - want_mean) < 0.05 * sd_load + 1e-6
    assert abs(statistics.pvariance(got) / want_var - 1) < 0.15
    # the deficit's prior is the surplus's mirrored
    assert [deficit.scale * v for v in deficit.values] == pytest.approx([-x for x in got[::-1]])
    # the lower tail of the sky is the surplus's: after a sunny day PV may fall far, not rise far
    assert got[0] < -0.4 * clear and -got[0] > 1.5 * got[-1]


def test_next_day_levels_refuse_what_is_not_a_kind_or_a_count() -> None:
    with pytest.raises(InvalidInput, match="kind"):
        next_day_levels(MONTH, "foggy")
    with pytest.raises(InvalidInput, match="n"):
        next_day_levels(MONTH, "sunny", 0)
    with pytest.raises(InvalidInput, match="month"):
        next_day_levels(13, "sunny")
