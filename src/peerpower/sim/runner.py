"""The community in virtual time: controllers bid, validators seal, clear and settle, devices
deliver, meters report — and the same community without a P2P market, for the baseline.

Every half hour, ten minutes before a slot starts, every controller plans (forecasts, its
policy, cancels and orders for what changed); the community's transactions are signed in one
batch and handed to a validator, which relays them. The validators run one block a virtual
minute from a minute before the bids until two minutes past each slot boundary (none in the
quiet minutes between): the first block at or past a slot's gate seals it, the validators clear
it (for ``optimal`` by a quorum of claims) before it starts, and settle it after its meter
deadline. Twenty minutes after a slot ends each site delivers it — its contracts, read from the
chain, are what its storage tries to meet — and its meter's reading goes on chain.

A controller whose transactions were refused or dropped takes the chain's view of its account
(next nonce, standing orders) before it bids again. The operator reviews suspensions daily: a
site suspended for its defaults is reinstated at the start of the next day.

The baseline runs the same physics (same seeds, same weather) with no market: each site's
storage serves only the house, and the retail provider buys and sells the rest at its buyback
and tariff.

Money: a site's P2P cost is what it paid on chain (contract payments and fees, less
proceeds, plus imbalance penalties) plus the retail provider's bill for what its meter shows
beyond its contracts (imports beyond what it bought at the tariff, less exports beyond what it
sold at the buyback). Its baseline cost is the retail bill of the no-market run. For a site
with a plug-in hybrid both add the fuel its car burned when the battery ran short (the trials'
"energy cost" of driving is electricity and fuel together). Energy a site's battery and car hold
at the end beyond what they hold at the end of the baseline (or short of it) is credited (or
charged) at what refilling it costs: the buyback at a site with PV (its own PV would refill it
and sell that much less), the tariff at a site without. The credit is reported beside the
saving (``summary.json``), so that a reader sees how much of a saving is energy left stored.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from peerpower.agents.catalogue import car_account_id
from peerpower.agents.controller import Controller, Delivery, MarketTerms
from peerpower.agents.policy import Bid, Side
from peerpower.crypto import KeyPair
from peerpower.devices.weather import Weather
from peerpower.ledger.genesis import Genesis, GenesisAccount
from peerpower.ledger.rules import to_ms
from peerpower.ledger.state import Account, Contract, Contracts, State
from peerpower.ledger.transactions import (
    SignAhead,
    Signer,
    share_decoded_transactions,
)
from peerpower.sim.network import BLOCK_MS, Validators
from peerpower.sim.scenario import Scenario
from peerpower.timeslots import JST, SLOTS_PER_DAY, Slot

DEPOSIT_MICROYEN = 20_000 * 1_000_000  # each site's deposit: 20,000 yen of margin
PLAN_BEFORE_MIN = 10  # controllers plan this long before each slot starts
DELIVER_AFTER_MIN = 20  # and deliver a slot this long after it ends (meter deadline: 60)


@dataclass
class SimResult:
    scenario: Scenario
    genesis: Genesis
    validators: Validators
    sites: dict[str, Controller]
    baseline_sites: dict[str, Controller]
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    baseline: dict[str, list[Delivery]] = field(default_factory=dict)
    contracts: dict[str, tuple[Contract, ...]] = field(default_factory=dict)  # slot → units
    refused: int = 0
    resyncs: int = 0  # controllers that had to take the chain's view of their account
    reinstated: dict[str, int] = field(default_factory=dict)  # site → times reinstated
    deposits: dict[str, int] = field(default_factory=dict)


def _keys(scenario: Scenario, role: str) -> KeyPair:
    # from the seed alone: a scenario's name must not change what its seed gives
    return KeyPair.derive(f"sim/{scenario.seed}/{role}")


def build_genesis(scenario: Scenario) -> tuple[Genesis, dict[str, KeyPair]]:
    """The community's chain: an operator holding every deposit to be made, the grid and
    retail accounts, and ``scenario.validators`` validators; it starts an hour before the
    first simulated day."""
    start = datetime(scenario.start.year, scenario.start.month, scenario.start.day, tzinfo=JST)
    t0 = to_ms(start - timedelta(hours=1))
    names = [f"val{k}" for k in range(scenario.validators)]
    keys = {n: _keys(scenario, n) for n in (*names, "operator", "grid", "retail")}
    # a deposit for every site and for every car's own account at its workplace charger
    funded = len(scenario.sites) + sum(s.charge_at is not None for s in scenario.sites)
    supply = DEPOSIT_MICROYEN * (funded + 10)
    accounts = (
        GenesisAccount("operator", "operator", keys["operator"].public_hex, supply),
        GenesisAccount("grid", "grid", keys["grid"].public_hex),
        GenesisAccount("retail", "retail", keys["retail"].public_hex),
        *(GenesisAccount(n, "validator", keys[n].public_hex) for n in names),
    )
    genesis = Genesis(f"sim-{scenario.seed}", t0, accounts, scenario.market_rules())
    return genesis, keys


def _controllers(scenario: Scenario, genesis: Genesis, weather: Weather) -> dict[str, Controller]:
    terms = MarketTerms(
        chain=genesis.tx_chain,
        gate_minutes=scenario.gate_minutes,
        lot_wh=scenario.lot_wh,
        price_min_sen_per_kwh=scenario.price_min_sen_per_kwh,
        price_max_sen_per_kwh=scenario.price_max_sen_per_kwh,
        tariff_sen_per_kwh=scenario.tariff_sen_per_kwh,
        buyback_sen_per_kwh=scenario.buyback_sen_per_kwh,
        max_order_wh=genesis.market.max_order_wh,
        imbalance_sen_per_kwh=genesis.params.imbalance_price_sen_per_kwh,
    )
    out = {}
    for spec in scenario.sites:
        data = scenario.meter_data.get(spec.id)
        car = None if spec.charge_at is None else car_account_id(spec.id)
        out[spec.id] = Controller(
            spec,
            terms,
            _keys(scenario, f"site/{spec.id}"),
            _keys(scenario, f"meter/{spec.id}"),
            weather,
            load_data=None if data is None else data.load_wh,
            pv_data=None if data is None else data.pv_wh,
            car_key=None if car is None else _keys(scenario, f"site/{car}"),
            car_meter_key=None if car is None else _keys(scenario, f"meter/{car}"),
        )
        out[spec.id].learn_history(scenario.start)
    return out


def run(scenario: Scenario, progress: Callable[[int, int], None] | None = None) -> SimResult:
    """Simulate ``scenario`` (see the module notes); ``progress(done, total)`` is called after
    each half hour."""
    # the validators are handed the very objects the controllers signed, and never change them
    with share_decoded_transactions(), _few_collections():
        return _run(scenario, progress)


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Collect garbage seldom: a simulation holds millions of live objects (states, books,
    forecasts) and makes few cycles, and Python's default thresholds would scan them all over
    and over (a sixth of a large run's time)."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, 100, 100_000)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _run(scenario: Scenario, progress: Callable[[int, int], None] | None) -> SimResult:
    community = Community(scenario)
    total = community.total
    for k in range(total + 2):
        community.half_hour(k)
        if progress is not None:
            progress(min(k + 1, total), total)
    return community.finish()


class Community:
    """A scenario's run, half hour by half hour: :func:`run` drives it to the end, ``peerpower
    serve --devnet`` live; ``validators`` makes the validators (genesis, keys, seed, busy)."""

    def __init__(
        self, scenario: Scenario, validators: Callable[..., Validators] = Validators
    ) -> None:
        genesis, keys = build_genesis(scenario)
        self.keys = keys
        names = [v.id for v in genesis.validators]
        # blocks once a minute from a minute before the controllers bid until two minutes
        # past each slot boundary (gates, clearings, settlement deadlines), none in between
        busy = ((PLAN_BEFORE_MIN + 1) * 60_000, 2 * 60_000)
        chain = validators(genesis, {n: keys[n] for n in names}, scenario.seed, busy)
        weather = Weather(scenario.seed, scenario.start - timedelta(days=1))
        self.sites = sites = _controllers(scenario, genesis, weather)
        baseline_weather = Weather(scenario.seed, scenario.start - timedelta(days=1))
        self.result = result = SimResult(
            scenario,
            genesis,
            chain,
            sites,
            _controllers(scenario, genesis, baseline_weather),
        )
        self.op = op = Signer(genesis.tx_chain, "operator", keys["operator"])
        admit = []
        for spec in scenario.sites:
            c = sites[spec.id]
            admit.append(
                op.register(
                    spec.id, c.key.public_hex, c.meter_key.public_hex, spec.node, spec.site_type
                )
            )
            admit.append(op.deposit(spec.id, DEPOSIT_MICROYEN))
            result.deposits[spec.id] = DEPOSIT_MICROYEN
            if c.car_id is not None and c.car_key is not None and c.car_meter_key is not None:
                # the car's own account at its workplace charger, metered there
                assert spec.charge_at is not None
                admit.append(
                    op.register(
                        c.car_id,
                        c.car_key.public_hex,
                        c.car_meter_key.public_hex,
                        spec.charge_at,
                        "ev",
                    )
                )
                admit.append(op.deposit(c.car_id, DEPOSIT_MICROYEN))
                result.deposits[c.car_id] = DEPOSIT_MICROYEN
        chain.advance(genesis.time_ms + BLOCK_MS)
        result.refused += chain.submit(admit)
        self.start = datetime(
            scenario.start.year, scenario.start.month, scenario.start.day, tzinfo=JST
        )
        self.total = total = scenario.days * SLOTS_PER_DAY
        self.slots = [
            Slot(scenario.start + timedelta(days=k // SLOTS_PER_DAY), k % SLOTS_PER_DAY)
            for k in range(total)
        ]

    def half_hour(self, k: int) -> None:
        """Run to ten minutes before slot ``k`` starts; the controllers bid; slot ``k − 2``
        is delivered."""
        result, sites = self.result, self.sites
        validators = result.validators
        now = self.start + timedelta(minutes=30 * k - PLAN_BEFORE_MIN)
        validators.advance(to_ms(now))
        orders = SignAhead()  # signed (and checked) on the other cores as they come
        if k < self.total:
            if k and k % SLOTS_PER_DAY == 0:
                result.refused += validators.submit(_reinstate(result, self.op))
            _resync(result)
            # a suspended site may not bid (its orders would be refused) until reinstated
            state = validators.state
            for site_id, c in sites.items():
                if _active(state, site_id):
                    orders.extend(
                        item
                        for item in c.plan(now)
                        # a car's account suspended on its own: its orders wait (resync after)
                        if item[1]["from"] == site_id or _active(state, item[1]["from"])
                    )
        # deliver every slot that ended DELIVER_AFTER_MIN ago or more (after the plans, which
        # did not know it yet; its readings go to the validators after the orders)
        readings = _deliver(result, self.slots[k - 2]) if 2 <= k < self.total + 2 else None
        result.refused += validators.submit(orders.result())
        if readings is not None:
            result.refused += validators.submit(readings.result())

    def finish(self) -> SimResult:
        """Run on until every slot is settled (its meter deadline is an hour after it ends)
        and run the baseline."""
        result = self.result
        scenario, genesis = result.scenario, result.genesis
        end = self.start + timedelta(
            days=scenario.days, minutes=genesis.params.meter_deadline_minutes + 10
        )
        result.validators.advance(to_ms(end))
        for slot in self.slots:
            for c in result.baseline_sites.values():
                d = c.deliver(slot, 0, 0, sign=False)
                result.baseline.setdefault(c.spec.id, []).append(d)
        return result


def _active(state: State, site_id: str) -> bool:
    acct = state.account(site_id)
    return acct is not None and acct.status == "active"


def _reinstate(result: SimResult, op: Signer) -> list[dict[str, Any]]:
    """The operator's daily review: every site suspended for its defaults (shortfalls beyond
    the tolerance) is let back in, its count cleared — its penalties were paid, or are owed
    and come first out of what it earns next."""
    out = []
    for acct in result.validators.state.table("accounts").values():
        if isinstance(acct, Account) and acct.status == "suspended":
            out.append(op.reinstate(acct.id))
            result.reinstated[acct.id] = result.reinstated.get(acct.id, 0) + 1
    return out


def _resync(result: SimResult) -> None:
    """Give a controller the chain's view of its account when some of its transactions were
    refused or dropped (its next nonce is not the one the validators expect), as a site's
    client would on learning of it: the next nonce and the orders that stand (for its car's
    account at work likewise)."""
    validators = result.validators
    behind: dict[str, tuple[Controller, int, bool]] = {}
    for site_id, c in result.sites.items():
        if (nonce := validators.next_nonce(site_id)) != c.nonce:
            behind[site_id] = (c, nonce, False)
        car = c.car_id
        if car is not None and (nonce := validators.next_nonce(car)) != c.car_nonce:
            behind[car] = (c, nonce, True)
    if not behind:
        return
    result.resyncs += len(behind)
    orders = validators.open_orders(set(behind))
    for account, (c, nonce, is_car) in behind.items():
        standing: dict[Slot, list[tuple[str, Bid]]] = {}
        for o in orders[account]:
            slot = Slot.parse(o.slot)
            side: Side = "buy" if o.side == "buy" else "sell"
            bid = Bid(slot, side, o.energy_wh, o.price_sen_per_kwh)
            standing.setdefault(slot, []).append((o.id, bid))
        if is_car:
            c.resync_car(nonce, standing)
        else:
            c.resync(nonce, standing)


def _deliver(result: SimResult, slot: Slot) -> SignAhead:
    """Deliver ``slot`` at every site against its contracts; the meter readings, being
    signed."""
    state = result.validators.state
    rec = state.get("contracts", str(slot))
    units: tuple[Contract, ...] = rec.units if isinstance(rec, Contracts) else ()
    result.contracts[str(slot)] = units
    bought: dict[str, int] = {}
    sold: dict[str, int] = {}
    prices: list[tuple[int, int]] = []
    for u in units:
        bought[u.buyer] = bought.get(u.buyer, 0) + u.energy_wh
        sold[u.seller] = sold.get(u.seller, 0) + u.energy_wh
        prices.append((u.price_sen_per_kwh, u.energy_wh))
    mean = None
    if prices:
        mean = sum(p * e for p, e in prices) // sum(e for _, e in prices)
    readings = SignAhead()
    for site_id, c in result.sites.items():
        car = 0 if c.car_id is None else bought.get(c.car_id, 0)
        d = c.deliver(
            slot, bought.get(site_id, 0), sold.get(site_id, 0), sign=False, car_bought_wh=car
        )
        result.deliveries.setdefault(site_id, []).append(d)
        readings.extend([d.unsigned] if d.car is None else [d.unsigned, d.car.unsigned])
        c.observe(slot, bought.get(site_id, 0), sold.get(site_id, 0), mean)
    return readings


def chain_money(result: SimResult, site_id: str) -> int:
    """What the site holds on chain now [µ¥]: balance and locked margin, less unpaid debt."""
    acct = result.validators.state.account(site_id)
    if not isinstance(acct, Account):
        return 0
    return acct.balance_microyen + acct.locked_microyen - acct.unpaid_microyen


@dataclass(frozen=True)
class SiteCost:
    """What one site's energy cost over the run [µ¥] (see the module notes)."""

    p2p: int  # with the market: on chain, retail beyond the contracts, fuel, less storage
    base: int  # without it: the retail bill (imports less exports at the buyback) and fuel
    gross: int  # without it, before the buyback: imports at the tariff and fuel
    storage: int  # the storage credit inside ``p2p`` (positive: the market run left more)

    @property
    def saving(self) -> int:
        """What the market saved the site (negative: what it cost it)."""
        return self.base - self.p2p


def costs_microyen(result: SimResult) -> dict[str, SiteCost]:
    """Each site's costs with and without the market (see the module notes)."""
    s = result.scenario
    tariff, buyback = s.tariff_sen_per_kwh, s.buyback_sen_per_kwh
    out = {}
    for site_id, deliveries in result.deliveries.items():
        site = result.sites.get(site_id)
        # a car at its workplace charger is metered there on its own account: its site's
        # costs include it
        metered = with_cars(deliveries)
        retail = 0
        for d in metered:
            retail += max(0, d.import_wh - d.bought_wh) * tariff * 10
            retail -= max(0, d.export_wh - d.sold_wh) * buyback * 10
        on_chain = result.deposits.get(site_id, 0) - chain_money(result, site_id)
        if site is not None and site.car_id is not None:
            on_chain += result.deposits.get(site.car_id, 0) - chain_money(result, site.car_id)
        baseline = result.baseline.get(site_id, [])
        baseline = with_cars(baseline)
        imports = sum(d.import_wh for d in baseline) * tariff * 10
        base = imports - sum(d.export_wh for d in baseline) * buyback * 10
        fuel = _fuel_microyen(site)
        base_fuel = _fuel_microyen(result.baseline_sites.get(site_id))
        # energy the market run leaves stored beyond the baseline's (or short of it) at the end:
        # valued at what refilling it costs — the buyback its own PV would have earned, or the
        # tariff at a site without PV
        left = _stored_wh(site) - _stored_wh(result.baseline_sites.get(site_id))
        has_pv = site is not None and site.spec.pv is not None
        storage = round(left * (buyback if has_pv else tariff) * 10)
        out[site_id] = SiteCost(
            p2p=on_chain + retail + fuel - storage,
            base=base + base_fuel,
            gross=imports + base_fuel,
            storage=storage,
        )
    return out


def with_cars(deliveries: list[Delivery]) -> list[Delivery]:
    """A site's deliveries and, after them, its car's at its workplace charger."""
    return [*deliveries, *(d.car for d in deliveries if d.car is not None)]


def _stored_wh(c: Controller | None) -> float:
    """Energy in a site's battery and car now [Wh]."""
    if c is None:
        return 0.0
    battery = 0.0 if c.battery is None else c.battery.stored_wh
    return battery + (0.0 if c.ev is None else c.ev.stored_wh)


def _fuel_microyen(c: Controller | None) -> int:
    """What a plug-in hybrid's fuel for its trips cost [µ¥] (0 for other sites)."""
    if c is None or c.ev is None:
        return 0
    return round(c.ev.fuel_cost_yen * 1_000_000)


def progress_bar(label: str) -> Callable[[int, int], None]:
    """A plain progress bar on standard error."""

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(1, total)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
