"""An electric or plug-in hybrid vehicle: a battery that leaves home on trips.

Sign convention
---------------
Energies are at the site's AC bus, per half-hour slot [Wh]. ``step(day, slot, request_wh)`` takes
a request > 0 to charge (energy drawn from the bus) or < 0 to discharge (vehicle-to-home, energy
delivered to the bus) and returns the energy actually exchanged with the bus, with the same sign.
It is limited by the charger's power × 0.5 h and by the state-of-charge limits, and is 0 while the
car is away. With the one-way efficiency η the stored energy changes by ``+bus × η`` when charging
and by ``−bus / η`` when discharging (``peerpower.devices.battery.exchange_wh``).

Trips
-----
A :class:`Trip` leaves at the start of ``depart_slot`` and is back, plugged in, at the start of
``return_slot`` of the same day: the car is away in slots ``depart_slot ≤ s < return_slot``. On
return the stored energy drops by ``distance_km × consumption_wh_per_km`` (traction energy drawn
from the cells; the charger's efficiency does not apply). The physics keep only the SOC floor:
keeping enough energy for the next trip is the controller's job, and :attr:`EV.departed_below_need`
counts the departures where it failed. Energy a trip needs below the floor is, for an EV, recorded
as :attr:`EV.unserved_wh` (the car arrives at the floor); for a PHEV it is supplied by the engine
and recorded as :attr:`EV.fuel_kwh` and :attr:`EV.fuel_cost_yen`.

Driving patterns are drawn per day from a seed (:class:`DrivingPattern`): the same seed and day
always give the same trips, whatever else was asked before.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from peerpower.devices.battery import (
    charge_limit_wh,
    check_int,
    check_real,
    check_request,
    check_storage,
    discharge_limit_wh,
    exchange_wh,
)
from peerpower.errors import InvalidInput
from peerpower.timeslots import SLOTS_PER_DAY, Slot

GASOLINE_YEN_PER_L = 170.0
"""Retail price of regular gasoline in Japan, about 2021–2024 [yen/L]."""
GASOLINE_KWH_PER_L = 8.9
"""Lower heating value of gasoline, about 32 MJ/L [kWh/L]."""
ENGINE_EFFICIENCY = 0.30
"""Fuel → traction energy efficiency of a PHEV's engine in hybrid mode [1]."""
FUEL_YEN_PER_KWH = GASOLINE_YEN_PER_L / (GASOLINE_KWH_PER_L * ENGINE_EFFICIENCY)
"""Cost of traction energy from fuel, 170 / (8.9 × 0.30) ≈ 63.7 [yen/kWh]."""

DEPARTURE_TOLERANCE_WH = 1e-3
"""A departure counts as below need only when short by more than this [Wh] (float drift)."""


@dataclass(frozen=True, slots=True)
class EVConfig:
    """An EV or PHEV with its bidirectional (V2H) charger.

    Parameters
    ----------
    capacity_wh
        Battery capacity [Wh].
    soc_min_percent, soc_max_percent
        State-of-charge limits the battery never leaves [%].
    charge_w, discharge_w
        Charger power limits at the AC bus [W]; discharge is vehicle-to-home.
    efficiency
        One-way efficiency η, bus ↔ cells [1].
    consumption_wh_per_km
        Traction energy drawn from the battery per km driven [Wh/km].
    phev
        True for a plug-in hybrid: energy a trip needs below the SOC floor comes from fuel.
    fuel_yen_per_kwh
        Cost of traction energy supplied by the engine [yen/kWh] (PHEV only).
    soc_initial_percent
        State of charge at the start [%], within the limits.

    Notes
    -----
    Defaults for the battery and charger (40 kWh, SOC 20–90 %, 6.7 kW charge, 6.0 kW V2H
    discharge, 86.6 % one-way efficiency) follow [1]_. 150 Wh/km is a typical compact EV.

    The fuel cost default is :data:`FUEL_YEN_PER_KWH`:
    ``price / (heating value × engine efficiency) = 170 yen/L / (8.9 kWh/L × 0.30) ≈ 63.7
    yen/kWh`` of traction energy. Assumptions: gasoline at 170 yen/L; 8.9 kWh/L (lower heating
    value, about 32 MJ/L); 30 % from fuel to the same traction energy the battery would have
    supplied (the electric drive's own losses are taken as included in
    ``consumption_wh_per_km``, so this slightly favours fuel).

    References
    ----------
    .. [1] Energies 14(24), 8309 (2021), doi:10.3390/en14248309.
    """

    capacity_wh: int = 40_000
    soc_min_percent: int = 20
    soc_max_percent: int = 90
    charge_w: int = 6700
    discharge_w: int = 6000
    efficiency: float = 0.866
    consumption_wh_per_km: int = 150
    phev: bool = False
    fuel_yen_per_kwh: float = FUEL_YEN_PER_KWH
    soc_initial_percent: int = 90

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
        check_int("consumption_wh_per_km", self.consumption_wh_per_km, 1)
        if type(self.phev) is not bool:
            raise InvalidInput("phev", f"must be true or false, got {self.phev!r}")
        if check_real("fuel_yen_per_kwh", self.fuel_yen_per_kwh) < 0:
            raise InvalidInput("fuel_yen_per_kwh", f"must be ≥ 0, got {self.fuel_yen_per_kwh}")

    @property
    def min_wh(self) -> float:
        """Stored energy at the SOC floor [Wh]."""
        return self.capacity_wh * self.soc_min_percent / 100

    @property
    def max_wh(self) -> float:
        """Stored energy at the upper SOC limit [Wh]."""
        return self.capacity_wh * self.soc_max_percent / 100


@dataclass(frozen=True, slots=True)
class Trip:
    """One trip of a day: away from the start of ``depart_slot`` to the start of ``return_slot``.

    Parameters
    ----------
    depart_slot
        Slot index 0–46 of the day the car leaves in.
    return_slot
        Slot index of the same day it is back and plugged in again, after ``depart_slot``.
    distance_km
        Distance driven on the whole trip, there and back [km].
    """

    depart_slot: int
    return_slot: int
    distance_km: float

    def __post_init__(self) -> None:
        check_int("depart_slot", self.depart_slot, 0, SLOTS_PER_DAY - 2)
        check_int("return_slot", self.return_slot, 0, SLOTS_PER_DAY - 1)
        if self.return_slot <= self.depart_slot:
            raise InvalidInput(
                "return_slot",
                f"must be after depart_slot ({self.depart_slot}) on the same day, "
                f"got {self.return_slot}",
            )
        if check_real("distance_km", self.distance_km) < 0:
            raise InvalidInput("distance_km", f"must be ≥ 0, got {self.distance_km}")

    def energy_wh(self, consumption_wh_per_km: float) -> float:
        """Traction energy of the trip [Wh]: ``distance_km × consumption_wh_per_km``."""
        return self.distance_km * consumption_wh_per_km


class TripPlan(Protocol):
    """Anything that says which trips a car makes on a day (sorted, not overlapping)."""

    def trips(self, day: date) -> tuple[Trip, ...]: ...


class DailyTrips:
    """The same trips every day: a fixed plan for tests and simple scenarios.

    Parameters
    ----------
    trips
        The day's trips, sorted by departure, each back before the next leaves.
    """

    __slots__ = ("_trips",)

    def __init__(self, trips: tuple[Trip, ...]) -> None:
        self._trips = check_trips(trips)

    def trips(self, day: date) -> tuple[Trip, ...]:
        return self._trips


def check_trips(trips: tuple[Trip, ...], field: str = "trips") -> tuple[Trip, ...]:
    """``trips`` if sorted and not overlapping, else :class:`InvalidInput` naming ``field``."""
    for i in range(1, len(trips)):
        if trips[i].depart_slot < trips[i - 1].return_slot:
            raise InvalidInput(
                f"{field}[{i}].depart_slot",
                f"must not be before the previous trip's return_slot "
                f"({trips[i - 1].return_slot}), got {trips[i].depart_slot}",
            )
    return trips


def _check_window(field: str, window: tuple[int, int], high: int) -> None:
    if (
        type(window) is not tuple
        or len(window) != 2
        or any(type(v) is not int for v in window)
        or not 0 <= window[0] <= window[1] <= high
    ):
        raise InvalidInput(field, f"must be (first, last) slot indices in 0–{high}, got {window!r}")


def _check_probability(field: str, value: float) -> None:
    if not 0.0 <= check_real(field, value) <= 1.0:
        raise InvalidInput(field, f"must be in [0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class DrivingConfig:
    """How a driver uses the car, for :class:`DrivingPattern`.

    Parameters
    ----------
    commuter
        True: drives to work on weekdays (Monday–Friday; public holidays are not modelled).
        False: on weekdays makes errand trips like weekend trips, with
        ``weekday_errand_probability``.
    charge_at_work
        True: the commuter plugs the car in at work. The commute is then two trips, half the
        distance each: to work (the first half hour after leaving) and home (the last half hour
        before coming back), and the car is plugged in at its workplace's charger in between
        (:meth:`DrivingPattern.at_work`).
    commute_probability
        Chance a commuter drives to work on a weekday (else: no trip that day) [1].
    commute_km_mean, commute_km_min, commute_km_max
        Round-trip commute distance: normal around the mean with σ = (max − min) / 4, clipped
        to [min, max] [km].
    commute_depart_slots
        First and last slot index a commute may leave in; (13, 17) is 06:30–08:30, 7:30 ± 1 h.
    commute_return_slots
        First and last slot index a commute may return in; (34, 40) is 17:00–20:00, 18:30 ± 1.5 h.
    weekend_trip_probability
        Chance of a leisure trip on a Saturday or Sunday [1].
    weekday_errand_probability
        Chance of an errand trip on a weekday, non-commuters only [1].
    leisure_km_min, leisure_km_max
        Leisure or errand round-trip distance: triangular on [min, max] with its mode at min
        (mostly short trips; mean (2 min + max) / 3) [km].
    leisure_depart_slots
        First and last slot index a leisure trip may leave in; (18, 28) is 09:00–14:00.
    leisure_duration_slots
        Shortest and longest leisure trip [slots]; (2, 12) is 1–6 h. The return is at slot 47 at
        the latest.
    """

    commuter: bool = True
    charge_at_work: bool = False
    commute_probability: float = 0.95
    commute_km_mean: float = 25.0
    commute_km_min: float = 10.0
    commute_km_max: float = 40.0
    commute_depart_slots: tuple[int, int] = (13, 17)
    commute_return_slots: tuple[int, int] = (34, 40)
    weekend_trip_probability: float = 0.6
    weekday_errand_probability: float = 0.3
    leisure_km_min: float = 5.0
    leisure_km_max: float = 80.0
    leisure_depart_slots: tuple[int, int] = (18, 28)
    leisure_duration_slots: tuple[int, int] = (2, 12)

    def __post_init__(self) -> None:
        if type(self.commuter) is not bool:
            raise InvalidInput("commuter", f"must be true or false, got {self.commuter!r}")
        if type(self.charge_at_work) is not bool:
            raise InvalidInput(
                "charge_at_work", f"must be true or false, got {self.charge_at_work!r}"
            )
        if self.charge_at_work and not self.commuter:
            raise InvalidInput("charge_at_work", "needs a commuter (commuter = true)")
        _check_probability("commute_probability", self.commute_probability)
        _check_probability("weekend_trip_probability", self.weekend_trip_probability)
        _check_probability("weekday_errand_probability", self.weekday_errand_probability)
        low = check_real("commute_km_min", self.commute_km_min)
        mean = check_real("commute_km_mean", self.commute_km_mean)
        high = check_real("commute_km_max", self.commute_km_max)
        if low < 0:
            raise InvalidInput("commute_km_min", f"must be ≥ 0, got {low}")
        if not low <= mean <= high:
            raise InvalidInput(
                "commute_km_mean",
                f"must be within commute_km_min–commute_km_max ({low}–{high}), got {mean}",
            )
        low = check_real("leisure_km_min", self.leisure_km_min)
        high = check_real("leisure_km_max", self.leisure_km_max)
        if not 0 <= low <= high:
            raise InvalidInput(
                "leisure_km_max", f"must be ≥ leisure_km_min ({low}) ≥ 0, got {high}"
            )
        last = SLOTS_PER_DAY - 1
        _check_window("commute_depart_slots", self.commute_depart_slots, last - 1)
        _check_window("commute_return_slots", self.commute_return_slots, last)
        gap = 2 if self.charge_at_work else 0  # the two legs need a slot each
        if self.commute_return_slots[0] <= self.commute_depart_slots[1] + gap:
            raise InvalidInput(
                "commute_return_slots",
                f"must start after commute_depart_slots ({self.commute_depart_slots}), "
                f"got {self.commute_return_slots}",
            )
        _check_window("leisure_depart_slots", self.leisure_depart_slots, last - 1)
        _check_window("leisure_duration_slots", self.leisure_duration_slots, last)
        if self.leisure_duration_slots[0] < 1:
            raise InvalidInput(
                "leisure_duration_slots",
                f"must be at least 1 slot long, got {self.leisure_duration_slots}",
            )


class DrivingPattern:
    """Seeded random trips of one driver, drawn afresh for each day.

    Parameters
    ----------
    cfg
        The driver's habits.
    seed
        Any integer; together with the day it fixes the day's trips.

    Notes
    -----
    Each day has its own generator, seeded with SHA-256 of ``(seed, day)``, so
    ``trips(day)`` depends on nothing else: not on the order days are asked in, nor on the
    process (Python's string hashing is not involved). A day has at most one trip (a commute to
    a workplace charger: its two legs).
    """

    __slots__ = ("_cache", "cfg", "seed")

    def __init__(self, cfg: DrivingConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = check_int("seed", seed, -(2**63), 2**63 - 1)
        self._cache: dict[date, tuple[Trip, ...]] = {}

    def _rng(self, day: date) -> random.Random:
        digest = hashlib.sha256(f"peerpower/driving\0{self.seed}\0{day.isoformat()}".encode())
        return random.Random(int.from_bytes(digest.digest()[:16], "big"))

    def trips(self, day: date) -> tuple[Trip, ...]:
        """The trips of ``day``: a weekday commute, a leisure or errand trip, or none."""
        got = self._cache.get(day)
        if got is None:
            if len(self._cache) > 8:
                self._cache.clear()
            got = self._cache[day] = self._draw(day)
        return got

    def at_work(self, day: date) -> tuple[int, int] | None:
        """The slots ``[first, end)`` of ``day`` the car is plugged in at work, if it is."""
        if not self.cfg.charge_at_work:
            return None
        trips = self.trips(day)
        if len(trips) != 2:
            return None
        return trips[0].return_slot, trips[1].depart_slot

    def _draw(self, day: date) -> tuple[Trip, ...]:
        cfg = self.cfg
        rng = self._rng(day)
        weekend = day.weekday() >= 5
        if cfg.commuter and not weekend:
            if rng.random() >= cfg.commute_probability:
                return ()
            depart = rng.randint(*cfg.commute_depart_slots)
            back = rng.randint(*cfg.commute_return_slots)
            sigma = (cfg.commute_km_max - cfg.commute_km_min) / 4
            km = min(
                max(rng.gauss(cfg.commute_km_mean, sigma), cfg.commute_km_min), cfg.commute_km_max
            )
            if cfg.charge_at_work:
                half = round(km / 2, 1)
                return (Trip(depart, depart + 1, half), Trip(back - 1, back, half))
            return (Trip(depart, back, round(km, 1)),)
        chance = cfg.weekend_trip_probability if weekend else cfg.weekday_errand_probability
        if rng.random() >= chance:
            return ()
        depart = rng.randint(*cfg.leisure_depart_slots)
        back = min(depart + rng.randint(*cfg.leisure_duration_slots), SLOTS_PER_DAY - 1)
        km = rng.triangular(cfg.leisure_km_min, cfg.leisure_km_max, cfg.leisure_km_min)
        return (Trip(depart, back, round(km, 1)),)


def _slot_number(day: date, slot: int) -> int:
    """Slots since 0001-01-01#00; also checks ``slot`` (0–47)."""
    Slot(day, slot)
    return day.toordinal() * SLOTS_PER_DAY + slot


class EV:
    """An EV or PHEV at a site: its battery, where it is, and what its trips cost.

    Parameters
    ----------
    cfg
        The car and its charger.
    pattern
        Its trips (a :class:`DrivingPattern`, :class:`DailyTrips` or any :class:`TripPlan`).

    Notes
    -----
    The car keeps a clock: every call with a ``(day, slot)`` first plays the departures and
    returns up to the start of that slot, in order (on a shared slot, a return before a
    departure), and the clock never goes back (:class:`InvalidInput` on ``slot``). The clock
    starts at the first slot asked about; a trip already under way then is treated as
    departed before it (no departure check), and its return is played. :meth:`step` may be called
    at most once per slot. :meth:`plugged`, :meth:`required_wh` and :meth:`next_trip` depend only
    on the plan and do not move the clock.

    At a departure, ``stored_wh < required_wh`` (by more than :data:`DEPARTURE_TOLERANCE_WH`)
    counts in :attr:`departed_below_need`. At a return, with ``E_trip = distance × consumption``:
    ``E' = E − E_trip`` if that stays above the floor ``E_min``; else ``E' = E_min`` and the
    shortfall ``E_trip − (E − E_min)`` is added to :attr:`unserved_wh` (EV), or to
    :attr:`fuel_kwh` (/1000) at :attr:`EVConfig.fuel_yen_per_kwh` in :attr:`fuel_cost_yen` (PHEV).
    """

    __slots__ = (
        "_clock",
        "_departed_below_need",
        "_driven_km",
        "_fuel_kwh",
        "_last_step",
        "_max_wh",
        "_min_wh",
        "_stored_wh",
        "_trip_wh",
        "_unserved_wh",
        "cfg",
        "pattern",
    )

    def __init__(self, cfg: EVConfig, pattern: TripPlan) -> None:
        self.cfg = cfg
        self.pattern = pattern
        self._min_wh = cfg.min_wh
        self._max_wh = cfg.max_wh
        self._stored_wh = cfg.capacity_wh * cfg.soc_initial_percent / 100
        self._clock: int | None = None
        self._last_step: int | None = None
        self._departed_below_need = 0
        self._unserved_wh = 0.0
        self._fuel_kwh = 0.0
        self._driven_km = 0.0
        self._trip_wh = 0.0

    # --- state -----------------------------------------------------------------------------

    @property
    def stored_wh(self) -> float:
        """Stored energy at the clock [Wh]."""
        return self._stored_wh

    @property
    def soc_percent(self) -> float:
        """State of charge at the clock: stored energy / capacity [%]."""
        percent = self._stored_wh * 100 / self.cfg.capacity_wh
        # clamped so a store at a limit reports the limit exactly, whatever the rounding
        return min(max(percent, self.cfg.soc_min_percent), self.cfg.soc_max_percent)

    @property
    def departed_below_need(self) -> int:
        """Departures with less stored energy than :meth:`required_wh` asked for."""
        return self._departed_below_need

    @property
    def unserved_wh(self) -> float:
        """Traction energy trips needed below the SOC floor, EV only [Wh]: a failure."""
        return self._unserved_wh

    @property
    def fuel_kwh(self) -> float:
        """Traction energy supplied by the engine, PHEV only [kWh]."""
        return self._fuel_kwh

    @property
    def fuel_cost_yen(self) -> float:
        """Cost of that fuel: ``fuel_kwh × fuel_yen_per_kwh`` [yen]."""
        return self._fuel_kwh * self.cfg.fuel_yen_per_kwh

    @property
    def driven_km(self) -> float:
        """Distance of the trips returned from [km]."""
        return self._driven_km

    @property
    def trip_wh(self) -> float:
        """Traction energy of the trips returned from, battery and fuel together [Wh]."""
        return self._trip_wh

    # --- the plan --------------------------------------------------------------------------

    def _trips(self, day: date) -> tuple[Trip, ...]:
        return check_trips(self.pattern.trips(day))

    def plugged(self, day: date, slot: int) -> bool:
        """True when the car is plugged in during ``slot`` of ``day`` (at home, or at work:
        :meth:`at_work`)."""
        _slot_number(day, slot)
        return not any(t.depart_slot <= slot < t.return_slot for t in self._trips(day))

    def at_work(self, day: date, slot: int) -> bool:
        """True when the car is plugged in at its workplace's charger during ``slot``."""
        stay = getattr(self.pattern, "at_work", None)
        if stay is None:
            return False
        window = stay(day)
        return window is not None and window[0] <= slot < window[1]

    def next_trip(self, day: date, slot: int) -> Trip | None:
        """The first trip of ``day`` not yet departed at the start of ``slot``, if any."""
        _slot_number(day, slot)
        return next((t for t in self._trips(day) if t.depart_slot >= slot), None)

    def next_departure(self, day: date, slot: int) -> tuple[int, Trip] | None:
        """The next trip not yet departed at the start of ``slot`` — today's, else tomorrow's —
        and the slots until it leaves (0: it leaves at the start of ``slot``)."""
        trip = self.next_trip(day, slot)
        if trip is not None:
            return trip.depart_slot - slot, trip
        tomorrow = date.fromordinal(day.toordinal() + 1)
        first = next(iter(self._trips(tomorrow)), None)
        if first is None:
            return None
        return SLOTS_PER_DAY - slot + first.depart_slot, first

    def required_wh(self, day: date, slot: int) -> float:
        """Stored energy needed at the next departure (today's, else tomorrow's) [Wh], 0 if
        none is ahead.

        Notes
        -----
        ``E_min + distance × consumption`` for :meth:`next_departure`: the trip's traction energy
        on top of the SOC floor. It can exceed the upper SOC limit for a long trip; the
        shortfall is then unavoidable.
        """
        ahead = self.next_departure(day, slot)
        if ahead is None:
            return 0.0
        return self._min_wh + ahead[1].energy_wh(self.cfg.consumption_wh_per_km)

    def advance(self, day: date, slot: int) -> None:
        """Play the departures and returns up to the start of ``slot`` (the clock moves there;
        :attr:`stored_wh` is then what the car holds as the slot begins)."""
        self._advance(day, slot)

    # --- time ------------------------------------------------------------------------------

    def _advance(self, day: date, slot: int) -> int:
        now = _slot_number(day, slot)
        if self._clock is not None and now < self._clock:
            ordinal, index = divmod(self._clock, SLOTS_PER_DAY)
            clock = Slot(date.fromordinal(ordinal), index)
            raise InvalidInput(
                "slot",
                f"{Slot(day, slot)} is before the car's clock {clock}; time only goes forward",
            )
        start = now if self._clock is None else self._clock + 1
        for ordinal in range(start // SLOTS_PER_DAY, now // SLOTS_PER_DAY + 1):
            base = ordinal * SLOTS_PER_DAY
            trips = self._trips(date.fromordinal(ordinal))
            events = sorted(
                [(t.return_slot, 0, i) for i, t in enumerate(trips)]
                + [(t.depart_slot, 1, i) for i, t in enumerate(trips)]
            )
            for at, kind, i in events:
                if start <= base + at <= now:
                    if kind == 0:
                        self._arrive(trips[i])
                    else:
                        self._depart(trips[i])
        self._clock = now
        return now

    def _depart(self, trip: Trip) -> None:
        need = self._min_wh + trip.energy_wh(self.cfg.consumption_wh_per_km)
        if self._stored_wh < need - DEPARTURE_TOLERANCE_WH:
            self._departed_below_need += 1

    def _arrive(self, trip: Trip) -> None:
        energy = trip.energy_wh(self.cfg.consumption_wh_per_km)
        self._driven_km += trip.distance_km
        self._trip_wh += energy
        available = self._stored_wh - self._min_wh
        if energy <= available:
            self._stored_wh = max(self._stored_wh - energy, self._min_wh)
            return
        self._stored_wh = self._min_wh
        shortfall = energy - available
        if self.cfg.phev:
            self._fuel_kwh += shortfall / 1000
        else:
            self._unserved_wh += shortfall

    # --- the charger -----------------------------------------------------------------------

    def max_charge_wh(self, day: date, slot: int) -> float:
        """Most energy the car can draw from the bus in ``slot`` [Wh at the bus], 0 if away."""
        self._advance(day, slot)
        if not self.plugged(day, slot):
            return 0.0
        return charge_limit_wh(
            self._stored_wh, self._max_wh, self.cfg.charge_w, self.cfg.efficiency
        )

    def max_discharge_wh(self, day: date, slot: int) -> float:
        """Most energy the car can deliver to the bus in ``slot`` [Wh at the bus], 0 if away.

        Only the SOC floor limits it: keeping the next trip's energy is the controller's job.
        """
        self._advance(day, slot)
        if not self.plugged(day, slot):
            return 0.0
        return discharge_limit_wh(
            self._stored_wh, self._min_wh, self.cfg.discharge_w, self.cfg.efficiency
        )

    def step(self, day: date, slot: int, request_wh: float) -> float:
        """Exchange energy with the bus in ``slot`` of ``day``.

        Parameters
        ----------
        day, slot
            The slot [JST day, index 0–47]; later than the last step's.
        request_wh
            Requested exchange [Wh at the bus]: > 0 charge, < 0 discharge (V2H).

        Returns
        -------
        float
            Energy exchanged [Wh at the bus], same sign as the request; 0.0 while the car is
            away; else limited by power × 0.5 h and the SOC limits.
        """
        request = check_request(request_wh)
        if self._last_step is not None and _slot_number(day, slot) <= self._last_step:
            raise InvalidInput("slot", f"{Slot(day, slot)} was already stepped; step once a slot")
        self._last_step = self._advance(day, slot)
        if not self.plugged(day, slot):
            return 0.0
        bus, self._stored_wh = exchange_wh(
            self._stored_wh,
            request,
            min_wh=self._min_wh,
            max_wh=self._max_wh,
            charge_w=self.cfg.charge_w,
            discharge_w=self.cfg.discharge_w,
            efficiency=self.cfg.efficiency,
        )
        return bus
