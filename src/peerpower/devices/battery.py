"""A stationary battery: an energy store behind an inverter, stepped one half-hour slot at a time.

Sign convention
---------------
Energies are at the site's AC bus, per half-hour slot [Wh]. ``step(request_wh)`` takes a request
> 0 to charge (energy drawn from the bus) or < 0 to discharge (energy delivered to the bus) and
returns the energy actually exchanged with the bus, with the same sign. It is limited by the
inverter's power × 0.5 h and by the state-of-charge limits. With the one-way efficiency η the
stored energy changes by ``+bus × η`` when charging and by ``−bus / η`` when discharging.

The storage physics are plain functions (:func:`charge_limit_wh`, :func:`discharge_limit_wh`,
:func:`exchange_wh`) shared with the EV model (``peerpower.devices.ev``); :class:`Battery` is the
object layer on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from peerpower.errors import InvalidInput

SLOT_HOURS = 0.5
"""Length of a delivery slot [h]."""

SNAP_WH = 1e-6
"""Stored energy this close to a limit [Wh] is set to the limit (see :func:`exchange_wh`)."""


def check_int(field: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or :class:`InvalidInput` naming ``field``."""
    if type(value) is not int:
        raise InvalidInput(field, f"must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"at least {low}" if high is None else f"{low}–{high}"
        raise InvalidInput(field, f"must be {allowed}, got {value}")
    return value


def check_real(field: str, value: Any) -> float:
    """``value`` as a finite float (ints accepted, bools not), or :class:`InvalidInput`."""
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InvalidInput(field, f"must be a finite number, got {value!r}")
    return float(value)


def check_storage(
    capacity_wh: Any,
    charge_w: Any,
    discharge_w: Any,
    efficiency: Any,
    soc_min_percent: Any,
    soc_max_percent: Any,
    soc_initial_percent: Any,
) -> None:
    """Check the fields common to a battery's and an EV's configuration.

    Raises
    ------
    InvalidInput
        Naming the first broken field and its value: capacity and powers must be positive
        integers [Wh], [W]; efficiency in (0, 1]; 0 ≤ soc_min_percent < soc_max_percent ≤ 100;
        soc_min_percent ≤ soc_initial_percent ≤ soc_max_percent.
    """
    check_int("capacity_wh", capacity_wh, 1)
    check_int("charge_w", charge_w, 1)
    check_int("discharge_w", discharge_w, 1)
    eta = check_real("efficiency", efficiency)
    if not 0.0 < eta <= 1.0:
        raise InvalidInput("efficiency", f"must be in (0, 1] (one-way), got {efficiency!r}")
    check_int("soc_max_percent", soc_max_percent, 1, 100)
    check_int("soc_min_percent", soc_min_percent, 0, 99)
    if soc_min_percent >= soc_max_percent:
        raise InvalidInput(
            "soc_min_percent",
            f"must be below soc_max_percent ({soc_max_percent}), got {soc_min_percent}",
        )
    check_int("soc_initial_percent", soc_initial_percent, 0, 100)
    if not soc_min_percent <= soc_initial_percent <= soc_max_percent:
        raise InvalidInput(
            "soc_initial_percent",
            f"must be within soc_min_percent–soc_max_percent ({soc_min_percent}–"
            f"{soc_max_percent}), got {soc_initial_percent}",
        )


def check_request(request_wh: Any) -> float:
    """A step's request as a finite float [Wh], or :class:`InvalidInput` naming ``request_wh``."""
    return check_real("request_wh", request_wh)


def charge_limit_wh(stored_wh: float, max_wh: float, power_w: float, efficiency: float) -> float:
    """Most energy a store can draw from the bus in one slot [Wh at the bus].

    Parameters
    ----------
    stored_wh
        Stored energy now [Wh].
    max_wh
        Stored energy at the upper SOC limit [Wh].
    power_w
        Charging power limit at the bus [W].
    efficiency
        One-way efficiency η [1].

    Notes
    -----
    ``min(P_charge × Δt, (E_max − E) / η)``, never negative; Δt = 0.5 h.
    """
    return max(0.0, min(power_w * SLOT_HOURS, (max_wh - stored_wh) / efficiency))


def discharge_limit_wh(stored_wh: float, min_wh: float, power_w: float, efficiency: float) -> float:
    """Most energy a store can deliver to the bus in one slot [Wh at the bus, ≥ 0].

    Parameters
    ----------
    stored_wh
        Stored energy now [Wh].
    min_wh
        Stored energy at the lower SOC limit [Wh].
    power_w
        Discharging power limit at the bus [W].
    efficiency
        One-way efficiency η [1].

    Notes
    -----
    ``min(P_discharge × Δt, (E − E_min) × η)``, never negative; Δt = 0.5 h.
    """
    return max(0.0, min(power_w * SLOT_HOURS, (stored_wh - min_wh) * efficiency))


def exchange_wh(
    stored_wh: float,
    request_wh: float,
    *,
    min_wh: float,
    max_wh: float,
    charge_w: float,
    discharge_w: float,
    efficiency: float,
) -> tuple[float, float]:
    """One slot of a store: the energy exchanged with the bus and the stored energy after.

    Parameters
    ----------
    stored_wh
        Stored energy before the slot [Wh], within ``[min_wh, max_wh]``.
    request_wh
        Requested exchange [Wh at the bus]: > 0 charge, < 0 discharge.
    min_wh, max_wh
        Stored energy at the lower and upper SOC limits [Wh].
    charge_w, discharge_w
        Power limits at the bus [W].
    efficiency
        One-way efficiency η [1].

    Returns
    -------
    tuple[float, float]
        ``(bus_wh, stored_after_wh)``: the exchange [Wh at the bus], same sign as the request and
        no larger in magnitude, and the stored energy after the slot [Wh].

    Notes
    -----
    Charging: ``bus = min(request, charge_limit_wh)``, ``E' = E + η × bus``. Discharging:
    ``bus = −min(−request, discharge_limit_wh)``, ``E' = E + bus / η``. ``E'`` is clamped to
    ``[min_wh, max_wh]`` against float drift, and snapped to a limit it comes within
    :data:`SNAP_WH` (1 µWh) of, so a full store reports exactly 0 Wh of headroom. The snap and the
    clamp change the stored energy by less than 1 µWh per slot.
    """
    if request_wh > 0.0:
        bus = min(request_wh, charge_limit_wh(stored_wh, max_wh, charge_w, efficiency))
        if bus <= 0.0:
            return 0.0, stored_wh
        after = stored_wh + bus * efficiency
    elif request_wh < 0.0:
        bus = -min(-request_wh, discharge_limit_wh(stored_wh, min_wh, discharge_w, efficiency))
        if bus >= 0.0:
            return 0.0, stored_wh
        after = stored_wh + bus / efficiency
    else:
        return 0.0, stored_wh
    if after >= max_wh - SNAP_WH:
        after = max_wh
    elif after <= min_wh + SNAP_WH:
        after = min_wh
    return bus, after


@dataclass(frozen=True, slots=True)
class BatteryConfig:
    """A stationary battery with its inverter.

    Parameters
    ----------
    capacity_wh
        Usable nameplate capacity [Wh].
    charge_w, discharge_w
        Power limits at the AC bus [W].
    efficiency
        One-way efficiency η, bus ↔ cells [1]; the round trip is η².
    soc_min_percent, soc_max_percent
        State-of-charge limits the battery never leaves [%].
    soc_initial_percent
        State of charge at the start [%], within the limits.
    """

    capacity_wh: int = 7000
    charge_w: int = 3000
    discharge_w: int = 3000
    efficiency: float = 0.95
    soc_min_percent: int = 10
    soc_max_percent: int = 100
    soc_initial_percent: int = 50

    def __post_init__(self) -> None:
        check_storage(
            self.capacity_wh,
            self.charge_w,
            self.discharge_w,
            self.efficiency,
            self.soc_min_percent,
            self.soc_max_percent,
            self.soc_initial_percent,
        )

    @property
    def min_wh(self) -> float:
        """Stored energy at the lower SOC limit [Wh]."""
        return self.capacity_wh * self.soc_min_percent / 100

    @property
    def max_wh(self) -> float:
        """Stored energy at the upper SOC limit [Wh]."""
        return self.capacity_wh * self.soc_max_percent / 100


class Battery:
    """A stationary battery's state, stepped one slot at a time (sign convention: module doc).

    Parameters
    ----------
    cfg
        The battery's configuration.
    """

    __slots__ = ("_max_wh", "_min_wh", "_stored_wh", "cfg")

    def __init__(self, cfg: BatteryConfig) -> None:
        self.cfg = cfg
        self._min_wh = cfg.min_wh
        self._max_wh = cfg.max_wh
        self._stored_wh = cfg.capacity_wh * cfg.soc_initial_percent / 100

    @property
    def stored_wh(self) -> float:
        """Stored energy [Wh]."""
        return self._stored_wh

    @property
    def soc_percent(self) -> float:
        """State of charge: stored energy / capacity [%]."""
        percent = self._stored_wh * 100 / self.cfg.capacity_wh
        # clamped so a store at a limit reports the limit exactly, whatever the rounding
        return min(max(percent, self.cfg.soc_min_percent), self.cfg.soc_max_percent)

    def max_charge_wh(self) -> float:
        """Most energy the battery can draw from the bus in this slot [Wh at the bus, ≥ 0]."""
        return charge_limit_wh(
            self._stored_wh, self._max_wh, self.cfg.charge_w, self.cfg.efficiency
        )

    def max_discharge_wh(self) -> float:
        """Most energy the battery can deliver to the bus in this slot [Wh at the bus, ≥ 0]."""
        return discharge_limit_wh(
            self._stored_wh, self._min_wh, self.cfg.discharge_w, self.cfg.efficiency
        )

    def step(self, request_wh: float) -> float:
        """Exchange energy with the bus for one slot.

        Parameters
        ----------
        request_wh
            Requested exchange [Wh at the bus]: > 0 charge, < 0 discharge.

        Returns
        -------
        float
            Energy exchanged [Wh at the bus], same sign as the request, limited by power × 0.5 h
            and by the SOC limits (:func:`exchange_wh`).
        """
        bus, self._stored_wh = exchange_wh(
            self._stored_wh,
            check_request(request_wh),
            min_wh=self._min_wh,
            max_wh=self._max_wh,
            charge_w=self.cfg.charge_w,
            discharge_w=self.cfg.discharge_w,
            efficiency=self.cfg.efficiency,
        )
        return bus
