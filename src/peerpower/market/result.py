"""What a clearing produces: balanced units (trades), totals, objective and certificate."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

from peerpower.errors import InvalidInput

Mechanism = Literal["cda", "call", "optimal"]
Goal = Literal["volume", "welfare", "maxmin"]
#: How trades are priced: ``nodal`` — one price per grid node, the competitive equilibrium of
#: the sealed book (``call``; ``optimal`` with ``welfare``); ``midpoint`` — each balanced unit
#: at ``ask + floor(spread / 2)`` (``optimal``); ``resting`` — at the resting order's limit
#: (``cda``).
Pricing = Literal["nodal", "midpoint", "resting"]
MECHANISMS: tuple[Mechanism, ...] = ("cda", "call", "optimal")
GOALS: tuple[Goal, ...] = ("volume", "welfare", "maxmin")
PRICINGS: tuple[Pricing, ...] = ("nodal", "midpoint", "resting")


def pricings_for(mechanism: str, goal: str | None) -> tuple[Pricing, ...]:
    """The pricing rules ``mechanism`` (and ``goal``) supports, the default first."""
    if mechanism == "cda":
        return ("resting",)
    if mechanism == "call":
        return ("nodal",)
    if goal in (None, "welfare"):
        return ("nodal", "midpoint")
    return ("midpoint",)


@dataclass(frozen=True, slots=True)
class Trade:
    """A balanced unit: a seller and a buyer with the same energy.

    ``price_sen_per_kwh`` is what the seller receives, ``buyer_price_sen_per_kwh`` what the
    buyer pays; the difference goes to the grid operator: the path's fee ``fee_sen_per_kwh``
    and, under nodal pricing, the congestion rent ``buyer_price − price − fee`` (≥ 0; 0 under
    ``midpoint`` and ``resting``).
    """

    sell_order: str
    buy_order: str
    seller: str
    buyer: str
    energy_wh: int
    price_sen_per_kwh: int
    fee_sen_per_kwh: int
    buyer_price_sen_per_kwh: int

    @property
    def rent_sen_per_kwh(self) -> int:
        """Congestion rent [sen/kWh]: what the buyer pays beyond the seller's price and fee."""
        return self.buyer_price_sen_per_kwh - self.price_sen_per_kwh - self.fee_sen_per_kwh

    def to_json(self) -> dict[str, Any]:
        return {
            "sell_order": self.sell_order,
            "buy_order": self.buy_order,
            "seller": self.seller,
            "buyer": self.buyer,
            "energy_wh": self.energy_wh,
            "price_sen_per_kwh": self.price_sen_per_kwh,
            "fee_sen_per_kwh": self.fee_sen_per_kwh,
            "buyer_price_sen_per_kwh": self.buyer_price_sen_per_kwh,
        }


@dataclass(frozen=True, slots=True)
class Totals:
    """Volume [Wh], welfare [µ¥] (Σ (bid − fee − ask) × energy: the gain of all participants
    at their limits, rent included, whatever the prices), fees [µ¥] and congestion rent [µ¥]
    (Σ (buyer price − price − fee) × energy, paid to the grid operator with the fees)."""

    volume_wh: int
    welfare_microyen: int
    fees_microyen: int
    rent_microyen: int = 0


@dataclass(frozen=True, slots=True)
class Objective:
    """Objective values of an optimal clearing, compared lexicographically.

    ``primary`` is volume [Wh] for ``volume``, welfare [µ¥] for ``welfare`` and, for ``maxmin``,
    the lowest participant profit per Wh offered [µ¥/Wh] as an exact fraction; ``secondary`` is
    welfare [µ¥] (``volume``, ``maxmin``) or volume [Wh] (``welfare``); ``score`` is the seeded
    tie-break Σ r_k · filled_k [Wh].
    """

    primary: Fraction
    secondary: int
    score: int

    def key(self) -> tuple[Fraction, int, int]:
        return (self.primary, self.secondary, self.score)

    def to_json(self) -> dict[str, Any]:
        primary: Any = (
            int(self.primary)
            if self.primary.denominator == 1
            else {"num": self.primary.numerator, "den": self.primary.denominator}
        )
        return {"primary": primary, "secondary": self.secondary, "score": str(self.score)}

    @classmethod
    def from_json(cls, obj: Any) -> Objective:
        if not isinstance(obj, dict):
            raise InvalidInput("objective", f"must be an object, got {obj!r}")
        p = obj.get("primary")
        if isinstance(p, dict):
            den = _int(p.get("den"), "objective.primary.den")
            if den == 0:
                raise InvalidInput("objective.primary.den", "must be a non-zero integer, got 0")
            primary = Fraction(_int(p.get("num"), "objective.primary.num"), den)
        else:
            primary = Fraction(_int(p, "objective.primary"))
        score_text = obj.get("score")
        try:
            score = int(str(score_text))
        except ValueError:
            raise InvalidInput(
                "objective.score", f"must be a decimal integer, got {score_text!r}"
            ) from None
        return cls(primary, _int(obj.get("secondary"), "objective.secondary"), score)


def _int(value: Any, field: str) -> int:
    if type(value) is not int:
        raise InvalidInput(field, f"must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """The outcome of clearing one book.

    Attributes
    ----------
    mechanism, goal
        How it was cleared (``goal`` only for ``optimal``).
    trades
        Balanced units.
    totals
        Volume [Wh], welfare [µ¥] (Σ spread × energy: the profit of all participants at their
        limits, whatever the prices) and fees [µ¥] of the trades.
    clearing_price_sen_per_kwh
        The uniform price of a call auction [sen/kWh] (``None`` otherwise or with no trade).
    objective
        Objective values of an optimal clearing.
    certificate
        For ``optimal`` ``volume`` and ``welfare`` under ``midpoint``: dual values proving
        optimality, checked by :func:`peerpower.market.verify.verify` in time linear in the
        book. (Under ``nodal`` the node prices are the certificate.)
    bound
        For ``maxmin`` on books too large for the exact MILP: the LP upper bounds of the
        objective beside the rounded clearing, and whether they prove it optimal.
    pricing
        How the trades are priced (:data:`Pricing`).
    node_prices
        Under ``nodal``: the price of every grid node [sen/kWh], in ``grid.ids`` order.
    excluded
        Orders left out by self-trade prevention: each crosses an earlier order of the same
        participant on the other side (see :mod:`peerpower.market.stp`), ``(order, earlier)``.
    """

    mechanism: Mechanism
    trades: tuple[Trade, ...]
    totals: Totals
    goal: Goal | None = None
    clearing_price_sen_per_kwh: int | None = None
    objective: Objective | None = None
    certificate: dict[str, Any] | None = None
    bound: dict[str, Any] | None = None
    pricing: Pricing = "midpoint"
    node_prices: dict[str, int] | None = None
    excluded: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return self._fields([t.to_json() for t in self.trades])

    def to_json_text(self) -> str:
        """``json.dumps(self.to_json(), separators=(",", ":"))``, the same text built faster:
        the trades, nearly all of it, are written from one template."""
        parts = []
        for key, value in self._fields(None).items():
            if key == "trades":
                text = _trades_text(self.trades)
            else:
                text = json.dumps(value, separators=(",", ":"))
            parts.append(f"{json.dumps(key)}:{text}")
        return "{" + ",".join(parts) + "}"

    def _fields(self, trades: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"mechanism": self.mechanism}
        if self.goal is not None:
            out["goal"] = self.goal
        out["pricing"] = self.pricing
        out["trades"] = trades
        out["totals"] = {
            "volume_wh": self.totals.volume_wh,
            "welfare_microyen": self.totals.welfare_microyen,
            "fees_microyen": self.totals.fees_microyen,
            "rent_microyen": self.totals.rent_microyen,
        }
        if self.mechanism == "call":
            out["clearing_price_sen_per_kwh"] = self.clearing_price_sen_per_kwh
        if self.node_prices is not None:
            out["node_prices_sen_per_kwh"] = self.node_prices
        if self.excluded:
            out["excluded"] = [{"order": o, "crosses": e} for o, e in self.excluded]
        if self.objective is not None:
            out["objective"] = self.objective.to_json()
        if self.certificate is not None:
            out["certificate"] = self.certificate
        if self.bound is not None:
            out["bound"] = self.bound
        return out

    def digest(self) -> str:
        """SHA-256 of the trades in canonical JSON (sorted keys, no spaces)."""
        data = json.dumps(
            [t.to_json() for t in self.trades], sort_keys=True, separators=(",", ":")
        ).encode()
        return hashlib.sha256(data).hexdigest()


_TRADE_FIELDS = (
    '{"sell_order":%s,"buy_order":%s,"seller":%s,"buyer":%s,'
    '"energy_wh":%d,"price_sen_per_kwh":%d,"fee_sen_per_kwh":%d,"buyer_price_sen_per_kwh":%d}'
)
_TRADE_PLAIN = (
    '{"sell_order":"%s","buy_order":"%s","seller":"%s","buyer":"%s",'
    '"energy_wh":%d,"price_sen_per_kwh":%d,"fee_sen_per_kwh":%d,"buyer_price_sen_per_kwh":%d}'
)
# A character json.dumps (ensure_ascii) writes as an escape: not printable ASCII, or " or \.
_NEEDS_ESCAPE = re.compile(r"[^ !#-\[\]-~]")


def _trades_text(trades: tuple[Trade, ...]) -> str:
    """The trades as compact JSON, as :func:`json.dumps` writes them: integers as ``%d``
    (``int.__repr__``), strings through the same escaper — or, when no name in any trade needs
    escaping (the usual case, checked at once), simply in quotes."""
    names = {t.sell_order for t in trades} | {t.buy_order for t in trades}
    names |= {t.seller for t in trades} | {t.buyer for t in trades}
    if _NEEDS_ESCAPE.search("".join(names)) is None:
        plain = _TRADE_PLAIN
        items = [
            plain
            % (
                t.sell_order,
                t.buy_order,
                t.seller,
                t.buyer,
                t.energy_wh,
                t.price_sen_per_kwh,
                t.fee_sen_per_kwh,
                t.buyer_price_sen_per_kwh,
            )
            for t in trades
        ]
    else:
        quote = encode_basestring_ascii
        fields = _TRADE_FIELDS
        items = [
            fields
            % (
                quote(t.sell_order),
                quote(t.buy_order),
                quote(t.seller),
                quote(t.buyer),
                t.energy_wh,
                t.price_sen_per_kwh,
                t.fee_sen_per_kwh,
                t.buyer_price_sen_per_kwh,
            )
            for t in trades
        ]
    return "[" + ",".join(items) + "]"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects that form no
    cycles: otherwise every 700 allocations start a collection that finds nothing, and the
    older generations (the whole decoded book) are walked again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _trade_maker() -> Callable[[str, str, str, str, int, int, int, int], Trade]:
    """A function building a :class:`Trade` like ``Trade(...)``, twice as fast: it fills the
    slots directly, where the generated ``__init__`` of a frozen dataclass goes through
    ``object.__setattr__`` once per field. (Trade has no ``__post_init__`` to skip.)"""
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7 = (
        vars(Trade)[f.name].__set__ for f in dataclasses.fields(Trade)
    )

    def make(
        sell_order: str,
        buy_order: str,
        seller: str,
        buyer: str,
        energy_wh: int,
        price_sen_per_kwh: int,
        fee_sen_per_kwh: int,
        buyer_price_sen_per_kwh: int,
    ) -> Trade:
        trade: Trade = new(Trade)
        s0(trade, sell_order)
        s1(trade, buy_order)
        s2(trade, seller)
        s3(trade, buyer)
        s4(trade, energy_wh)
        s5(trade, price_sen_per_kwh)
        s6(trade, fee_sen_per_kwh)
        s7(trade, buyer_price_sen_per_kwh)
        return trade

    return make


_make_trade = _trade_maker()


def trades_from_columns(
    sell_order: list[str],
    buy_order: list[str],
    seller: list[str],
    buyer: list[str],
    energy_wh: list[int],
    price_sen_per_kwh: list[int],
    fee_sen_per_kwh: list[int],
    buyer_price_sen_per_kwh: list[int] | None = None,
) -> tuple[Trade, ...]:
    """Trades from their columns (all the same length), built in one pass. Without buyer
    prices the buyer pays price + fee."""
    if buyer_price_sen_per_kwh is None:
        buyer_price_sen_per_kwh = list(map(operator.add, price_sen_per_kwh, fee_sen_per_kwh))
    columns = (sell_order, buy_order, seller, buyer, energy_wh, price_sen_per_kwh)
    with gc_paused():
        return tuple(map(_make_trade, *columns, fee_sen_per_kwh, buyer_price_sen_per_kwh))


def totals_from_columns(
    energy: list[int],
    ask: list[int],
    bid: list[int],
    fee: list[int],
    rent: list[int] | None = None,
) -> Totals:
    """:func:`totals_of` from the trades' columns: energy [Wh], the seller's and the buyer's
    limit, the fee and the rent [sen/kWh]."""
    mul = operator.mul
    welfare = sum(map(mul, map(operator.sub, map(operator.sub, bid, fee), ask), energy))
    rents = 0 if rent is None else sum(map(mul, rent, energy))
    return Totals(sum(energy), welfare * 10, sum(map(mul, fee, energy)) * 10, rents * 10)


def totals_of(trades: tuple[Trade, ...], limit: dict[str, int]) -> Totals:
    """Totals of ``trades``; ``limit`` maps order id → limit price [sen/kWh]."""
    volume = welfare = fees = rents = 0
    for t in trades:
        e = t.energy_wh
        volume += e
        welfare += (limit[t.buy_order] - t.fee_sen_per_kwh - limit[t.sell_order]) * e
        fees += t.fee_sen_per_kwh * e
        rents += t.rent_sen_per_kwh * e
    return Totals(volume, welfare * 10, fees * 10, rents * 10)
