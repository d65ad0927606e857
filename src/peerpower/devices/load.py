"""Electricity demand of households, shops and offices per half-hour slot.

A day's demand is a normalised 48-slot shape (by kind, occupancy and weekday/weekend) times the
day's expected energy (annual energy, season, day of week), with a per-site variation drawn
once from the seed and a per-day and per-slot noise drawn from (seed, day).

===========  =====  ===============================================================
name         unit   meaning
===========  =====  ===============================================================
annual_kwh   [kWh]  expected consumption over a year (the site's own, not a mean)
shape        [-]    48 non-negative weights summing to 1
energy_wh    [Wh]   consumption in a slot
===========  =====  ===============================================================

The shapes and factors are assumptions built from the daily routines described in Notes of
:func:`base_shape`, not fitted to metered data. National holidays are treated as weekdays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Final, Literal, get_args

import numpy as np

from peerpower.devices.weather import check_seed
from peerpower.errors import InvalidInput
from peerpower.timeslots import SLOTS_PER_DAY

LoadKind = Literal["household", "shop", "business"]
Occupancy = Literal["working", "home", "family"]
LOAD_KINDS: Final = get_args(LoadKind)
OCCUPANCIES: Final = get_args(Occupancy)

DAYS_PER_YEAR: Final = 365.25
SIMILAR_DAYS: Final = 3

_HOURS: Final = (np.arange(SLOTS_PER_DAY) + 0.5) / 2.0  # slot centres [h]

# (kind, occupancy or "", weekend) -> base level and bumps (centre [h], width [h], height).
_Bump = tuple[float, float, float]
_HOUSEHOLD_SHAPES: Final[dict[tuple[str, bool], tuple[float, tuple[_Bump, ...]]]] = {
    ("working", False): (0.30, ((6.75, 0.8, 1.0), (19.75, 1.8, 1.6), (22.5, 1.0, 0.5))),
    ("working", True): (
        0.30,
        ((8.5, 1.2, 0.8), (12.5, 2.0, 0.6), (19.0, 2.0, 1.5), (22.5, 1.0, 0.4)),
    ),
    ("home", False): (
        0.30,
        ((7.0, 1.0, 0.8), (12.5, 2.5, 0.6), (19.0, 2.0, 1.4), (22.5, 1.0, 0.4)),
    ),
    ("home", True): (
        0.30,
        ((7.75, 1.1, 0.8), (12.5, 2.5, 0.7), (19.0, 2.0, 1.4), (22.5, 1.0, 0.4)),
    ),
    ("family", False): (
        0.35,
        (
            (6.5, 0.9, 1.2),
            (12.5, 2.5, 0.35),
            (16.5, 1.0, 0.4),
            (19.0, 2.0, 1.8),
            (22.0, 1.0, 0.6),
        ),
    ),
    ("family", True): (
        0.35,
        ((8.0, 1.2, 1.0), (12.5, 2.5, 0.8), (19.0, 2.0, 1.8), (22.0, 1.0, 0.5)),
    ),
}

# Weekend-day energy / weekday energy.
_WEEKEND_RATIO: Final[dict[str, float]] = {
    "working": 1.15,
    "home": 1.00,
    "family": 1.10,
    "shop": 1.10,
    "business": 0.40,
}

# Seasonal bumps: (winter height, summer height); winter peak 25 Jan (40 d wide), summer 5 Aug
# (25 d wide).
_SEASON: Final[dict[str, tuple[float, float]]] = {
    "household": (0.30, 0.20),
    "shop": (0.08, 0.20),
    "business": (0.12, 0.25),
}
_WINTER_PEAK_DOY: Final = 25
_WINTER_WIDTH_DAYS: Final = 40.0
_SUMMER_PEAK_DOY: Final = 217
_SUMMER_WIDTH_DAYS: Final = 25.0

# Noise: (day level sigma, slot sigma) of mean-one log-normal factors.
_NOISE: Final[dict[str, tuple[float, float]]] = {
    "household": (0.10, 0.25),
    "shop": (0.06, 0.08),
    "business": (0.06, 0.08),
}
_PEAKINESS_SPREAD: Final = 0.15
_MAX_SHIFT_SLOTS: Final = 1

_STREAM_SITE: Final = 0x4C4F_5354
_STREAM_DAY: Final = 0x4C4F_4459


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """A consumer: its kind, yearly consumption and (households only) who is at home when."""

    kind: LoadKind = "household"
    annual_kwh: float = 4500.0
    occupancy: Occupancy = "working"

    def __post_init__(self) -> None:
        if self.kind not in LOAD_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(LOAD_KINDS)}, got {self.kind!r}")
        if self.occupancy not in OCCUPANCIES:
            raise InvalidInput(
                "occupancy", f"must be one of {', '.join(OCCUPANCIES)}, got {self.occupancy!r}"
            )
        if not (self.annual_kwh > 0 and math.isfinite(self.annual_kwh)):
            raise InvalidInput("annual_kwh", f"must be > 0, got {self.annual_kwh!r}")


def _check_day(day: date) -> None:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidInput("day", f"must be a date, got {day!r}")


def is_weekend(day: date) -> bool:
    """Saturday or Sunday."""
    return day.weekday() >= 5


def _bump(centre_h: float, width_h: float) -> np.ndarray:
    distance = (_HOURS - centre_h + 12.0) % 24.0 - 12.0
    values: np.ndarray = np.exp(-0.5 * (distance / width_h) ** 2)
    return values


def _opening(open_h: float, close_h: float, ramp_h: float = 0.4) -> np.ndarray:
    rise = 1.0 / (1.0 + np.exp(-(_HOURS - open_h) / ramp_h))
    fall = 1.0 / (1.0 + np.exp((_HOURS - close_h) / ramp_h))
    values: np.ndarray = rise * fall
    return values


@lru_cache(maxsize=32)
def _base_shape(kind: str, occupancy: str, weekend: bool) -> np.ndarray:
    if kind == "household":
        base, bumps = _HOUSEHOLD_SHAPES[(occupancy, weekend)]
        shape = np.full(SLOTS_PER_DAY, base)
        for centre_h, width_h, height in bumps:
            shape = shape + height * _bump(centre_h, width_h)
    elif kind == "shop":
        shape = 0.5 + 1.0 * _opening(9.0, 21.0) + (0.35 if weekend else 0.25) * _bump(15.0, 2.5)
    elif weekend:
        shape = 0.25 + 0.05 * _opening(9.0, 17.0)
    else:
        shape = 0.25 + 1.0 * _opening(8.5, 18.5) - 0.1 * _bump(12.25, 0.4)
    normalised: np.ndarray = shape / shape.sum()
    normalised.setflags(write=False)
    return normalised


def base_shape(cfg: LoadConfig, weekend: bool) -> np.ndarray:
    """The normalised daily shape of ``cfg``'s kind before per-site variation.

    Parameters
    ----------
    cfg
        The consumer; ``occupancy`` matters for households only.
    weekend
        Saturday/Sunday shape if true.

    Returns
    -------
    numpy.ndarray
        48 positive weights [-] summing to 1, slot k covering 00:00 + 30 min × k JST.

    Notes
    -----
    Each shape is a constant base plus Gaussian bumps on the hour of day
    :math:`h`, :math:`a \\exp(-\\tfrac12 ((h - \\mu) / \\sigma)^2)`, or opening hours as a
    product of two logistic ramps (0.4 h wide). Assumptions:

    - households: a night base (fridge, standby, heat-pump water heater) of 0.30–0.35 of the
      mean, a breakfast peak around 06:30–07:00 on weekdays and later at weekends, an evening
      peak (cooking, lighting, TV, air conditioning) around 19:00–20:00 that is the largest of
      the day, and a late bump around 22:00–22:30 (bath, laundry);
    - "working": nobody home 08:00–18:00 on weekdays, so daytime stays at the base; weekends
      add a midday bump;
    - "home": someone at home all day, a midday bump every day;
    - "family": higher peaks, children back after school (~16:30);
    - shop: refrigeration as a 24-hour base (half the daytime level), lighting and air
      conditioning while open 09:00–21:00, a little more in the afternoon;
    - business: offices lit and conditioned 08:30–18:30 on weekdays with a lunch dip; at
      weekends only the base (servers, standby).
    """
    return _base_shape(cfg.kind, cfg.occupancy, weekend)


def _season_raw(day_of_year: float, kind: str) -> float:
    winter, summer = _SEASON[kind]

    def bump(peak: float, width: float) -> float:
        distance = (day_of_year - peak + DAYS_PER_YEAR / 2) % DAYS_PER_YEAR - DAYS_PER_YEAR / 2
        return math.exp(-0.5 * (distance / width) ** 2)

    return (
        1.0
        + winter * bump(_WINTER_PEAK_DOY, _WINTER_WIDTH_DAYS)
        + summer * bump(_SUMMER_PEAK_DOY, _SUMMER_WIDTH_DAYS)
    )


@lru_cache(maxsize=8)
def _season_mean(kind: str) -> float:
    return sum(_season_raw(d, kind) for d in range(1, 366)) / 365.0


def seasonal_factor(kind: LoadKind, day: date) -> float:
    """Daily energy on ``day`` relative to the yearly mean day (mean over a year ≈ 1).

    Parameters
    ----------
    kind
        "household", "shop" or "business".
    day
        Calendar day.

    Returns
    -------
    float
        Factor [-].

    Notes
    -----
    .. math::

        f(d) = \\frac{1 + A_w g(d; 25, 40) + A_s g(d; 217, 25)}{\\overline{1 + A_w g + A_s g}},
        \\quad g(d; \\mu, \\sigma) = \\exp(-\\tfrac12 ((d - \\mu) / \\sigma)^2)

    with day-of-year distance taken round the year: a winter hump centred on late January
    (heating) and a summer hump on early August (cooling), lowest in spring and autumn.
    Households :math:`A_w, A_s` = 0.30, 0.20 (heating and hot water taken to make winter the
    highest), shops 0.08, 0.20 and offices 0.12, 0.25 (internal gains taken to make cooling
    dominate). The heights are assumptions, not fitted.
    """
    if kind not in _SEASON:
        raise InvalidInput("kind", f"must be one of {', '.join(LOAD_KINDS)}, got {kind!r}")
    return _season_raw(day.timetuple().tm_yday, kind) / _season_mean(kind)


def _weekday_factor(key: str, weekend: bool) -> float:
    ratio = _WEEKEND_RATIO[key]
    weekday = 7.0 / (5.0 + 2.0 * ratio)
    return weekday * ratio if weekend else weekday


def expected_daily_wh(cfg: LoadConfig, day: date) -> float:
    """Expected consumption on ``day`` [Wh]: annual / 365.25 × season × day-of-week factor.

    Notes
    -----
    The day-of-week factors are :math:`w_{wd} = 7 / (5 + 2r)` and :math:`w_{we} = r w_{wd}`, so a
    week averages 1; :math:`r` is the weekend/weekday energy ratio: 1.15 for "working"
    households (home all weekend), 1.0 "home", 1.10 "family", 1.10 shops, 0.40 offices.
    """
    _check_day(day)
    key = cfg.occupancy if cfg.kind == "household" else cfg.kind
    return (
        cfg.annual_kwh
        * 1000.0
        / DAYS_PER_YEAR
        * seasonal_factor(cfg.kind, day)
        * _weekday_factor(key, is_weekend(day))
    )


def _site_shape(cfg: LoadConfig, weekend: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _STREAM_SITE])
    shift = int(rng.integers(-_MAX_SHIFT_SLOTS, _MAX_SHIFT_SLOTS + 1))
    peakiness = rng.uniform(1.0 - _PEAKINESS_SPREAD, 1.0 + _PEAKINESS_SPREAD)
    shape = np.roll(base_shape(cfg, weekend), shift)
    floor = shape.min()
    varied: np.ndarray = floor + peakiness * (shape - floor)
    normalised: np.ndarray = varied / varied.sum()
    return normalised


def expected_load_wh(cfg: LoadConfig, day: date, seed: int) -> np.ndarray:
    """The site's noise-free profile for ``day``: what :func:`load_wh` averages to.

    Parameters
    ----------
    cfg
        The consumer.
    day
        JST calendar day.
    seed
        The site's seed (≥ 0).

    Returns
    -------
    numpy.ndarray
        48 floats [Wh].

    Notes
    -----
    The site's variation, drawn once from the seed: its shape is rolled by -1, 0 or +1 slot
    (earlier or later routines) and its peaks above the base are scaled by a factor
    :math:`u \\sim U(0.85, 1.15)` before renormalising. The annual energy stays ``annual_kwh``:
    sites of different size are given different ``annual_kwh``.
    """
    check_seed(seed)
    energy_wh: np.ndarray = _site_shape(cfg, is_weekend(day), seed) * expected_daily_wh(cfg, day)
    return energy_wh


def load_wh(cfg: LoadConfig, day: date, seed: int) -> list[int]:
    """Consumption per slot on ``day``, rounded to whole Wh; deterministic in (cfg, day, seed).

    Parameters
    ----------
    cfg
        The consumer.
    day
        JST calendar day.
    seed
        The site's seed (≥ 0).

    Returns
    -------
    list of int
        48 non-negative values [Wh].

    Notes
    -----
    .. math::

        E_k = \\mathrm{round}\\left(\\bar E_k\\, D\\, S_k\\right), \\quad
        D = e^{\\sigma_d Z - \\sigma_d^2 / 2}, \\quad S_k = e^{\\sigma_s Z_k - \\sigma_s^2 / 2}

    with :math:`\\bar E_k` from :func:`expected_load_wh` and independent standard normal
    :math:`Z, Z_k` drawn from (seed, day): mean-one log-normal factors, so the noise leaves the
    expected energy unchanged and can never make demand negative. Households
    :math:`\\sigma_d, \\sigma_s` = 0.10, 0.25 (appliances switching); shops and offices 0.06,
    0.08. Rounding is to the nearest Wh, ties to even.
    """
    expected = expected_load_wh(cfg, day, seed)
    day_sigma, slot_sigma = _NOISE[cfg.kind]
    rng = np.random.default_rng([seed, _STREAM_DAY, day.toordinal()])
    day_factor = math.exp(day_sigma * rng.standard_normal() - day_sigma**2 / 2)
    slot_factors = np.exp(slot_sigma * rng.standard_normal(SLOTS_PER_DAY) - slot_sigma**2 / 2)
    return [int(e) for e in np.rint(expected * day_factor * slot_factors)]


def forecast_load_wh(
    cfg: LoadConfig,
    day: date,
    seed: int,
    history: Sequence[Sequence[int]],
    dates: Sequence[date] | None = None,
) -> list[int]:
    """Similar-day forecast: mean of the last up to 3 days of the same kind (weekday/weekend).

    Parameters
    ----------
    cfg
        The consumer.
    day
        JST calendar day to forecast.
    seed
        The site's seed (≥ 0), for the fallback profile.
    history
        Actual consumption of the days before ``day``, oldest first: ``history[-1]`` is the
        day before ``day``, ``history[-2]`` two days before, and so on; each 48 values [Wh].
    dates
        The day of each entry of ``history`` when they are not the consecutive days before
        ``day`` (e.g. forecasting tomorrow from the days up to yesterday); days on or after
        ``day`` are ignored.

    Returns
    -------
    list of int
        48 values [Wh], rounded to the nearest Wh (ties to even).

    Notes
    -----
    The recent days whose weekday/weekend kind matches ``day`` are averaged slot by slot,
    at most the 3 most recent. Without any such day the forecast is
    :func:`expected_load_wh`, the site's profile without noise.
    """
    _check_day(day)
    check_seed(seed)
    for i, readings in enumerate(history):
        if len(readings) != SLOTS_PER_DAY:
            raise InvalidInput(
                f"history[{i}]", f"needs {SLOTS_PER_DAY} values, got {len(readings)}"
            )
    weekend = is_weekend(day)
    if dates is not None and len(dates) != len(history):
        raise InvalidInput("dates", f"has {len(dates)} days for {len(history)} in history")
    similar: list[Sequence[int]] = []
    for back in range(1, len(history) + 1):
        when = date.fromordinal(day.toordinal() - back) if dates is None else dates[-back]
        if when < day and is_weekend(when) == weekend:
            similar.append(history[-back])
            if len(similar) == SIMILAR_DAYS:
                break
    if similar:
        mean = np.asarray(similar, dtype=float).mean(axis=0)
    else:
        mean = expected_load_wh(cfg, day, seed)
    return [int(e) for e in np.rint(mean)]
