"""The site controller (the Digital Grid Controller): measure → forecast → bid → deliver → meter.

Each half hour the driver (the simulator, or a test) asks the controller for its transactions
(:meth:`Controller.bid`): it forecasts PV (clear-sky × the day's clearness as the site's
climate and today's measured sky make it, :mod:`.sky`), demand (similar days) and the EV's
availability and trip needs (the driver's pattern) for the open slots, asks its policy for
the bids it wants standing, and signs orders for what changed — cancelling the orders it no
longer wants before their gate. When a slot is delivered
(:meth:`Controller.deliver`), it learns its contracts (energy bought and sold in the market),
dispatches its battery and EV to meet them — the EV first takes what its next trip needs — and
the meter reports the slot's import and export; whatever the market did not cover comes from or
goes to the retail provider at its tariff and buyback.

Energy balance each slot at the site's bus [Wh]: PV + import + discharge = load + charge +
export (import and export quantised to whole Wh).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from peerpower.agents.catalogue import SiteSpec, car_account_id
from peerpower.agents.policies.ev_cheap import ev_cheap_bids
from peerpower.agents.policy import (
    IMBALANCE_SEN_PER_KWH,
    RETAIL_BUYBACK_SEN_PER_KWH,
    RETAIL_TARIFF_SEN_PER_KWH,
    Bid,
    SiteView,
    StorageView,
    house_need,
    later_surplus_prices,
    make_policy,
    prefix_consistent,
)
from peerpower.agents.prices import PriceForecast
from peerpower.agents.sizing import ERROR_DAYS, ErrorBook, ErrorDist
from peerpower.agents.sky import day_sky, slot_prior
from peerpower.crypto import KeyPair, sha256
from peerpower.devices.battery import Battery, BatteryConfig
from peerpower.devices.ev import EV, DrivingPattern, EVConfig
from peerpower.devices.load import forecast_load_wh, load_wh
from peerpower.devices.meter import Meter, bus_balance
from peerpower.devices.pv import PVConfig, clear_sky_wh, forecast_pv_wh, pv_wh
from peerpower.devices.weather import Weather, kind_of
from peerpower.errors import InvalidInput, PeerpowerError
from peerpower.ledger.transactions import order_id, sign_body, sign_encoded
from peerpower.timeslots import DEFAULT_GATE_MINUTES, SLOTS_PER_DAY, Slot, slot_of
from peerpower.units import DEFAULT_LOT_WH

HORIZON_SLOTS = 48
Unsigned = tuple[KeyPair, dict[str, Any], bytes]  # key, body, the body's canonical bytes
Priors = tuple[ErrorDist, ErrorDist]  # a slot's error prior for a surplus and for a deficit
REFERENCE_PV = PVConfig(capacity_kw=1.0)  # the panel whose forecast tells when the sun shines
DEFAULT_CLEARNESS = 0.7  # the sky a controller forecasts before it has measured one


@dataclass(frozen=True, slots=True)
class MarketTerms:
    """What a controller needs to know of the market and the retail provider."""

    chain: str  # the genesis' tx_chain
    gate_minutes: int = DEFAULT_GATE_MINUTES
    lot_wh: int = DEFAULT_LOT_WH
    price_min_sen_per_kwh: int = 0
    price_max_sen_per_kwh: int = 10_000
    tariff_sen_per_kwh: int = RETAIL_TARIFF_SEN_PER_KWH
    buyback_sen_per_kwh: int = RETAIL_BUYBACK_SEN_PER_KWH
    max_order_wh: int = 100_000
    imbalance_sen_per_kwh: int = IMBALANCE_SEN_PER_KWH

    def __post_init__(self) -> None:
        if not isinstance(self.chain, str) or not _SAFE.fullmatch(self.chain):
            raise InvalidInput(
                "chain", f"must be a chain id of A–Z a–z 0–9 . _ -, got {self.chain!r}"
            )
        for name in (
            "gate_minutes",
            "lot_wh",
            "price_min_sen_per_kwh",
            "price_max_sen_per_kwh",
            "tariff_sen_per_kwh",
            "buyback_sen_per_kwh",
            "max_order_wh",
            "imbalance_sen_per_kwh",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise InvalidInput(name, f"must be a whole number ≥ 0, got {value!r}")
        if self.lot_wh == 0 or self.max_order_wh < self.lot_wh:
            raise InvalidInput("max_order_wh", f"must be at least one lot, got {self.max_order_wh}")
        if self.buyback_sen_per_kwh > self.tariff_sen_per_kwh:
            raise InvalidInput(
                "buyback_sen_per_kwh",
                f"{self.buyback_sen_per_kwh} is above the tariff {self.tariff_sen_per_kwh}",
            )


_SAFE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened at the site in one slot [Wh]."""

    slot: Slot
    pv_wh: int
    load_wh: int
    charge_wh: float
    discharge_wh: float
    import_wh: int
    export_wh: int
    bought_wh: int
    sold_wh: int
    battery_soc_percent: float | None
    ev_soc_percent: float | None
    ev_plugged: bool
    curtailed_wh: int  # PV left unused (pv_wh is what was used)
    reading: dict[str, Any] | None  # the signed meter reading (None: left unsigned)
    unsigned: Unsigned  # the meter's key, the reading's body and its canonical bytes
    # the car at its workplace charger in this slot, metered there on its own account
    car: Delivery | None = None


@dataclass
class Controller:
    """One site's controller (see the module notes)."""

    spec: SiteSpec
    terms: MarketTerms
    key: KeyPair
    meter_key: KeyPair
    weather: Weather
    nonce: int = 1  # the next nonce of the site's account
    # the site's own measured series (day → 48 values [Wh]) in place of the load or PV model
    load_data: dict[date, tuple[int, ...]] | None = None
    pv_data: dict[date, tuple[int, ...]] | None = None
    # the keys of the car's own account at its workplace charger (spec.charge_at)
    car_key: KeyPair | None = None
    car_meter_key: KeyPair | None = None
    car_nonce: int = 1  # the next nonce of the car's account
    replan_every: int = 12  # calls of plan() between re-plans of every open slot (6 h)
    near_slots: int = 4  # slots re-planned at every call
    keep_within_wh: int = 200  # standing orders stay if what is wanted differs by no more
    # ... and a lone order's price by no more than this [sen/kWh]: prices that follow a learnt
    # forecast move a little at every clearing, and an unfilled bid moves the next slots' by
    # rebid_step; re-signing at every step signed 66 % more orders and cancels in `large`
    # than fixed prices did, and took a sixth longer. Above one step, a site re-bids after two.
    keep_within_sen_per_kwh: int = 150
    rebid_step_sen_per_kwh: int = 100  # price forecast move after an unfilled bid
    battery: Battery | None = field(init=False)
    ev: EV | None = field(init=False)
    standing: dict[Slot, list[tuple[str, Bid]]] = field(init=False, default_factory=dict)
    car_standing: dict[Slot, list[tuple[str, Bid]]] = field(init=False, default_factory=dict)
    # the car's purchases at work for slots past their gate, not yet delivered [Wh]
    _car_gated: dict[Slot, int] = field(init=False, default_factory=dict)
    load_history: list[tuple[date, tuple[int, ...]]] = field(init=False, default_factory=list)
    clearness: float = field(init=False, default=DEFAULT_CLEARNESS)
    prices: PriceForecast = field(init=False)  # the market price forecast, learnt online
    # the forecast errors of the site's net position, learnt at each delivery
    errors: ErrorBook = field(init=False, default_factory=ErrorBook)
    signed: Counter[str] = field(init=False, default_factory=Counter)
    _prefix_consistent: bool = field(init=False, default=True)
    _uses_need: bool = field(init=False, default=False)
    # per day: forecasts (until what they rest on changes) and the truth of the physics
    _forecasts: dict[date, tuple[list[int], list[int]]] = field(init=False, default_factory=dict)
    _actual: dict[date, tuple[list[int], list[int]]] = field(init=False, default_factory=dict)
    # per day: the clear-sky output of the site's PV [Wh per slot]; and today's clear-sky and
    # measured PV so far (the nowcast)
    _clear: dict[date, list[float]] = field(init=False, default_factory=dict)
    # (day, clear-sky Wh seen, PV Wh measured, sunlit slots measured)
    _today: tuple[date, float, float, int] = field(init=False, default=(date.min, 0.0, 0.0, 0))
    # the kind of the last day measured (None: none yet) and that day: the sky's forecast
    # starts from it
    _yesterday: str | None = field(init=False, default=None)
    _measured_day: date = field(init=False, default=date.min)
    # per slot not yet delivered: the forecast net position its latest orders rested on [Wh]
    _traded: dict[Slot, int] = field(init=False, default_factory=dict)
    _rounds: int = field(init=False, default=0)
    _delivered: int | None = field(init=False, default=None)
    # the slot before the first open one this controller saw (what it delivers comes after)
    _origin: int = field(init=False, default=-1)
    # the orders that stood at each slot's gate (for :meth:`observe`), the last few
    at_gate: dict[Slot, list[tuple[str, Bid]]] = field(init=False, default_factory=dict)
    _solar: dict[date, list[int]] = field(init=False, default_factory=dict)
    _ev_days: dict[date, EVDay] = field(init=False, default_factory=dict)
    # yesterday's mean clearness (weather service)
    sky: float = field(init=False, default=DEFAULT_CLEARNESS)

    def __post_init__(self) -> None:
        if not 1 <= self.replan_every <= 48:
            raise InvalidInput("replan_every", f"must be 1–48, got {self.replan_every}")
        if not 1 <= self.near_slots <= HORIZON_SLOTS:
            raise InvalidInput("near_slots", f"must be 1–48, got {self.near_slots}")
        if not 0 <= self.keep_within_sen_per_kwh <= 10_000:
            raise InvalidInput(
                "keep_within_sen_per_kwh", f"must be 0–10000, got {self.keep_within_sen_per_kwh}"
            )
        s = self.spec
        self.prices = PriceForecast(self.terms.buyback_sen_per_kwh, self.terms.tariff_sen_per_kwh)
        self.battery = Battery(s.battery) if s.battery is not None else None
        self.ev = None
        if s.ev is not None and s.driving is not None:
            self.ev = EV(s.ev, DrivingPattern(s.driving, _seed(s.seed, "driving")))
        self.policy = make_policy(s.policy, **dict(s.policy_options))
        self._uses_need = bool(getattr(self.policy, "uses_house_need", False))
        self._prefix_consistent = prefix_consistent(self.policy)
        self.meter = Meter(s.id, self.meter_key, self.terms.chain)
        self.car_id: str | None = None
        self.car_meter: Meter | None = None
        if s.charge_at is not None:
            if self.car_key is None or self.car_meter_key is None:
                raise InvalidInput("car_key", f"site {s.id}'s car charges at work: it needs keys")
            self.car_id = car_account_id(s.id)
            self.car_meter = Meter(self.car_id, self.car_meter_key, self.terms.chain)

    # -- forecasting -------------------------------------------------------------------------
    def learn_history(self, before: date) -> None:
        """Learn from the site's own meter data of the days before ``before`` as if the
        controller had run then: the last 14 days of load are the history its load forecasts
        draw similar days from, the day before's PV over clear sky its first PV forecast, and
        — where all it trades on was measured (its load, and its PV if it has PV) — what its
        forecasts of those days would have missed by are its first forecast errors
        (:mod:`.sizing`)."""
        self._replay_errors(before)
        if self.load_data is not None:
            days = sorted(d for d in self.load_data if d < before)[-14:]
            self.load_history = [(d, self.load_data[d]) for d in days]
        s = self.spec
        yesterday = before - timedelta(days=1)
        if self.pv_data is not None and s.pv is not None and yesterday in self.pv_data:
            measured = clearness(self.pv_data[yesterday], clear_sky_wh(s.pv, yesterday))
            if measured is not None:
                self.clearness = measured
                self._yesterday, self._measured_day = kind_of(measured), yesterday
        self._forecasts.clear()

    def _replay_errors(self, before: date) -> None:
        """The forecast errors of the measured days before ``before`` (see
        :meth:`learn_history`), each day forecast from the days before it."""
        s = self.spec
        load_data, pv_data = self.load_data, self.pv_data
        if load_data is None or (s.pv is not None and pv_data is None):
            return
        days = sorted(d for d in load_data if d < before)
        seed = _seed(s.seed, "load")
        for k, day in enumerate(days):
            if day < before - timedelta(days=ERROR_DAYS):
                continue
            history = days[max(0, k - 14) : k]
            load_f = forecast_load_wh(
                s.load, day, seed, [load_data[d] for d in history], list(history)
            )
            pv_f: list[int] | tuple[int, ...] = [0] * SLOTS_PER_DAY
            pv: tuple[int, ...] = (0,) * SLOTS_PER_DAY
            if s.pv is not None:
                assert pv_data is not None
                if day not in pv_data:
                    continue
                pv = pv_data[day]
                sky = None
                yesterday = day - timedelta(days=1)
                if yesterday in pv_data:
                    sky = clearness(pv_data[yesterday], clear_sky_wh(s.pv, yesterday))
                level, _ = day_sky(day.month, None if sky is None else kind_of(sky))
                pv_f = forecast_pv_wh(s.pv, day, level)
            load = load_data[day]
            for i in range(SLOTS_PER_DAY):
                self.errors.add(i, (pv[i] - load[i]) - (pv_f[i] - load_f[i]))
            self.errors.commit()

    def _ev_day(self, day: date) -> EVDay:
        got = self._ev_days.get(day)
        if got is None:
            assert self.ev is not None
            if len(self._ev_days) > 4:
                self._ev_days.clear()
            got = self._ev_days[day] = ev_day(self.ev, day)
        return got

    def _solar_day(self, day: date) -> list[int]:
        """Forecast output of a reference 1 kW panel at the site [Wh per slot]."""
        got = self._solar.get(day)
        if got is None:
            got = self._solar[day] = list(forecast_pv_wh(REFERENCE_PV, day, self.sky))
        return got

    def _forecast_day(self, day: date) -> tuple[list[int], list[int]]:
        got = self._forecasts.get(day)
        if got is None:
            got = self._forecasts[day] = self._make_forecast(day)
        return got

    def _make_forecast(self, day: date) -> tuple[list[int], list[int]]:
        s = self.spec
        pv = [0] * SLOTS_PER_DAY
        if s.pv is not None:
            clear = self._clear.get(day)
            if clear is None:
                clear = self._clear[day] = [float(x) for x in clear_sky_wh(s.pv, day)]
            level, _ = self._sky(day)
            pv = [math.floor(c * level) for c in clear]
        history = [x for _, x in self.load_history]
        dates = [d for d, _ in self.load_history]
        load = forecast_load_wh(s.load, day, _seed(s.seed, "load"), history, dates)
        return list(pv), list(load)

    def open_slots(self, now: datetime) -> tuple[Slot, ...]:
        """The slots whose gate is still ahead, next first, up to :data:`HORIZON_SLOTS`."""
        return open_slots(now, self.terms.gate_minutes)

    def view(self, now: datetime, horizon: int = HORIZON_SLOTS) -> SiteView:
        """What the policy sees: forecasts for the next ``horizon`` open slots."""
        every = self.open_slots(now)
        if self._origin < 0 and every:
            # the slots before the first this controller planned were never its to deliver
            self._origin = _number(every[0]) - 1
        slots = every[:horizon]
        # the house's need looks past a short view: forecast every open slot then
        pv_all, load_all = self._forecast_slots(every if self._uses_need else slots)
        pv, load = pv_all[: len(slots)], load_all[: len(slots)]
        solar: list[int] = []
        for slot in slots:
            solar.append(self._solar_day(slot.day)[slot.index])
        prices = [self.prices.forecast(s.index, w) for s, w in zip(slots, solar, strict=True)]
        battery = None
        if self.battery is not None:
            battery = _storage_view(self.battery.cfg, self._battery_ahead(slots))
        ev = None
        if self.ev is not None:
            days = [self._ev_day(s.day) for s in slots]
            ev = _storage_view(
                self.ev.cfg,
                self.ev.stored_wh,
                tuple(d.home[s.index] for d, s in zip(days, slots, strict=True)),
                tuple(d.required_wh[s.index] for d, s in zip(days, slots, strict=True)),
                tuple(d.trip_wh[s.index] for d, s in zip(days, slots, strict=True)),
            )
        if self._uses_need:
            net = [p - c for p, c in zip(pv_all, load_all, strict=True)]
            prices_all = prices + [
                self.prices.forecast(s.index, self._solar_day(s.day)[s.index])
                for s in every[len(slots) :]
            ]
            if battery is not None:
                battery = self._with_need(
                    battery, every, net, prices_all, len(slots), ev_plugged=False
                )
            elif ev is not None:
                ev = self._with_need(ev, every, net, prices_all, len(slots), ev_plugged=True)
        t = self.terms
        book = self.errors
        return SiteView(
            self.spec.id,
            tuple(slots),
            tuple(pv),
            tuple(load),
            tuple(prices),
            battery,
            ev,
            t.tariff_sen_per_kwh,
            t.buyback_sen_per_kwh,
            t.lot_wh,
            t.price_min_sen_per_kwh,
            t.price_max_sen_per_kwh,
            self.spec.seed,
            tuple(solar),
            tuple(book.dists(s.index) for s in slots),
            t.imbalance_sen_per_kwh,
            self._priors(tuple(slots), load) if self.spec.pv is not None else None,
        )

    def _battery_ahead(self, slots: tuple[Slot, ...]) -> float:
        """What the battery is expected to hold when the first of ``slots`` starts [Wh]: what
        it holds now, less what it will give (plus what it will take) in the slots already past
        their gate and not yet delivered — the orders that stood at their gate as the contracts
        (at most that), their PV and load as forecast. Planning from what it holds now would
        sell the same energy twice."""
        assert self.battery is not None
        cfg = self.battery.cfg
        stored = self.battery.stored_wh
        if not slots:
            return stored
        low, high = cfg.min_wh, cfg.max_wh
        eff, charge, discharge = cfg.efficiency, cfg.charge_w / 2, cfg.discharge_w / 2
        for slot in self._under_way(slots[0]):
            pv, load = self._forecast_slots((slot,))
            orders = self.at_gate.get(slot) or self.standing.get(slot, [])
            sold = sum(b.energy_wh for _, b in orders if b.side == "sell")
            bought = sum(b.energy_wh for _, b in orders if b.side == "buy")
            want = (sold - bought) - (pv[0] - load[0])
            if want > 0:
                stored = max(low, stored - min(want, discharge) / eff)
            else:
                stored = min(high, stored + min(-want, charge) * eff)
        return stored

    @property
    def _done(self) -> int:
        """The last slot delivered (or, before any, the one before the first it planned)."""
        return self._origin if self._delivered is None else self._delivered

    def _under_way(self, first: Slot) -> list[Slot]:
        """The slots after the last delivered and before ``first``, the next open one: past
        their gate, their contracts fixed, not yet delivered."""
        out = []
        for number in range(self._done + 1, _number(first)):
            ordinal, index = divmod(number, SLOTS_PER_DAY)
            out.append(Slot(date.fromordinal(ordinal), index))
        return out

    def _forecast_slots(self, slots: tuple[Slot, ...]) -> tuple[list[int], list[int]]:
        """Forecast PV and load of consecutive ``slots`` [Wh]."""
        if not slots:
            return [], []
        first, last = slots[0], slots[-1]
        f_pv, f_load = self._forecast_day(first.day)
        if last.day == first.day:
            return f_pv[first.index : last.index + 1], f_load[first.index : last.index + 1]
        n_pv, n_load = self._forecast_day(last.day)
        return (
            f_pv[first.index :] + n_pv[: last.index + 1],
            f_load[first.index :] + n_load[: last.index + 1],
        )

    def _with_need(
        self,
        storage: StorageView,
        every: tuple[Slot, ...],
        net: list[int],
        prices: list[int],
        n: int,
        ev_plugged: bool,
    ) -> StorageView:
        """``storage`` with the house's need after each of the first ``n`` open slots and the
        dearest later price its PV surplus could fetch, worked out over all of them
        (``every``, forecast ``net`` = PV − load, forecast ``prices``)."""
        available: tuple[bool, ...] = ()
        if ev_plugged:
            available = tuple(self._ev_day(s.day).home[s.index] for s in every)
        need = house_need(storage, net, available)
        later = later_surplus_prices(net, prices, available)
        return replace(
            storage, need_wh=tuple(need[1 : n + 1]), later_surplus_price=tuple(later[:n])
        )

    # -- bidding -----------------------------------------------------------------------------
    def bid(self, now: datetime, full: bool | None = None) -> list[dict[str, Any]]:
        """Signed transactions that make the standing orders what the policy wants now:
        cancels of orders no longer wanted, then new orders (see :meth:`plan`)."""
        return sign_encoded(self.plan(now, full))

    def plan(self, now: datetime, full: bool | None = None) -> list[Unsigned]:
        """The transactions of :meth:`bid`, unsigned: ``(key, body, canonical bytes)`` to sign
        (a simulator signs a whole community's in one batch with
        :func:`peerpower.ledger.transactions.sign_encoded`).

        Every :attr:`replan_every`-th call (and the first) re-plans all open slots; the calls
        between re-plan only the next :attr:`near_slots`, where forecasts sharpen as the gate
        comes near (bids further ahead stand as they are) — every call for a policy whose bids
        for a slot depend only on the slots before it (soc-table, zi-c), every other call for
        one that plans across slots (ev-cheap-charging, optimizer), which must then see all of
        them. ``full`` forces either."""
        rounds = self._rounds
        self._rounds += 1
        if full is None:
            full = rounds % self.replan_every == 0
            if not full and not self._prefix_consistent and rounds % 2:
                return []  # see below: such a policy re-plans its near slots hourly
        # a near re-plan needs only the next slots, but a policy that plans across slots (EV
        # charging windows, the LP) must see them all — so it does so every other call — and
        # only the near ones are changed
        short = not full and self._prefix_consistent
        view = self.view(now, self.near_slots if short else HORIZON_SLOTS)
        changing = len(view.slots) if full else min(self.near_slots, len(view.slots))
        # what the orders of the next slots rest on: their errors are measured against it
        near = view.slots[: self.near_slots]
        for slot, p, c in zip(near, view.pv_wh, view.load_wh, strict=False):
            self._traded[slot] = p - c
        # policies return the view's own Slot objects: find them by identity (cheap), else by
        # value
        by_id = {id(slot): k for k, slot in enumerate(view.slots)}
        by_value: dict[Slot, int] | None = None
        wanted: list[list[Bid]] = [[] for _ in view.slots]
        for b in self.policy(view):
            k = by_id.get(id(b.slot))
            if k is None:
                if by_value is None:
                    by_value = {slot: j for j, slot in enumerate(view.slots)}
                k = by_value.get(b.slot)
            if k is None or b.energy_wh <= 0:
                continue
            if (
                type(b.energy_wh) is not int
                or type(b.price_sen_per_kwh) is not int
                or b.side not in ("buy", "sell")
                or b.energy_wh % self.terms.lot_wh
            ):
                raise PeerpowerError(f"policy {self.spec.policy!r} made a malformed bid {b}")
            if b.energy_wh > self.terms.max_order_wh:
                b = b._replace(energy_wh=self.terms.max_order_wh)
            wanted[k].append(b)
        if view.slots:
            # gate passed: what stands is the market's now (kept a while for observe())
            first = _number(view.slots[0])
            for slot in [x for x in self.standing if _number(x) < first]:
                self.at_gate[slot] = self.standing.pop(slot)
            for slot in [x for x in self.at_gate if _number(x) < first - 8]:
                del self.at_gate[slot]
        out: list[Unsigned] = []
        self.nonce = self._orders(
            out,
            self.spec.id,
            self.key,
            self.nonce,
            self.standing,
            view.slots[:changing],
            wanted[:changing],
        )
        if self.car_id is not None and (full or rounds % 2 == 0):
            self._plan_car(now, out)
        return out

    def _plan_car(self, now: datetime, out: list[Unsigned]) -> None:
        """The car's orders at its workplace charger, on its own account, every open slot
        re-planned: ``ev-cheap-charging`` on the car alone, plugged in only while at work —
        what the trip home needs in the cheapest slots there, and as much as it can take in a
        slot no dearer than the cheapest forecast price while it is plugged in at home within
        the horizon (there is no better time to charge ahead)."""
        assert self.car_id is not None and self.car_key is not None and self.ev is not None
        view = self.view(now)
        if view.ev is None or not view.slots:
            return
        days = [self._ev_day(s.day) for s in view.slots]
        at_work = tuple(d.at_work[s.index] for d, s in zip(days, view.slots, strict=True))
        home = [p for p, on in zip(view.prices_sen_per_kwh, view.ev.plugged, strict=True) if on]
        cheap = min(home, default=view.tariff_sen_per_kwh)
        zeros = (0,) * len(view.slots)
        first = _number(view.slots[0])
        done = self._done
        for slot in [x for x in self.car_standing if _number(x) < first]:
            bids = self.car_standing.pop(slot)
            if _number(slot) > done:  # (a slot delivered while its home could not bid: gone)
                self._car_gated[slot] = sum(b.energy_wh for _, b in bids if b.side == "buy")
        for slot in [x for x in self._car_gated if _number(x) <= done]:
            del self._car_gated[slot]
        # what it bought for slots whose gate has passed is on its way, and at home it may
        # charge at full power in the slots under way: count both as stored (the most it may
        # hold: a purchase it has no room for is charged the imbalance price)
        ev = view.ev
        coming = sum(self._car_gated.values()) * ev.efficiency
        for slot in self._under_way(view.slots[0]):
            if self._ev_day(slot.day).home[slot.index]:
                coming += ev.charge_wh * ev.efficiency
        stored = min(ev.max_wh, ev.stored_wh + coming)
        car = replace(
            view,
            site=self.car_id,
            pv_wh=zeros,
            load_wh=zeros,
            battery=None,
            ev=replace(view.ev, stored_wh=stored, plugged=at_work, need_wh=()),
            errors=(),
        )
        wanted: list[list[Bid]] = [[] for _ in car.slots]
        index = {slot: k for k, slot in enumerate(car.slots)}
        for b in ev_cheap_bids(car, 1.0, cheap / 100, None, None):
            if b.energy_wh > 0:
                wanted[index[b.slot]].append(
                    b._replace(energy_wh=min(b.energy_wh, self.terms.max_order_wh))
                )
        self.car_nonce = self._orders(
            out, self.car_id, self.car_key, self.car_nonce, self.car_standing, car.slots, wanted
        )

    def _orders(
        self,
        out: list[Unsigned],
        account: str,
        key: KeyPair,
        nonce: int,
        standing_by_slot: dict[Slot, list[tuple[str, Bid]]],
        slots: tuple[Slot, ...],
        wanted: list[list[Bid]],
    ) -> int:
        """Append to ``out`` the cancels and orders that make ``account``'s standing orders
        for ``slots`` what is ``wanted``; the next nonce."""
        chain = self.terms.chain
        for slot, bids in zip(slots, wanted, strict=True):
            standing = standing_by_slot.get(slot, [])
            if _close(standing, bids, self.keep_within_wh, self.keep_within_sen_per_kwh):
                continue
            for oid, _ in standing:
                body = {"chain": chain, "type": "cancel", "from": account, "nonce": nonce}
                body["order"] = oid
                out.append((key, body, _cancel_bytes(chain, account, nonce, oid)))
                nonce += 1
                self.signed["cancel"] += 1
            placed = []
            name = str(slot)
            for b in bids:
                body = {"chain": chain, "type": "order", "from": account, "nonce": nonce}
                body["slot"] = name
                body["side"] = b.side
                body["energy_wh"] = b.energy_wh
                body["price_sen_per_kwh"] = b.price_sen_per_kwh
                out.append((key, body, _order_bytes(chain, account, nonce, name, b)))
                placed.append((order_id(account, nonce), b))
                nonce += 1
                self.signed["order"] += 1
            standing_by_slot[slot] = placed
        return nonce

    def resync(self, next_nonce: int, standing: dict[Slot, list[tuple[str, Bid]]]) -> None:
        """Take the chain's view of the account after some of its transactions were refused
        or dropped (e.g. an order still waiting when its gate passed): the next nonce, and the
        orders standing for each slot still open (on chain or waiting)."""
        self.nonce = next_nonce
        self.standing = {slot: list(bids) for slot, bids in standing.items()}

    def resync_car(self, next_nonce: int, standing: dict[Slot, list[tuple[str, Bid]]]) -> None:
        """:meth:`resync` for the car's account at its workplace charger."""
        self.car_nonce = next_nonce
        self.car_standing = {slot: list(bids) for slot, bids in standing.items()}

    def observe_price(self, slot: Slot, price_sen_per_kwh: int) -> None:
        """A clearing price seen for ``slot``: the price forecast learns it, with the
        community's solar forecast for the slot (:mod:`.prices`)."""
        self.prices.observe(slot.index, price_sen_per_kwh, self._solar_day(slot.day)[slot.index])

    def observe(
        self, slot: Slot, bought_wh: int, sold_wh: int, price_sen_per_kwh: int | None = None
    ) -> None:
        """The outcome of ``slot``'s clearing for this site: its contracts, and the market's
        mean price if there was one. A bid left unfilled makes the next slots' price forecast
        better for the other side — higher after an unfilled buy, lower after an unfilled
        sale, by :attr:`rebid_step_sen_per_kwh`, within the retail prices — so price-following
        policies re-bid with a better price; a clearing price seen for a time of day clears
        that time's nudge."""
        if price_sen_per_kwh is not None:
            self.observe_price(slot, price_sen_per_kwh)
        standing = self.at_gate.get(slot) or self.standing.get(slot, [])
        wanted_buy = sum(b.energy_wh for _, b in standing if b.side == "buy")
        wanted_sell = sum(b.energy_wh for _, b in standing if b.side == "sell")
        step = 0
        if wanted_buy > bought_wh:
            step = self.rebid_step_sen_per_kwh
        elif wanted_sell > sold_wh:
            step = -self.rebid_step_sen_per_kwh
        if not step:
            return
        later = slot
        for _ in range(4):
            later = later.next()
            self.prices.nudge(later.index, step)

    # -- delivery ----------------------------------------------------------------------------
    def deliver(
        self,
        slot: Slot,
        bought_wh: int = 0,
        sold_wh: int = 0,
        sign: bool = True,
        car_bought_wh: int = 0,
    ) -> Delivery:
        """Run the slot's physics: meet the contracts as far as the devices allow, keep the EV
        ready for its trip, and meter the result (``sign=False``: the reading is left for the
        caller to sign, :attr:`Delivery.unsigned`). A car at its workplace charger takes what
        its account bought there (``car_bought_wh``), at least what its next trip needs, and
        is metered there (:attr:`Delivery.car`)."""
        number = slot.day.toordinal() * SLOTS_PER_DAY + slot.index
        if self._delivered is not None and number <= self._delivered:
            raise InvalidInput("slot", f"{slot} is not after the last slot delivered")
        self._delivered = number
        for gone in [x for x in self._traded if _number(x) < number]:
            del self._traded[gone]  # slots skipped (a caller need not deliver every one)
        self._car_gated.pop(slot, None)
        pvs, loads = self._truth(slot.day)
        pv, load = pvs[slot.index], loads[slot.index]
        f_pv, f_load = self._forecast_day(slot.day)
        # the error of the forecast the slot's last orders rested on (the day's, if none)
        traded = self._traded.pop(slot, None)
        if traded is None:
            traded = f_pv[slot.index] - f_load[slot.index]
        self.errors.add(slot.index, (pv - load) - traded)
        self._nowcast(slot, pv, f_pv)
        if self.ev is not None:
            self.ev.advance(slot.day, slot.index)  # a car back at this slot has used its trip
        if slot.index == SLOTS_PER_DAY - 1:
            self._end_of_day(slot.day)
        charge = discharge = 0.0
        ev = self.ev
        at_work = ev is not None and self.car_id is not None and ev.at_work(slot.day, slot.index)
        plugged = ev is not None and not at_work and ev.plugged(slot.day, slot.index)
        need = self._ev_day(slot.day).needed_after_wh[slot.index] if plugged else 0.0
        must = (
            max(0.0, need - ev.stored_wh) / ev.cfg.efficiency if ev is not None and plugged else 0.0
        )
        # what storage should put out (> 0) or take in (< 0) for the bus to export
        # sold − bought, the car taking at least what its next trip needs
        want = (sold_wh - bought_wh) - (pv - load) + must
        if self.battery is not None and want != 0:
            got = self.battery.step(-want)
            if got > 0:
                charge += got
            else:
                discharge -= got
            want += got
        car = None
        if ev is not None and at_work:
            car = self._deliver_car(slot, car_bought_wh, sign)
        elif ev is not None:
            request = 0.0
            if plugged:
                request = must
                if want < 0:
                    request += -want  # surplus left: into the car
                elif want > 0 and must == 0:
                    spare = ev.stored_wh - need
                    request = -min(want, max(0.0, spare) * ev.cfg.efficiency)
            got = ev.step(slot.day, slot.index, request)  # also plays the car's trips
            if got > 0:
                charge += got
            else:
                discharge -= got
        # A net buyer whose own PV would still push energy out takes what it bought instead:
        # its inverter curtails (exporting against a purchase is an imbalance, charged at far
        # more than the PV is worth).
        net_bought = bought_wh - sold_wh
        curtailed = 0
        if net_bought > 0 and pv > 0:
            out = pv - load - charge + discharge
            if out > -net_bought:
                curtailed = min(pv, math.ceil(out + net_bought))
                pv -= curtailed
        imp, exp = bus_balance(pv, load, charge, discharge)
        body = self.meter.reading_body(slot, imp, exp)
        return Delivery(
            slot,
            pv,
            load,
            charge,
            discharge,
            imp,
            exp,
            bought_wh,
            sold_wh,
            None if self.battery is None else self.battery.soc_percent,
            None if ev is None else ev.soc_percent,
            plugged,
            curtailed,
            sign_body(self.meter_key, body) if sign else None,
            (self.meter_key, body, _meter_bytes(self.terms.chain, self.spec.id, body)),
            car,
        )

    def _deliver_car(self, slot: Slot, bought_wh: int, sign: bool) -> Delivery:
        """The car at its workplace charger in ``slot``: it charges what its account bought,
        at least what its next trip needs (the rest from the workplace's retail supply)."""
        ev = self.ev
        assert ev is not None and self.car_meter is not None and self.car_id is not None
        need = self._ev_day(slot.day).needed_after_wh[slot.index]
        must = max(0.0, need - ev.stored_wh) / ev.cfg.efficiency
        got = ev.step(slot.day, slot.index, max(must, float(bought_wh)))
        imp, exp = bus_balance(0, 0, max(0.0, got), max(0.0, -got))
        meter = self.car_meter
        body = meter.reading_body(slot, imp, exp)
        return Delivery(
            slot,
            0,
            0,
            max(0.0, got),
            max(0.0, -got),
            imp,
            exp,
            bought_wh,
            0,
            None,
            ev.soc_percent,
            True,
            0,
            sign_body(meter.key, body) if sign else None,
            (meter.key, body, _meter_bytes(self.terms.chain, self.car_id, body)),
        )

    def _truth(self, day: date) -> tuple[list[int], list[int]]:
        """The day's actual PV and load per slot [Wh] (what the physics does)."""
        got = self._actual.get(day)
        if got is None:
            s = self.spec
            pv = [0] * SLOTS_PER_DAY
            if self.pv_data is not None:
                pv = list(self.pv_data[day])
            elif s.pv is not None:
                pv = list(pv_wh(s.pv, day, self.weather.day(day)))
            if self.load_data is not None:
                load = list(self.load_data[day])
            else:
                load = list(load_wh(s.load, day, _seed(s.seed, "load")))
            got = self._actual[day] = (pv, load)
        return got

    def _nowcast(self, slot: Slot, pv: int, f_pv: list[int]) -> None:
        """The rest of the day's PV forecast follows the sky measured so far today: clear sky ×
        the day's level as the site's climate and today's measured clearness make it
        (:func:`~peerpower.agents.sky.day_sky`)."""
        clear = self._clear.get(slot.day)
        if clear is None or slot.index == SLOTS_PER_DAY - 1:
            return
        day, seen, measured, sunlit = self._today
        if day != slot.day:
            seen = measured = 0.0
            sunlit = 0
        if clear[slot.index] > 0:
            seen += clear[slot.index]
            measured += pv
            sunlit += 1
        self._today = (slot.day, seen, measured, sunlit)
        if seen <= 0:
            return
        level, _ = self._sky(slot.day)
        for j in range(slot.index + 1, SLOTS_PER_DAY):
            f_pv[j] = math.floor(clear[j] * level)

    def _sky(self, day: date) -> tuple[float, ErrorDist]:
        """``day``'s clearness level as forecast now, and the error of that forecast [-]."""
        today, seen, measured, sunlit = self._today
        steps = 1
        if self._yesterday is not None:
            steps = min(366, max(1, (day - self._measured_day).days))
        if today == day and sunlit:
            centi = round(100 * min(1.0, measured / seen))
            return day_sky(day.month, self._yesterday, centi, sunlit, steps)
        return day_sky(day.month, self._yesterday, 0, 0, steps)

    def _priors(self, slots: tuple[Slot, ...], load: list[int]) -> Callable[[int], Priors]:
        """Slot ``k``'s prior of its net position's error (the sky's and the load's) for a
        surplus and for a deficit, worked out when a policy asks."""

        days = {s.day: (self._clear.get(s.day), self._sky(s.day)[1]) for s in slots}

        def prior(k: int) -> Priors:
            slot = slots[k]
            clear, sky = days[slot.day]
            return slot_prior(load[k], clear[slot.index] if clear is not None else 0.0, sky)

        return prior

    def _end_of_day(self, day: date) -> None:
        """Learn from the day: measured PV over clear-sky (the persistence forecast of
        tomorrow's sky) and the day's load (similar-day forecasts); forecasts start again."""
        pv, load = self._truth(day)
        s = self.spec
        if s.pv is not None:
            measured = clearness(pv, self._clear.get(day) or clear_sky_wh(s.pv, day))
            if measured is not None:
                self.clearness = measured
                self._yesterday, self._measured_day = kind_of(measured), day
        self.load_history.append((day, tuple(load)))
        del self.load_history[:-14]
        self.sky = self.weather.day(day).mean_clearness
        self.errors.commit()
        self._forecasts.clear()
        self._solar.clear()
        self._clear.pop(day, None)
        self._actual.pop(day, None)


def clearness(pv: Iterable[int], clear: Iterable[float]) -> float | None:
    """A day's measured PV over its clear-sky output (at most 1); None without sun."""
    total = float(sum(clear))
    return min(1.0, sum(pv) / total) if total > 0 else None


@lru_cache(maxsize=64)
def open_slots(now: datetime, gate_minutes: int) -> tuple[Slot, ...]:
    """The slots open for orders at ``now`` (gate ahead, opened), next first, at most
    :data:`HORIZON_SLOTS`; shared by every controller of a community."""
    slot = slot_of(now)
    out: list[Slot] = []
    while len(out) < HORIZON_SLOTS:
        if slot.gate(gate_minutes) > now and slot.opens <= now:
            out.append(slot)
        elif slot.opens > now:
            break
        slot = slot.next()
    return tuple(out)


# Canonical bytes of the controller's own transactions, written out (the same bytes as
# peerpower.crypto.canonical_unchecked of the body, tested): every field is an integer or a
# string of characters JSON writes as they are (account ids, slot names, hex, buy/sell), so the
# sorted-keys form needs no encoder — signing a community's orders is the hot path.
def _order_bytes(chain: str, site: str, nonce: int, slot: str, b: Bid) -> bytes:
    return (
        f'{{"chain":"{chain}","energy_wh":{b.energy_wh},"from":"{site}","nonce":{nonce},'
        f'"price_sen_per_kwh":{b.price_sen_per_kwh},"side":"{b.side}","slot":"{slot}",'
        f'"type":"order"}}'
    ).encode()


def _cancel_bytes(chain: str, site: str, nonce: int, order: str) -> bytes:
    return (
        f'{{"chain":"{chain}","from":"{site}","nonce":{nonce},"order":"{order}","type":"cancel"}}'
    ).encode()


def _meter_bytes(chain: str, site: str, body: dict[str, Any]) -> bytes:
    return (
        f'{{"chain":"{chain}","export_wh":{body["export_wh"]},"import_wh":{body["import_wh"]},'
        f'"site":"{site}","slot":"{body["slot"]}","type":"meter"}}'
    ).encode()


def _storage_view(
    cfg: BatteryConfig | EVConfig,
    stored_wh: float,
    plugged: tuple[bool, ...] = (),
    reserve_wh: tuple[float, ...] = (),
    trip_wh: tuple[float, ...] = (),
) -> StorageView:
    return StorageView(
        cfg.capacity_wh,
        stored_wh,
        cfg.capacity_wh * cfg.soc_min_percent / 100,
        cfg.capacity_wh * cfg.soc_max_percent / 100,
        cfg.charge_w / 2,
        cfg.discharge_w / 2,
        cfg.efficiency,
        plugged,
        reserve_wh,
        trip_wh,
    )


def _number(slot: Slot) -> int:
    """Slots since 0001-01-01 (cheap to compare)."""
    return slot.day.toordinal() * SLOTS_PER_DAY + slot.index


def _close(
    standing: list[tuple[str, Bid]], wanted: list[Bid], within_wh: int, within_sen: int = 0
) -> bool:
    """Whether the standing orders of a slot are close enough to what is wanted to leave them:
    the same sides at the same prices (a lone order's within ``within_sen``), each side's
    energy at most ``within_wh`` below what is wanted (never above)."""
    if len(standing) == len(wanted) <= 1:
        if not wanted:
            return True
        (_, a), b = standing[0], wanted[0]
        return (
            a.side == b.side
            and abs(a.price_sen_per_kwh - b.price_sen_per_kwh) <= within_sen
            and 0 <= b.energy_wh - a.energy_wh <= within_wh
        )
    have: dict[tuple[str, int], int] = {}
    for _, b in standing:
        have[(b.side, b.price_sen_per_kwh)] = (
            have.get((b.side, b.price_sen_per_kwh), 0) + b.energy_wh
        )
    want: dict[tuple[str, int], int] = {}
    for b in wanted:
        want[(b.side, b.price_sen_per_kwh)] = (
            want.get((b.side, b.price_sen_per_kwh), 0) + b.energy_wh
        )
    if have.keys() != want.keys():
        return False
    # never more standing than wanted (it might not be deliverable), at most within_wh less
    return all(0 <= want[k] - have[k] <= within_wh for k in have)


@dataclass(frozen=True, slots=True)
class EVDay:
    """A car's day as its controller plans it, slot by slot (the trips only, not the state)."""

    plugged: tuple[bool, ...]  # at home or at work
    required_wh: tuple[float, ...]  # stored energy needed at the next departure
    trip_wh: tuple[float, ...]  # energy of the trips returning at the start of the slot
    needed_after_wh: tuple[float, ...]  # see needed_after_wh()
    at_work: tuple[bool, ...] = ()  # plugged in at the workplace's charger
    home: tuple[bool, ...] = ()  # plugged in at home

    def __post_init__(self) -> None:
        if not self.at_work:
            object.__setattr__(self, "at_work", (False,) * len(self.plugged))
        if not self.home:
            home = tuple(p and not w for p, w in zip(self.plugged, self.at_work, strict=True))
            object.__setattr__(self, "home", home)


def ev_day(ev: EV, day: date) -> EVDay:
    """:class:`EVDay` of ``day`` for ``ev``.

    Notes
    -----
    ``needed_after_wh[s]`` is the stored energy the car must hold at the end of slot ``s`` so
    that, charging at full power in every later slot it is plugged in, every trip until the end
    of the next day leaves with what it needs (its floor plus the trip's energy) — back-to-back
    trips included. Backwards from the end of the next day: the requirement at the start of a
    slot is the one at its end less a full-power slot of charging if the car is home; a
    departure at the start of a slot raises it to that trip's need; a return adds the trip's
    energy (it comes off the battery then). Capped at the upper SOC limit.
    """
    cfg = ev.cfg
    per_slot = cfg.charge_w / 2 * cfg.efficiency
    n = 2 * SLOTS_PER_DAY
    away = [False] * n
    departs: dict[int, float] = {}
    returns: dict[int, float] = {}
    for offset, d in enumerate((day, date.fromordinal(day.toordinal() + 1))):
        base = offset * SLOTS_PER_DAY
        for trip in ev.pattern.trips(d):
            used = trip.energy_wh(cfg.consumption_wh_per_km)
            for t in range(base + trip.depart_slot, base + trip.return_slot):
                away[t] = True
            departs[base + trip.depart_slot] = max(
                departs.get(base + trip.depart_slot, 0.0), cfg.min_wh + used
            )
            returns[base + trip.return_slot] = returns.get(base + trip.return_slot, 0.0) + used
    after = [0.0] * n
    need = 0.0
    for t in range(n - 1, -1, -1):
        after[t] = min(need, cfg.max_wh)  # at the end of slot t
        if not away[t]:
            need = max(0.0, need - per_slot)
        if t in departs:
            need = max(need, departs[t])
        need += returns.get(t, 0.0)
    return EVDay(
        tuple(not a for a in away[:SLOTS_PER_DAY]),
        tuple(ev.required_wh(day, k) for k in range(SLOTS_PER_DAY)),
        tuple(returns.get(k, 0.0) for k in range(SLOTS_PER_DAY)),
        tuple(after[:SLOTS_PER_DAY]),
        tuple(ev.at_work(day, k) for k in range(SLOTS_PER_DAY)),
    )


def _seed(seed: int, label: str) -> int:
    """A sub-seed for one use of a site's seed (stable across runs and platforms)."""
    return int.from_bytes(sha256(f"{seed}/{label}".encode())[:8], "big") >> 1
