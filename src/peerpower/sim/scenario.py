"""Scenario files: a community to simulate — its sites, grid, market and retail terms — in TOML.

A scenario is a preset name (:data:`PRESETS`, shipped under ``peerpower/sim/presets/``) or a
TOML file. Every key is snake_case with its unit in the name; money is written in yen and held
as integer sen, energy in kWh is held as integer Wh (both rounded half up).

.. code-block:: toml

    name = "misono"
    start = 2026-09-28            # first simulated JST day (a TOML date)
    days = 1                      # 1–366
    seed = 1                      # 0–2**32-1; site k's seed is seed × 1000003 + k
    validators = 4                # 1 (solo) or 4–100

    [location]                    # optional; every site's PV (default Tokyo 35.68 N 139.77 E)
    latitude_deg = 35.88
    longitude_deg = 139.66
    altitude_m = 20.0

    [market]                      # all optional
    mechanism = "optimal"         # cda | call | optimal
    goal = "welfare"              # volume | welfare | maxmin; optimal only (default welfare)
    pricing = "nodal"             # nodal (call; optimal welfare: the default) | midpoint (optimal)
    gate_minutes = 5              # 1–1439
    lot_wh = 100                  # 1–100000
    price_min_yen_per_kwh = 0.0   # the order price band (default 0–100 yen/kWh)
    price_max_yen_per_kwh = 100.0

    [retail]                      # optional
    tariff_yen_per_kwh = 26.0     # what the retailer charges; ≥ buyback
    buyback_yen_per_kwh = 8.5     # what it pays for surplus

    [grid]                        # either generated from counts (every key optional) ...
    feeders = 2                   # default 1
    sites_per_transformer = 10    # default 10
    feeder_fee_yen_per_kwh = 1.5  # consignment charge per edge (defaults 1.5, 0.4, 0.1)
    transformer_fee_yen_per_kwh = 0.4
    site_fee_yen_per_kwh = 0.1
    feeder_capacity_kwh = 50.0    # optional edge capacities per slot (default none)
    transformer_capacity_kwh = 20.0
    site_capacity_kwh = 5.0
    # ... or given as nodes, each {id, parent (omitted for the one root), fee_yen_per_kwh,
    # capacity_kwh}; every [[sites]] entry then names its `node`:
    # nodes = [{id = "sub"}, {id = "f0", parent = "sub", fee_yen_per_kwh = 1.5}, ...]

    [[sites]]
    type = "pv-battery"           # a catalogue type (peerpower.ledger.genesis.CATALOGUE_TYPES)
    count = 12                    # 1–100000 (default 1)
    pv_kw = 5.0                   # overrides of the catalogue defaults, all optional
    policy = "soc-table"

    [[sites]]
    type = "consumer"
    load_csv = "data/home.csv"    # measured load replacing the model (relative to this file)

Site overrides: ``pv_kw``, ``tilt_deg``, ``azimuth_deg`` (types with PV), ``battery_kwh``,
``battery_kw`` (charge and discharge; types with a battery), ``ev_kwh``, ``phev``, ``car`` (a
table: ``pattern`` — ``commuter``, away on weekdays, ``home-day``, at home on weekdays but
for errands, or ``workplace``, a commuter plugged in at work at the charger on grid node
``charge_at`` (required with it, refused without), where the car trades and is metered on its
own account ``<site id>-car`` — and ``start_soc_percent``, 0–100 within the car's limits; types
with a car),
``annual_kwh``, ``occupancy``, ``policy``, ``policy_options`` (a table), ``id_prefix``
(default ``"site"``; ids are ``<prefix>-000``, ``<prefix>-001``, … counted per prefix in file
order), ``node`` (given grids only), ``load_csv`` and ``pv_csv`` (types with PV).

The generated grid is substation ``sub`` → feeders ``f0``, ``f1``, … → transformers ``f0-t0``,
``f0-t1``, … of ``sites_per_transformer`` sites → one node per site, ``n-<site id>``. Sites are
dealt to feeders round-robin in file order, and fill each feeder's transformers in turn.

Meter data (``load_csv``, ``pv_csv``) is CSV with the header ``timestamp,wh``: one row per half
hour, the timestamp ISO 8601 with its UTC offset (``2026-09-28T00:00+09:00``) marking the *start*
of the half hour, rows in order without duplicates; values are whole Wh in 0–50,000 per half
hour. The data is kept for every JST day it covers completely and must cover every simulated
day; a gap on another day is a warning (:meth:`Scenario.warnings`), and the complete days
before the start are the history the site's load forecasts draw on. Refused, with what to do:
end-labelled files (rows from 00:30 to 00:00), 15-minute rows (sum them by half hour),
fractions (called kWh only when no value in the file exceeds 50), a day or more of whole values
of at most 10 Wh, not all zero (kWh rounded to whole numbers), and in ``pv_csv`` any half hour
above the site's rated PV (``pv_kw`` × 0.5 h) or with PV while the sun is down at the site (the
half hour and both beside it dark under a clear sky).

Every error is :class:`~peerpower.errors.InvalidInput` whose ``field`` is the key path
(``sites[2].pv_kw``) and whose message starts with the file (and, for syntax and CSV errors,
the line).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from peerpower.agents.catalogue import SiteSpec, site
from peerpower.agents.policy import policy_names
from peerpower.devices.battery import BatteryConfig
from peerpower.devices.ev import EVConfig
from peerpower.devices.load import LoadConfig
from peerpower.devices.pv import PVConfig, clear_sky_wh
from peerpower.errors import InvalidInput
from peerpower.grid.tree import GridTree
from peerpower.ledger.genesis import (
    CATALOGUE_TYPES,
    MAX_SLOT_YEAR,
    MIN_SLOT_YEAR,
    MarketRules,
    check_account_id,
)
from peerpower.market.result import GOALS, MECHANISMS, Goal, Mechanism, Pricing, pricings_for
from peerpower.timeslots import JST, SLOTS_PER_DAY
from peerpower.units import PRICE_MAX_SEN_PER_KWH

PRESETS: tuple[str, ...] = ("misono", "higashifuji", "large")
MAX_DAYS: Final = 366
MAX_SITES: Final = 100_000
MAX_VALIDATORS: Final = 100
MAX_SEED: Final = 2**32 - 1
SITE_SEED_STRIDE: Final = 1_000_003
MAX_LOT_WH: Final = 100_000  # the default max_order_wh: a lot must fit in an order
MAX_METER_WH: Final = 50_000  # per half hour: 100 kW, beyond any site of the catalogue
SLOT: Final = timedelta(minutes=30)

_TOP_KEYS: Final = (
    "name",
    "start",
    "days",
    "seed",
    "validators",
    "location",
    "market",
    "retail",
    "grid",
    "sites",
)
_LOCATION_KEYS: Final = ("latitude_deg", "longitude_deg", "altitude_m")
_MARKET_KEYS: Final = (
    "mechanism",
    "goal",
    "pricing",
    "gate_minutes",
    "lot_wh",
    "price_min_yen_per_kwh",
    "price_max_yen_per_kwh",
)
_RETAIL_KEYS: Final = ("tariff_yen_per_kwh", "buyback_yen_per_kwh")
_GENERATED_GRID_KEYS: Final = (
    "feeders",
    "sites_per_transformer",
    "feeder_fee_yen_per_kwh",
    "transformer_fee_yen_per_kwh",
    "site_fee_yen_per_kwh",
    "feeder_capacity_kwh",
    "transformer_capacity_kwh",
    "site_capacity_kwh",
)
_GRID_KEYS: Final = (*_GENERATED_GRID_KEYS, "nodes")
_NODE_KEYS: Final = ("id", "parent", "fee_yen_per_kwh", "capacity_kwh")
_CAR_KEYS: Final = ("pattern", "start_soc_percent", "charge_at")
#: How a site's car is used: ``commuter`` — away on weekdays for work (the default);
#: ``home-day`` — at home on weekdays but for errands (a retiree, a home worker, a second car);
#: ``workplace`` — a commuter that plugs in at work, at the charger on grid node ``charge_at``.
CAR_PATTERNS: Final = ("commuter", "home-day", "workplace")
_SITE_KEYS: Final = (
    "type",
    "count",
    "id_prefix",
    "node",
    "pv_kw",
    "tilt_deg",
    "azimuth_deg",
    "battery_kwh",
    "battery_kw",
    "ev_kwh",
    "phev",
    "car",
    "annual_kwh",
    "occupancy",
    "policy",
    "policy_options",
    "load_csv",
    "pv_csv",
)
_GRID_FEE_DEFAULTS_SEN: Final = {
    "feeder_fee_yen_per_kwh": 150,
    "transformer_fee_yen_per_kwh": 40,
    "site_fee_yen_per_kwh": 10,
}


@dataclass(frozen=True, slots=True)
class MeterData:
    """A site's own measured series replacing a model.

    Attributes
    ----------
    load_wh, pv_wh
        JST day → its 48 half-hour values [Wh], for every day the file covers completely;
        ``None`` where the model is kept.
    load_file, pv_file
        The files as named in the scenario, for messages.
    """

    load_wh: dict[date, tuple[int, ...]] | None
    pv_wh: dict[date, tuple[int, ...]] | None
    load_file: str | None = None
    pv_file: str | None = None
    load_gaps: tuple[Gap, ...] = ()
    pv_gaps: tuple[Gap, ...] = ()


@dataclass(frozen=True, slots=True)
class Gap:
    """Half hours missing from a meter file: from ``start`` (JST), ``missing`` of them, after
    the row on ``line``."""

    start: datetime
    missing: int
    line: int

    @property
    def end(self) -> datetime:
        return self.start + self.missing * SLOT

    def days(self) -> set[date]:
        """The JST days the gap leaves incomplete."""
        out, day = set(), self.start.date()
        while datetime(day.year, day.month, day.day, tzinfo=JST) < self.end:
            out.add(day)
            day += timedelta(days=1)
        return out

    def describe(self) -> str:
        return (
            f"a gap of {self.missing} half hour(s) from {self.start.isoformat()} "
            f"(after line {self.line})"
        )


@dataclass(frozen=True, slots=True)
class Scenario:
    """A community to simulate (see the module docstring for the file format).

    Money is integer sen/kWh, energy integer Wh; ``grid`` is the tree as
    :meth:`~peerpower.grid.tree.GridTree.from_json` reads it and every site's ``node`` is in it.
    """

    name: str
    start: date
    days: int
    seed: int
    validators: int
    mechanism: Mechanism
    goal: Goal | None
    pricing: Pricing
    gate_minutes: int
    lot_wh: int
    price_min_sen_per_kwh: int
    price_max_sen_per_kwh: int
    tariff_sen_per_kwh: int
    buyback_sen_per_kwh: int
    grid: dict[str, Any]
    sites: tuple[SiteSpec, ...]
    meter_data: dict[str, MeterData]

    @property
    def end(self) -> date:
        """The day after the last simulated day."""
        return self.start + timedelta(days=self.days)

    def market_rules(self) -> MarketRules:
        """The chain's market rules for this scenario (default ``max_order_wh``)."""
        return MarketRules(
            mechanism=self.mechanism,
            goal=self.goal,
            pricing=self.pricing,
            gate_minutes=self.gate_minutes,
            lot_wh=self.lot_wh,
            price_min_sen_per_kwh=self.price_min_sen_per_kwh,
            price_max_sen_per_kwh=self.price_max_sen_per_kwh,
            grid=GridTree.from_json(self.grid),
        )

    def warnings(self) -> list[str]:
        """What the scenario's meter data leaves out outside the simulated days: each gap,
        whose days are not used (forecasts draw on the complete days before the start)."""
        end = self.start + timedelta(days=self.days)
        out = []
        for site_id, data in sorted(self.meter_data.items()):
            for gaps, name in ((data.load_gaps, data.load_file), (data.pv_gaps, data.pv_file)):
                for gap in gaps:
                    if not any(self.start <= d < end for d in gap.days()):
                        out.append(
                            f"{site_id}: {name} has {gap.describe()}, outside the simulated "
                            "days; the days it leaves incomplete are not used"
                        )
        return out

    def with_overrides(
        self,
        *,
        days: Any = None,
        seed: Any = None,
        mechanism: Any = None,
        goal: Any = None,
        validators: Any = None,
        pricing: Any = None,
    ) -> Scenario:
        """This scenario with command-line overrides, each checked as in a file.

        A new ``seed`` re-seeds every site; a new ``mechanism`` without a ``goal`` keeps the
        goal if it still applies, else takes the mechanism's default; likewise the pricing.
        More ``days`` must still be covered by every site's meter data.
        """
        r = _Reader("override", Path("."))
        new_days = self.days if days is None else r.int_in(days, "days", 1, MAX_DAYS)
        new_seed = self.seed if seed is None else r.int_in(seed, "seed", 0, MAX_SEED)
        new_validators = self.validators if validators is None else r.validators(validators)
        new_mechanism = self.mechanism if mechanism is None else r.mechanism(mechanism)
        new_goal: Goal | None
        if goal is not None:
            new_goal = r.goal(goal, new_mechanism, "goal")
        elif new_mechanism != "optimal":
            new_goal = None
        else:
            new_goal = self.goal if self.goal is not None else "welfare"
        if pricing is not None:
            new_pricing = r.pricing(pricing, new_mechanism, new_goal, "pricing")
        elif self.pricing in pricings_for(new_mechanism, new_goal):
            new_pricing = self.pricing
        else:
            new_pricing = pricings_for(new_mechanism, new_goal)[0]
        sites = self.sites
        if new_seed != self.seed:
            sites = tuple(
                replace(s, seed=_site_seed(new_seed, k)) for k, s in enumerate(self.sites)
            )
        end = self.start + timedelta(days=new_days)
        for site_id, data in self.meter_data.items():
            for series, gaps, name in (
                (data.load_wh, data.load_gaps, data.load_file),
                (data.pv_wh, data.pv_gaps, data.pv_file),
            ):
                if series is not None:
                    _check_coverage(r, series, gaps, self.start, end, "days", f"{site_id}: {name}")
        return replace(
            self,
            days=new_days,
            seed=new_seed,
            validators=new_validators,
            mechanism=new_mechanism,
            goal=new_goal,
            pricing=new_pricing,
            sites=sites,
        )


def load_preset(name: str) -> Scenario:
    """A scenario shipped under ``peerpower/sim/presets/`` (:data:`PRESETS`, and ``devnet``
    for ``peerpower serve --devnet``)."""
    preset = resources.files("peerpower.sim").joinpath("presets", f"{name}.toml")
    return parse_scenario(
        preset.read_text(encoding="utf-8"), f"preset {name}", Path(__file__).parent / "presets"
    )


def load_scenario(name_or_path: str) -> Scenario:
    """A preset by name (:data:`PRESETS`) or a scenario TOML file by path.

    Raises
    ------
    InvalidInput
        The name is neither, the file cannot be read, or the scenario is invalid.
    """
    if name_or_path in PRESETS:
        return load_preset(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidInput(
            "scenario",
            f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a file",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput("scenario", f"{name_or_path}: cannot be read ({err})") from None
    return parse_scenario(text, str(path), path.parent)


def parse_scenario(text: str, source: str, base_dir: Path) -> Scenario:
    """Read a scenario from TOML ``text``.

    Parameters
    ----------
    text
        The TOML document.
    source
        The file's name, put at the start of every error message.
    base_dir
        Directory that relative meter data paths start from.
    """
    r = _Reader(source, base_dir)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        r.fail("scenario", f"not valid TOML: {err}")
    r.keys(doc, _TOP_KEYS, "")
    name = doc.get("name", Path(source).stem)
    if type(name) is not str or not 0 < len(name) <= 64:
        r.fail("name", f"must be a string of 1–64 characters, got {name!r}")
    if "start" not in doc:
        r.fail("start", "is missing (the first simulated JST day, e.g. start = 2026-09-28)")
    start = doc["start"]
    if not isinstance(start, date) or isinstance(start, datetime):
        r.fail("start", f"must be a TOML date such as 2026-09-28, got {start!r}")
    if not MIN_SLOT_YEAR <= start.year <= MAX_SLOT_YEAR - 1:
        r.fail("start", f"must be in years {MIN_SLOT_YEAR}–{MAX_SLOT_YEAR - 1}, got {start}")
    days = r.int_in(doc.get("days", 1), "days", 1, MAX_DAYS)
    seed = r.int_in(doc.get("seed", 0), "seed", 0, MAX_SEED)
    validators = r.validators(doc.get("validators", 4))
    location = _location(r, doc.get("location", {}))

    market = r.table(doc.get("market", {}), "market")
    r.keys(market, _MARKET_KEYS, "market")
    mechanism = r.mechanism(market.get("mechanism", "optimal"), "market.mechanism")
    goal_default = "welfare" if mechanism == "optimal" else None
    goal = r.goal(market.get("goal", goal_default), mechanism, "market.goal")
    pricing = r.pricing(market.get("pricing"), mechanism, goal, "market.pricing")
    gate = r.int_in(market.get("gate_minutes", 5), "market.gate_minutes", 1, 24 * 60 - 1)
    lot = r.int_in(market.get("lot_wh", 100), "market.lot_wh", 1, MAX_LOT_WH)
    price_min = r.yen(market.get("price_min_yen_per_kwh", 0), "market.price_min_yen_per_kwh")
    price_max = r.yen(market.get("price_max_yen_per_kwh", 100), "market.price_max_yen_per_kwh")
    if price_min > price_max:
        r.fail("market.price_min_yen_per_kwh", "must not be above price_max_yen_per_kwh")

    retail = r.table(doc.get("retail", {}), "retail")
    r.keys(retail, _RETAIL_KEYS, "retail")
    tariff = r.yen(retail.get("tariff_yen_per_kwh", 26.0), "retail.tariff_yen_per_kwh")
    buyback = r.yen(retail.get("buyback_yen_per_kwh", 8.5), "retail.buyback_yen_per_kwh")
    if tariff < buyback:
        r.fail(
            "retail.tariff_yen_per_kwh",
            f"must be ≥ buyback_yen_per_kwh ({buyback / 100:g}), got {tariff / 100:g}",
        )

    grid_table = r.table(doc.get("grid", {}), "grid")
    r.keys(grid_table, _GRID_KEYS, "grid")
    given_nodes = "nodes" in grid_table
    if given_nodes:
        for key in grid_table:
            if key != "nodes":
                r.fail(f"grid.{key}", "applies to a generated grid; this one is given as nodes")
    entries = doc.get("sites")
    if not isinstance(entries, list) or not entries:
        r.fail("sites", "must be one or more [[sites]] tables")
    end = start + timedelta(days=days)
    specs: list[SiteSpec] = []
    placed: list[tuple[int, str | None]] = []  # (entry, node) of each site
    meter: dict[str, MeterData] = {}
    counters: dict[str, int] = {}
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        template, count, prefix, node, data = _entry(r, raw, i, location, given_nodes, start, end)
        if len(specs) + count > MAX_SITES:
            r.fail(f"sites[{i}].count", f"brings the sites to over {MAX_SITES}")
        for _ in range(count):
            n = counters.get(prefix, 0)
            counters[prefix] = n + 1
            site_id = f"{prefix}-{n:03d}"
            try:
                check_account_id(site_id, "id")
            except InvalidInput as err:
                r.fail(f"sites[{i}].id_prefix", err.message)
            if site_id in seen:
                r.fail(f"sites[{i}].id_prefix", f"gives {site_id!r} a second time")
            seen.add(site_id)
            try:
                specs.append(replace(template, id=site_id, seed=_site_seed(seed, len(specs))))
            except InvalidInput as err:
                r.fail(f"sites[{i}].id_prefix", err.message)
            placed.append((i, node))
            if data is not None:
                meter[site_id] = data
    if given_nodes:
        grid = _given_grid(r, grid_table)
        known = {n["id"] for n in grid["nodes"]}
        for k, (spec, (i, node)) in enumerate(zip(specs, placed, strict=True)):
            if node is None or node not in known:
                r.fail(f"sites[{i}].node", f"{node!r} is not a node of the grid")
            specs[k] = replace(spec, node=node)
    else:
        grid = _generated_grid(r, grid_table, [s.id for s in specs])
        specs = [replace(s, node=f"n-{s.id}") for s in specs]
    try:
        GridTree.from_json(grid)
    except InvalidInput as err:
        r.fail(err.field, err.message)
    nodes = {n["id"] for n in grid["nodes"]}
    for spec, (i, _) in zip(specs, placed, strict=True):
        if spec.charge_at is None:
            continue
        if spec.charge_at not in nodes:
            r.fail(
                f"sites[{i}].car.charge_at",
                f"{spec.charge_at!r} is not a node of the grid (a generated grid's site nodes "
                "are n-<site id>, e.g. n-business-000)",
            )
        if spec.charge_at == spec.node:
            r.fail(
                f"sites[{i}].car.charge_at",
                f"{spec.charge_at!r} is the site's own node: a workplace charger is elsewhere",
            )
    return Scenario(
        name=name,
        start=start,
        days=days,
        seed=seed,
        validators=validators,
        mechanism=mechanism,
        goal=goal,
        pricing=pricing,
        gate_minutes=gate,
        lot_wh=lot,
        price_min_sen_per_kwh=price_min,
        price_max_sen_per_kwh=price_max,
        tariff_sen_per_kwh=tariff,
        buyback_sen_per_kwh=buyback,
        grid=grid,
        sites=tuple(specs),
        meter_data=meter,
    )


@dataclass(frozen=True, slots=True)
class _Series:
    """A parsed meter file: complete JST days, its gaps, and every row (line, JST start, Wh)."""

    days: dict[date, tuple[int, ...]]
    gaps: tuple[Gap, ...]
    rows: tuple[tuple[int, datetime, int], ...]


def _read_meter_csv(r: _Reader, text_path: Any, field: str) -> _Series:
    """Read a ``timestamp,wh`` file (see the module notes)."""
    if type(text_path) is not str or not text_path:
        r.fail(field, f"must be a file path, got {text_path!r}")
    path = r.base_dir / text_path
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        r.fail(field, f"{text_path}: cannot be read ({err})")
    return _parse_meter_csv(text, text_path, lambda msg: r.fail(field, f"{text_path} {msg}"))


#: A file whose values are all at most this, with fractions, looks like kWh per half hour
#: (a site's half hour is at most 50 kWh, :data:`MAX_METER_WH`); above it, like Wh with decimals.
KWH_LOOKING_MAX = 50
#: A file of at least a day whose whole values never exceed this looks like whole kWh: no
#: occupied site or working PV stays within 10 Wh per half hour for a day.
WHOLE_KWH_LOOKING_MAX = 10


def _parse_meter_csv(text: str, name: str, fail: Callable[[str], NoReturn]) -> _Series:
    """Parse meter CSV ``text``; ``fail("line N: …")`` is called on the first error."""
    lines = text.splitlines()
    header = [c.strip().lower() for c in lines[0].split(",")] if lines else []
    if not header or header == [""]:
        fail("line 1: the file is empty; expected the header 'timestamp,wh'")
    if len(header) == 2 and header[0] == "timestamp" and header[1] == "kwh":
        fail(
            "line 1: the header says kWh; give whole Wh per half hour (kWh × 1000) "
            "under the header 'timestamp,wh'"
        )
    if header != ["timestamp", "wh"]:
        fail(f"line 1: the header must be 'timestamp,wh', got {lines[0].strip()!r}")
    rows: list[tuple[int, datetime, str]] = []
    gaps: list[Gap] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"line {n}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            fail(f"{where}: expected two columns 'timestamp,wh', got {line.strip()!r}")
        try:
            moment = datetime.fromisoformat(parts[0])
        except ValueError:
            fail(f"{where}: {parts[0]!r} is not an ISO 8601 timestamp")
        if moment.tzinfo is None:
            fail(f"{where}: {parts[0]!r} has no UTC offset (write e.g. 2026-09-28T00:00+09:00)")
        local = moment.astimezone(JST)
        if local.minute % 15 == 0 and local.minute % 30 and not local.second:
            fail(
                f"{where}: {parts[0]} is a quarter hour: this looks like 15-minute data; sum "
                "each two rows into their half hour, timestamped at the first (:00 or :30)"
            )
        if local.minute % 30 or local.second or local.microsecond:
            fail(f"{where}: {parts[0]} is not on a half hour (JST :00 or :30)")
        if rows:
            prev_line, prev, _ = rows[-1]
            step = local - prev
            if step == timedelta(0):
                fail(f"{where}: {parts[0]} is a duplicate of line {prev_line}")
            if step < timedelta(0):
                fail(f"{where}: {parts[0]} is before line {prev_line} ({prev.isoformat()})")
            if step != SLOT:
                gaps.append(Gap(prev + SLOT, step // SLOT - 1, prev_line))
        rows.append((n, local, parts[1]))
    if not rows:
        fail("line 2: no rows after the header")
    first, last = rows[0][1], rows[-1][1]
    if (
        len(rows) >= SLOTS_PER_DAY
        and (first.hour, first.minute) == (0, 30)
        and (
            last.hour,
            last.minute,
        )
        == (0, 0)
    ):
        fail(
            f"line 2: the rows run from 00:30 to 00:00 ({first.isoformat()} to "
            f"{last.isoformat()}): this looks like timestamps that mark the end of each half "
            "hour; they must mark its start (subtract 30 minutes from each)"
        )
    values = _meter_values([(n, v) for n, _, v in rows], fail)
    by_day: dict[date, list[int]] = {}
    for (_, local, _), wh in zip(rows, values, strict=True):
        by_day.setdefault(local.date(), [-1] * SLOTS_PER_DAY)[
            (local.hour * 60 + local.minute) // 30
        ] = wh
    return _Series(
        days={d: tuple(v) for d, v in by_day.items() if all(x >= 0 for x in v)},
        gaps=tuple(gaps),
        rows=tuple((n, local, wh) for (n, local, _), wh in zip(rows, values, strict=True)),
    )


def _meter_values(texts: list[tuple[int, str]], fail: Callable[[str], NoReturn]) -> list[int]:
    """The file's values as whole Wh, judged as a whole: a fraction in a file of small values
    is kWh, in one of large values Wh with decimals; a day or more of whole values, not all
    zero, that never exceed :data:`WHOLE_KWH_LOOKING_MAX` is whole kWh."""
    numbers: list[float | int] = []
    for n, text in texts:
        where = f"line {n}"
        if re.fullmatch(r"[+-]?\d+", text):
            numbers.append(int(text))
            continue
        try:
            number = float(text)
        except ValueError:
            fail(f"{where}: {text!r} is not a number of Wh")
        if not math.isfinite(number):
            fail(f"{where}: {text!r} is not a number of Wh")
        numbers.append(number)
    for (n, text), number in zip(texts, numbers, strict=True):
        if number < 0:
            fail(f"line {n}: {text} is negative; values must be ≥ 0 Wh (export goes in pv_csv)")
    top = max(numbers)
    for (n, text), number in zip(texts, numbers, strict=True):
        if number != int(number):
            if top <= KWH_LOOKING_MAX:
                fail(
                    f"line {n}: {text} has a fraction, and no value in the file exceeds "
                    f"{top:g}: this looks like kWh per half hour; give whole Wh (multiply by "
                    "1000 and round)"
                )
            fail(
                f"line {n}: {text} has a fraction; values must be whole Wh per half hour "
                "(round them to the Wh)"
            )
    if len(numbers) >= SLOTS_PER_DAY and 0 < top <= WHOLE_KWH_LOOKING_MAX:
        fail(
            f"line {texts[0][0]}: every value is 0–{int(top)} Wh per half hour, too little for "
            "any site over a day: this looks like kWh rounded to whole numbers; give Wh per "
            "half hour, measured to the Wh"
        )
    for (n, text), number in zip(texts, numbers, strict=True):
        if number > MAX_METER_WH:
            fail(
                f"line {n}: {text} Wh in half an hour is implausible for a site "
                f"(at most {MAX_METER_WH} Wh, i.e. 100 kW)"
            )
    return [int(x) for x in numbers]


def _check_pv(r: _Reader, series: _Series, pv: PVConfig, field: str, name: str) -> None:
    """PV data against the site's panel: nothing above its rated power, nothing while the sun is
    down (in a half hour and the ones either side, so that dawn and dusk are not judged)."""
    rated = pv.capacity_kw * 1000 * SLOT.total_seconds() / 3600
    dark: dict[date, list[bool]] = {}
    for line, local, wh in series.rows:
        if wh > rated:
            r.fail(
                field,
                f"{name} line {line}: {wh} Wh at {local.isoformat()} is above what the site's "
                f"{pv.capacity_kw:g} kW of PV can make in half an hour ({rated:g} Wh): check "
                "pv_kw and the file's units",
            )
        day = local.date()
        if day not in dark:
            sky = clear_sky_wh(pv, day)
            dark[day] = [
                all(sky[j] <= 0 for j in range(max(0, k - 1), min(SLOTS_PER_DAY, k + 2)))
                for k in range(SLOTS_PER_DAY)
            ]
        k = (local.hour * 60 + local.minute) // 30
        if wh > 0 and dark[day][k]:
            r.fail(
                field,
                f"{name} line {line}: {wh} Wh of PV at {local.isoformat()}, when the sun is "
                "down at the site: check the timestamps' UTC offset and that each marks the "
                "start of its half hour",
            )


class _Reader:
    """Checks that name the file in every message."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, field: str, message: str) -> NoReturn:
        raise InvalidInput(field or "scenario", f"{self.source}: {message}")

    def table(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"must be a table, got {value!r}")
        return value

    def keys(self, table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
        allowed = tuple(known)
        for key in table:
            if key not in allowed:
                self.fail(
                    f"{where}.{key}" if where else key,
                    f"unknown key {key!r}; known keys: {', '.join(allowed)}",
                )

    def int_in(self, value: Any, field: str, lo: int, hi: int) -> int:
        if type(value) is not int or not lo <= value <= hi:
            self.fail(field, f"must be an integer {lo}–{hi}, got {value!r}")
        return value

    def number(self, value: Any, field: str, positive: bool = True) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):
            self.fail(field, f"must be a number, got {value!r}")
        if positive and not value > 0:
            self.fail(field, f"must be > 0, got {value!r}")
        return float(value)

    def yen(self, value: Any, field: str) -> int:
        """Yen/kWh as integer sen/kWh, rounded half up."""
        if type(value) not in (int, float) or not math.isfinite(value):
            self.fail(field, f"must be a number of yen/kWh, got {value!r}")
        sen = _round_half_up(value, 100)
        if not 0 <= sen <= PRICE_MAX_SEN_PER_KWH:
            self.fail(field, f"must be 0–{PRICE_MAX_SEN_PER_KWH // 100} yen/kWh, got {value!r}")
        return sen

    def validators(self, value: Any) -> int:
        if type(value) is not int or not (value == 1 or 4 <= value <= MAX_VALIDATORS):
            self.fail(
                "validators",
                f"must be 1 (solo) or 4–{MAX_VALIDATORS} (BFT needs 3f + 1), got {value!r}",
            )
        return value

    def mechanism(self, value: Any, field: str = "mechanism") -> Mechanism:
        if value not in MECHANISMS:
            self.fail(field, f"{value!r} is not one of {', '.join(MECHANISMS)}")
        return MECHANISMS[MECHANISMS.index(value)]

    def goal(self, value: Any, mechanism: str, field: str) -> Goal | None:
        if mechanism != "optimal":
            if value is not None:
                self.fail(field, f"a goal applies to optimal only, not {mechanism}; got {value!r}")
            return None
        if value not in GOALS:
            self.fail(field, f"{value!r} is not one of {', '.join(GOALS)}")
        return GOALS[GOALS.index(value)]

    def pricing(self, value: Any, mechanism: str, goal: str | None, field: str) -> Pricing:
        """A pricing rule the mechanism and goal define; ``None`` gives their default."""
        allowed = pricings_for(mechanism, goal)
        if value is None:
            return allowed[0]
        if value not in allowed:
            what = f"{mechanism}/{goal}" if goal else mechanism
            self.fail(
                field, f"{value!r} is not a pricing rule {what} defines; use {' or '.join(allowed)}"
            )
        return allowed[allowed.index(value)]


def _round_half_up(value: float, scale: int) -> int:
    try:
        exact = Decimal(str(value)) * scale
    except InvalidOperation:  # pragma: no cover - finite numbers always convert
        raise InvalidInput("value", f"not a number: {value!r}") from None
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _site_seed(seed: int, k: int) -> int:
    return seed * SITE_SEED_STRIDE + k


def _location(r: _Reader, raw: Any) -> dict[str, float]:
    table = r.table(raw, "location")
    r.keys(table, _LOCATION_KEYS, "location")
    out = {key: r.number(table[key], f"location.{key}", False) for key in table}
    try:
        PVConfig(**out)
    except InvalidInput as err:
        r.fail(f"location.{err.field}", err.message)
    return out


T = TypeVar("T")


def _build(r: _Reader, where: str, keys: Mapping[str, str], make: Callable[[], T]) -> T:
    """``make()``, re-raising a device config's error under the scenario key it came from."""
    try:
        return make()
    except InvalidInput as err:
        key = keys.get(err.field)
        if key is None:
            r.fail(where, f"{err.field}: {err.message}")
        r.fail(f"{where}.{key}", err.message)


def _entry(
    r: _Reader,
    raw: Any,
    i: int,
    location: dict[str, float],
    given_nodes: bool,
    start: date,
    end: date,
) -> tuple[SiteSpec, int, str, str | None, MeterData | None]:
    """One ``[[sites]]`` entry: a template site, its count, id prefix, node and meter data."""
    where = f"sites[{i}]"
    entry = r.table(raw, where)
    r.keys(entry, _SITE_KEYS, where)
    site_type = entry.get("type")
    if site_type not in CATALOGUE_TYPES:
        r.fail(f"{where}.type", f"{site_type!r} is not one of {', '.join(CATALOGUE_TYPES)}")
    count = r.int_in(entry.get("count", 1), f"{where}.count", 1, MAX_SITES)
    prefix = entry.get("id_prefix", "site")
    if type(prefix) is not str or not prefix:
        r.fail(f"{where}.id_prefix", f"must be a non-empty string, got {prefix!r}")
    node = entry.get("node")
    if given_nodes:
        if type(node) is not str or not node:
            r.fail(f"{where}.node", f"must name a node of grid.nodes, got {node!r}")
    elif node is not None:
        r.fail(f"{where}.node", "applies only to a grid given as nodes (this one is generated)")

    base = site(site_type, "template")

    def has(key: str, device: object, what: str) -> bool:
        if key not in entry:
            return False
        if device is None:
            r.fail(f"{where}.{key}", f"a {site_type} site has no {what}; choose a type with one")
        return True

    pv = base.pv
    if pv is not None:
        pv_changes: dict[str, float] = {}
        if has("pv_kw", pv, "PV"):
            pv_changes["capacity_kw"] = r.number(entry["pv_kw"], f"{where}.pv_kw")
        for key in ("tilt_deg", "azimuth_deg"):
            if key in entry:
                pv_changes[key] = r.number(entry[key], f"{where}.{key}", False)
        current = pv
        pv = _build(
            r,
            where,
            {"capacity_kw": "pv_kw", "tilt_deg": "tilt_deg", "azimuth_deg": "azimuth_deg"},
            lambda: replace(current, **location, **pv_changes),
        )
    else:
        for key, what in (("pv_kw", "PV"), ("tilt_deg", "PV"), ("azimuth_deg", "PV")):
            has(key, None, what)

    battery = base.battery
    if has("battery_kwh", battery, "battery") | has("battery_kw", battery, "battery"):
        assert battery is not None
        changes: dict[str, int] = {}
        if "battery_kwh" in entry:
            kwh = r.number(entry["battery_kwh"], f"{where}.battery_kwh")
            changes["capacity_wh"] = _round_half_up(kwh, 1000)
        if "battery_kw" in entry:
            kw = r.number(entry["battery_kw"], f"{where}.battery_kw")
            changes["charge_w"] = changes["discharge_w"] = _round_half_up(kw, 1000)
        current_battery: BatteryConfig = battery
        battery = _build(
            r,
            where,
            {"capacity_wh": "battery_kwh", "charge_w": "battery_kw", "discharge_w": "battery_kw"},
            lambda: replace(current_battery, **changes),
        )

    ev = base.ev
    if has("ev_kwh", ev, "car") | has("phev", ev, "car"):
        assert ev is not None
        ev_changes: dict[str, Any] = {}
        if "ev_kwh" in entry:
            kwh = r.number(entry["ev_kwh"], f"{where}.ev_kwh")
            ev_changes["capacity_wh"] = _round_half_up(kwh, 1000)
        if "phev" in entry:
            if type(entry["phev"]) is not bool:
                r.fail(f"{where}.phev", f"must be true or false, got {entry['phev']!r}")
            ev_changes["phev"] = entry["phev"]
        current_ev: EVConfig = ev
        ev = _build(
            r,
            where,
            {"capacity_wh": "ev_kwh", "phev": "phev"},
            lambda: replace(current_ev, **ev_changes),
        )

    driving = base.driving
    charge_at: str | None = None
    if has("car", ev, "car"):
        assert ev is not None and driving is not None
        car = r.table(entry["car"], f"{where}.car")
        r.keys(car, _CAR_KEYS, f"{where}.car")
        if "pattern" in car:
            pattern = car["pattern"]
            if pattern not in CAR_PATTERNS:
                r.fail(
                    f"{where}.car.pattern",
                    f"{pattern!r} is not one of {', '.join(CAR_PATTERNS)}",
                )
            driving = replace(
                driving,
                commuter=pattern in ("commuter", "workplace"),
                charge_at_work=pattern == "workplace",
            )
        if "charge_at" in car:
            charge_at = car["charge_at"]
            if not driving.charge_at_work:
                r.fail(
                    f"{where}.car.charge_at",
                    f'{charge_at!r}: only a car with pattern = "workplace" charges at work',
                )
            if type(charge_at) is not str:
                r.fail(f"{where}.car.charge_at", f"must be a grid node's id, got {charge_at!r}")
        elif driving.charge_at_work:
            r.fail(
                f"{where}.car.charge_at",
                "a workplace car needs the grid node of its charger at work "
                '(e.g. charge_at = "n-business-000", the node of site business-000)',
            )
        if "start_soc_percent" in car:
            soc = r.int_in(car["start_soc_percent"], f"{where}.car.start_soc_percent", 0, 100)
            current_car: EVConfig = ev
            ev = _build(
                r,
                where,
                {"soc_initial_percent": "car.start_soc_percent"},
                lambda: replace(current_car, soc_initial_percent=soc),
            )

    load_changes: dict[str, Any] = {}
    if "annual_kwh" in entry:
        load_changes["annual_kwh"] = r.number(entry["annual_kwh"], f"{where}.annual_kwh")
    if "occupancy" in entry:
        load_changes["occupancy"] = entry["occupancy"]
    current_load: LoadConfig = base.load
    load = _build(
        r,
        where,
        {"annual_kwh": "annual_kwh", "occupancy": "occupancy"},
        lambda: replace(current_load, **load_changes),
    )

    policy = entry.get("policy", base.policy)
    if policy not in policy_names():
        r.fail(f"{where}.policy", f"{policy!r} is not one of {', '.join(policy_names())}")
    options = r.table(entry.get("policy_options", {}), f"{where}.policy_options")
    try:
        template = replace(
            base,
            pv=pv,
            battery=battery,
            ev=ev,
            driving=driving,
            charge_at=charge_at,
            load=load,
            policy=policy,
            policy_options=tuple(sorted(options.items())),
        )
    except (InvalidInput, TypeError, ValueError) as err:
        message = err.message if isinstance(err, InvalidInput) else str(err)
        r.fail(f"{where}.policy_options", f"rejected by policy {policy!r}: {message}")

    data = None
    if "load_csv" in entry or "pv_csv" in entry:
        load_data = pv_data = None
        if "load_csv" in entry:
            load_data = _read_meter_csv(r, entry["load_csv"], f"{where}.load_csv")
            _check_coverage(
                r,
                load_data.days,
                load_data.gaps,
                start,
                end,
                f"{where}.load_csv",
                entry["load_csv"],
            )
        if has("pv_csv", base.pv, "PV"):
            pv_data = _read_meter_csv(r, entry["pv_csv"], f"{where}.pv_csv")
            assert pv is not None  # has() refused pv_csv for a type without PV
            _check_pv(r, pv_data, pv, f"{where}.pv_csv", entry["pv_csv"])
            _check_coverage(
                r, pv_data.days, pv_data.gaps, start, end, f"{where}.pv_csv", entry["pv_csv"]
            )
        data = MeterData(
            None if load_data is None else load_data.days,
            None if pv_data is None else pv_data.days,
            entry.get("load_csv"),
            entry.get("pv_csv"),
            () if load_data is None else load_data.gaps,
            () if pv_data is None else pv_data.gaps,
        )
    return template, count, prefix, node, data


def _check_coverage(
    r: _Reader,
    series: Mapping[date, tuple[int, ...]],
    gaps: Iterable[Gap],
    start: date,
    end: date,
    field: str,
    name: str,
) -> None:
    day = start
    while day < end:
        if day not in series:
            hole = next((g for g in gaps if day in g.days()), None)
            if hole is not None:
                r.fail(
                    field,
                    f"{name} has {hole.describe()}, in simulated day {day}; every simulated "
                    "day needs all 48 half hours (gaps on other days are only warned of)",
                )
            covered = (
                f"complete days {min(series)} to {max(series)}" if series else "no complete day"
            )
            r.fail(
                field,
                f"{name} has no complete data for simulated day {day} (it has {covered}); "
                "every simulated day needs all 48 half hours",
            )
        day += timedelta(days=1)


def _capacity(r: _Reader, table: Mapping[str, Any], key: str, field: str) -> int | None:
    if key not in table:
        return None
    kwh = r.number(table[key], field, False)
    if kwh < 0:
        r.fail(field, f"must be ≥ 0 kWh, got {kwh!r}")
    return _round_half_up(kwh, 1000)


def _node(
    node_id: str, parent: str | None, fee_sen: int = 0, capacity_wh: int | None = None
) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "parent": parent}
    if parent is not None:
        node["fee_sen_per_kwh"] = fee_sen
        if capacity_wh is not None:
            node["capacity_wh"] = capacity_wh
    return node


def _generated_grid(r: _Reader, table: Mapping[str, Any], site_ids: list[str]) -> dict[str, Any]:
    feeders = r.int_in(table.get("feeders", 1), "grid.feeders", 1, 1000)
    per = r.int_in(
        table.get("sites_per_transformer", 10), "grid.sites_per_transformer", 1, MAX_SITES
    )
    fee = {
        key: r.yen(table[key], f"grid.{key}") if key in table else default
        for key, default in _GRID_FEE_DEFAULTS_SEN.items()
    }
    cap = {
        level: _capacity(r, table, f"{level}_capacity_kwh", f"grid.{level}_capacity_kwh")
        for level in ("feeder", "transformer", "site")
    }
    nodes = [_node("sub", None)]
    on_feeder = [site_ids[f::feeders] for f in range(feeders)]
    site_nodes: list[dict[str, Any]] = []
    for f, ids in enumerate(on_feeder):
        if not ids:
            continue  # more feeders than sites: an empty feeder carries nothing
        nodes.append(_node(f"f{f}", "sub", fee["feeder_fee_yen_per_kwh"], cap["feeder"]))
        for j, site_id in enumerate(ids):
            transformer = f"f{f}-t{j // per}"
            if j % per == 0:
                nodes.append(
                    _node(
                        transformer,
                        f"f{f}",
                        fee["transformer_fee_yen_per_kwh"],
                        cap["transformer"],
                    )
                )
            site_nodes.append(
                _node(f"n-{site_id}", transformer, fee["site_fee_yen_per_kwh"], cap["site"])
            )
    return {"nodes": nodes + site_nodes}


def _given_grid(r: _Reader, table: Mapping[str, Any]) -> dict[str, Any]:
    raw = table["nodes"]
    if not isinstance(raw, list) or not raw:
        r.fail("grid.nodes", f"must be a non-empty array of tables, got {raw!r}")
    nodes = []
    for k, item in enumerate(raw):
        where = f"grid.nodes[{k}]"
        node = r.table(item, where)
        r.keys(node, _NODE_KEYS, where)
        node_id = node.get("id")
        if type(node_id) is not str or not node_id:
            r.fail(f"{where}.id", f"must be a non-empty string, got {node_id!r}")
        parent = node.get("parent")
        if parent is not None and (type(parent) is not str or not parent):
            r.fail(f"{where}.parent", f"must be a node id (omit it for the root), got {parent!r}")
        if parent is None and ("fee_yen_per_kwh" in node or "capacity_kwh" in node):
            r.fail(where, f"root node {node_id!r} has no edge, so no fee or capacity")
        fee = r.yen(node.get("fee_yen_per_kwh", 0), f"{where}.fee_yen_per_kwh")
        capacity = _capacity(r, node, "capacity_kwh", f"{where}.capacity_kwh")
        nodes.append(_node(node_id, parent, fee, capacity))
    grid = {"nodes": nodes}
    try:
        GridTree.from_json(grid)
    except InvalidInput as err:
        r.fail(err.field, err.message)
    return grid
