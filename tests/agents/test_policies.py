"""Bidding policies on hand-made views: the Misono table row by row, ZI-C's budget constraint,
EV charging in the cheapest plugged slots, the optimizer against a dynamic-programming oracle,
and every policy's bids inside the band in whole lots."""

from __future__ import annotations

import math
import random
from datetime import date

import pytest

from peerpower.agents.policy import Bid, SiteView, StorageView, make_policy, policy_names
from peerpower.agents.sizing import ErrorDist, sure_lots
from peerpower.errors import InvalidInput
from peerpower.timeslots import Slot

DAY = date(2026, 8, 18)
SLOTS = tuple(Slot(DAY, k) for k in range(48))


def pv_curve(peak: int) -> tuple[int, ...]:
    return tuple(
        int(peak * math.sin(math.pi * (k - 12) / 24)) if 12 <= k <= 36 else 0 for k in range(48)
    )


def battery(stored: float, capacity: int = 10_000) -> StorageView:
    return StorageView(capacity, stored, 0.1 * capacity, capacity, 1500.0, 1500.0, 0.95)


def view(
    *,
    pv: tuple[int, ...] | None = None,
    load: tuple[int, ...] | None = None,
    prices: tuple[int, ...] | None = None,
    bat: StorageView | None = None,
    ev: StorageView | None = None,
    n: int = 48,
    seed: int = 1,
) -> SiteView:
    return SiteView(
        "s",
        SLOTS[:n],
        (pv or (0,) * 48)[:n],
        (load or (400,) * 48)[:n],
        (prices or (1700,) * 48)[:n],
        bat,
        ev,
        site_seed=seed,
    )


# the trial's table as it was bid, at its rows' own prices
TRIAL = make_policy("soc-table", forecast_prices=False)


def by_slot(bids: list[Bid], k: int) -> list[tuple[str, int, int]]:
    return sorted((b.side, b.energy_wh, b.price_sen_per_kwh) for b in bids if b.slot == SLOTS[k])


@pytest.mark.parametrize(
    ("soc", "sells", "buys"),
    [
        (30, [], [("buy", 1000, 2500)]),
        (35, [], [("buy", 1000, 2500)]),
        (40, [("sell", 1000, 3000)], [("buy", 1000, 2000)]),
        (50, [("sell", 1000, 2000)], [("buy", 1000, 1000)]),
        (60, [("sell", 1000, 1500)], [("buy", 1000, 500)]),
        (70, [("sell", 1000, 1000)], []),
        (95, [("sell", 1000, 1000)], []),
        (20, [], [("buy", 1000, 2500)]),
    ],
)
def test_soc_table_bids_the_row_of_the_forecast_soc(
    soc: int, sells: list[tuple[str, int, int]], buys: list[tuple[str, int, int]]
) -> None:
    # a house that will need nothing from its storage: the row's sale (nothing to buy for)
    v = view(load=(0,) * 48, bat=battery(soc * 100.0), n=1)
    assert by_slot(TRIAL(v), 0) == sells
    # a dark day ahead that the storage cannot cover: the row's purchase, and nothing sold
    # that the house will need (a lot of it kept back from the grid at the tariff)
    v = view(load=(400,) * 48, bat=battery(soc * 100.0))
    assert by_slot(TRIAL(v), 0) == buys


def test_soc_table_sells_only_what_the_house_will_not_need() -> None:
    # 60 % of 10 kWh stored; the evening ahead draws 400 Wh a slot for 8 slots, then the sun
    # refills it: a sale may take the battery down to its floor plus those 3.2 kWh, no lower
    load = (400,) * 8 + (0,) * 40
    pv = (0,) * 8 + (2000,) * 40
    v = view(pv=pv, load=load, bat=battery(6000.0))
    bids = make_policy("soc-table")(v)
    sold_first = sum(b.energy_wh for b in bids if b.side == "sell" and b.slot.index < 8)
    bat = battery(6000.0)
    kept = bat.min_wh + sum(load[:8]) / bat.efficiency
    assert 0 < sold_first <= (bat.stored_wh - kept) * bat.efficiency
    assert not [b for b in bids if b.side == "buy" and b.slot.index < 8]


def test_soc_table_asks_and_bids_the_forecast_price_within_its_rows() -> None:
    # forecast 17 yen: at 70 % the row takes 10 yen at least, and asks the forecast less 1 yen;
    # at 30 % it pays 25 at most, and bids the forecast plus 1 yen; at 50 % it asks 20 (the
    # row's least, above the forecast) and bids 10 (its most, below it)
    cases = {70: ("sell", 1600), 30: ("buy", 1800), 50: ("sell", 2000)}
    for soc, (side, price) in cases.items():
        dark = view(load=(400,) * 48, bat=battery(soc * 100.0))
        full = view(load=(0,) * 48, bat=battery(soc * 100.0), n=1)
        bids = by_slot(make_policy("soc-table")(full if side == "sell" else dark), 0)
        assert [(b[0], b[2]) for b in bids if b[0] == side] == [(side, price)]
    dark = view(load=(400,) * 48, bat=battery(5000.0))
    assert ("buy", 1000, 1000) in by_slot(make_policy("soc-table")(dark), 0)


def test_soc_table_sells_stored_energy_only_above_what_refilling_it_costs() -> None:
    # half full at 9:00, the sun ahead will refill it and its surplus is forecast to fetch
    # 19 yen at 13:00: energy sold from storage before then for 16 yen would cost 19 / 0.95²
    # to put back, so only sales at a row's price above that (the 40 % row's 30 yen) or of
    # the PV the battery cannot take are offered
    k9, k13 = 18, 26
    prices = tuple(2000 if k == k13 else 1700 for k in range(48))
    v = view(pv=pv_curve(3000), load=(300,) * 48, prices=prices, bat=battery(5000.0))
    bids = make_policy("soc-table")(v)
    refill = 1900 / 0.95**2
    sells = [b for b in bids if b.side == "sell"]
    assert sells, "the PV the full battery cannot take is offered"
    bat = battery(5000.0)
    stored = bat.stored_wh
    for k in range(48):
        n = pv_curve(3000)[k] - 300
        spill = max(0.0, n - min(bat.charge_wh, (bat.max_wh - stored) / bat.efficiency))
        offered = sum(
            b.energy_wh for b in sells if b.slot.index == k and b.price_sen_per_kwh < refill
        )
        if k < k13:
            # before the dearest surplus slot, only the spill is offered
            assert offered <= spill + 1e-9, k
        stored = min(bat.max_wh, max(bat.min_wh, stored + (n * bat.efficiency if n > 0 else n)))
    assert not [b for b in sells if b.slot.index <= k9 and b.price_sen_per_kwh < refill]
    # at the rows' own prices (the trial) the half-full battery sells at 9:00 for 20 yen
    assert [b for b in TRIAL(v) if b.side == "sell" and b.slot.index <= k9]


def test_soc_table_offers_all_the_pv_a_full_battery_cannot_take() -> None:
    # full, 1 kWh of surplus a slot, a dearer slot at the end: every slot's surplus is
    # spill (a sale of it takes nothing from the battery), so each slot offers all of it
    prices = (1700,) * 11 + (2500,)
    v = view(pv=(1000,) * 12, load=(0,) * 12, prices=prices, bat=battery(10_000.0), n=12)
    offered = [sum(e for side, e, _ in by_slot(make_policy("soc-table")(v), k)) for k in range(11)]
    assert offered == [1000] * 11


def test_soc_table_buys_what_the_storage_lacks_counting_this_slot_itself() -> None:
    # 1.5 kWh stored over a 1 kWh floor, 1.5 kWh drawn: the same shortfall to import whether
    # the deficit is in this slot or the next, so the same purchase
    low = StorageView(10_000, 1_500.0, 1_000.0, 10_000.0, 1500.0, 1500.0, 0.95)
    for load in ((0, 1500), (1500, 0)):
        v = view(load=load, bat=low, n=2)
        assert by_slot(make_policy("soc-table")(v), 0) == [("buy", 1000, 1800)], load
    # 500 Wh of this slot's own PV charges it first: about 600 Wh is short, not 1 kWh
    v = view(pv=(500, 0), load=(0, 1500), bat=low, n=2)
    assert by_slot(make_policy("soc-table")(v), 0) == [("buy", 600, 1800)]


def test_soc_table_follows_the_forecast_soc_and_respects_the_floor() -> None:
    # 1.1 kWh stored above a 1 kWh floor: a 1 kWh sale is limited to what is there
    low = StorageView(10_000, 1_150.0, 1_000.0, 10_000.0, 1500.0, 1500.0, 1.0)
    v = view(load=(200,) * 48, bat=low)
    assert by_slot(TRIAL(v), 0) == [("buy", 1000, 2500)]
    # PV charges the battery through the day: later slots bid higher SOC rows
    v = view(pv=pv_curve(3000), load=(300,) * 48, bat=battery(3000.0))
    bids = TRIAL(v)
    assert by_slot(bids, 0) == [("buy", 1000, 2500)]  # 30 %
    assert ("sell", 1000, 1000) in by_slot(bids, 30)  # full in the afternoon: the 70 % row
    # every sale counts against the energy stored: a day's sales never exceed what the
    # battery can hold and PV brings in
    sold = sum(b.energy_wh for b in bids if b.side == "sell")
    assert sold <= 10_000 + sum(max(0, p - 300) for p in pv_curve(3000))


def test_soc_table_without_storage_trades_at_the_forecast_price_what_its_errors_allow() -> None:
    prices = tuple(1200 if 20 <= k < 30 else 2400 for k in range(48))
    v = view(pv=pv_curve(2000), load=(500,) * 48, prices=prices)
    bids = make_policy("soc-table")(v)
    # the forecast price ∓ 1 yen, within buyback and tariff
    for b in bids:
        f = prices[b.slot.index]
        assert b.price_sen_per_kwh == (f - 100 if b.side == "sell" else min(2600, f + 100))
    assert any(b.side == "sell" and b.price_sen_per_kwh == 1100 for b in bids)
    for b in bids:
        k = b.slot.index
        net = v.pv_wh[k] - v.load_wh[k]
        assert b.side == ("sell" if net > 0 else "buy")
        assert 0 < b.energy_wh <= abs(net) + 2 * 0.5 * 500  # within the prior's spread
        assert b.energy_wh == v.sure_wh(k, net, b.price_sen_per_kwh)
    # a cheaper purchase is worth more of the forecast deficit
    cheap, dear = v.sure_wh(0, -500, 1300), v.sure_wh(0, -500, 2500)
    assert cheap > dear
    # fixed prices when asked for
    fixed = make_policy("soc-table", surplus_yen=10, deficit_yen=20)(v)
    assert {(b.side, b.price_sen_per_kwh) for b in fixed} == {("sell", 1000), ("buy", 2000)}
    # at 25 yen a purchase saves 1 yen/kWh against the tariff and risks 55 (the price and the
    # 30 yen imbalance charge) on what is not needed: under the prior's spread, nothing
    fixed = make_policy("soc-table", surplus_yen=10, deficit_yen=25)(v)
    assert {b.side for b in fixed} == {"sell"}


def _expected_gain(
    lots: int, position: float, errors: list[float], price: int, v: SiteView, side: str
) -> float:
    """Expected money [sen·Wh/kWh] of trading ``lots`` whole lots of a forecast ``position``
    (surplus for a sale, deficit for a purchase) over equally likely ``errors`` — written from
    the payoffs, not from the critical ratio."""
    total = 0.0
    q = lots * v.lot_wh
    for e in errors:
        real = max(0.0, position + e)  # what the site really has (or needs)
        used = min(q, real)
        if side == "sell":
            # sold energy it has earns p instead of the buyback; sold energy it lacks earns p
            # but costs the imbalance price
            total += used * (price - v.buyback_sen_per_kwh)
            total += (q - used) * (price - v.imbalance_sen_per_kwh)
        else:
            total += used * (v.tariff_sen_per_kwh - price)
            total -= (q - used) * (price + v.imbalance_sen_per_kwh)
    return total / len(errors)


@pytest.mark.parametrize("seed", range(30))
def test_sure_lots_maximise_the_expected_money_over_the_site_errors(seed: int) -> None:
    rng = random.Random(seed)
    v = view()
    errors = [
        rng.gauss(rng.uniform(-50, 50), rng.uniform(5, 400)) for _ in range(rng.randint(6, 42))
    ]
    position = rng.uniform(0, 1500)
    price = rng.randrange(850, 2600)
    side = rng.choice(["sell", "buy"])
    dist = ErrorDist(tuple(sorted(errors)))
    if side == "sell":
        got = sure_lots(position, dist, 100, (3000 - price) / (3000 - 850))
    else:
        dist = ErrorDist(tuple(sorted(-e for e in errors)))
        got = sure_lots(position, dist, 100, (price + 3000) / (2600 + 3000))
    signed = errors if side == "sell" else [-e for e in errors]
    gains = [_expected_gain(j, position, signed, price, v, side) for j in range(40)]
    best = max(range(40), key=lambda j: (gains[j], -j))
    assert got == best * 100, (gains[got // 100], gains[best])


@pytest.mark.parametrize("seed", range(20))
def test_sure_lots_with_the_prior_maximise_the_expected_money_over_the_mixture(seed: int) -> None:
    # the site's few errors and the normal prior, weighed w : 1 - w: the lots chosen are the
    # best count by the expected money over both
    rng = random.Random(1000 + seed)
    v = view()
    errors = [rng.gauss(0, rng.uniform(5, 150)) for _ in range(rng.randint(1, 12))]
    prior = ErrorDist.prior(rng.uniform(100, 800), rng.uniform(0, 2000))
    weight = 21 / (21 + len(errors))
    position = rng.uniform(0, 1500)
    price = rng.randrange(850, 2600)
    ratio = (3000 - price) / (3000 - 850)
    got = sure_lots(position, ErrorDist(tuple(sorted(errors))), 100, ratio, prior, weight)
    drawn = [prior.scale * z for z in prior.values]

    def gain(j: int) -> float:
        own = _expected_gain(j, position, errors, price, v, "sell")
        return (1 - weight) * own + weight * _expected_gain(j, position, drawn, price, v, "sell")

    gains = [gain(j) for j in range(40)]
    best = max(range(40), key=lambda j: (gains[j], -j))
    assert got == best * 100, (gains[got // 100], gains[best])
    # where a lot must be likely to be delivered, the few errors alone, narrower than the
    # prior, would sell at least as much: the prior is the caution
    alone = sure_lots(position, ErrorDist(tuple(sorted(errors))), 100, ratio)
    if ratio >= 0.6 and max(abs(e) for e in errors) < 0.5 * prior.scale:
        assert alone >= got


@pytest.mark.parametrize("seed", range(10))
def test_sure_lots_at_most_a_count_is_the_lesser_of_that_count_and_the_uncapped_lots(
    seed: int,
) -> None:
    rng = random.Random(2000 + seed)
    errors = ErrorDist(tuple(sorted(rng.gauss(0, 80) for _ in range(rng.randint(1, 30)))))
    prior = ErrorDist.prior(rng.uniform(100, 800), rng.uniform(0, 2000))
    for _ in range(30):
        position, ratio = rng.uniform(-200, 1500), rng.uniform(0, 0.99)
        free = sure_lots(position, errors, 100, ratio, prior, 0.4)
        for most in (0, 1, 3, 8, 40):
            capped = sure_lots(position, errors, 100, ratio, prior, 0.4, most)
            assert capped == min(free, most * 100)


def test_sure_wh_never_trades_beyond_the_forecast_to_the_lot_above() -> None:
    # at 28 yen a lot need only be delivered 9 % of the time: the symmetric prior's upper tail
    # would sell far beyond the forecast surplus, which a clear sky caps; the lot above it stays
    v = view(pv=(2000,) * 48, load=(300,) * 48)
    assert v.sure_wh(0, 1700, 2800) == 1700
    assert v.sure_wh(0, 1650, 2800) == 1700
    assert sure_lots(1650, ErrorDist.prior(300, 2000), 100, (3000 - 2800) / (3000 - 850)) > 1700
    # a 97 Wh deficit at a midday price still bids its one lot
    cheap = view(pv=(0,) * 48, load=(97,) * 48)
    assert cheap.sure_wh(0, -97, 1100) == 100


def test_zi_c_prices_within_buyback_and_tariff_and_reproducible() -> None:
    v = view(pv=pv_curve(2500), load=(600,) * 48)
    bids = make_policy("zi-c")(v)
    assert {b.side for b in bids} == {"buy", "sell"}
    assert all(850 <= b.price_sen_per_kwh <= 2600 for b in bids)
    assert len({b.price_sen_per_kwh for b in bids}) > 10  # really random
    assert make_policy("zi-c")(view(pv=pv_curve(2500), load=(600,) * 48)) == bids
    assert make_policy("zi-c")(view(pv=pv_curve(2500), load=(600,) * 48, seed=2)) != bids
    # a shorter view of the same site gives the same bids for its slots (no churn on re-plans)
    short = make_policy("zi-c")(view(pv=pv_curve(2500), load=(600,) * 48, n=10))
    assert short == [b for b in bids if b.slot.index < 10]


def test_ev_cheap_charging_buys_what_the_trip_needs_in_the_cheapest_slots() -> None:
    # plugged in slots 0–13, leaves at 14; needs 20 kWh stored, has 12 kWh
    plugged = tuple(k < 14 for k in range(48))
    reserve = tuple(20_000.0 if k < 14 else 0.0 for k in range(48))
    ev = StorageView(40_000, 12_000.0, 8_000.0, 36_000.0, 3350.0, 3000.0, 0.866, plugged, reserve)
    prices = tuple(2000 + 50 * ((k * 7) % 11) for k in range(48))
    v = view(load=(0,) * 48, prices=prices, ev=ev)
    bids = [b for b in make_policy("ev-cheap-charging", cheap_yen=0)(v) if b.side == "buy"]
    slots = {b.slot.index for b in bids}
    assert slots <= set(range(14))
    bought = sum(b.energy_wh for b in bids)
    assert 8_000 / 0.866 <= bought <= 8_000 / 0.866 + 100  # the gap, rounded up to a lot
    cheapest = sorted(range(14), key=lambda k: (prices[k], k))[: len(slots)]
    assert slots == set(cheapest)
    assert all(b.price_sen_per_kwh == min(2600, prices[b.slot.index] + 100) for b in bids)


def test_ev_cheap_charging_takes_own_pv_before_offering_or_buying() -> None:
    # plugged all day with 30 kWh of room; a noon surplus of up to 2.6 kWh a slot against a
    # 3.35 kWh charger; cheap noon prices, so the cheap rule would buy there too
    plugged = (True,) * 48
    ev = StorageView(40_000, 6_000.0, 4_000.0, 36_000.0, 3350.0, 3000.0, 0.9, plugged)
    pv = pv_curve(3000)
    load = (400,) * 48
    prices = tuple(1000 if 18 <= k < 32 else 2400 for k in range(48))
    v = view(pv=pv, load=load, prices=prices, ev=ev)
    bids = make_policy("ev-cheap-charging")(v)
    take, stored = [], 6_000.0
    for k in range(48):  # the car's own-PV plan, recomputed
        t = min(max(0, pv[k] - load[k]), 3350.0, (36_000.0 - stored) / 0.9)
        take.append(t)
        stored += 0.9 * t
    assert sum(take) > 20_000  # the car has room for the whole noon surplus
    for k in range(48):
        sells = sum(b.energy_wh for b in bids if b.slot == SLOTS[k] and b.side == "sell")
        buys = sum(b.energy_wh for b in bids if b.slot == SLOTS[k] and b.side == "buy")
        assert not (sells and buys), k  # never both in one slot
        # only what the car cannot take is offered (what the site's errors make worth
        # offering at the forecast price less 1 yen, whole lots, as a house would)
        net = round(pv[k] - take[k]) - load[k]
        price = max(850, prices[k] - 100)
        assert sells == (v.sure_wh(k, net, price) if net > 0 else 0), k
        if buys:  # a cheap slot buys only the charger's power the surplus left
            assert buys <= 3350 - take[k] + 1e-9, k
    # nothing is offered before the car is full
    first = min(b.slot.index for b in bids if b.side == "sell")
    assert 6_000.0 + 0.9 * sum(take[: first + 1]) >= 36_000.0 - 1e-6
    assert all(pv[k] - load[k] > 0 for k in range(first - 4, first))  # it was sunny before


def dp_oracle(v: SiteView, depth: float, step: float = 100.0) -> float:
    """Least cost [yen] by dynamic programming over stored energy on a grid of ``step`` Wh:
    an independent check of the optimizer's LP (lossless battery, so the grid is exact)."""
    bat = v.battery
    assert bat is not None and bat.efficiency == 1.0
    levels = [bat.min_wh + step * j for j in range(int((bat.max_wh - bat.min_wh) / step) + 1)]
    best = {bat.stored_wh: 0.0}
    for k in range(len(v.slots)):
        nxt: dict[float, float] = {}
        need = v.load_wh[k] - v.pv_wh[k]
        for stored, cost in best.items():
            for after in levels:
                flow = after - stored  # > 0 charge
                if flow > bat.charge_wh + 1e-9 or -flow > bat.discharge_wh + 1e-9:
                    continue
                net = need + flow  # energy the site must get (> 0) or gets rid of (< 0)
                p = v.prices_sen_per_kwh[k]
                t, b = v.tariff_sen_per_kwh, v.buyback_sen_per_kwh
                if net >= 0:
                    buy = min(net, depth) if p < t else 0.0
                    c = (p * buy + t * (net - buy)) / 100_000
                else:
                    sell = min(-net, depth) if p > b else 0.0
                    c = (-p * sell - b * (-net - sell)) / 100_000
                if after < bat.stored_wh - 1e-9 and k == len(v.slots) - 1:
                    continue  # ends with at least what it had
                total = cost + c
                if total < nxt.get(after, math.inf):
                    nxt[after] = total
        best = nxt
    return min(best.values())


@pytest.mark.parametrize("seed", range(6))
def test_optimizer_economy_matches_a_dynamic_programming_oracle(seed: int) -> None:
    from peerpower.agents.policies.optimizer import plan

    rng = random.Random(seed)
    n = 6
    pv = tuple(rng.randrange(0, 30) * 100 for _ in range(48))
    load = tuple(rng.randrange(2, 25) * 100 for _ in range(48))
    prices = tuple(rng.randrange(900, 2500, 50) for _ in range(48))
    bat = StorageView(3000, 1500.0, 500.0, 3000.0, 800.0, 800.0, 1.0)
    v = view(pv=pv, load=load, prices=prices, bat=bat, n=n)
    depth = 1000.0
    buys, sells, _, _ = plan(v, "economy", depth, 0.0)
    assert all(0 <= b <= depth + 1e-6 for b in buys)
    assert all(0 <= s <= depth + 1e-6 for s in sells)
    # the LP also charges 1e-4 yen/kWh of storage throughput against pointless cycling
    assert _lp_cost(v, depth) == pytest.approx(dp_oracle(v, depth), abs=0.01)


def _lp_cost(v: SiteView, depth: float) -> float:
    """The optimizer LP's optimal cost [yen]."""
    from peerpower.agents.policies import optimizer as opt

    captured: dict[str, float] = {}
    real = opt.linprog

    def spy(*args: object, **kwargs: object) -> object:
        res = real(*args, **kwargs)  # type: ignore[arg-type]
        captured["fun"] = float(res.fun)
        return res

    opt.linprog = spy  # type: ignore[assignment]
    try:
        opt.plan(v, "economy", depth, 0.0)
    finally:
        opt.linprog = real  # type: ignore[assignment]
    return captured["fun"] / 1000  # the LP prices energy in yen/kWh over Wh


def test_optimizer_renewable_first_imports_no_more_than_economy() -> None:
    from peerpower.agents.policies.optimizer import plan

    v = view(pv=pv_curve(3000), load=(600,) * 48, bat=battery(5000.0))
    eco_buy, *_ = plan(v, "economy", 5000.0, 20.0)
    green_buy, *_ = plan(v, "renewable-first", 5000.0, 20.0)
    night = [k for k in range(48) if v.pv_wh[k] == 0]
    assert sum(green_buy[k] for k in night) <= sum(eco_buy[k] for k in night) + 1e-6


@pytest.mark.parametrize(
    "name", ["soc-table", "zi-c", "ev-cheap-charging", "optimizer", "renewable-preference"]
)
@pytest.mark.parametrize("seed", range(5))
def test_every_policy_bids_whole_lots_inside_the_band(name: str, seed: int) -> None:
    rng = random.Random(seed)
    plugged = tuple(rng.random() < 0.7 for _ in range(48))
    reserve = tuple(rng.choice([0.0, 15_000.0]) for _ in range(48))
    ev = StorageView(40_000, 20_000.0, 8_000.0, 36_000.0, 3350.0, 3000.0, 0.866, plugged, reserve)
    v = view(
        pv=pv_curve(rng.randrange(0, 5000)),
        load=tuple(rng.randrange(100, 2000) for _ in range(48)),
        prices=tuple(rng.randrange(500, 3000) for _ in range(48)),
        bat=battery(rng.uniform(1000, 10_000)) if rng.random() < 0.5 else None,
        ev=ev if rng.random() < 0.5 else None,
        seed=seed,
    )
    bids = make_policy(name)(v)
    assert bids  # every site wants something in a day
    for b in bids:
        assert b.energy_wh > 0 and b.energy_wh % 100 == 0
        assert 0 <= b.price_sen_per_kwh <= 10_000
        assert b.slot in SLOTS
        assert b.side in ("buy", "sell")


def test_invalid_policy_name_and_options() -> None:
    with pytest.raises(InvalidInput) as info:
        make_policy("moon-phase")
    assert info.value.field == "policy" and "soc-table" in info.value.message
    assert set(policy_names()) >= {"soc-table", "zi-c", "ev-cheap-charging", "optimizer"}
    for name, options, field in (
        ("optimizer", {"mode": "greedy"}, "mode"),
        ("optimizer", {"depth_kwh": -1}, "depth_kwh"),
        ("ev-cheap-charging", {"premium_yen": -2}, "premium_yen"),
        ("soc-table", {"table": [(50, 20, 10, 1.0), (40, 30, 20, 1.0)]}, "table[1].soc_percent"),
        ("soc-table", {"table": [(50, 20, 10)]}, "table[0]"),
        ("soc-table", {"surplus_yen": 500}, "surplus_yen"),
        ("soc-table", {"forecast_prices": "yes"}, "forecast_prices"),
        ("soc-table", {"forecast_prices": 1}, "forecast_prices"),
    ):
        with pytest.raises(InvalidInput) as info:
            make_policy(name, **options)
        assert info.value.field == field


def test_soc_table_configurable() -> None:
    table = [(0, None, 30, 0.5), (50, 25, None, 0.5)]
    v = view(load=(0,) * 48, bat=battery(6000.0), n=1)
    chosen = make_policy("soc-table", table=table, forecast_prices=False)
    assert by_slot(chosen(v), 0) == [("sell", 500, 2500)]


def test_renewable_preference_bids_more_for_sunny_slots() -> None:
    solar = tuple(300 if 16 <= k <= 30 else 0 for k in range(48))
    base = SiteView("s", SLOTS, (0,) * 48, (500,) * 48, (1700,) * 48, site_seed=1)
    green = SiteView(
        "s", SLOTS, (0,) * 48, (500,) * 48, (1700,) * 48, site_seed=1, solar_wh_per_kw=solar
    )
    plain = make_policy("soc-table")(base)
    preferring = make_policy("renewable-preference", premium_yen=3)(green)
    assert len(plain) == len(preferring)
    for a, b in zip(plain, preferring, strict=True):
        assert (a.slot, a.side, a.energy_wh) == (b.slot, b.side, b.energy_wh)
        sunny = solar[a.slot.index] >= 150
        # the house's deficit bid: the forecast price + 1 yen, ± the premium
        assert b.price_sen_per_kwh == (min(2100, 2600) if sunny else 1500)
    with pytest.raises(InvalidInput) as info:
        make_policy("renewable-preference", base="renewable-preference")
    assert info.value.field == "base"


def test_ev_cheap_charging_never_buys_more_than_the_car_can_hold() -> None:
    # away (driving) in slots 0-1, back at 2 having used 3 kWh, plugged in 2-20 at cheap
    # prices: the cheap rule buys as much as the car can take, and no more — what it holds
    # now less the trip, not the floor the trip's need is planned for
    plugged = tuple(2 <= k <= 20 for k in range(48))
    trip = tuple(3_000.0 if k == 2 else 0.0 for k in range(48))
    for stored in (34_000.0, 20_000.0, 8_000.0):
        ev = StorageView(40_000, stored, 8_000.0, 36_000.0, 3350.0, 3000.0, 0.9, plugged, (), trip)
        v = view(load=(0,) * 48, prices=(900,) * 48, ev=ev)
        bought = sum(b.energy_wh for b in make_policy("ev-cheap-charging")(v) if b.side == "buy")
        room = 36_000.0 - max(8_000.0, stored - 3_000.0)
        assert room / 0.9 - 100 < bought <= room / 0.9, stored


def test_optimizer_never_plans_to_resell_what_it_buys() -> None:
    from peerpower.agents.policies.optimizer import plan

    # an empty battery, no PV, no load; cheap at night and dear by day: buying to sell later
    # is an arbitrage whose purchase may not fill while its sale does
    prices = tuple(900 if k < 12 else 2500 for k in range(48))
    v = view(load=(0,) * 48, prices=prices, bat=battery(1000.0))
    _, sells, _, _ = plan(v, "economy", 5000.0, 0.0)
    assert sells.sum() < 1e-6
    # with energy of its own (stored, and forecast PV beyond the house), it sells up to that
    v = view(pv=pv_curve(2000), load=(0,) * 48, prices=prices, bat=battery(6000.0))
    _, sells, _, _ = plan(v, "economy", 5000.0, 0.0)
    own = (6000.0 - 1000.0) * 0.95 + sum(pv_curve(2000))
    assert 0 < sells.sum() <= own + 1e-6
    assert all(
        sells[: k + 1].sum() <= (6000.0 - 1000.0) * 0.95 + sum(pv_curve(2000)[: k + 1]) + 1e-6
        for k in range(48)
    )


def test_optimizer_plans_no_purchase_where_the_community_has_no_sun() -> None:
    from peerpower.agents.policies.optimizer import plan

    # dusk: 4 kWh stored above the floor, the evening dear (20 yen), the night forecast at the
    # midpoint of slots that never traded (17.25 yen), 400 Wh a slot drawn for 10 slots, no sun
    n = 12
    prices = (2000, 2000) + (1725,) * 10
    load = (0, 0) + (400,) * 10
    bat = StorageView(10_000, 5_000.0, 1_000.0, 10_000.0, 2_000.0, 2_000.0, 1.0)
    blind = view(load=load + (0,) * 36, prices=prices + (1725,) * 36, bat=bat, n=n)
    buys, sells, _, _ = plan(blind, "economy", 5000.0, 0.0)
    # not knowing where the sun is, it sells the battery at dusk and plans to buy the night back
    assert sells.sum() > 0 and buys.sum() > 0
    night = SiteView(
        "s", SLOTS[:n], (0,) * n, load, prices, bat, site_seed=1, solar_wh_per_kw=(0,) * n
    )
    buys, sells, _, _ = plan(night, "economy", 5000.0, 0.0)
    assert buys.sum() == 0
    assert sells.sum() < 1e-6  # what the house will draw tonight stays in the battery


def _house_and_car_view(prices: tuple[int, ...], car_stored: float, peak: int = 4000) -> SiteView:
    # a home with a 10 kWh battery half full and a car plugged in all day that must hold
    # 20 kWh when it leaves at the end of the view; noon PV of up to 4 kW a slot
    plugged = (True,) * 48
    reserve = tuple(20_000.0 if k < 47 else 0.0 for k in range(48))
    ev = StorageView(40_000, car_stored, 8_000.0, 36_000.0, 3350.0, 3000.0, 0.9, plugged, reserve)
    return view(pv=pv_curve(peak), prices=prices, bat=battery(5_000.0), ev=ev)


def test_house_and_car_lets_the_battery_fill_first_and_the_car_take_the_rest() -> None:
    from peerpower.agents.policies.ev_cheap import own_pv

    v = _house_and_car_view((1700,) * 48, 10_000.0)
    take = own_pv(v)
    held, stored = 5_000.0, 10_000.0  # the battery's plan and the car's, recomputed
    for k in range(48):
        surplus = max(0, v.pv_wh[k] - v.load_wh[k])
        into = 0.0
        if surplus:
            into = min(surplus, 1500.0, (10_000 - held) / 0.95)
            held += 0.95 * into
            surplus -= into
        else:
            held = max(1_000.0, held - min(400, 1500.0) / 0.95)
        want = min(surplus, 3350.0, (36_000.0 - stored) / 0.9)
        assert take[k] == pytest.approx(want), k
        stored += 0.9 * want
        if want > 0:  # the car has only what the battery could not take: at its power, or full
            assert into == 1500.0 or held >= 10_000 - 1e-6, k
    assert sum(take) > 5_000


def test_house_and_car_buys_for_the_car_and_never_offers_and_bids_in_one_slot() -> None:
    # cheap noon prices, dear evenings: the car buys what its trip still needs, cheapest first
    prices = tuple(1000 if 18 <= k < 32 else 2400 for k in range(48))
    v = _house_and_car_view(prices, 9_000.0, peak=2000)
    bids = make_policy("house-and-car")(v)
    table_only = make_policy("soc-table")(v)
    car = [
        b
        for b in bids
        if b.side == "buy"
        and b.slot.index not in {x.slot.index for x in table_only if x.side == "buy"}
    ]
    assert car, bids  # the car bids where the table alone would not
    assert not [b for b in table_only if b.side == "buy" and prices[b.slot.index] == 1000]
    for k in range(48):
        sides = {b.side for b in bids if b.slot == SLOTS[k]}
        assert len(sides) <= 1, (k, bids)
    for b in car:
        assert b.price_sen_per_kwh == min(2600, prices[b.slot.index] + 100)


def test_house_and_car_nets_a_sale_against_the_car_s_purchase_in_its_slot() -> None:
    from peerpower.agents.policies.house_car import netted

    s, t = SLOTS[20], SLOTS[21]
    house = [Bid(s, "sell", 500, 1100), Bid(t, "sell", 300, 1100), Bid(SLOTS[22], "buy", 200, 1500)]
    car = [Bid(s, "buy", 300, 1200), Bid(t, "buy", 500, 1200), Bid(SLOTS[23], "buy", 100, 1200)]
    assert netted(house, car) == [
        Bid(s, "sell", 200, 1100),
        Bid(SLOTS[22], "buy", 200, 1500),
        Bid(t, "buy", 200, 1200),
        Bid(SLOTS[23], "buy", 100, 1200),
    ]
    assert netted([Bid(s, "sell", 300, 1100)], [Bid(s, "buy", 300, 1200)]) == []


def test_house_and_car_puts_its_own_pv_into_the_car_before_selling_it() -> None:
    v = _house_and_car_view((1000,) * 18 + (1000,) * 14 + (2400,) * 16, 10_000.0)
    sold = {
        name: sum(b.energy_wh for b in make_policy(name)(v) if b.side == "sell")
        for name in ("soc-table", "house-and-car")
    }
    # the table alone sells the noon PV the car will need (and buys it back for the car at
    # the tariff when it leaves); planned together, the car takes it
    assert sold["house-and-car"] <= sold["soc-table"] - 5_000, sold


def test_house_and_car_refuses_bad_options_naming_them() -> None:
    with pytest.raises(InvalidInput, match="cheap_yen"):
        make_policy("house-and-car", cheap_yen=101)
    with pytest.raises(InvalidInput, match=r"table\[0\]"):
        make_policy("house-and-car", table=[[30, None, 25.0]])
    with pytest.raises(InvalidInput, match="forecast_prices"):
        make_policy("house-and-car", forecast_prices="yes")


def test_optimizer_never_plans_to_sell_what_the_house_will_need_of_its_storage() -> None:
    from dataclasses import replace

    from peerpower.agents.policies.optimizer import plan

    # 6 kWh stored, no PV, no load in view, dear now and cheaper later: without a need it
    # sells all it holds above the floor (and plans to refill later); when the house will
    # draw 4 kWh of it before its PV refills it (the controller's need_wh), only the rest
    prices = (2500,) * 24 + (2000,) * 24
    free = view(load=(0,) * 48, prices=prices, bat=battery(6000.0))
    needed = replace(free, battery=replace(battery(6000.0), need_wh=(4000.0,) * 48))
    _, sold_free, _, _ = plan(free, "economy", 5000.0, 0.0)
    _, sold_needed, _, _ = plan(needed, "economy", 5000.0, 0.0)
    assert sold_free.sum() == pytest.approx((6000.0 - 1000.0) * 0.95, abs=1e-3)
    assert sold_needed.sum() <= (6000.0 - 1000.0 - 4000.0) * 0.95 + 1e-6
    assert sold_needed.sum() > 0
    assert make_policy("optimizer").uses_house_need  # the controller gives it the need
