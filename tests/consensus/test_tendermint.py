"""The BFT state machine on a simulated network in virtual time: safety always, liveness after
the network heals, with up to f Byzantine validators (equivocating or silent)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from peerpower.consensus.tendermint import (
    Application,
    Broadcast,
    Decide,
    Proposal,
    Tendermint,
    Vote,
    quorum,
)
from peerpower.crypto import KeyPair, verify_signature
from peerpower.ledger.blocks import COMMIT_DOMAIN
from peerpower.net.memory import SimNetwork


def value_id(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Values(Application):
    """Values are byte strings naming who proposed them; a value is valid unless it starts
    with b"bad"."""

    def __init__(self, me: str) -> None:
        self.me = me

    def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
        value = f"{height}/{round_}/{self.me}".encode()
        return value_id(value), value

    def validate(self, height: int, value: Any) -> bytes | None:
        if not isinstance(value, bytes) or value.startswith(b"bad"):
            return None
        return value_id(value)


class Network:
    """``n`` validators proposing :class:`Values` on the simulated network."""

    def __init__(
        self, n: int, seed: int, byzantine: dict[str, str], drop: float, heal_at: int
    ) -> None:
        self.names = [f"v{k}" for k in range(n)]
        self.keys = {v: KeyPair.derive(f"tm/{v}") for v in self.names}
        self.byzantine = byzantine
        validators = [(v, self.keys[v].public) for v in self.names]
        self.nodes = {v: Tendermint(validators, v, self.keys[v], Values(v)) for v in self.names}
        self.commits: dict[tuple[str, int], tuple[Vote, ...]] = {}
        self.sim = self.make_sim(seed, drop, heal_at)

    def make_sim(self, seed: int, drop: float, heal_at: int) -> SimNetwork:
        return SimNetwork(
            self.nodes,
            self.keys,
            seed,
            drop=drop,
            heal_at_ms=heal_at,
            byzantine=self.byzantine,
            on_decide=self.on_decide,
        )

    def on_decide(self, v: str, d: Decide, now: int) -> None:
        assert (v, d.height) not in self.commits
        self.commits[(v, d.height)] = d.commit

    @property
    def decided(self) -> dict[str, dict[int, bytes]]:
        return self.sim.decided

    def run(self, heights: int, limit_ms: int) -> None:
        honest = [v for v in self.names if v not in self.byzantine]
        self.sim.start()
        self.sim.run(lambda: all(len(self.decided[v]) >= heights for v in honest), limit_ms)


def check_safety(net: Network) -> None:
    honest = [v for v in net.names if v not in net.byzantine]
    by_height: dict[int, set[bytes]] = {}
    for v in honest:
        for h, vid in net.decided[v].items():
            by_height.setdefault(h, set()).add(vid)
    for h, ids in by_height.items():
        assert len(ids) == 1, f"two values decided at height {h}"


def check_commits(net: Network) -> None:
    """Every decision carries a quorum of distinct, valid precommit signatures for its value."""
    for (v, h), commit in net.commits.items():
        assert len({c.validator for c in commit}) >= quorum(len(net.names))
        for c in commit:
            assert c.value_id == net.decided[v][h]
            assert verify_signature(net.keys[c.validator].public, COMMIT_DOMAIN, c.value_id, c.sig)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("n", "faults"),
    [
        (4, {}),
        (4, {"v1": "silent"}),
        (4, {"v2": "equivocate"}),
        (7, {"v0": "equivocate", "v3": "silent"}),
    ],
)
def test_tendermint_safe_and_live(n: int, faults: dict[str, str], seed: int) -> None:
    net = Network(n, seed, faults, drop=0.3, heal_at=20_000)
    net.run(heights=5, limit_ms=600_000)
    check_safety(net)
    check_commits(net)
    honest = [v for v in net.names if v not in faults]
    assert all(len(net.decided[v]) >= 5 for v in honest), {v: len(net.decided[v]) for v in honest}


def test_tendermint_never_decides_an_invalid_value() -> None:
    class Bad(Values):
        def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
            value = b"bad/" + f"{height}/{round_}".encode()
            return value_id(value), value

    net = Network(4, 3, {}, drop=0.0, heal_at=0)
    validators = [(v, net.keys[v].public) for v in net.names]
    net.nodes["v1"] = Tendermint(validators, "v1", net.keys["v1"], Bad("v1"))
    net.run(heights=4, limit_ms=600_000)
    check_safety(net)
    decided_values = {vid for d in net.decided.values() for vid in d.values()}
    assert decided_values  # the others' proposals were decided
    # the bad proposer's values were found invalid, and none of them was decided
    rejected = [p for node in net.nodes.values() for p in node.rejected]
    assert rejected and all(p.proposer == "v1" for p in rejected)
    for vid in decided_values:
        assert vid not in {p.value_id for p in rejected}


def test_tendermint_equivocation_is_evidence() -> None:
    net = Network(4, 5, {"v3": "equivocate"}, drop=0.0, heal_at=0)
    net.run(heights=3, limit_ms=600_000)
    check_safety(net)
    found = [pair for v in ("v0", "v1", "v2") for pair in net.nodes[v].evidence]
    assert found and all(a.validator == b.validator == "v3" for a, b in found)


class Partitioned(Network):
    """Two halves that cannot reach each other until ``heal_at``."""

    def __init__(self, n: int, seed: int, heal_at: int) -> None:
        self.decided_before_heal = 0
        self.heal_at = heal_at
        super().__init__(n, seed, {}, drop=0.0, heal_at=heal_at)

    def make_sim(self, seed: int, drop: float, heal_at: int) -> SimNetwork:
        half = len(self.names) // 2
        return SimNetwork(
            self.nodes,
            self.keys,
            seed,
            heal_at_ms=heal_at,
            partition=[set(self.names[:half]), set(self.names[half:])],
            on_decide=self.on_decide,
        )

    def on_decide(self, v: str, d: Decide, now: int) -> None:
        if now < self.heal_at:
            self.decided_before_heal += 1
        super().on_decide(v, d, now)


@pytest.mark.parametrize("seed", range(4))
def test_tendermint_partition_stalls_then_heals(seed: int) -> None:
    # 2 + 2 of 4 validators: no side has a quorum of 3, so nothing is decided until the
    # partition heals; then every validator decides, and all decide the same values
    net = Partitioned(4, seed, heal_at=60_000)
    net.run(heights=4, limit_ms=900_000)
    assert net.decided_before_heal == 0
    check_safety(net)
    check_commits(net)
    assert all(len(net.decided[v]) >= 4 for v in net.names)


def _votes(actions: list[Any], kind: str) -> list[Vote]:
    return [
        a.message
        for a in actions
        if isinstance(a, Broadcast) and isinstance(a.message, Vote) and a.message.kind == kind
    ]


def _proposals(actions: list[Any]) -> list[Any]:
    return [
        a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Proposal)
    ]


@pytest.mark.parametrize("restored", [True, False])
def test_tendermint_restart_keeps_its_lock_and_never_signs_twice(restored: bool) -> None:
    names = [f"v{k}" for k in range(4)]
    keys = {v: KeyPair.derive(f"tm/{v}") for v in names}
    validators = [(v, keys[v].public) for v in names]

    def machine(v: str) -> Tendermint:
        return Tendermint(validators, v, keys[v], Values(v))

    v0, v1, v2, v3 = (machine(v) for v in names)
    kept: list[Any] = []
    v0.persist = kept.extend
    v0.start()
    (p,) = _proposals(v1.start())  # v1 proposes at height 1, round 0
    v2.start()
    v3.start()
    out = v0.on_message(p)
    (prevote,) = _votes(out, "prevote")
    assert prevote.value_id == p.value_id
    for other in (v2, v3):
        for vote in _votes(other.on_message(p), "prevote"):
            out += v0.on_message(vote)
    (precommit,) = _votes(out, "precommit")
    assert precommit.value_id == p.value_id and v0.locked_round == 0
    assert kept == [prevote, p, precommit]  # kept before they were sent

    # v0 crashes and restarts at height 1.
    again = machine("v0")
    if restored:
        again.restore(kept)
    out = again.start()
    if restored:
        assert again.locked_round == 0 and again.locked_value is not None
        assert again.locked_value[0] == p.value_id
        assert set(_votes(out, "prevote")) == {prevote}  # re-sent, not re-signed
        assert set(_votes(out, "precommit")) == {precommit}
    # Round 1 (after the round's timeouts): v2 proposes a new value; a validator locked on p
    # must not prevote it.
    for kind in ("propose", "prevote", "precommit"):
        again.on_timeout(kind, 1, 0)
    assert again.round == 1
    value_id1, value1 = Values("v2").propose(1, 1)
    p1 = Proposal(1, 1, value_id1, value1, -1, "v2")
    p1 = Proposal(1, 1, value_id1, value1, -1, "v2", keys["v2"].sign(b"", p1.signed_bytes()))
    (vote,) = _votes(again.on_message(p1), "prevote")
    if restored:
        assert vote.value_id is None  # locked on p: nil
    else:
        assert vote.value_id == p1.value_id  # forgot its lock: the hazard restore removes
