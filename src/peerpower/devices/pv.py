"""Rooftop PV: clear-sky AC energy per half-hour slot through pvlib, scaled by clearness.

=====================  ======  =========================================================
name                   unit    meaning
=====================  ======  =========================================================
capacity_kw            [kW]    DC nameplate at 1000 W/m²; also the AC clipping limit
tilt_deg               [deg]   panel tilt from horizontal
azimuth_deg            [deg]   panel facing, clockwise from north (180 = south)
inverter_efficiency    [-]     AC out / DC in
losses                 [-]     DC losses: wiring, soiling, temperature, mismatch
poa_w_m2               [W/m²]  plane-of-array irradiance
energy_wh              [Wh]    AC energy in a slot
=====================  ======  =========================================================

The chain for one JST day, sampled every 5 minutes (at 2.5, 7.5, … min past each slot start):

1. solar position: :meth:`pvlib.location.Location.get_solarposition` (NREL SPA);
2. clear sky: Ineichen–Perez (:func:`pvlib.clearsky.ineichen`) with the monthly Linke
   turbidity of pvlib's climatology at the site, interpolated to the day, without the optional
   Perez enhancement factor (pvlib's default; it misbehaves at high air mass);
3. transposition onto the panel: :func:`pvlib.irradiance.get_total_irradiance`, isotropic sky,
   ground albedo 0.25;
4. DC = capacity × POA / 1000 × (1 − losses); AC = min(DC × inverter_efficiency, capacity);
5. a slot's energy is the mean AC power of its six samples × 0.5 h (midpoint rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final

import numpy as np
import pandas as pd
import pvlib

from peerpower.devices.weather import DayWeather
from peerpower.errors import InvalidInput
from peerpower.timeslots import JST, SLOTS_PER_DAY

SAMPLES_PER_SLOT: Final = 6
SAMPLE_MINUTES: Final = 30 / SAMPLES_PER_SLOT
SLOT_HOURS: Final = 0.5
STC_IRRADIANCE_W_M2: Final = 1000.0
GROUND_ALBEDO: Final = 0.25
_UTC_OFFSET_HOURS: Final = 9


@dataclass(frozen=True, slots=True)
class PVConfig:
    """A PV system: array, inverter and site (defaults: 5 kW facing south at 30° in Tokyo)."""

    capacity_kw: float = 5.0
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    inverter_efficiency: float = 0.96
    losses: float = 0.14
    latitude_deg: float = 35.68
    longitude_deg: float = 139.77
    altitude_m: float = 40.0

    def __post_init__(self) -> None:
        for name in (
            "capacity_kw",
            "tilt_deg",
            "azimuth_deg",
            "inverter_efficiency",
            "losses",
            "latitude_deg",
            "longitude_deg",
            "altitude_m",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(name, f"must be a number, got {value!r}")
        # Written as "not (ok)" so that NaN fails every check.
        checks = (
            ("capacity_kw", self.capacity_kw > 0 and math.isfinite(self.capacity_kw), "> 0"),
            ("tilt_deg", 0 <= self.tilt_deg <= 90, "in [0, 90]"),
            ("azimuth_deg", 0 <= self.azimuth_deg < 360, "in [0, 360)"),
            ("inverter_efficiency", 0 < self.inverter_efficiency <= 1, "in (0, 1]"),
            ("losses", 0 <= self.losses < 1, "in [0, 1)"),
            ("latitude_deg", -90 <= self.latitude_deg <= 90, "in [-90, 90]"),
            ("longitude_deg", -180 <= self.longitude_deg <= 180, "in [-180, 180]"),
            ("altitude_m", -500 <= self.altitude_m <= 9000, "in [-500, 9000]"),
        )
        for field, ok, allowed in checks:
            if not ok:
                raise InvalidInput(field, f"must be {allowed}, got {getattr(self, field)!r}")


def _check_day(day: date) -> None:
    # datetime is a subclass of date; a time of day here would be silently dropped.
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidInput("day", f"must be a date, got {day!r}")


@lru_cache(maxsize=64)
def _monthly_linke_turbidity(latitude_deg: float, longitude_deg: float) -> tuple[float, ...]:
    middles = pd.DatetimeIndex([datetime(2015, m, 15, tzinfo=UTC) for m in range(1, 13)])
    values = pvlib.clearsky.lookup_linke_turbidity(
        middles, latitude_deg, longitude_deg, interp_turbidity=False
    )
    return tuple(float(v) for v in values)


def linke_turbidity(latitude_deg: float, longitude_deg: float, day: date) -> float:
    """Linke turbidity of the site on ``day``.

    Parameters
    ----------
    latitude_deg
        Site latitude [deg].
    longitude_deg
        Site longitude [deg].
    day
        Calendar day.

    Returns
    -------
    float
        Linke turbidity [-] (air mass 2 convention).

    Notes
    -----
    The monthly values come from the climatology shipped with pvlib
    (:func:`pvlib.clearsky.lookup_linke_turbidity`, Remund et al. 2003). Each is taken to hold
    on the 15th of its month and the day's value is interpolated linearly between the two
    nearest 15ths (December and January wrap round). Interpolation is done here rather than by
    pvlib because pvlib 0.16's own interpolation uses a pandas accessor deprecated in pandas 3.

    References
    ----------
    J. Remund, L. Wald, M. Lefèvre, T. Ranchin, J. Page, "Worldwide Linke turbidity
    information", Proc. ISES Solar World Congress, Göteborg, 2003.
    """
    monthly = _monthly_linke_turbidity(latitude_deg, longitude_deg)
    year = day.year
    # Anchors: 15 Dec of last year, the twelve 15ths, 15 Jan of next year.
    anchors = [date(year - 1, 12, 15), *(date(year, m, 15) for m in range(1, 13))]
    anchors.append(date(year + 1, 1, 15))
    values = [monthly[11], *monthly, monthly[0]]
    x = [(a - day).days for a in anchors]
    return float(np.interp(0.0, x, values))


@lru_cache(maxsize=4096)
def _sky(
    latitude_deg: float, longitude_deg: float, altitude_m: float, day: date
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apparent zenith, azimuth [deg], DNI, GHI, DHI [W/m²] at the day's sample times."""
    location = pvlib.location.Location(
        latitude_deg, longitude_deg, tz=_UTC_OFFSET_HOURS, altitude=altitude_m
    )
    midnight = datetime(day.year, day.month, day.day, tzinfo=JST)
    times = pd.date_range(
        midnight + timedelta(minutes=SAMPLE_MINUTES / 2),
        periods=SLOTS_PER_DAY * SAMPLES_PER_SLOT,
        freq=f"{SAMPLE_MINUTES:g}min",
    )
    position = location.get_solarposition(times)
    # A scalar for the day: pvlib's own per-timestamp path uses a pandas accessor deprecated
    # in pandas 3; the Sun–Earth distance changes by < 0.1 % in a day.
    dni_extra = float(pvlib.irradiance.get_extra_radiation(day.timetuple().tm_yday))
    sky = location.get_clearsky(
        times,
        model="ineichen",
        solar_position=position,
        dni_extra=dni_extra,
        linke_turbidity=linke_turbidity(latitude_deg, longitude_deg, day),
    )
    arrays = (
        position["apparent_zenith"].to_numpy(dtype=float),
        position["azimuth"].to_numpy(dtype=float),
        sky["dni"].to_numpy(dtype=float),
        sky["ghi"].to_numpy(dtype=float),
        sky["dhi"].to_numpy(dtype=float),
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def clear_sky_poa_w_m2(cfg: PVConfig, day: date) -> np.ndarray:
    """Clear-sky plane-of-array irradiance at the day's 288 sample times.

    Parameters
    ----------
    cfg
        The PV system.
    day
        JST calendar day.

    Returns
    -------
    numpy.ndarray
        288 values [W/m²], sample ``i`` at 00:02:30 + 5 min × i JST; 0 at night.

    Notes
    -----
    Isotropic sky (Liu and Jordan 1963):

    .. math::

        E_{poa} = DNI \\max(0, \\cos\\theta_i) + DHI \\frac{1 + \\cos\\beta}{2}
                  + GHI\\, \\rho \\frac{1 - \\cos\\beta}{2}

    with angle of incidence :math:`\\theta_i`, tilt :math:`\\beta` and albedo :math:`\\rho` =
    0.25. The clear-sky DNI, GHI, DHI are Ineichen–Perez (Ineichen and Perez 2002), chosen over
    the simplified Solis model because its Linke turbidity comes with a worldwide monthly
    climatology in pvlib, so Tokyo's hazier summer is reflected without our own aerosol data.

    References
    ----------
    P. Ineichen, R. Perez, "A new airmass independent formulation for the Linke turbidity
    coefficient", Solar Energy 73(3), 151–157, 2002. https://doi.org/10.1016/S0038-092X(02)00045-2

    B. Y. H. Liu, R. C. Jordan, "The long-term average performance of flat-plate solar-energy
    collectors", Solar Energy 7(2), 53–74, 1963.

    P. G. Loutzenhiser et al., "Empirical validation of models to compute solar irradiance on
    inclined surfaces for building energy simulation", Solar Energy 81(2), 254–267, 2007.
    https://doi.org/10.1016/j.solener.2006.03.009
    """
    _check_day(day)
    zenith, azimuth, dni, ghi, dhi = _sky(cfg.latitude_deg, cfg.longitude_deg, cfg.altitude_m, day)
    irradiance = pvlib.irradiance.get_total_irradiance(
        cfg.tilt_deg,
        cfg.azimuth_deg,
        zenith,
        azimuth,
        dni,
        ghi,
        dhi,
        albedo=GROUND_ALBEDO,
        model="isotropic",
    )
    poa: np.ndarray = np.nan_to_num(np.asarray(irradiance["poa_global"], dtype=float), nan=0.0)
    clipped: np.ndarray = np.maximum(poa, 0.0)
    return clipped


@lru_cache(maxsize=8192)
def _clear_sky_wh(cfg: PVConfig, day: date) -> np.ndarray:
    poa = clear_sky_poa_w_m2(cfg, day)
    dc_kw: np.ndarray = cfg.capacity_kw * poa / STC_IRRADIANCE_W_M2 * (1.0 - cfg.losses)
    ac_kw = np.minimum(dc_kw * cfg.inverter_efficiency, cfg.capacity_kw)
    mean_kw: np.ndarray = ac_kw.reshape(SLOTS_PER_DAY, SAMPLES_PER_SLOT).mean(axis=1)
    energy_wh = mean_kw * (SLOT_HOURS * 1000.0)
    energy_wh.setflags(write=False)
    return energy_wh


def clear_sky_wh(cfg: PVConfig, day: date) -> np.ndarray:
    """Clear-sky AC energy of each half-hour slot of a JST day.

    Parameters
    ----------
    cfg
        The PV system.
    day
        JST calendar day.

    Returns
    -------
    numpy.ndarray
        48 floats [Wh], slot ``k`` covering 00:00 + 30 min × k JST; a fresh array per call.

    Notes
    -----
    .. math::

        P_{dc} = P_{nom} \\frac{E_{poa}}{1000\\ \\mathrm{W/m^2}} (1 - L), \\quad
        P_{ac} = \\min(\\eta_{inv} P_{dc}, P_{nom}), \\quad
        E_k = \\frac{0.5\\ \\mathrm{h}}{6} \\sum_{j=0}^{5} P_{ac}(t_{k,j})

    with :math:`E_{poa}` from :func:`clear_sky_poa_w_m2`, the losses :math:`L` standing for
    wiring, soiling, module temperature and mismatch together (a PVWatts-style lumped loss), and
    :math:`t_{k,j}` = slot start + 2.5 min + 5 min × j. Results are cached per (cfg, day):
    configs are frozen, and a community's sites share a few configs.
    """
    return _clear_sky_wh(cfg, day).copy()


def _check_clearness(value: float, field: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(field, f"must be in [0, 1], got {value!r}")


def pv_wh(cfg: PVConfig, day: date, weather: DayWeather) -> list[int]:
    """Actual AC energy per slot: clear sky × the slot's clearness, floored to whole Wh.

    Parameters
    ----------
    cfg
        The PV system.
    day
        JST calendar day; must be ``weather.day``.
    weather
        The sky over the site that day (shared, or :func:`~peerpower.devices.weather.site_weather`).

    Returns
    -------
    list of int
        48 values [Wh], each ≤ the clear-sky value of its slot.

    Notes
    -----
    :math:`E_k = \\lfloor c_k E^{cs}_k \\rfloor`. Flooring (not rounding) keeps every reading at or
    below clear sky and never credits a meter with energy not produced.
    """
    if weather.day != day:
        raise InvalidInput(
            "weather.day", f"is {weather.day.isoformat()}, expected {day.isoformat()}"
        )
    clearness = np.asarray(weather.clearness, dtype=float)
    return [int(e) for e in np.floor(clear_sky_wh(cfg, day) * clearness)]


def forecast_pv_wh(cfg: PVConfig, day: date, recent_clearness: float) -> list[int]:
    """Persistence forecast: clear sky × the recent mean clearness, floored to whole Wh.

    Parameters
    ----------
    cfg
        The PV system.
    day
        JST calendar day to forecast.
    recent_clearness
        Mean clearness of the recent past [-] in [0, 1], e.g. of yesterday
        (:attr:`~peerpower.devices.weather.DayWeather.mean_clearness`), or measured output over
        clear-sky output.

    Returns
    -------
    list of int
        48 values [Wh].
    """
    _check_clearness(recent_clearness, "recent_clearness")
    return [int(e) for e in np.floor(clear_sky_wh(cfg, day) * recent_clearness)]
