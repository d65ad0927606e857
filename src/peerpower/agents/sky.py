"""What a site controller believes about the day's sky: its climate, updated by what it measured.

A day's PV is the clear-sky output times the day's clearness level (and a little variation
from slot to slot, :func:`peerpower.devices.weather.draw_clearness`). Before the sun is up the
controller knows only yesterday's sky and its site's climate: after a day of one kind, the
chances of each kind tomorrow and the range of levels each kind has
(:func:`~peerpower.devices.weather.next_day_levels`, 40 equally likely levels) — what a year of
the site's own readings would have taught it. Each slot it measures then weighs those levels by
how likely the day's measured clearness so far is under each (Bayes' rule; the measured mean of
``n`` slots varies around the level with the variance of the mean of ``n`` values of an AR(1),
σ and φ of the level's kind). The forecast is the weighted mean level; the forecast's error
is the spread of the levels about it and a slot's own variation about its day's level. Days
further ahead than tomorrow follow the chain's power.

Assumed: the controller knows the simulator's climate model (the chain of day kinds and each
kind's ranges), as a controller at a real site would learn its own from its history; with
persistence alone ("tomorrow like today") a sunny day followed by a rainy one is a surprise
every time, and sites that sold on it were short of most of what they sold that morning.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

from peerpower.agents.sizing import PRIOR_LOAD_CV, ErrorDist
from peerpower.devices.weather import DAY_KINDS, kind_of, monthly_mix, next_day_levels

#: Buckets of the load's share of a slot's prior spread (see :func:`slot_prior`).
SHARE_BUCKETS = 20
# the standard normal at (i + 0.5) / n: the shape of a slot's own variation (n = 10) and of
# the load's error (n = 40, as :meth:`~peerpower.agents.sizing.ErrorDist.prior`)
_Z10 = tuple(NormalDist().inv_cdf((i + 0.5) / 10) for i in range(10))
_Z40 = tuple(NormalDist().inv_cdf((i + 0.5) / 40) for i in range(40))
# AR(1) per kind, as the weather model draws slots around the day's level (sigma, phi)
_SLOT_NOISE = {"sunny": (0.03, 0.7), "cloudy": (0.10, 0.8), "rainy": (0.04, 0.8)}
_LEVELS = 40


@lru_cache(maxsize=64)
def _levels(month: int, kind: str | None, steps: int) -> tuple[float, ...]:
    """Day levels ``steps`` days after a day of ``kind``; ``None``: no day measured yet, the
    month's mix."""
    if kind is not None:
        return next_day_levels(month, kind, _LEVELS, steps)
    mix = monthly_mix(month)
    # the mix as the row of a chain that forgets the day before: weight each kind's levels
    parts = [(p, next_day_levels(month, k, _LEVELS)) for p, k in zip(mix, DAY_KINDS, strict=True)]
    pooled = sorted((v, p) for p, levels in parts for v in levels)
    return _weighted_quantiles([v for v, _ in pooled], [p for _, p in pooled])


def _weighted_quantiles(values: list[float], weights: list[float]) -> tuple[float, ...]:
    """``_LEVELS`` equally likely values of a discrete distribution (``values`` sorted)."""
    total = sum(weights)
    out, acc, j = [], 0.0, 0
    for i in range(_LEVELS):
        target = (i + 0.5) / _LEVELS * total
        while j < len(values) - 1 and acc + weights[j] < target:
            acc += weights[j]
            j += 1
        out.append(values[j])
    return tuple(out)


def _mean_variance(sigma: float, phi: float, n: int) -> float:
    """Variance of the mean of ``n`` consecutive values of a stationary AR(1) [-²]."""
    lagged = sum((1 - k / n) * phi**k for k in range(1, n))
    return sigma * sigma * (1 + 2 * lagged) / n


@lru_cache(maxsize=8192)
def day_sky(
    month: int, yesterday: str | None, measured_centi: int = 0, slots: int = 0, steps: int = 1
) -> tuple[float, ErrorDist]:
    """The day's clearness as the controller believes it: the forecast level [-] and the
    error distribution of a slot's clearness about it [-] (the day's level and the slot's own
    variation about the level), ``steps`` days after a day of kind ``yesterday`` (None:
    unknown) in ``month``, having measured a mean clearness of ``measured_centi`` / 100 over
    ``slots`` sunlit slots of the day (0: nothing yet)."""
    levels = list(_levels(month, yesterday, steps))
    weights = [1.0] * len(levels)
    if slots > 0:
        m = measured_centi / 100
        logs = []
        for level in levels:
            var = _mean_variance(*_SLOT_NOISE[kind_of(level)], slots)
            logs.append(-((m - level) ** 2) / (2 * var) - 0.5 * math.log(var))
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
    total = sum(weights)
    mean = sum(w * v for w, v in zip(weights, levels, strict=True)) / total
    pairs = sorted(
        (v - mean + _SLOT_NOISE[kind_of(v)][0] * z, w)
        for v, w in zip(levels, weights, strict=True)
        for z in _Z10
    )
    spread = _weighted_quantiles([v for v, _ in pairs], [w for _, w in pairs])
    return mean, ErrorDist(spread)


@lru_cache(maxsize=4096)
def _mixed(sky: ErrorDist, bucket: int) -> tuple[ErrorDist, ErrorDist]:
    share = bucket / SHARE_BUCKETS  # of the load's error in the slot's spread
    values = sorted(share * z + (1 - share) * e for z in _Z40 for e in sky.values)
    k = len(values) // _LEVELS
    shape = ErrorDist(tuple(sum(values[i * k : (i + 1) * k]) / k for i in range(_LEVELS)))
    return shape, shape.negated()


def slot_prior(load_wh: float, clear_wh: float, sky: ErrorDist) -> tuple[ErrorDist, ErrorDist]:
    """The prior of a slot's net position error [Wh], for a surplus and for a deficit: the
    load's normal error (:data:`~peerpower.agents.sizing.PRIOR_LOAD_CV` of the forecast load)
    and the sky's (``sky`` × the slot's clear-sky output ``clear_wh``), independent."""
    load_part = PRIOR_LOAD_CV * load_wh + 1.0
    scale = load_part + max(0.0, clear_wh)
    shape, negated = _mixed(sky, round(SHARE_BUCKETS * load_part / scale))
    return shape.scaled(scale), negated.scaled(scale)
