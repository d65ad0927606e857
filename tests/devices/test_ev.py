"""EV / PHEV: the charger only at home, trips, the SOC floor, fuel, driving patterns."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerpower.devices.ev import (
    EV,
    FUEL_YEN_PER_KWH,
    DailyTrips,
    DrivingConfig,
    DrivingPattern,
    EVConfig,
    Trip,
)
from peerpower.errors import InvalidInput

MONDAY = date(2026, 8, 17)
SATURDAY = date(2026, 8, 22)
COMMUTE = Trip(depart_slot=15, return_slot=37, distance_km=30.0)  # 07:30–18:30, 4500 Wh
TOL_WH = 1e-5


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def run_idle(ev: EV, day: date, first: int, last: int) -> None:
    for slot in range(first, last + 1):
        ev.step(day, slot, 0.0)


def test_ev_defaults_from_paper() -> None:
    cfg = EVConfig()
    assert (cfg.capacity_wh, cfg.soc_min_percent, cfg.soc_max_percent) == (40_000, 20, 90)
    assert (cfg.charge_w, cfg.discharge_w, cfg.efficiency) == (6700, 6000, 0.866)
    ev = EV(cfg, DailyTrips(()))
    assert ev.stored_wh == 36_000.0
    assert ev.soc_percent == 90.0


def test_ev_default_fuel_price() -> None:
    assert pytest.approx(170 / (8.9 * 0.30)) == FUEL_YEN_PER_KWH
    assert 60 < EVConfig().fuel_yen_per_kwh < 70


def test_ev_plugged_between_trips_only() -> None:
    ev = EV(EVConfig(), DailyTrips((COMMUTE,)))
    assert ev.plugged(MONDAY, 14)
    assert not ev.plugged(MONDAY, 15)
    assert not ev.plugged(MONDAY, 36)
    assert ev.plugged(MONDAY, 37)
    assert ev.plugged(MONDAY, 47)


def test_ev_no_exchange_while_away() -> None:
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((COMMUTE,)))
    run_idle(ev, MONDAY, 0, 14)
    assert ev.step(MONDAY, 15, 5000.0) == 0.0
    assert ev.stored_wh == 20_000.0
    assert ev.max_charge_wh(MONDAY, 20) == 0.0
    assert ev.max_discharge_wh(MONDAY, 20) == 0.0
    assert ev.step(MONDAY, 20, -5000.0) == 0.0
    assert ev.step(MONDAY, 36, 5000.0) == 0.0
    assert ev.stored_wh == 20_000.0  # the trip's energy is taken on return


def test_ev_charge_and_discharge_at_home() -> None:
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((COMMUTE,)))
    assert ev.max_charge_wh(MONDAY, 0) == 3350.0  # 6.7 kW × 0.5 h
    assert ev.step(MONDAY, 0, 10_000.0) == 3350.0
    assert ev.stored_wh == pytest.approx(20_000 + 3350 * 0.866)
    assert ev.max_discharge_wh(MONDAY, 1) == 3000.0  # 6.0 kW × 0.5 h
    assert ev.step(MONDAY, 1, -10_000.0) == -3000.0
    assert ev.stored_wh == pytest.approx(20_000 + 3350 * 0.866 - 3000 / 0.866)


def test_ev_trip_reduces_stored_energy() -> None:
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((COMMUTE,)))
    run_idle(ev, MONDAY, 0, 36)
    assert ev.stored_wh == 20_000.0
    ev.step(MONDAY, 37, 0.0)
    assert ev.stored_wh == pytest.approx(20_000 - 30 * 150)
    assert ev.driven_km == 30.0
    assert ev.trip_wh == 4500.0
    assert ev.unserved_wh == 0.0
    assert ev.departed_below_need == 0


def test_ev_trip_played_when_slots_skipped() -> None:
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((COMMUTE,)))
    ev.step(MONDAY, 0, 0.0)
    ev.step(MONDAY + timedelta(days=2), 0, 0.0)  # two commutes played in between
    assert ev.stored_wh == pytest.approx(20_000 - 2 * 4500)
    assert ev.driven_km == 60.0


def test_ev_floor_records_unserved() -> None:
    ev = EV(EVConfig(soc_initial_percent=25), DailyTrips((COMMUTE,)))  # 10 000 Wh, floor 8000
    run_idle(ev, MONDAY, 0, 37)
    assert ev.stored_wh == 8000.0
    assert ev.soc_percent == 20.0
    assert ev.unserved_wh == pytest.approx(2500.0)
    assert ev.fuel_kwh == 0.0
    assert ev.fuel_cost_yen == 0.0
    assert ev.departed_below_need == 1


def test_ev_phev_fuel_accounting() -> None:
    cfg = EVConfig(soc_initial_percent=25, phev=True, fuel_yen_per_kwh=60.0)
    ev = EV(cfg, DailyTrips((COMMUTE,)))
    run_idle(ev, MONDAY, 0, 37)
    assert ev.stored_wh == 8000.0
    assert ev.unserved_wh == 0.0
    assert ev.fuel_kwh == pytest.approx(2.5)
    assert ev.fuel_cost_yen == pytest.approx(2.5 * 60.0)
    assert ev.fuel_cost_yen == pytest.approx(ev.fuel_kwh * cfg.fuel_yen_per_kwh)
    assert ev.departed_below_need == 1


def test_ev_required_wh() -> None:
    errand = Trip(depart_slot=40, return_slot=42, distance_km=10.0)
    ev = EV(EVConfig(), DailyTrips((COMMUTE, errand)))
    assert ev.required_wh(MONDAY, 0) == 8000 + 4500
    assert ev.required_wh(MONDAY, 15) == 8000 + 4500  # departing at the start of this slot
    assert ev.required_wh(MONDAY, 16) == 8000 + 1500
    assert ev.required_wh(MONDAY, 40) == 8000 + 1500
    # after the day's last departure, tomorrow's first trip counts (it may leave at dawn)
    assert ev.required_wh(MONDAY, 41) == 8000 + 4500
    assert ev.next_departure(MONDAY, 41) == (48 - 41 + COMMUTE.depart_slot, COMMUTE)
    assert ev.next_trip(MONDAY, 38) == errand
    assert ev.next_trip(MONDAY, 47) is None
    none = EV(EVConfig(), DailyTrips(()))
    assert none.required_wh(MONDAY, 10) == 0.0
    assert none.next_departure(MONDAY, 10) is None


def test_ev_charged_to_need_departs_fine() -> None:
    ev = EV(EVConfig(soc_initial_percent=20), DailyTrips((COMMUTE,)))
    for slot in range(15):
        gap = ev.required_wh(MONDAY, slot) - ev.stored_wh
        ev.step(MONDAY, slot, max(gap, 0.0) / ev.cfg.efficiency)
    assert ev.stored_wh == pytest.approx(12_500.0)
    run_idle(ev, MONDAY, 15, 47)
    assert ev.departed_below_need == 0
    assert ev.unserved_wh == 0.0
    assert ev.stored_wh == pytest.approx(8000.0, abs=TOL_WH)


def test_ev_discharge_keeps_floor_only() -> None:
    ev = EV(EVConfig(soc_initial_percent=30), DailyTrips((COMMUTE,)))
    ev.step(MONDAY, 0, -3000.0)
    ev.step(MONDAY, 1, -3000.0)
    assert ev.stored_wh == 8000.0
    assert ev.max_discharge_wh(MONDAY, 2) == 0.0
    assert ev.step(MONDAY, 2, -100.0) == 0.0


def test_ev_charging_full_returns_zero() -> None:
    ev = EV(EVConfig(), DailyTrips(()))
    assert ev.max_charge_wh(MONDAY, 0) == 0.0
    assert ev.step(MONDAY, 0, 1000.0) == 0.0
    assert ev.soc_percent == 90.0


def test_ev_first_call_during_trip_plays_its_return() -> None:
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((COMMUTE,)))
    assert ev.step(MONDAY, 20, 1000.0) == 0.0
    run_idle(ev, MONDAY, 21, 37)
    assert ev.stored_wh == pytest.approx(15_500.0)
    assert ev.departed_below_need == 0


def test_ev_back_to_back_trips() -> None:
    first = Trip(10, 20, 10.0)
    second = Trip(20, 30, 20.0)
    ev = EV(EVConfig(soc_initial_percent=50), DailyTrips((first, second)))
    assert not ev.plugged(MONDAY, 20)
    run_idle(ev, MONDAY, 0, 30)
    assert ev.stored_wh == pytest.approx(20_000 - 30 * 150)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32),
    st.booleans(),
    st.lists(st.floats(-8000, 8000, allow_nan=False), min_size=48 * 3, max_size=48 * 3),
)
def test_ev_energy_balance_and_soc_limits(seed: int, phev: bool, requests: list[float]) -> None:
    cfg = EVConfig(phev=phev, soc_initial_percent=50)
    pattern = DrivingPattern(DrivingConfig(), seed)
    ev = EV(cfg, pattern)
    start = date(2026, 8, 21)  # Friday, Saturday, Sunday
    it = iter(requests)
    for day in days(start, 3):
        trips = pattern.trips(day)
        for slot in range(48):
            request = next(it)
            before = ev.stored_wh
            returning = [t for t in trips if t.return_slot == slot]
            if returning:  # the return is played before the step: take it out
                ev.max_charge_wh(day, slot)
                drop = before - ev.stored_wh
                need = returning[0].energy_wh(cfg.consumption_wh_per_km)
                assert drop == pytest.approx(min(need, before - cfg.min_wh), abs=TOL_WH)
                before = ev.stored_wh
            bus = ev.step(day, slot, request)
            after = ev.stored_wh
            if not ev.plugged(day, slot):
                assert bus == 0.0
                assert after == before
            elif request >= 0:
                assert 0.0 <= bus <= min(request, cfg.charge_w * 0.5)
                assert after - before == pytest.approx(bus * cfg.efficiency, abs=TOL_WH)
            else:
                assert max(request, -cfg.discharge_w * 0.5) <= bus <= 0.0
                assert after - before == pytest.approx(bus / cfg.efficiency, abs=TOL_WH)
            assert cfg.min_wh <= after <= cfg.max_wh
            assert cfg.soc_min_percent <= ev.soc_percent <= cfg.soc_max_percent
    if phev:
        assert ev.unserved_wh == 0.0
        assert ev.fuel_cost_yen == pytest.approx(ev.fuel_kwh * cfg.fuel_yen_per_kwh)
    else:
        assert ev.fuel_kwh == 0.0
    total = sum(
        t.energy_wh(cfg.consumption_wh_per_km) for d in days(start, 3) for t in pattern.trips(d)
    )
    assert ev.trip_wh == pytest.approx(total)


def test_ev_clock_only_goes_forward() -> None:
    ev = EV(EVConfig(), DailyTrips(()))
    ev.step(MONDAY, 20, 0.0)
    with pytest.raises(InvalidInput) as err:
        ev.step(MONDAY, 20, 0.0)
    assert err.value.field == "slot"
    with pytest.raises(InvalidInput) as err:
        ev.max_charge_wh(MONDAY, 10)
    assert err.value.field == "slot"


def test_driving_pattern_deterministic_for_a_seed() -> None:
    span = days(MONDAY, 60)
    a = DrivingPattern(DrivingConfig(), 42)
    b = DrivingPattern(DrivingConfig(), 42)
    forward = [a.trips(d) for d in span]
    backward = [b.trips(d) for d in reversed(span)][::-1]
    assert forward == backward
    assert forward == [a.trips(d) for d in span]


def test_driving_pattern_seeds_differ() -> None:
    span = days(MONDAY, 30)
    a = [DrivingPattern(DrivingConfig(), 1).trips(d) for d in span]
    b = [DrivingPattern(DrivingConfig(), 2).trips(d) for d in span]
    assert a != b


def test_driving_pattern_weekday_commute_windows() -> None:
    cfg = DrivingConfig()
    pattern = DrivingPattern(cfg, 7)
    weekdays = [d for d in days(MONDAY, 700) if d.weekday() < 5]
    trips = [t for d in weekdays for t in pattern.trips(d)]
    assert 0.9 * len(weekdays) < len(trips) < len(weekdays)  # commute_probability 0.95
    for trip in trips:
        assert 13 <= trip.depart_slot <= 17  # 07:30 ± 1 h
        assert 34 <= trip.return_slot <= 40  # 18:30 ± 1.5 h
        assert 10.0 <= trip.distance_km <= 40.0
    assert {t.depart_slot for t in trips} == set(range(13, 18))
    mean_km = sum(t.distance_km for t in trips) / len(trips)
    assert mean_km == pytest.approx(25.0, abs=1.5)


def test_driving_pattern_weekend_trips() -> None:
    cfg = DrivingConfig(weekend_trip_probability=0.5)
    pattern = DrivingPattern(cfg, 7)
    weekends = [d for d in days(SATURDAY, 1400) if d.weekday() >= 5]
    daily = [pattern.trips(d) for d in weekends]
    with_trip = [t for ts in daily for t in ts]
    assert 0.4 < len(with_trip) / len(weekends) < 0.6
    for trip in with_trip:
        assert 18 <= trip.depart_slot <= 28
        assert 2 <= trip.return_slot - trip.depart_slot <= 12
        assert 5.0 <= trip.distance_km <= 80.0


def test_driving_pattern_non_commuter_weekdays() -> None:
    cfg = DrivingConfig(commuter=False, weekday_errand_probability=0.3)
    pattern = DrivingPattern(cfg, 3)
    weekdays = [d for d in days(MONDAY, 700) if d.weekday() < 5]
    trips = [t for d in weekdays for t in pattern.trips(d)]
    assert 0.2 < len(trips) / len(weekdays) < 0.4
    assert all(18 <= t.depart_slot <= 28 for t in trips)


def test_driving_pattern_never_and_always() -> None:
    never = DrivingPattern(DrivingConfig(commute_probability=0.0, weekend_trip_probability=0.0), 1)
    assert all(never.trips(d) == () for d in days(MONDAY, 14))
    always = DrivingPattern(DrivingConfig(weekend_trip_probability=1.0), 1)
    assert all(len(always.trips(d)) == 1 for d in days(MONDAY, 14) if d.weekday() >= 5)


def test_invalid_trip_return_before_depart() -> None:
    with pytest.raises(InvalidInput) as err:
        Trip(depart_slot=30, return_slot=30, distance_km=5.0)
    assert err.value.field == "return_slot"


def test_invalid_trip_slot_outside_day() -> None:
    with pytest.raises(InvalidInput) as err:
        Trip(depart_slot=10, return_slot=48, distance_km=5.0)
    assert err.value.field == "return_slot"


@pytest.mark.parametrize("km", [-1.0, math.nan])
def test_invalid_trip_distance(km: float) -> None:
    with pytest.raises(InvalidInput) as err:
        Trip(depart_slot=10, return_slot=12, distance_km=km)
    assert err.value.field == "distance_km"


def test_invalid_trips_overlap() -> None:
    with pytest.raises(InvalidInput) as err:
        DailyTrips((Trip(10, 20, 5.0), Trip(19, 25, 5.0)))
    assert err.value.field == "trips[1].depart_slot"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"capacity_wh": -40_000}, "capacity_wh"),
        ({"soc_min_percent": 95}, "soc_min_percent"),
        ({"efficiency": 0.0}, "efficiency"),
        ({"efficiency": 1.2}, "efficiency"),
        ({"soc_initial_percent": 95}, "soc_initial_percent"),
        ({"soc_initial_percent": 10}, "soc_initial_percent"),
        ({"consumption_wh_per_km": 0}, "consumption_wh_per_km"),
        ({"fuel_yen_per_kwh": -1.0}, "fuel_yen_per_kwh"),
        ({"phev": 1}, "phev"),
    ],
)
def test_invalid_ev_config(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        EVConfig(**fields)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"commute_probability": 1.5}, "commute_probability"),
        ({"weekend_trip_probability": -0.1}, "weekend_trip_probability"),
        ({"commute_km_mean": 50.0}, "commute_km_mean"),
        ({"commute_depart_slots": (17, 13)}, "commute_depart_slots"),
        ({"commute_return_slots": (16, 40)}, "commute_return_slots"),
        ({"leisure_duration_slots": (0, 4)}, "leisure_duration_slots"),
        ({"leisure_km_max": 1.0}, "leisure_km_max"),
    ],
)
def test_invalid_driving_config(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        DrivingConfig(**fields)  # type: ignore[arg-type]
    assert err.value.field == field


def test_invalid_ev_slot() -> None:
    ev = EV(EVConfig(), DailyTrips(()))
    with pytest.raises(InvalidInput) as err:
        ev.step(MONDAY, 48, 0.0)
    assert err.value.field == "slot.index"
