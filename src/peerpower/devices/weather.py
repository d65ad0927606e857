"""Seeded cloudiness: a Markov chain of day kinds and a per-slot clearness factor.

A community shares one :class:`Weather` (one sky); a site may add a small own variation with
:func:`site_weather`. The clearness factor multiplies clear-sky PV output
(:func:`peerpower.devices.pv.pv_wh`).

=============  ======  ================================================================
name           unit    meaning
=============  ======  ================================================================
kind           —       "sunny", "cloudy" or "rainy": the weather of a whole JST day
clearness      [-]     per slot, actual / clear-sky irradiance, in [0, 1]
persistence    [-]     weight of "stay as yesterday" in the day-kind transition matrix
=============  ======  ================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Final

import numpy as np

from peerpower.errors import InvalidInput
from peerpower.timeslots import SLOTS_PER_DAY

DAY_KINDS: Final = ("sunny", "cloudy", "rainy")

# Share of (sunny, cloudy, rainy) days per month in Tokyo: ASSUMED, not fitted to data (see
# monthly_mix Notes for the qualitative facts they follow).
MONTHLY_MIX: Final[dict[int, tuple[float, float, float]]] = {
    1: (0.60, 0.28, 0.12),
    2: (0.55, 0.30, 0.15),
    3: (0.45, 0.33, 0.22),
    4: (0.42, 0.35, 0.23),
    5: (0.42, 0.35, 0.23),
    6: (0.22, 0.43, 0.35),
    7: (0.35, 0.40, 0.25),
    8: (0.50, 0.35, 0.15),
    9: (0.33, 0.40, 0.27),
    10: (0.38, 0.37, 0.25),
    11: (0.48, 0.32, 0.20),
    12: (0.58, 0.29, 0.13),
}

PERSISTENCE: Final = 0.5

# Per kind: (lowest day level, highest day level, AR(1) coefficient per slot, slot spread [-]).
_CLEARNESS_MODEL: Final[dict[str, tuple[float, float, float, float]]] = {
    "sunny": (0.90, 1.00, 0.7, 0.03),
    "cloudy": (0.30, 0.60, 0.8, 0.10),
    "rainy": (0.05, 0.25, 0.8, 0.04),
}

# Stream tags keep the weather's random numbers apart from other models fed the same seed.
_STREAM_DAY: Final = 0x5745_4154
_STREAM_SITE: Final = 0x5349_5445


def check_seed(seed: int, field: str = "seed") -> int:
    """Return ``seed`` if it is a non-negative int, else raise :class:`InvalidInput`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(field, f"must be an int ≥ 0, got {seed!r}")
    return seed


def monthly_mix(month: int) -> tuple[float, float, float]:
    """Long-run share of sunny, cloudy and rainy days in ``month`` (Tokyo).

    Parameters
    ----------
    month
        Calendar month 1–12.

    Returns
    -------
    tuple of float
        (sunny, cloudy, rainy) shares [-], summing to 1.

    Notes
    -----
    The shares are assumptions chosen to follow these facts about Tokyo's climate, not numbers
    fitted to observations:

    - The Kanto-Koshin rainy season (tsuyu) normally runs from early June to mid/late July
      (JMA normals: onset around 7 June, end around 19 July), so June is the least sunny month
      and July is mixed.
    - After the rainy season August is mostly fair under the Pacific high.
    - September and October bring the autumn rain front (akisame) and typhoons.
    - Winter on the Pacific side of Japan is dry and sunny under the north-west winter monsoon,
      so December–February are the sunniest months.

    Source for the normals: Japan Meteorological Agency, "Rainy season onset and end dates"
    (https://www.data.jma.go.jp/cpd/baiu/) and the climate normals for Tokyo
    (https://www.data.jma.go.jp/obd/stats/etrn/).
    """
    if not 1 <= month <= 12:
        raise InvalidInput("month", f"must be 1–12, got {month!r}")
    return MONTHLY_MIX[month]


def transition_matrix(month: int, persistence: float = PERSISTENCE) -> np.ndarray:
    """Day-kind transition probabilities for a day in ``month``.

    Parameters
    ----------
    month
        Calendar month 1–12 of the day being drawn.
    persistence
        Weight ``p`` of "same as yesterday" [-], 0 ≤ p < 1.

    Returns
    -------
    numpy.ndarray
        3 × 3 matrix ``P[i, j]`` = P(today = kind j | yesterday = kind i), kinds ordered as
        :data:`DAY_KINDS`; rows sum to 1.

    Notes
    -----
    .. math:: P = p I + (1 - p) \\mathbf{1} \\pi^T

    where :math:`\\pi` is :func:`monthly_mix`. The stationary distribution of :math:`P` is exactly
    :math:`\\pi` (:math:`\\pi^T P = p \\pi^T + (1 - p) \\pi^T`) and the chance to keep
    yesterday's kind is :math:`p + (1 - p) \\pi_i`: with p = 0.5 that is 0.61–0.80 for sunny
    days, 0.64–0.72 for cloudy and 0.56–0.68 for rainy ones, so fair and wet spells last a few
    days. p is an assumption, not fitted.
    """
    if not 0.0 <= persistence < 1.0:
        raise InvalidInput("persistence", f"must be in [0, 1), got {persistence!r}")
    mix = np.asarray(monthly_mix(month), dtype=float)
    return persistence * np.eye(3) + (1.0 - persistence) * np.outer(np.ones(3), mix)


def draw_kind(previous: str | None, month: int, rng: np.random.Generator) -> str:
    """Draw a day kind: from the month's mix if there is no ``previous`` day, else by the chain."""
    if previous is None:
        probabilities = np.asarray(monthly_mix(month), dtype=float)
    else:
        probabilities = transition_matrix(month)[DAY_KINDS.index(previous)]
    return DAY_KINDS[int(rng.choice(3, p=probabilities))]


def draw_clearness(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    """Draw the 48 per-slot clearness factors of a day of ``kind``.

    Parameters
    ----------
    kind
        "sunny", "cloudy" or "rainy".
    rng
        Random source.

    Returns
    -------
    tuple of float
        48 values in [0, 1] [-].

    Notes
    -----
    A day level :math:`\\bar c` is drawn uniformly from the kind's range (sunny 0.90–1.00,
    cloudy 0.30–0.60, rainy 0.05–0.25) and the slots vary around it with a stationary AR(1):

    .. math::

        x_0 \\sim N(0, \\sigma^2), \\quad
        x_k = \\phi x_{k-1} + \\sqrt{1 - \\phi^2}\\, \\sigma \\varepsilon_k, \\quad
        c_k = \\min(1, \\max(0, \\bar c + x_k))

    with :math:`\\phi` = 0.7 / 0.8 / 0.8 per slot and :math:`\\sigma` = 0.03 / 0.10 / 0.04 for
    sunny / cloudy / rainy: broken clouds make cloudy days the most variable. All these numbers
    are assumptions, not fitted to irradiance records.
    """
    if kind not in _CLEARNESS_MODEL:
        raise InvalidInput("kind", f"must be one of {', '.join(DAY_KINDS)}, got {kind!r}")
    low, high, phi, sigma = _CLEARNESS_MODEL[kind]
    level = rng.uniform(low, high)
    shocks = rng.standard_normal(SLOTS_PER_DAY)
    innovation = math.sqrt(1.0 - phi * phi) * sigma
    values = np.empty(SLOTS_PER_DAY)
    x = sigma * shocks[0]
    values[0] = x
    for k in range(1, SLOTS_PER_DAY):
        x = phi * x + innovation * shocks[k]
        values[k] = x
    return tuple(float(c) for c in np.clip(level + values, 0.0, 1.0))


def kind_of(clearness: float) -> str:
    """The day kind whose level range holds a day's mean ``clearness`` [-] (the nearest range
    when it falls between two: a day's slots vary around its level)."""
    best, gap = DAY_KINDS[0], math.inf
    for kind in DAY_KINDS:
        low, high = _CLEARNESS_MODEL[kind][:2]
        d = max(low - clearness, clearness - high, 0.0)
        if d < gap:
            best, gap = kind, d
    return best


@lru_cache(maxsize=256)
def next_day_levels(month: int, kind: str, n: int = 40, steps: int = 1) -> tuple[float, ...]:
    """The climate's answer to "how clear will tomorrow be?" after a day of ``kind``: ``n``
    equally likely day levels [-] of a day in ``month``, the quantiles at (i + 0.5) / n of
    the mixture of the kinds' level ranges (:func:`draw_clearness`) weighted by the chain's
    row for ``kind`` (:func:`transition_matrix`); ``steps`` days on (the day after tomorrow:
    2), by the chain's power, the same form with persistence ``p ** steps``.

    A forecaster that knows its site's climate — as a year of the site's own readings shows
    it — knows this much beyond "like yesterday": after a sunny September day, one day in
    three is cloudy or rainy.
    """
    if not 1 <= n <= 1000:
        raise InvalidInput("n", f"must be 1–1000, got {n!r}")
    if kind not in _CLEARNESS_MODEL:
        raise InvalidInput("kind", f"must be one of {', '.join(DAY_KINDS)}, got {kind!r}")
    if not 1 <= steps <= 366:
        raise InvalidInput("steps", f"must be 1–366 days, got {steps!r}")
    row = transition_matrix(month, PERSISTENCE**steps)[DAY_KINDS.index(kind)]
    parts = [(float(p), *_CLEARNESS_MODEL[k][:2]) for p, k in zip(row, DAY_KINDS, strict=True)]

    def cdf(x: float) -> float:
        return sum(p * min(1.0, max(0.0, (x - lo) / (hi - lo))) for p, lo, hi in parts)

    out = []
    for i in range(n):
        target, lo, hi = (i + 0.5) / n, 0.0, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if cdf(mid) < target else (lo, mid)
        out.append((lo + hi) / 2)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DayWeather:
    """The sky over one JST day: its kind and the clearness of each of the 48 slots."""

    day: date
    kind: str
    clearness: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in DAY_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(DAY_KINDS)}, got {self.kind!r}")
        if len(self.clearness) != SLOTS_PER_DAY:
            raise InvalidInput(
                "clearness", f"needs {SLOTS_PER_DAY} values, got {len(self.clearness)}"
            )
        for k, c in enumerate(self.clearness):
            if not 0.0 <= c <= 1.0:
                raise InvalidInput(f"clearness[{k}]", f"must be in [0, 1], got {c!r}")

    @property
    def mean_clearness(self) -> float:
        """Mean clearness over the day's slots [-]."""
        return sum(self.clearness) / SLOTS_PER_DAY


def site_weather(shared: DayWeather, seed: int, spread: float = 0.03) -> DayWeather:
    """A site's own sky: the shared clearness with a small independent variation.

    Parameters
    ----------
    shared
        The community's weather for the day.
    seed
        The site's seed (≥ 0); the same (shared, seed, spread) gives the same result.
    spread
        Standard deviation of the multiplicative variation [-], 0 ≤ spread ≤ 0.5.

    Returns
    -------
    DayWeather
        Same day and kind, clearness :math:`c_k (1 + s\\,\\varepsilon_k)` clipped to [0, 1].

    Notes
    -----
    Sites a few hundred metres apart see nearly the same clouds; the independent per-slot term
    stands for cloud edges passing one roof and not the next.
    """
    check_seed(seed)
    if not 0.0 <= spread <= 0.5:
        raise InvalidInput("spread", f"must be in [0, 0.5], got {spread!r}")
    rng = np.random.default_rng([seed, _STREAM_SITE, shared.day.toordinal()])
    factors = 1.0 + spread * rng.standard_normal(SLOTS_PER_DAY)
    values = np.clip(np.asarray(shared.clearness) * factors, 0.0, 1.0)
    return DayWeather(shared.day, shared.kind, tuple(float(c) for c in values))


class Weather:
    """A seeded sequence of :class:`DayWeather` from ``start`` on.

    Day ``start + n`` is drawn from its own random stream (seed, n) and the kind of day
    ``n - 1``; days are generated in order and cached, so the same (seed, start) gives the same
    days whatever order they are asked for.

    Parameters
    ----------
    seed
        Non-negative int.
    start
        First JST day of the sequence; days before it cannot be asked for.
    """

    __slots__ = ("_days", "seed", "start")

    def __init__(self, seed: int, start: date) -> None:
        self.seed = check_seed(seed)
        if not isinstance(start, date):
            raise InvalidInput("start", f"must be a date, got {start!r}")
        self.start = start
        self._days: list[DayWeather] = []

    def day(self, day: date) -> DayWeather:
        """The weather of ``day`` (≥ ``start``)."""
        if day < self.start:
            raise InvalidInput(
                "day", f"{day.isoformat()} is before the weather's start {self.start.isoformat()}"
            )
        index = (day - self.start).days
        while len(self._days) <= index:
            n = len(self._days)
            current = self.start + timedelta(days=n)
            rng = np.random.default_rng([self.seed, _STREAM_DAY, n])
            previous = self._days[-1].kind if self._days else None
            kind = draw_kind(previous, current.month, rng)
            self._days.append(DayWeather(current, kind, draw_clearness(kind, rng)))
        return self._days[index]
