"""Cases found by review: trips across midnight, a car back and leaving again, near re-plans of
policies that plan across slots, trips in the LP, an unreachable reserve, the similar-day load
forecast, and bytes that only canonical inputs may take."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from peerpower.agents.catalogue import SiteSpec, site
from peerpower.agents.controller import Controller, MarketTerms
from peerpower.agents.policies.ev_cheap import ev_cheap_bids
from peerpower.agents.policies.optimizer import plan as lp_plan
from peerpower.agents.policy import Bid, SiteView, StorageView
from peerpower.crypto import KeyPair
from peerpower.devices.ev import EV, DailyTrips, DrivingConfig, Trip
from peerpower.errors import InvalidInput, PeerpowerError
from peerpower.timeslots import JST, Slot

DAY = date(2026, 8, 17)  # a Monday


def ctrl(spec: SiteSpec) -> Controller:
    from peerpower.devices.weather import Weather

    return Controller(
        spec,
        MarketTerms(chain="c"),
        KeyPair.derive("k"),
        KeyPair.derive("m"),
        Weather(1, DAY - timedelta(days=30)),
    )


def test_trip_at_midnight_keeps_its_reserve_overnight() -> None:
    # a night-shift driver leaves at 00:00: the evening's sales must not drain the car
    drive = DrivingConfig(
        commute_probability=1.0, commute_depart_slots=(0, 0), commute_return_slots=(10, 10)
    )
    c = ctrl(site("consumer-phev", "a", seed=3, driving=drive))
    for k in range(36, 48):
        c.deliver(Slot(DAY, k), sold_wh=3000)
    c.deliver(Slot(DAY + timedelta(days=1), 0))
    assert c.ev is not None and c.ev.departed_below_need == 0


def test_car_back_and_leaving_again_charges_for_the_second_trip() -> None:
    c = ctrl(site("consumer-phev", "a", seed=3))
    assert c.spec.ev is not None
    c.ev = EV(c.spec.ev, DailyTrips((Trip(10, 20, 100.0), Trip(21, 30, 100.0))))
    for k in range(22):
        c.deliver(Slot(DAY, k), sold_wh=3000 if k == 20 else 0)
    assert c.ev.departed_below_need == 0


def test_near_replan_does_not_buy_the_car_energy_twice() -> None:
    # the house's own deficit bids at a fixed 25 yen, so the car's purchases stand apart
    c = ctrl(site("consumer-phev", "a", seed=3, policy_options={"deficit_yen": 25.0}))
    e = c.ev
    assert e is not None
    e._stored_wh = e.cfg.min_wh
    tomorrow = DAY + timedelta(days=1)
    need = e.required_wh(tomorrow, 0) - e.stored_wh
    ahead = e.next_departure(tomorrow, 0)
    assert ahead is not None and ahead[1].depart_slot == 16
    for i in range(4, 10):
        c.prices.observe(i, 1300, 0.0)  # 02:00–05:00 cheaper (seen once, no sun)
    c.plan(datetime(2026, 8, 17, 18, 0, tzinfo=JST), full=True)
    c.plan(datetime(2026, 8, 17, 23, 50, tzinfo=JST), full=False)
    bought = sum(
        b.energy_wh
        for slot, standing in c.standing.items()
        if slot.day == tomorrow and slot.index < 16  # before tomorrow's commute leaves
        for _, b in standing
        if b.side == "buy" and b.price_sen_per_kwh != 2500
    )
    assert bought <= need / e.cfg.efficiency + 200


def test_load_forecast_uses_the_same_kind_of_day() -> None:
    c = ctrl(site("consumer", "a", seed=3))
    saturday = date(2026, 8, 22)
    for d in range(14, 0, -1):
        day = saturday - timedelta(days=d)
        c.load_history.append((day, tuple([777 if day.weekday() >= 5 else 111] * 48)))
    _, load = c._make_forecast(saturday)
    assert load == [777] * 48
    _, load = c._make_forecast(saturday - timedelta(days=4))  # Tuesday, from up to Friday
    assert load == [111] * 48


def _view(n: int, **kw: object) -> SiteView:
    slots = tuple(Slot(DAY, k) for k in range(n))
    base: dict[str, object] = {
        "site": "a",
        "slots": slots,
        "pv_wh": (0,) * n,
        "load_wh": (0,) * n,
        "prices_sen_per_kwh": (1725,) * n,
    }
    base.update(kw)
    return SiteView(**base)  # type: ignore[arg-type]


def test_lp_knows_what_a_trip_uses() -> None:
    n = 48
    plugged = tuple(not (16 <= k < 36) for k in range(n))
    reserve = tuple(14000.0 if k <= 16 else 0.0 for k in range(n))
    trip = tuple(6000.0 if k == 36 else 0.0 for k in range(n))
    ev = StorageView(40000, 14000.0, 8000.0, 36000.0, 3350.0, 3000.0, 0.866, plugged, reserve, trip)
    # buying before the trip to sell after it loses to the round trip's losses
    prices = tuple(2500 if 36 <= k < 44 else 2000 for k in range(n))
    view = _view(n, ev=ev, prices_sen_per_kwh=prices)
    _, sells, _, _ = lp_plan(view, "economy", 5000.0, 20.0)
    assert sells[36:44].sum() <= 1  # back at its floor (14,000 − 6,000): nothing to sell


def test_lp_with_an_unreachable_reserve_still_bids_for_the_house() -> None:
    n = 48
    reserve = tuple([30000.0] + [0.0] * (n - 1))
    ev = StorageView(40000, 8000.0, 8000.0, 36000.0, 3350.0, 3000.0, 0.866, (True,) * n, reserve)
    buys, *_ = lp_plan(_view(n, ev=ev, load_wh=(500,) * n), "economy", 5000.0, 20.0)
    assert buys.sum() > 0


def test_ev_cheap_plans_from_the_floor_after_a_trip() -> None:
    n = 48
    plugged = tuple(12 <= k < 40 for k in range(n))
    reserve = tuple(11750.0 if 12 <= k <= 40 else 0.0 for k in range(n))
    ev = StorageView(40000, 11750.0, 8000.0, 36000.0, 3350.0, 3000.0, 0.866, plugged, reserve)
    bids = ev_cheap_bids(_view(n, ev=ev), 1.0, 12.0, 10.0, 25.0)
    assert sum(b.energy_wh for b in bids if b.side == "buy") >= 3750 / 0.866


def test_invalid_market_terms_and_malformed_policy_bids() -> None:
    with pytest.raises(InvalidInput) as info:
        MarketTerms(chain='é"')
    assert info.value.field == "chain"
    with pytest.raises(InvalidInput) as info:
        MarketTerms(chain="c", buyback_sen_per_kwh=3000)
    assert info.value.field == "buyback_sen_per_kwh"
    c = ctrl(site("consumer", "a", seed=3))
    c.policy = lambda v: [Bid(v.slots[0], "buy", True, 2500)]  # type: ignore[arg-type]
    with pytest.raises(PeerpowerError, match="malformed bid"):
        c.plan(datetime(2026, 8, 17, 12, 0, tzinfo=JST), full=True)


def test_deliver_refuses_a_slot_twice() -> None:
    c = ctrl(site("pv-battery", "a", seed=3))
    c.deliver(Slot(DAY, 5))
    with pytest.raises(InvalidInput) as info:
        c.deliver(Slot(DAY, 5))
    assert info.value.field == "slot"
