"""Genesis: the chain's identity, its founding accounts, market rules and contract parameters.

Every parameter of the exchange contract is stated here, in the first block's input, so that a
chain carries its own rules. Defaults (all overridable in the genesis JSON):

==============================  ========  ==========================================================
parameter                       default   meaning
==============================  ========  ==========================================================
buy_margin_percent              100       a buy order locks bid × energy plus this percentage of the
                                          imbalance charge on its energy
sell_margin_percent             100       a sell order locks this percentage of the imbalance charge
                                          on its energy
imbalance_price_sen_per_kwh     3000      30 yen/kWh: what a shortfall costs, paid to the retail
                                          provider who makes up the energy (above the ~26 yen/kWh
                                          retail tariff, so failing to deliver never pays)
meter_deadline_minutes          60        readings of a slot are accepted from its end until this
                                          long after; settlement is allowed from then on
default_limit                   3         defaults that suspend a participant
default_tolerance_wh            0         a shortfall larger than this counts as a default (every
                                          shortfall is charged whatever its size)
gate_minutes                    5         orders close this long before the slot starts
lot_wh                          100       0.1 kWh lots
price_min/max_sen_per_kwh       0/10000   the price band, 0–100 yen/kWh
max_order_wh                    100000    100 kWh per order
mechanism, goal                 optimal,  how each slot is cleared
                                welfare
pricing                         (rule's)  how trades are priced: the mechanism's default —
                                          ``nodal`` for optimal/welfare and call, ``midpoint``
                                          for volume and maxmin, ``resting`` for cda; welfare
                                          may choose ``midpoint``
maxmin_budget                   20000     ``maxmin`` markets only: branch-and-bound nodes per
                                          stage of the exact MILP (a work limit, so every
                                          validator computes the same clearing; 0: rounding
                                          only). About 0.5–3 ms a node on this kind of machine,
                                          so 100,000 fits a 5-minute gate-to-start window
==============================  ========  ==========================================================

With both margin percentages at 100 a shortfall is always covered by the margin locked for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from peerpower.crypto import KEY_HEX_LENGTH, canonical, parse_hex, sha256
from peerpower.errors import ClearingError, InvalidInput
from peerpower.grid.tree import GridTree
from peerpower.market.optimal import check_pricing
from peerpower.market.pairwise import DEFAULT_BUDGET_NODES
from peerpower.market.result import GOALS, MECHANISMS, Goal, Mechanism, Pricing
from peerpower.units import PRICE_MAX_SEN_PER_KWH

#: Most branch-and-bound nodes a maxmin market may ask of each MILP stage.
MAX_BUDGET = 10_000_000

AccountKind = Literal["operator", "grid", "retail", "validator", "participant"]
GENESIS_KINDS: tuple[AccountKind, ...] = ("operator", "grid", "retail", "validator")
#: The kinds of site of the catalogue (peerpower.agents.catalogue): homes, a shop, a business.
CATALOGUE_TYPES = (
    "consumer",
    "consumer-phev",
    "pv",
    "pv-battery",
    "pv-phev",
    "pv-battery-phev",
    "shop",
    "business",
)
#: What a participant registers as: a catalogue site, or ``ev`` — a car's own account at a
#: charger away from its home (at a workplace), metered there.
SITE_TYPES = (*CATALOGUE_TYPES, "ev")
# Times [ms since the epoch] stay within years 1970–9998, so every slot's moments (a day either
# side) can be written as dates.
MAX_TIME_MS = 253_370_678_400_000  # 9998-12-31T00:00:00Z
MIN_SLOT_YEAR, MAX_SLOT_YEAR = 1971, 9998
ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SUPPLY_MICROYEN = 10**18


def check_account_id(value: Any, field_name: str) -> str:
    if type(value) is not str or not ACCOUNT_ID.fullmatch(value):
        raise InvalidInput(
            field_name,
            f"{value!r} is not an account id (1–64 of A–Z a–z 0–9 . _ -, starting alphanumeric)",
        )
    return value


@dataclass(frozen=True, slots=True)
class Params:
    """Parameters of the exchange contract (see the module table)."""

    buy_margin_percent: int = 100
    sell_margin_percent: int = 100
    imbalance_price_sen_per_kwh: int = 3000
    meter_deadline_minutes: int = 60
    default_limit: int = 3
    default_tolerance_wh: int = 0

    def buy_rate(self, bid_sen_per_kwh: int) -> int:
        """Margin rate of a buy order [sen/kWh]: the bid plus its share of the imbalance price."""
        return bid_sen_per_kwh + self.imbalance_price_sen_per_kwh * self.buy_margin_percent // 100

    def sell_rate(self) -> int:
        """Margin rate of a sell order [sen/kWh]."""
        return self.imbalance_price_sen_per_kwh * self.sell_margin_percent // 100


_PARAM_LIMITS = {
    "buy_margin_percent": (0, 1000),
    "sell_margin_percent": (0, 1000),
    "imbalance_price_sen_per_kwh": (0, PRICE_MAX_SEN_PER_KWH),
    "meter_deadline_minutes": (1, 7 * 24 * 60),
    "default_limit": (1, 1_000_000),
    "default_tolerance_wh": (0, 1_000_000),
}


@dataclass(frozen=True, slots=True, init=False)
class MarketRules:
    """How every slot of this chain is cleared and which orders it accepts.

    ``pricing`` is how the clearing prices its trades (:data:`peerpower.market.result.Pricing`);
    left out it is the mechanism's (and goal's) default — ``nodal`` for ``optimal``/``welfare``
    and ``call``, ``midpoint`` for ``volume`` and ``maxmin``, ``resting`` for ``cda``. A rule the
    mechanism does not define is an :class:`InvalidInput` naming ``genesis.market.pricing``.
    """

    mechanism: Mechanism
    goal: Goal | None
    gate_minutes: int
    lot_wh: int
    price_min_sen_per_kwh: int
    price_max_sen_per_kwh: int
    max_order_wh: int
    grid: GridTree
    pricing: Pricing
    maxmin_budget: int

    def __init__(
        self,
        mechanism: Mechanism = "optimal",
        goal: Goal | None = "welfare",
        gate_minutes: int = 5,
        lot_wh: int = 100,
        price_min_sen_per_kwh: int = 0,
        price_max_sen_per_kwh: int = 10_000,
        max_order_wh: int = 100_000,
        grid: GridTree | None = None,
        pricing: str | None = None,
        maxmin_budget: int = DEFAULT_BUDGET_NODES,
    ) -> None:
        try:
            rule = check_pricing(mechanism, goal if mechanism == "optimal" else None, pricing)
        except ClearingError as err:
            raise InvalidInput("genesis.market.pricing", err.message) from None
        values = (
            ("mechanism", mechanism),
            ("goal", goal),
            ("gate_minutes", gate_minutes),
            ("lot_wh", lot_wh),
            ("price_min_sen_per_kwh", price_min_sen_per_kwh),
            ("price_max_sen_per_kwh", price_max_sen_per_kwh),
            ("max_order_wh", max_order_wh),
            ("grid", GridTree.single() if grid is None else grid),
            ("pricing", rule),
            ("maxmin_budget", maxmin_budget),
        )
        for name, value in values:
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class GenesisAccount:
    id: str
    kind: AccountKind
    key: str
    balance_microyen: int = 0


@dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's first input: identity, founding accounts, market rules, parameters.

    Exactly one ``operator`` (the retail electricity provider who admits participants and takes
    deposits), one ``grid`` operator (receives fees), one ``retail`` provider (settles
    imbalances) and at least one ``validator``. The money in the founding balances is all the
    money there will ever be: every later µ¥ moves between accounts.
    """

    chain_id: str
    time_ms: int
    accounts: tuple[GenesisAccount, ...]
    market: MarketRules = field(default_factory=MarketRules)
    params: Params = field(default_factory=Params)
    _hash: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        _check_genesis(self)
        object.__setattr__(self, "_hash", sha256(canonical(self.to_json())))

    def account(self, kind: AccountKind) -> GenesisAccount:
        return next(a for a in self.accounts if a.kind == kind)

    @property
    def operator(self) -> str:
        return self.account("operator").id

    @property
    def grid_operator(self) -> str:
        return self.account("grid").id

    @property
    def retail(self) -> str:
        return self.account("retail").id

    @property
    def validators(self) -> tuple[GenesisAccount, ...]:
        return tuple(a for a in self.accounts if a.kind == "validator")

    @property
    def supply_microyen(self) -> int:
        return sum(a.balance_microyen for a in self.accounts)

    def to_json(self) -> dict[str, Any]:
        m = self.market
        return {
            "chain_id": self.chain_id,
            "time_ms": self.time_ms,
            "accounts": [
                {"id": a.id, "kind": a.kind, "key": a.key, "balance_microyen": a.balance_microyen}
                for a in self.accounts
            ],
            "market": {
                "mechanism": m.mechanism,
                "goal": m.goal,
                "pricing": m.pricing,
                "gate_minutes": m.gate_minutes,
                "lot_wh": m.lot_wh,
                "price_min_sen_per_kwh": m.price_min_sen_per_kwh,
                "price_max_sen_per_kwh": m.price_max_sen_per_kwh,
                "max_order_wh": m.max_order_wh,
                "grid": m.grid.to_json(),
                **({"maxmin_budget": m.maxmin_budget} if m.goal == "maxmin" else {}),
            },
            "params": {name: getattr(self.params, name) for name in _PARAM_LIMITS},
        }

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical JSON of the genesis."""
        return self._hash

    @property
    def tx_chain(self) -> str:
        """What every transaction of this chain carries as ``chain``: the genesis hash (hex), so
        a transaction signed for one chain is never valid on another, whatever their names."""
        return self._hash.hex()

    @classmethod
    def from_json(cls, obj: Any) -> Genesis:
        """Read a genesis; every missing market rule or parameter takes its default."""
        if not isinstance(obj, dict):
            raise InvalidInput("genesis", "must be a JSON object")
        chain_id = obj.get("chain_id")
        if type(chain_id) is not str or not 0 < len(chain_id) <= 64:
            raise InvalidInput(
                "genesis.chain_id", f"must be a string of 1–64 characters, got {chain_id!r}"
            )
        time_ms = _int(obj.get("time_ms"), "genesis.time_ms", 0, MAX_TIME_MS)
        raw_accounts = obj.get("accounts")
        if not isinstance(raw_accounts, list):
            raise InvalidInput("genesis.accounts", "must be a list")
        accounts = []
        for k, a in enumerate(raw_accounts):
            where = f"genesis.accounts[{k}]"
            if not isinstance(a, dict):
                raise InvalidInput(where, "must be an object")
            kind = a.get("kind")
            if kind not in GENESIS_KINDS:
                raise InvalidInput(
                    f"{where}.kind", f"{kind!r} is not one of {', '.join(GENESIS_KINDS)}"
                )
            parse_hex(a.get("key"), KEY_HEX_LENGTH, f"{where}.key")
            accounts.append(
                GenesisAccount(
                    check_account_id(a.get("id"), f"{where}.id"),
                    kind,
                    a["key"],
                    _int(
                        a.get("balance_microyen", 0),
                        f"{where}.balance_microyen",
                        0,
                        MAX_SUPPLY_MICROYEN,
                    ),
                )
            )
        market = _market(obj.get("market", {}))
        params = _params(obj.get("params", {}))
        return cls(chain_id, time_ms, tuple(accounts), market, params)


def _int(value: Any, field_name: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInput(field_name, f"must be an integer {lo}–{hi}, got {value!r}")
    return value


def _market(obj: Any) -> MarketRules:
    if not isinstance(obj, dict):
        raise InvalidInput("genesis.market", "must be an object")
    d = MarketRules()
    mechanism = obj.get("mechanism", d.mechanism)
    if mechanism not in MECHANISMS:
        raise InvalidInput(
            "genesis.market.mechanism", f"{mechanism!r} is not one of {', '.join(MECHANISMS)}"
        )
    goal = obj.get("goal", d.goal if mechanism == "optimal" else None)
    if mechanism == "optimal" and goal not in GOALS:
        raise InvalidInput("genesis.market.goal", f"{goal!r} is not one of {', '.join(GOALS)}")
    if mechanism != "optimal" and goal is not None:
        raise InvalidInput("genesis.market.goal", f"a goal applies to optimal only, got {goal!r}")
    grid = GridTree.from_json(obj["grid"], "genesis.market.grid") if "grid" in obj else d.grid
    where = "genesis.market."
    price_min = _int(
        obj.get("price_min_sen_per_kwh", d.price_min_sen_per_kwh),
        where + "price_min_sen_per_kwh",
        0,
        PRICE_MAX_SEN_PER_KWH,
    )
    price_max = _int(
        obj.get("price_max_sen_per_kwh", d.price_max_sen_per_kwh),
        where + "price_max_sen_per_kwh",
        price_min,
        PRICE_MAX_SEN_PER_KWH,
    )
    lot = _int(obj.get("lot_wh", d.lot_wh), where + "lot_wh", 1, 1_000_000)
    pricing = obj.get("pricing")
    if pricing is not None and type(pricing) is not str:
        raise InvalidInput(where + "pricing", f"must be a pricing rule's name, got {pricing!r}")
    if "maxmin_budget" in obj and goal != "maxmin":
        raise InvalidInput(
            where + "maxmin_budget", f"applies to goal maxmin only; this market's goal is {goal!r}"
        )
    budget = _int(
        obj.get("maxmin_budget", DEFAULT_BUDGET_NODES), where + "maxmin_budget", 0, MAX_BUDGET
    )
    return MarketRules(
        maxmin_budget=budget,
        mechanism=mechanism,
        goal=goal,
        pricing=pricing,
        # At least a minute, so blocks can seal and clear a slot before it starts; less than a
        # day, so the order window is not empty.
        gate_minutes=_int(
            obj.get("gate_minutes", d.gate_minutes), where + "gate_minutes", 1, 24 * 60 - 1
        ),
        lot_wh=lot,
        price_min_sen_per_kwh=price_min,
        price_max_sen_per_kwh=price_max,
        max_order_wh=_int(
            obj.get("max_order_wh", d.max_order_wh), where + "max_order_wh", lot, 10**9
        ),
        grid=grid,
    )


def _params(obj: Any) -> Params:
    if not isinstance(obj, dict):
        raise InvalidInput("genesis.params", "must be an object")
    for name in obj:
        if name not in _PARAM_LIMITS:
            raise InvalidInput(
                f"genesis.params.{name}", f"unknown parameter; known: {', '.join(_PARAM_LIMITS)}"
            )
    d = Params()
    values = {
        name: _int(obj.get(name, getattr(d, name)), f"genesis.params.{name}", lo, hi)
        for name, (lo, hi) in _PARAM_LIMITS.items()
    }
    return Params(**values)


def _check_genesis(g: Genesis) -> None:
    seen: set[str] = set()
    keys: set[str] = set()
    for k, a in enumerate(g.accounts):
        if a.id in seen:
            raise InvalidInput(f"genesis.accounts[{k}].id", f"duplicate account id {a.id!r}")
        if a.key in keys:
            raise InvalidInput(
                f"genesis.accounts[{k}].key",
                f"{a.key} is already another account's key; every account needs its own",
            )
        seen.add(a.id)
        keys.add(a.key)
    if not 1 <= g.market.gate_minutes < 24 * 60:
        raise InvalidInput(
            "genesis.market.gate_minutes", f"must be 1–1439, got {g.market.gate_minutes}"
        )
    if not 0 <= g.time_ms <= MAX_TIME_MS:
        raise InvalidInput("genesis.time_ms", f"must be 0–{MAX_TIME_MS}, got {g.time_ms}")
    for kind in ("operator", "grid", "retail"):
        n = sum(1 for a in g.accounts if a.kind == kind)
        if n != 1:
            raise InvalidInput("genesis.accounts", f"needs exactly one {kind!r} account, has {n}")
    if not any(a.kind == "validator" for a in g.accounts):
        raise InvalidInput("genesis.accounts", "needs at least one 'validator' account")
    if g.supply_microyen > MAX_SUPPLY_MICROYEN:
        raise InvalidInput("genesis.accounts", f"total balance exceeds {MAX_SUPPLY_MICROYEN} µ¥")
