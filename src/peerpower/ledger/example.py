"""The documented example chain written by ``peerpower ledger example``.

A feeder with two transformers and five sites on 18 August 2026, in solo mode (one validator):

=============  ===============  ===========  ===================================================
account        type             node         role in the story
=============  ===============  ===========  ===================================================
home-pvbat     pv-battery       tr-1         sells midday PV from its battery
home-pv        pv               tr-1         sells PV; in slot #25 a cloud cuts its export and it
                                             delivers 0.6 of the 1.2 kWh it sold: a shortfall,
                                             charged at the imbalance price from its margin and
                                             recorded as a default
home-a         consumer         tr-1         buys; places an order for #25 and cancels it
home-phev      consumer-phev    tr-2         charges its PHEV at midday
shop           shop             tr-2         buys for its daytime load
=============  ===============  ===========  ===================================================

Accounts from genesis: ``operator`` (the retail electricity provider that admits participants
and takes deposits, 1,000,000 yen), ``grid`` (the grid operator, paid the consignment fees),
``retail`` (the retail provider's imbalance account) and ``validator-1``. Fees: 25 sen/kWh on
each site's line to its transformer and 100 sen/kWh from each transformer to the substation, so
a trade within a transformer pays 0.50 yen/kWh and across the feeder 2.50 yen/kWh.

Blocks: registrations; deposits of 5,000 yen; orders for slots 2026-08-18#24 (12:00–12:30) and
#25 (12:30–13:00) at 10:00; a cancel; the gate of each slot (5 minutes before it) seals it and
the next block records the optimal (welfare) clearing, its balanced units becoming contracts;
meter readings after each slot; settlement after each meter deadline (one hour).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidInput
from peerpower.grid.tree import GridTree
from peerpower.ledger.blocks import Block
from peerpower.ledger.genesis import Genesis, GenesisAccount, MarketRules
from peerpower.ledger.node import SoloNode
from peerpower.ledger.replay import export
from peerpower.ledger.rules import to_ms
from peerpower.ledger.store import Store
from peerpower.ledger.transactions import Signer, meter_reading
from peerpower.timeslots import JST

CHAIN_ID = "peerpower-example"
SLOT_A = "2026-08-18#24"
SLOT_B = "2026-08-18#25"
SITES = (
    ("home-pvbat", "pv-battery", "tr-1"),
    ("home-pv", "pv", "tr-1"),
    ("home-a", "consumer", "tr-1"),
    ("home-phev", "consumer-phev", "tr-2"),
    ("shop", "shop", "tr-2"),
)
DEPOSIT_MICROYEN = 5_000 * 1_000_000
# slot → site → (side, energy [Wh], limit price [sen/kWh])
ORDERS = {
    SLOT_A: (
        ("home-pvbat", "sell", 2000, 1200),
        ("home-pv", "sell", 1500, 900),
        ("home-a", "buy", 1000, 2400),
        ("home-phev", "buy", 1500, 1800),
        ("shop", "buy", 2000, 2600),
    ),
    SLOT_B: (
        ("home-pvbat", "sell", 1000, 1500),
        ("home-pv", "sell", 1200, 1000),
        ("home-phev", "buy", 1000, 1600),
        ("shop", "buy", 2000, 2600),
    ),
}
# slot → site → (import [Wh], export [Wh]) as the meters read them
READINGS = {
    SLOT_A: {
        "home-pvbat": (0, 2000),
        "home-pv": (0, 1500),
        "home-a": (1100, 0),
        "home-phev": (1600, 0),
        "shop": (2400, 0),
    },
    SLOT_B: {
        "home-pvbat": (0, 1000),
        "home-pv": (0, 600),
        "home-a": (300, 0),
        "home-phev": (1000, 0),
        "shop": (2500, 0),
    },
}


def _at(hour: int, minute: int, second: int = 0) -> int:
    return to_ms(datetime(2026, 8, 18, hour, minute, second, tzinfo=JST))


def example_genesis() -> Genesis:
    """The example's genesis (keys derived from names: for examples only)."""
    grid = GridTree.from_json(
        {
            "nodes": [
                {"id": "sub", "parent": None},
                {"id": "tr-1", "parent": "sub", "fee_sen_per_kwh": 100},
                {"id": "tr-2", "parent": "sub", "fee_sen_per_kwh": 100},
                *(
                    {"id": node_id, "parent": tr, "fee_sen_per_kwh": 25}
                    for node_id, tr in (
                        ("home-pvbat", "tr-1"),
                        ("home-pv", "tr-1"),
                        ("home-a", "tr-1"),
                        ("home-phev", "tr-2"),
                        ("shop", "tr-2"),
                    )
                ),
            ]
        }
    )
    accounts = (
        GenesisAccount("operator", "operator", key("operator").public_hex, 10**12),
        GenesisAccount("grid", "grid", key("grid").public_hex),
        GenesisAccount("retail", "retail", key("retail").public_hex),
        GenesisAccount("validator-1", "validator", key("validator-1").public_hex),
    )
    return Genesis(CHAIN_ID, _at(8, 0), accounts, MarketRules(grid=grid))


def key(name: str) -> KeyPair:
    return KeyPair.derive(f"{CHAIN_ID}/{name}")


def build_example(node: SoloNode) -> list[Block]:
    """Run the example's story on ``node`` (fresh, on :func:`example_genesis`)."""
    g = node.genesis
    op = Signer(g.tx_chain, "operator", key("operator"))
    sites = {sid: Signer(g.tx_chain, sid, key(sid)) for sid, _, _ in SITES}
    blocks: list[Block] = []

    def block(at: int) -> None:
        blocks.append(node.produce(at))

    for sid, site_type, _node in SITES:
        node.submit(
            op.register(sid, key(sid).public_hex, key(sid + "/meter").public_hex, sid, site_type)
        )
    block(_at(9, 0))
    for sid, _, _ in SITES:
        node.submit(op.deposit(sid, DEPOSIT_MICROYEN))
    block(_at(9, 0, 10))
    for slot, orders in ORDERS.items():
        for sid, side, energy, price in orders:
            node.submit(sites[sid].order(slot, side, energy, price), _at(10, 0))
    spare = sites["home-a"].order(SLOT_B, "buy", 500, 2000)
    node.submit(spare, _at(10, 0))
    block(_at(10, 0))
    node.submit(sites["home-a"].cancel(f"home-a#{spare['body']['nonce']}"), _at(10, 5))
    block(_at(10, 5))
    block(_at(11, 55))  # the gate of #24 seals it
    block(_at(11, 55, 5))  # its seed is known: the validator records the clearing
    block(_at(12, 25))  # the gate of #25
    block(_at(12, 25, 5))
    for slot, at in ((SLOT_A, _at(12, 30, 1)), (SLOT_B, _at(13, 0, 1))):
        for sid, (imp, exp) in READINGS[slot].items():
            node.submit(meter_reading(g.tx_chain, key(sid + "/meter"), sid, slot, imp, exp), at)
        block(at)
    block(_at(13, 30, 1))  # after #24's meter deadline: settled
    block(_at(14, 0, 1))  # after #25's: settled, with home-pv's shortfall
    if node.dropped:
        raise RuntimeError(f"example transaction refused: {node.dropped[0][1]}")
    return blocks


def write_example(out: Path) -> tuple[Path, Path, SoloNode]:
    """Write ``out/chain.db`` and ``out/chain.jsonl``; refuses to overwrite an existing chain."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInput(
            "out", f"cannot create the folder {str(out)!r}: {err.strerror}"
        ) from None
    db = out / "chain.db"
    jsonl = out / "chain.jsonl"
    for path in (db, jsonl):
        if path.exists():
            raise InvalidInput("out", f"{str(path)!r} exists; choose an empty folder")
    with Store(db, create=True) as store:
        node = SoloNode(example_genesis(), "validator-1", key("validator-1"), store)
        build_example(node)
        export(store, jsonl)
    node.store = None
    return db, jsonl, node
