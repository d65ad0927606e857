"""``peerpower devnet simulate``: validators running the exchange on the simulated network.

``N`` validators (the first ``B`` Byzantine: equivocating, inflating their clearings, silent
and withholding their claims, in turn) agree on blocks by
Tendermint over :class:`peerpower.net.memory.SimNetwork`, one block a virtual minute. Twenty
sites trade: every half hour each submits a random order for the slot an hour ahead, and after
each slot its meter reading; the proposers clear sealed slots and settle due ones. The summary
counts what happened; the same seed gives the same output.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peerpower.consensus.byzantine import APP_BEHAVIOURS, ByzantineLedgerApp
from peerpower.consensus.ledger_app import LedgerApp
from peerpower.consensus.tendermint import Decide, Tendermint, Timeouts
from peerpower.crypto import KeyPair
from peerpower.errors import InvalidInput, InvalidTransaction
from peerpower.ledger.blocks import Block
from peerpower.ledger.claims import claim_from_json
from peerpower.ledger.genesis import Genesis, GenesisAccount, MarketRules
from peerpower.ledger.rules import from_ms, slot_times, to_ms
from peerpower.ledger.transactions import Signer, meter_reading
from peerpower.market.result import GOALS
from peerpower.net.memory import SimNetwork
from peerpower.timeslots import JST, Slot, slot_of

SITES = 20
BLOCK_MS = 60_000
SLOT_MS = 30 * 60_000
START = datetime(2026, 8, 18, 10, 0, tzinfo=JST)


@dataclass(frozen=True, slots=True)
class DevnetConfig:
    validators: int = 4
    byzantine: int = 0
    drop: float = 0.0
    seed: int = 1
    heights: int = 120
    goal: str = "welfare"

    def check(self) -> None:
        if not 1 <= self.validators <= 100:
            raise InvalidInput("validators", f"must be 1–100, got {self.validators}")
        f = (self.validators - 1) // 3
        if not 0 <= self.byzantine <= f:
            raise InvalidInput(
                "byzantine",
                f"{self.byzantine} Byzantine of {self.validators} validators: at most "
                f"f = ⌊(n − 1)/3⌋ = {f} are tolerated",
            )
        if not 0.0 <= self.drop < 1.0:
            raise InvalidInput("drop", f"must be a probability in [0, 1), got {self.drop}")
        if not 1 <= self.heights <= 100_000:
            raise InvalidInput("heights", f"must be 1–100000, got {self.heights}")
        if self.goal not in GOALS:
            raise InvalidInput("goal", f"{self.goal!r} is not one of {', '.join(GOALS)}")


@dataclass(frozen=True, slots=True)
class DevnetRun:
    """A finished run: its summary, the genesis, and the blocks an honest validator holds."""

    summary: dict[str, Any]
    genesis: Genesis
    blocks: tuple[Block, ...]


def simulate(cfg: DevnetConfig) -> dict[str, Any]:
    """Run the devnet and return its summary (see the module notes)."""
    return run_devnet(cfg).summary


def run_devnet(cfg: DevnetConfig) -> DevnetRun:
    """Run the devnet (see the module notes)."""
    cfg.check()
    rng = random.Random(cfg.seed)
    names = [f"validator-{k}" for k in range(cfg.validators)]
    keys = {n: KeyPair.derive(f"devnet/{n}") for n in (*names, "operator", "grid", "retail")}
    sites = [f"site-{k:02d}" for k in range(SITES)]
    site_keys = {s: KeyPair.derive(f"devnet/{s}") for s in sites}
    meter_keys = {s: KeyPair.derive(f"devnet/{s}/meter") for s in sites}
    t0 = to_ms(START)
    accounts = (
        GenesisAccount("operator", "operator", keys["operator"].public_hex, 10**13),
        GenesisAccount("grid", "grid", keys["grid"].public_hex),
        GenesisAccount("retail", "retail", keys["retail"].public_hex),
        *(GenesisAccount(n, "validator", keys[n].public_hex) for n in names),
    )
    goal: Any = cfg.goal
    genesis = Genesis("devnet", t0, accounts, MarketRules(goal=goal))
    kinds = ("equivocate", "inflate", "silent", "withhold")
    faults = {names[k]: kinds[k % len(kinds)] for k in range(cfg.byzantine)}
    byzantine = {n: kind for n, kind in faults.items() if kind in ("equivocate", "silent")}
    apps: dict[str, LedgerApp] = {
        n: ByzantineLedgerApp(genesis, n, keys[n], behaviour=faults[n])
        if n in faults and faults[n] in APP_BEHAVIOURS
        else LedgerApp(genesis, n, keys[n])
        for n in names
    }
    validators = [(n, keys[n].public) for n in names]
    timeouts = Timeouts(commit_ms=BLOCK_MS)
    machines = {n: Tendermint(validators, n, keys[n], apps[n], timeouts=timeouts) for n in names}
    honest = [n for n in names if n not in faults]

    def tick(v: str, now: int) -> None:
        apps[v].now_ms = t0 + now

    def decided(v: str, decision: Decide, now: int) -> None:
        apps[v].commit(decision)

    net = SimNetwork(
        machines,
        {n: keys[n] for n in names},
        cfg.seed,
        drop=cfg.drop,
        heal_at_ms=cfg.heights * BLOCK_MS // 2,
        byzantine=byzantine,
        on_decide=decided,
        clock=tick,
        outbox=lambda v: apps[v].take_outbox(),
        on_app=lambda v, message: apps[v].on_app_message(message),
    )
    signers = {s: Signer(genesis.tx_chain, s, site_keys[s]) for s in sites}
    refused_txs = 0

    def submit(tx: dict[str, Any]) -> None:
        """A client sends its transactions to its own honest validator, which relays them."""
        nonlocal refused_txs
        sender = tx["body"].get("from") or tx["body"]["site"]
        home = honest[sum(sender.encode()) % len(honest)]
        try:
            apps[home].submit(tx)
        except InvalidTransaction:
            refused_txs += 1

    op = Signer(genesis.tx_chain, "operator", keys["operator"])
    for s in sites:
        submit(op.register(s, site_keys[s].public_hex, meter_keys[s].public_hex, "root", "pv"))
        submit(op.deposit(s, 10**10))
    net.start()
    end_ms = cfg.heights * BLOCK_MS + BLOCK_MS // 2
    metered: set[str] = set()
    now = 0
    while now < end_ms:
        now = min(end_ms, now + SLOT_MS // 2)
        net.run(lambda: False, now)
        clock = t0 + net.now
        target = slot_of(from_ms(clock + 60 * 60_000))
        gate = slot_times(str(target), genesis.market.gate_minutes).gate_ms
        if clock < gate:
            for s in sites:
                side = "sell" if rng.random() < 0.5 else "buy"
                price = rng.randrange(800, 3000, 10)
                tx = signers[s].order(str(target), side, rng.randrange(1, 11) * 100, price)
                submit(tx)
        previous = _previous(slot_of(from_ms(clock)))
        if str(previous) not in metered:
            metered.add(str(previous))
            for s in sites:
                imp, exp = rng.randrange(0, 1500), rng.randrange(0, 1500)
                submit(meter_reading(genesis.tx_chain, meter_keys[s], s, str(previous), imp, exp))
    summary = _summary(cfg, apps, net, honest, names, refused_txs)
    return DevnetRun(summary, genesis, tuple(apps[honest[0]].blocks))


def _previous(slot: Slot) -> Slot:
    if slot.index:
        return Slot(slot.day, slot.index - 1)
    return Slot(slot.day - timedelta(days=1), 47)


def _summary(
    cfg: DevnetConfig,
    apps: dict[str, LedgerApp],
    net: SimNetwork,
    honest: list[str],
    names: list[str],
    refused_txs: int,
) -> dict[str, Any]:
    violations = 0
    heights = max((len(net.decided[v]) for v in honest), default=0)
    for h in range(1, heights + 1):
        ids = {net.decided[v][h] for v in honest if h in net.decided[v]}
        if len(ids) > 1:
            violations += 1
    ref = apps[honest[0]]
    winners: dict[str, int] = dict.fromkeys(names, 0)
    decisions = 0
    for block in ref.blocks:
        for tx in block.txs:
            body = tx["body"]
            if body["type"] == "clear":
                decisions += 1
                winners[body["from"]] += 1
            elif body["type"] == "decide":
                # the winners: every validator whose claim is the recorded clearing (validators
                # with the same solver find the same one)
                decisions += 1
                claims = [claim_from_json(c, "claim") for c in body["claims"]]
                best = max(c.rank() for c in claims)
                for c in claims:
                    if c.rank() == best:
                        winners[c.validator] += 1
    return {
        "validators": cfg.validators,
        "byzantine": cfg.byzantine,
        "drop": cfg.drop,
        "seed": cfg.seed,
        "goal": cfg.goal,
        "heights_committed": min(len(net.decided[v]) for v in honest),
        "safety_violations": violations,
        "clearing_decisions": decisions,
        "winners_by_validator": winners,
        "rejected_proposals": sum(len(apps[v].refused) for v in honest),
        "rejected_claims": sum(len(apps[v].refused_claims) for v in honest),
        "refused_transactions": refused_txs,
        "settled_microyen": ref.state.meta.settled_microyen,
        "virtual_seconds": net.now // 1000,
        "messages_delivered": net.delivered,
    }
