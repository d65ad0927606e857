"""Deterministic synthetic ledgers for benchmarks and tests.

:func:`community` makes a genesis over a small grid tree (substation → feeders → transformers →
sites, distance-based fees) and the keys of its sites. :func:`synthetic_chain` runs a seeded
community for some days through a :class:`SoloNode`, exactly as a live exchange would:

* sites of mixed types are registered and funded by the operator in the first block;
* two blocks every half hour: at each slot's gate (the block seals the slot and settles what is
  past its meter deadline) and two minutes later (the block clears the slot — the proposer's
  duties — and carries the sites' transactions);
* each site places its orders every three hours, for the slots 3–6 h ahead (inside the 24 h
  order window): PV sites sell their forecast surplus around midday (PV + battery also in the
  evening) and may buy when short; households, EV owners (overnight) and shops buy what they
  lack with some chance; prices 800–3000 sen/kWh, 1–20 lots of 100 Wh;
* each site's meter reports every slot after it ends; a few sellers deliver less than they sold
  and a few buyers take less than they bought, so defaults happen; a site suspended for
  defaults is reinstated by the operator in the next block, and a site whose free balance runs
  low is topped up.

The same ``(days, sites, seed)`` always gives the same blocks, byte for byte: every key is
derived from a label, every random draw comes from one seeded generator, and block times are
fixed by the calendar.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peerpower.crypto import KeyPair
from peerpower.grid.tree import GridTree
from peerpower.ledger.blocks import Block
from peerpower.ledger.genesis import Genesis, GenesisAccount, MarketRules
from peerpower.ledger.node import SoloNode
from peerpower.ledger.rules import to_ms
from peerpower.ledger.state import Account, Contracts
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer, meter_reading
from peerpower.timeslots import JST, SLOTS_PER_DAY, Slot

CHAIN_ID = "synthetic"
OPERATOR_MICROYEN = 10**17
DEPOSIT_MICROYEN = 20_000_000_000  # 20,000 yen of margin per site
TOP_UP_BELOW_MICROYEN = 5_000_000_000
START = datetime(2026, 8, 1, tzinfo=JST)  # the first slot of the chain starts here
SITE_MIX = (
    ("pv", 30),
    ("pv-battery", 15),
    ("pv-phev", 5),
    ("consumer", 30),
    ("consumer-phev", 10),
    ("shop", 10),
)
ORDER_EVERY = 6  # slots between a site's order rounds (3 h)
SELLER_SHORT = 0.005  # chance a seller with contracts delivers less than it sold
BUYER_SHORT = 0.003  # chance a buyer with contracts takes less than it bought


def grid_json(sites: int, feeders: int = 4, per_transformer: int = 10) -> dict[str, Any]:
    """Substation → feeders → transformers → sites ``s0``, ``s1``, … with fees by distance."""
    nodes: list[dict[str, Any]] = [{"id": "sub", "parent": None}]
    transformers = max(1, -(-sites // per_transformer))
    for f in range(feeders):
        nodes.append({"id": f"f{f}", "parent": "sub", "fee_sen_per_kwh": 150})
    for t in range(transformers):
        nodes.append({"id": f"t{t}", "parent": f"f{t % feeders}", "fee_sen_per_kwh": 40})
    for s in range(sites):
        nodes.append({"id": f"s{s}", "parent": f"t{s // per_transformer}", "fee_sen_per_kwh": 10})
    return {"nodes": nodes}


@dataclass(frozen=True, slots=True)
class Site:
    """A synthetic site: account id, type, grid node and its two keys."""

    id: str
    site_type: str
    node: str
    key: KeyPair
    meter: KeyPair


def site_types(sites: int) -> list[str]:
    """``sites`` types in the proportions of :data:`SITE_MIX`, interleaved along the grid."""
    total = sum(w for _, w in SITE_MIX)
    out: list[str] = []
    for k in range(sites):
        point = (k * 37 % total) + 0.5  # a fixed stride spreads the types over the feeders
        acc = 0
        for name, weight in SITE_MIX:
            acc += weight
            if point < acc:
                out.append(name)
                break
    return out


@dataclass(frozen=True, slots=True)
class Community:
    """A genesis with its founding keys and the sites to register."""

    genesis: Genesis
    operator: KeyPair
    validator: KeyPair
    sites: tuple[Site, ...]


def community(sites: int, time_ms: int, chain_id: str = CHAIN_ID) -> Community:
    """A genesis at ``time_ms`` (optimal clearing for welfare, default parameters) over
    :func:`grid_json` of ``sites`` sites, and those sites' keys (not yet registered)."""
    keys = {name: KeyPair.derive(f"{chain_id}/{name}") for name in ("op", "grid", "retail", "val")}
    genesis = Genesis(
        chain_id,
        time_ms,
        (
            GenesisAccount("op", "operator", keys["op"].public_hex, OPERATOR_MICROYEN),
            GenesisAccount("grid", "grid", keys["grid"].public_hex),
            GenesisAccount("retail", "retail", keys["retail"].public_hex),
            GenesisAccount("val", "validator", keys["val"].public_hex),
        ),
        MarketRules(grid=GridTree.from_json(grid_json(sites))),
    )
    members = tuple(
        Site(
            f"site{k}",
            kind,
            f"s{k}",
            KeyPair.derive(f"{chain_id}/site{k}"),
            KeyPair.derive(f"{chain_id}/site{k}/meter"),
        )
        for k, kind in enumerate(site_types(sites))
    )
    return Community(genesis, keys["op"], keys["val"], members)


def admit(operator: Signer, site: Site, deposit_microyen: int) -> list[dict[str, Any]]:
    """The operator's register and deposit transactions for ``site``."""
    return [
        operator.register(
            site.id, site.key.public_hex, site.meter.public_hex, site.node, site.site_type
        ),
        operator.deposit(site.id, deposit_microyen),
    ]


HALF_HOUR_MS = 30 * 60_000
GATE_BLOCK_MS = 5 * 60_000  # block A: at the gate (5 min before the slot starts)
CLEAR_BLOCK_MS = 3 * 60_000  # block B: 2 min after the gate
PV_PEAK_WH = {"pv": 1600, "pv-battery": 2000, "pv-phev": 1800}  # per half hour at noon


def slot_start_ms(n: int) -> int:
    """Start [ms] of the ``n``-th slot of the chain (0 starts at :data:`START`)."""
    return to_ms(START) + n * HALF_HOUR_MS


def slot_name(n: int) -> str:
    start = START + timedelta(minutes=30 * n)
    return str(Slot(start.date(), (start.hour * 60 + start.minute) // 30))


class _Site:
    """A site's controller in the synthetic community: forecasts, bids and meters."""

    __slots__ = ("base_wh", "info", "meter_key", "signer")

    def __init__(self, info: Site, chain_id: str, rng: random.Random) -> None:
        self.info = info
        self.signer = Signer(chain_id, info.id, info.key)
        self.meter_key = info.meter
        self.base_wh = rng.randrange(150, 350)  # household load per half hour, off peak

    def pv_wh(self, hour: float, sky: float) -> int:
        """PV output in a half hour starting at ``hour`` (JST) under a sky factor 0–1 [Wh]."""
        peak = PV_PEAK_WH.get(self.info.site_type, 0)
        if not peak or not 6.0 <= hour < 18.0:
            return 0
        shape = 1.0 - abs(hour + 0.25 - 12.0) / 6.0
        return int(peak * shape * sky)

    def load_wh(self, hour: float) -> int:
        """Forecast load in a half hour starting at ``hour`` [Wh]."""
        kind = self.info.site_type
        load = self.base_wh
        if 17.0 <= hour < 22.0:
            load *= 2
        if kind == "shop" and 9.0 <= hour < 20.0:
            load *= 4
        if kind in ("consumer-phev", "pv-phev") and (hour >= 23.0 or hour < 5.0):
            load += 1500  # the EV charges overnight
        return load

    def bid(self, hour: float, sky: float, rng: random.Random) -> tuple[str, int, int] | None:
        """The site's order for a slot starting at ``hour``: ``(side, energy_wh, price)``."""
        kind = self.info.site_type
        surplus = self.pv_wh(hour, sky) - self.load_wh(hour)
        if surplus >= 200:
            lots = min(20, max(1, surplus * 8 // 1000))
            return "sell", lots * 100, rng.randrange(800, 1700)
        if kind == "pv-battery" and 17.0 <= hour < 21.0 and rng.random() < 0.7:
            return "sell", rng.randrange(2, 11) * 100, rng.randrange(1600, 2700)
        need = -surplus
        chance = {"shop": 0.8, "consumer-phev": 0.6, "consumer": 0.4}.get(kind, 0.3)
        if need >= 100 and rng.random() < chance:
            lots = min(20, max(1, need * rng.randrange(3, 9) // 1000))
            return "buy", lots * 100, rng.randrange(1500, 3001)
        return None


def synthetic_chain(
    days: int, sites: int, seed: int = 1, store: Store | None = None
) -> tuple[Genesis, list[Block]]:
    """A chain of ``days`` days of ``sites`` sites trading (see the module notes), made by a
    :class:`SoloNode` (committing to ``store`` if given). Deterministic in its arguments."""
    rng = random.Random(seed)
    slots = days * SLOTS_PER_DAY
    first = -12  # orders are placed 3–6 h ahead: start 6 h before the first metered slot
    com = community(sites, slot_start_ms(first) - 3_600_000)
    genesis = com.genesis
    node = SoloNode(genesis, "val", com.validator, store)
    operator = Signer(genesis.tx_chain, "op", com.operator)
    members = [_Site(s, genesis.tx_chain, rng) for s in com.sites]
    blocks: list[Block] = []

    def produce(time_ms: int) -> None:
        blocks.append(node.produce(time_ms))
        if node.dropped:
            obj, err = node.dropped[0]
            raise AssertionError(f"synthetic block {node.height} dropped {obj}: {err}")

    for m in members:
        for tx in admit(operator, m.info, DEPOSIT_MICROYEN):
            node.submit(tx, genesis.time_ms + 1000)
    produce(genesis.time_ms + 1000)
    sky: dict[int, float] = {}  # day → sky factor (one draw per day, in order)
    for n in range(first, slots + 5):
        start = slot_start_ms(n)
        produce(start - GATE_BLOCK_MS)  # seals slot n, settles n - 4
        when = start - CLEAR_BLOCK_MS  # clears slot n (the proposer's duty) and takes these:
        state = node.state
        for m in members:
            acct = state.account(m.info.id)
            assert isinstance(acct, Account)
            if acct.status == "suspended":
                node.submit(operator.reinstate(m.info.id), when)
            if acct.balance_microyen < TOP_UP_BELOW_MICROYEN:
                node.submit(operator.deposit(m.info.id, DEPOSIT_MICROYEN), when)
        for k, m in enumerate(members):
            if (n - k) % ORDER_EVERY:
                continue
            for ahead in range(n + ORDER_EVERY, n + 2 * ORDER_EVERY):
                if not 0 <= ahead < slots:
                    continue
                day, index = divmod(ahead, SLOTS_PER_DAY)
                if day not in sky:
                    sky[day] = 0.3 + 0.7 * rng.random()
                order = m.bid(index / 2, sky[day], rng)
                if order is not None:
                    node.submit(m.signer.order(slot_name(ahead), *order), when)
        metered = n - 2  # ended 27 min ago; its meter deadline is 33 min away
        if 0 <= metered < slots:
            _meter(node, members, metered, sky, rng, when)
        produce(when)
    return genesis, blocks


def _meter(
    node: SoloNode,
    members: list[_Site],
    n: int,
    sky: dict[int, float],
    rng: random.Random,
    when: int,
) -> None:
    """Every site's reading of slot ``n``: what it used and made, its contracts delivered —
    except for the few that fall short."""
    name = slot_name(n)
    rec = node.state.get("contracts", name)
    sold: dict[str, int] = {}
    bought: dict[str, int] = {}
    if isinstance(rec, Contracts):
        for c in rec.units:
            sold[c.seller] = sold.get(c.seller, 0) + c.energy_wh
            bought[c.buyer] = bought.get(c.buyer, 0) + c.energy_wh
    day, index = divmod(n, SLOTS_PER_DAY)
    hour = index / 2
    for m in members:
        site = m.info.id
        pv = int(m.pv_wh(hour, sky.get(day, 0.5)) * rng.uniform(0.85, 1.1))
        load = int(m.load_wh(hour) * rng.uniform(0.8, 1.2))
        export = max(0, pv - load)
        imported = max(0, load - pv)
        if site in sold:
            export = max(export, sold[site])
            if rng.random() < SELLER_SHORT:
                export = int(sold[site] * rng.uniform(0.2, 0.9))
        if site in bought:
            imported = max(imported, bought[site])
            if rng.random() < BUYER_SHORT:
                imported = int(bought[site] * rng.uniform(0.2, 0.9))
        node.submit(
            meter_reading(node.genesis.tx_chain, m.meter_key, site, name, imported, export), when
        )
