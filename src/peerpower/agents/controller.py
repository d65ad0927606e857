"""The site controller (the Digital Grid Controller): measure → forecast → bid → deliver → meter.

Each half hour the driver (the simulator, or a test) asks the controller for its transactions
(:meth:`Controller.bid`): it forecasts PV (clear-sky × the clearness it measured lately), demand
(similar days) and the EV's availability and trip needs (the driver's pattern) for the open
slots, asks its policy for the bids it wants standing, and signs orders for what changed —
cancelling the orders it no longer wants before their gate. When a slot is delivered
(:meth:`Controller.deliver`), it learns its contracts (energy bought and sold in the market),
dispatches its battery and EV to meet them — the EV first takes what its next trip needs — and
the meter reports the slot's import and export; whatever the market did not cover comes from or
goes to the retail provider at its tariff and buyback.

Energy balance each slot at the site's bus [Wh]: PV + import + discharge = load + charge +
export (import and export quantised to whole Wh).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from peerpower.agents.catalogue import SiteSpec
from peerpower.agents.policy import (
    RETAIL_BUYBACK_SEN_PER_KWH,
    RETAIL_TARIFF_SEN_PER_KWH,
    Bid,
    SiteView,
    StorageView,
    make_policy,
)
from peerpower.crypto import KeyPair, sha256
from peerpower.devices.battery import Battery
from peerpower.devices.ev import EV, DrivingPattern
from peerpower.devices.load import forecast_load_wh, load_wh
from peerpower.devices.meter import Meter, bus_balance
from peerpower.devices.pv import clear_sky_wh, forecast_pv_wh, pv_wh
from peerpower.devices.weather import Weather
from peerpower.ledger.transactions import Signer, order_id
from peerpower.timeslots import DEFAULT_GATE_MINUTES, SLOTS_PER_DAY, Slot, slot_of
from peerpower.units import DEFAULT_LOT_WH

HORIZON_SLOTS = 48


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
    reading: dict[str, Any]


@dataclass
class Controller:
    """One site's controller (see the module notes)."""

    spec: SiteSpec
    terms: MarketTerms
    key: KeyPair
    meter_key: KeyPair
    weather: Weather
    nonce: int = 1  # the next nonce of the site's account
    battery: Battery | None = field(init=False)
    ev: EV | None = field(init=False)
    standing: dict[Slot, list[tuple[str, Bid]]] = field(init=False, default_factory=dict)
    load_history: list[tuple[date, tuple[int, ...]]] = field(init=False, default_factory=list)
    clearness: float = field(init=False, default=0.7)
    prices: dict[int, int] = field(init=False, default_factory=dict)  # slot index → last price
    signed: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        s = self.spec
        self.battery = Battery(s.battery) if s.battery is not None else None
        self.ev = None
        if s.ev is not None and s.driving is not None:
            self.ev = EV(s.ev, DrivingPattern(s.driving, _seed(s.seed, "driving")))
        self.policy = make_policy(s.policy, **dict(s.policy_options))
        self.meter = Meter(s.id, self.meter_key, self.terms.chain)

    # -- forecasting -------------------------------------------------------------------------
    def _forecast_day(self, day: date) -> tuple[list[int], list[int]]:
        s = self.spec
        pv = [0] * SLOTS_PER_DAY
        if s.pv is not None:
            pv = forecast_pv_wh(s.pv, day, self.clearness)
        history = [x for d, x in self.load_history if (d.weekday() >= 5) == (day.weekday() >= 5)]
        load = forecast_load_wh(s.load, day, _seed(s.seed, "load"), history[-3:])
        return list(pv), list(load)

    def open_slots(self, now: datetime) -> list[Slot]:
        """The slots whose gate is still ahead, next first, up to :data:`HORIZON_SLOTS`."""
        slot = slot_of(now)
        out: list[Slot] = []
        while len(out) < HORIZON_SLOTS:
            if slot.gate(self.terms.gate_minutes) > now and slot.opens <= now:
                out.append(slot)
            elif slot.opens > now:
                break
            slot = slot.next()
        return out

    def view(self, now: datetime) -> SiteView:
        slots = self.open_slots(now)
        days: dict[date, tuple[list[int], list[int]]] = {}
        pv, load, prices = [], [], []
        for slot in slots:
            if slot.day not in days:
                days[slot.day] = self._forecast_day(slot.day)
            pv.append(days[slot.day][0][slot.index])
            load.append(days[slot.day][1][slot.index])
            mid = (self.terms.tariff_sen_per_kwh + self.terms.buyback_sen_per_kwh) // 2
            prices.append(self.prices.get(slot.index, mid))
        battery = None
        if self.battery is not None:
            b = self.battery
            cfg = b.cfg
            battery = StorageView(
                cfg.capacity_wh,
                b.stored_wh,
                cfg.capacity_wh * cfg.soc_min_percent / 100,
                cfg.capacity_wh * cfg.soc_max_percent / 100,
                cfg.charge_w / 2,
                cfg.discharge_w / 2,
                cfg.efficiency,
            )
        ev = None
        if self.ev is not None:
            e = self.ev
            cfg2 = e.cfg
            ev = StorageView(
                cfg2.capacity_wh,
                e.stored_wh,
                cfg2.capacity_wh * cfg2.soc_min_percent / 100,
                cfg2.capacity_wh * cfg2.soc_max_percent / 100,
                cfg2.charge_w / 2,
                cfg2.discharge_w / 2,
                cfg2.efficiency,
                tuple(e.plugged(s.day, s.index) for s in slots),
                tuple(e.required_wh(s.day, s.index) for s in slots),
            )
        rng = random.Random(_seed(self.spec.seed, f"bids/{now.isoformat()}"))
        t = self.terms
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
            rng,
        )

    # -- bidding -----------------------------------------------------------------------------
    def _signer(self) -> Signer:
        return Signer(self.terms.chain, self.spec.id, self.key, self.nonce)

    def bid(self, now: datetime) -> list[dict[str, Any]]:
        """Signed transactions that make the standing orders of the open slots what the policy
        wants now: cancels of orders no longer wanted, then new orders."""
        view = self.view(now)
        wanted: dict[Slot, list[Bid]] = {s: [] for s in view.slots}
        for b in self.policy(view):
            if b.slot in wanted and b.energy_wh > 0:
                wanted[b.slot].append(b)
        for slot in [s for s in self.standing if s not in wanted]:
            del self.standing[slot]  # gate passed: what stands is the market's now
        signer = self._signer()
        out: list[dict[str, Any]] = []
        for slot, bids in wanted.items():
            standing = self.standing.get(slot, [])
            if sorted(b for _, b in standing) == sorted(bids):  # type: ignore[type-var]
                continue
            for oid, _ in standing:
                out.append(signer.cancel(oid))
            placed = []
            for b in bids:
                oid = order_id(self.spec.id, signer.next_nonce)
                out.append(signer.order(str(slot), b.side, b.energy_wh, b.price_sen_per_kwh))
                placed.append((oid, b))
            self.standing[slot] = placed
        self.nonce = signer.next_nonce
        for tx in out:
            self.signed[tx["body"]["type"]] += 1
        return out

    def resync(self, next_nonce: int) -> None:
        """The chain's view of the account: its next nonce (after a refused transaction)."""
        self.nonce = next_nonce

    def observe_price(self, slot: Slot, price_sen_per_kwh: int) -> None:
        """A clearing price seen for ``slot`` (feeds the price forecast of that time of day)."""
        self.prices[slot.index] = price_sen_per_kwh

    # -- delivery ----------------------------------------------------------------------------
    def deliver(self, slot: Slot, bought_wh: int = 0, sold_wh: int = 0) -> Delivery:
        """Run the slot's physics: meet the contracts as far as the devices allow, keep the EV
        ready for its trip, and meter the result."""
        s = self.spec
        sky = self.weather.day(slot.day)
        pv = pv_wh(s.pv, slot.day, sky)[slot.index] if s.pv is not None else 0
        load = load_wh(s.load, slot.day, _seed(s.seed, "load"))[slot.index]
        if s.pv is not None and slot.index == SLOTS_PER_DAY - 1:
            self._learn_clearness(slot.day)
        if slot.index == SLOTS_PER_DAY - 1:
            self.load_history.append(
                (slot.day, tuple(load_wh(s.load, slot.day, _seed(s.seed, "load"))))
            )
            del self.load_history[:-14]
        charge = discharge = 0.0
        ev = self.ev
        plugged = ev is not None and ev.plugged(slot.day, slot.index)
        must = must_charge_wh(ev, slot.day, slot.index) if ev is not None and plugged else 0.0
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
        if ev is not None:
            request = 0.0
            if plugged:
                request = must
                if want < 0:
                    request += -want  # surplus left: into the car
                elif want > 0 and must == 0:
                    spare = ev.stored_wh - ev.required_wh(slot.day, slot.index)
                    request = -min(want, max(0.0, spare) * ev.cfg.efficiency)
            got = ev.step(slot.day, slot.index, request)  # also plays the car's trips
            if got > 0:
                charge += got
            else:
                discharge -= got
        imp, exp = bus_balance(pv, load, charge, discharge)
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
            self.meter.reading(slot, imp, exp),
        )

    def _learn_clearness(self, day: date) -> None:
        """Measured PV over clear-sky for the day: the persistence forecast of tomorrow."""
        s = self.spec
        assert s.pv is not None
        clear = float(sum(clear_sky_wh(s.pv, day)))
        if clear > 0:
            made = sum(pv_wh(s.pv, day, self.weather.day(day)))
            self.clearness = min(1.0, made / clear)


def must_charge_wh(ev: EV, day: date, slot: int) -> float:
    """Energy the car must take from the bus in this slot [Wh] so that, charging at full power
    in every slot left before its next departure, it leaves with what the trip needs."""
    trip = ev.next_trip(day, slot)
    if trip is None:
        return 0.0
    gap = min(ev.required_wh(day, slot), ev.cfg.max_wh) - ev.stored_wh
    if gap <= 0:
        return 0.0
    per_slot = ev.cfg.charge_w / 2 * ev.cfg.efficiency  # stored per slot at full power
    later = max(0, trip.depart_slot - slot - 1) * per_slot
    return max(0.0, (gap - later) / ev.cfg.efficiency)


def _seed(seed: int, label: str) -> int:
    """A sub-seed for one use of a site's seed (stable across runs and platforms)."""
    return int.from_bytes(sha256(f"{seed}/{label}".encode())[:8], "big")
