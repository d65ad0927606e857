"""Four validators run the exchange contract under BFT consensus on the simulated network: the
same blocks everywhere, each with a valid commit certificate, a chain that replays."""

from __future__ import annotations

from datetime import datetime

import pytest

from peerpower.consensus.byzantine import APP_BEHAVIOURS, ByzantineLedgerApp
from peerpower.consensus.ledger_app import LedgerApp
from peerpower.consensus.tendermint import Decide, Tendermint, Timeouts
from peerpower.crypto import KeyPair
from peerpower.ledger.blocks import check_commit, quorum, sign_commit
from peerpower.ledger.claims import make_claim
from peerpower.ledger.genesis import Genesis, GenesisAccount
from peerpower.ledger.replay import replay
from peerpower.ledger.rules import slot_book, to_ms
from peerpower.ledger.state import SlotRec
from peerpower.ledger.store import block_line
from peerpower.ledger.transactions import Signer, meter_reading
from peerpower.market.clear import clear
from peerpower.market.verify import result_from_json, verify
from peerpower.net.memory import SimNetwork
from peerpower.timeslots import JST

SLOT = "2026-08-18#24"  # 12:00–12:30, gate 11:55
T0 = to_ms(datetime(2026, 8, 18, 11, 40, tzinfo=JST))
END = to_ms(datetime(2026, 8, 18, 12, 30, tzinfo=JST))
DEADLINE = END + 60 * 60_000
VALIDATORS = ("v0", "v1", "v2", "v3")
SITES = ("a", "b", "c", "d")
KEYS = {n: KeyPair.derive(f"lc/{n}") for n in (*VALIDATORS, "op", "grid", "retail", *SITES)}
METERS = {n: KeyPair.derive(f"lc/{n}/meter") for n in SITES}


def genesis() -> Genesis:
    accounts = [
        GenesisAccount("op", "operator", KEYS["op"].public_hex, 10**12),
        GenesisAccount("grid", "grid", KEYS["grid"].public_hex),
        GenesisAccount("retail", "retail", KEYS["retail"].public_hex),
        *(GenesisAccount(v, "validator", KEYS[v].public_hex) for v in VALIDATORS),
    ]
    return Genesis("consensus-test", T0, tuple(accounts))


class Cluster:
    def __init__(self, seed: int, byzantine: dict[str, str], drop: float) -> None:
        self.genesis = genesis()
        self.apps: dict[str, LedgerApp] = {
            v: ByzantineLedgerApp(self.genesis, v, KEYS[v], behaviour=byzantine[v])
            if byzantine.get(v) in APP_BEHAVIOURS
            else LedgerApp(self.genesis, v, KEYS[v])
            for v in VALIDATORS
        }
        network_faults = {v: kind for v, kind in byzantine.items() if kind not in APP_BEHAVIOURS}
        # one block a virtual minute once a height is decided
        timeouts = Timeouts(commit_ms=60_000)
        validators = [(v, KEYS[v].public) for v in VALIDATORS]
        machines = {
            v: Tendermint(validators, v, KEYS[v], self.apps[v], timeouts=timeouts)
            for v in VALIDATORS
        }
        self.net = SimNetwork(
            machines,
            {v: KEYS[v] for v in VALIDATORS},
            seed,
            drop=drop,
            heal_at_ms=10 * 60_000,
            byzantine=network_faults,
            on_decide=self.decided,
            clock=self.tick,
            outbox=lambda v: self.apps[v].take_outbox(),
            on_app=lambda v, message: self.apps[v].on_app_message(message),
        )
        self.honest = [v for v in VALIDATORS if v not in byzantine]

    def tick(self, v: str, now: int) -> None:
        self.apps[v].now_ms = T0 + now

    def decided(self, v: str, decision: Decide, now: int) -> None:
        self.apps[v].commit(decision)

    def submit(self, tx: dict) -> None:  # type: ignore[type-arg]
        """A client sends the transaction to one honest validator, which relays it."""
        self.apps[self.honest[0]].submit(tx)

    def run_until(self, time_ms: int) -> None:
        ok = self.net.run(
            lambda: all(self.apps[v].state.meta.time_ms >= time_ms for v in self.honest),
            limit_ms=time_ms - T0 + 30 * 60_000,
        )
        assert ok, {v: self.apps[v].height for v in VALIDATORS}


@pytest.mark.parametrize(
    ("seed", "byzantine", "drop"),
    [
        (1, {}, 0.0),
        (2, {"v3": "silent"}, 0.2),
        (3, {"v1": "equivocate"}, 0.2),
        (4, {"v2": "inflate"}, 0.1),
        (5, {"v0": "withhold"}, 0.1),
    ],
)
def test_ledger_under_consensus(seed: int, byzantine: dict[str, str], drop: float) -> None:
    c = Cluster(seed, byzantine, drop)
    g = c.genesis
    op = Signer(g.tx_chain, "op", KEYS["op"])
    for site in ("a", "b"):
        c.submit(op.register(site, KEYS[site].public_hex, METERS[site].public_hex, "root", "pv"))
        c.submit(op.deposit(site, 10**9))
    c.net.start()
    c.run_until(T0 + 2 * 60_000)
    c.submit(Signer(g.tx_chain, "a", KEYS["a"]).order(SLOT, "sell", 1000, 1500))
    c.submit(Signer(g.tx_chain, "b", KEYS["b"]).order(SLOT, "buy", 800, 2500))
    c.run_until(END + 60_000)
    c.submit(meter_reading(g.tx_chain, METERS["a"], "a", SLOT, 0, 1000))
    c.submit(meter_reading(g.tx_chain, METERS["b"], "b", SLOT, 800, 0))
    c.run_until(DEADLINE + 3 * 60_000)

    # every honest validator holds the same blocks, each committed by a quorum
    chains = {v: [b.hash for b in c.apps[v].blocks] for v in c.honest}
    shortest = min(len(h) for h in chains.values())
    assert shortest > 10
    for v in c.honest:
        assert chains[v][:shortest] == chains[c.honest[0]][:shortest]
    app = c.apps[c.honest[0]]
    for block in app.blocks:
        assert len(block.commit) >= quorum(len(VALIDATORS))
        check_commit(block, g)
    # the slot was cleared by consensus, delivered and settled: a was paid 800 Wh at the node
    # price 1500 (its own ask: a's sell of 1000 Wh is left partly unfilled)
    settled = app.state.get("settled", SLOT)
    assert settled is not None and settled.volume_wh == 800  # type: ignore[attr-defined]
    assert app.state.account("a").balance_microyen == 10**9 + 1500 * 800 * 10  # type: ignore[union-attr]
    assert app.state.money_microyen() == g.supply_microyen
    # the chain replays from genesis with its certificates
    state, summary = replay(g, [block_line(b) for b in app.blocks])
    assert state.root == app.state.root
    assert summary.blocks == len(app.blocks)


def test_ledger_under_consensus_with_no_pause_between_blocks() -> None:
    # commit_ms = 0: the next height starts at once, but only after each validator has applied
    # the decided block (else a proposer would build a second block for the same height)
    g = genesis()
    apps = {v: LedgerApp(g, v, KEYS[v]) for v in VALIDATORS}
    validators = [(v, KEYS[v].public) for v in VALIDATORS]
    machines = {
        v: Tendermint(validators, v, KEYS[v], apps[v], timeouts=Timeouts(commit_ms=0))
        for v in VALIDATORS
    }

    def tick(v: str, now: int) -> None:
        apps[v].now_ms = T0 + now

    net = SimNetwork(
        machines,
        {v: KEYS[v] for v in VALIDATORS},
        1,
        on_decide=lambda v, d, now: apps[v].commit(d),
        clock=tick,
    )
    net.start()
    assert net.run(lambda: min(a.height for a in apps.values()) >= 30, limit_ms=120_000)
    assert len({tuple(b.hash for b in a.blocks[:30]) for a in apps.values()}) == 1
    assert all(a.refused == [] for a in apps.values())


def test_ledger_under_consensus_a_repairing_validator_never_records_its_pairing() -> None:
    """v2 re-pairs every clearing it makes — the same fills, so the same objective and score —
    choosing the pairing whose digest wins the last tie-break (before pairings were canonical
    it chose who was paid what). Honest validators refuse its claims and the block it proposes
    recording its pairing (rule ``pairing``); the recorded clearing is the canonical one, and
    every site is paid or pays its node's price."""
    c = Cluster(6, {"v2": "repair"}, 0.0)
    g = c.genesis
    op = Signer(g.tx_chain, "op", KEYS["op"])
    for site in SITES:
        c.submit(op.register(site, KEYS[site].public_hex, METERS[site].public_hex, "root", "pv"))
        c.submit(op.deposit(site, 10**9))
    c.net.start()
    c.run_until(T0 + 2 * 60_000)
    # two sells and two buys on one node, all filled: equilibrium prices 1200–2000, rule 1600
    orders = (("a", "sell", 1000), ("c", "sell", 1200), ("b", "buy", 2500), ("d", "buy", 2000))
    for site, side, price in orders:
        c.submit(Signer(g.tx_chain, site, KEYS[site]).order(SLOT, side, 500, price))
    c.run_until(END + 60_000)
    for site in SITES:
        sold = site in ("a", "c")
        c.submit(
            meter_reading(g.tx_chain, METERS[site], site, SLOT, 0 if sold else 500, 500 * sold)
        )
    c.run_until(DEADLINE + 3 * 60_000)

    byzantine = c.apps["v2"]
    assert isinstance(byzantine, ByzantineLedgerApp)
    ((honest_digest, forged_digest),) = byzantine.repaired.values()
    assert forged_digest < honest_digest  # its claim outranked every honest one
    app = c.apps[c.honest[0]]
    decides = [tx["body"] for b in app.blocks for tx in b.txs if tx["body"]["type"] == "decide"]
    assert len(decides) == 1
    recorded = result_from_json(decides[0]["result"])
    assert recorded.digest() == honest_digest
    assert recorded.node_prices == {"root": 1600}
    assert decides[0]["from"] != "v2"
    for v in c.honest:
        refused = [why for who, why in c.apps[v].refused_claims if who == "v2"]
        assert refused and all(why == "clearing: pairing" for why in refused), refused
        # v2 proposed at the height of the decision (in this run): its block was refused
        (block_refused,) = c.apps[v].refused
        assert "(decide from 'v2')" in block_refused[1]
        assert "pairing: the units are not the canonical pairing" in block_refused[1]
    balances = {s: app.state.account(s).balance_microyen for s in SITES}  # type: ignore[union-attr]
    assert balances == {
        "a": 10**9 + 1600 * 500 * 10,
        "c": 10**9 + 1600 * 500 * 10,
        "b": 10**9 - 1600 * 500 * 10,
        "d": 10**9 - 1600 * 500 * 10,
    }
    assert app.state.money_microyen() == g.supply_microyen


def test_invalid_claim_priced_by_another_rule() -> None:
    """A validator takes another's claim only if its result is priced by the market's rule: a
    midpoint clearing, however honest for its rule, is refused on a nodal chain (rule
    ``pricing``); the nodal one is taken."""
    g = genesis()
    assert g.market.pricing == "nodal"
    app = LedgerApp(g, "v0", KEYS["v0"])
    op = Signer(g.tx_chain, "op", KEYS["op"])

    def block(time_ms: int, *txs: dict) -> None:  # type: ignore[type-arg]
        app.now_ms = time_ms
        for tx in txs:
            app.submit(tx)
        height = app.height + 1
        _, proposed = app.propose(height, 0)
        signatures = tuple(sign_commit(KEYS[v], v, proposed.hash) for v in VALIDATORS[:3])
        app.accept(proposed.with_commit(signatures))

    block(
        T0 + 1000,
        *(
            op.register(s, KEYS[s].public_hex, METERS[s].public_hex, "root", "pv")
            for s in ("a", "b")
        ),
        op.deposit("a", 10**9),
        op.deposit("b", 10**9),
    )
    block(
        T0 + 2000,
        Signer(g.tx_chain, "a", KEYS["a"]).order(SLOT, "sell", 1000, 1500),
        Signer(g.tx_chain, "b", KEYS["b"]).order(SLOT, "buy", 800, 2500),
    )
    gate = to_ms(datetime(2026, 8, 18, 11, 55, tzinfo=JST))
    block(gate)  # seals the slot
    block(gate + 1000)  # its seed is known; several validators: it waits for claims
    rec = app.state.get("slots", SLOT)
    assert isinstance(rec, SlotRec) and rec.status == "sealed" and rec.seed
    book = slot_book(app.state, g, SLOT, bytes.fromhex(rec.seed))
    for pricing in ("midpoint", "nodal"):
        result = clear(book, "optimal", "welfare", pricing)
        assert verify(book, result).ok
        claim = make_claim(KEYS["v1"], "v1", SLOT, rec.seed, result)
        app.on_claim({"claim": claim.to_json(), "result": result.to_json()})
    ((who, why),) = app.refused_claims
    assert who == "v1"
    assert why.startswith("pricing: the result is priced 'midpoint'")
    assert "prices 'nodal'" in why
    assert set(app.claims[SLOT]) == {"v0", "v1"}  # its own, and v1's nodal claim
