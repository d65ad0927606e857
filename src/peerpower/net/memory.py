"""An in-memory network in virtual time for the consensus state machines.

Every message is delivered after a random delay (so messages are reordered), dropped with
probability ``drop`` and duplicated with probability ``duplicate`` until ``heal_at_ms``;
``partition`` splits the validators into groups that cannot reach each other until then.
Byzantine validators behave as told: ``silent`` (sends nothing) or ``equivocate`` (sends one
message to half the validators and a conflicting one, validly signed, to the others). Everything
comes from one seed, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from peerpower.consensus.tendermint import (
    Action,
    Broadcast,
    Decide,
    Proposal,
    Schedule,
    Send,
    SyncRequest,
    Tendermint,
    Vote,
)
from peerpower.crypto import KeyPair

BYZANTINE_KINDS = ("silent", "equivocate")


@dataclass(frozen=True, slots=True)
class _AppMessage:
    """Messages between the validators' applications (e.g. claims), outside consensus: what one
    application had to send at one moment, delivered together (as one frame on TCP)."""

    sender: str
    payloads: tuple[Any, ...]


def _signer(m: Any) -> str | None:
    if isinstance(m, Proposal):
        return m.proposer
    if isinstance(m, Vote):
        return m.validator
    if isinstance(m, SyncRequest):
        return m.requester
    if isinstance(m, _AppMessage):
        return m.sender
    return None


class SimNetwork:
    """Validators' state machines wired through a simulated network (see the module notes).

    ``on_decide(validator, decision, now_ms)`` is called for every decision; ``clock(validator,
    now_ms)`` before every input to a validator (to set its application's clock).
    """

    def __init__(
        self,
        machines: dict[str, Tendermint],
        keys: dict[str, KeyPair],
        seed: int,
        *,
        delay_ms: tuple[int, int] = (1, 200),
        drop: float = 0.0,
        duplicate: float = 0.0,
        heal_at_ms: int = 0,
        partition: Sequence[set[str]] = (),
        byzantine: dict[str, str] | None = None,
        on_decide: Callable[[str, Decide, int], None] | None = None,
        clock: Callable[[str, int], None] | None = None,
        outbox: Callable[[str], list[Any]] | None = None,
        on_app: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.machines = machines
        self.keys = keys
        self.names = list(machines)
        self.rng = random.Random(seed)
        self.delay_ms = delay_ms
        self.drop = drop
        self.duplicate = duplicate
        self.heal_at_ms = heal_at_ms
        self.group = {v: k for k, g in enumerate(partition) for v in g}
        self.byzantine = dict(byzantine or {})
        for v, kind in self.byzantine.items():
            if kind not in BYZANTINE_KINDS:
                raise ValueError(f"byzantine {v}: {kind!r} is not one of {BYZANTINE_KINDS}")
        self.on_decide = on_decide
        self.clock = clock
        self.outbox = outbox
        self.on_app = on_app
        self.now = 0
        self.queue: list[tuple[int, int, str, Any]] = []  # (time, sequence, to, what)
        self.seq = 0
        self.delivered = 0
        self.decided: dict[str, dict[int, bytes]] = {v: {} for v in self.names}

    def _push(self, at: int, dest: str, what: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, dest, what))

    def _deliver(self, src: str, dest: str, message: Any) -> None:
        if self.now < self.heal_at_ms:
            if self.group and self.group.get(src, -1) != self.group.get(dest, -1):
                return
            if self.rng.random() < self.drop:
                return
            if self.rng.random() < self.duplicate:
                self._push(self.now + self.rng.randint(*self.delay_ms), dest, message)
        self._push(self.now + self.rng.randint(*self.delay_ms), dest, message)

    def _act(self, src: str, actions: list[Action]) -> None:
        kind = self.byzantine.get(src)
        for a in actions:
            if isinstance(a, Broadcast):
                if kind == "silent":
                    continue
                if kind == "equivocate":
                    self._equivocate(src, a.message)
                    continue
                for dest in self.names:
                    if dest != src:
                        self._deliver(src, dest, a.message)
            elif isinstance(a, Send):
                if kind != "silent":
                    self._deliver(src, a.to, a.message)
            elif isinstance(a, Schedule):
                self._push(self.now + a.delay_ms, src, a)
            elif isinstance(a, Decide):
                self.decided[src][a.height] = a.value_id
                if self.on_decide is not None:
                    self.on_decide(src, a, self.now)
        if self.outbox is not None and kind != "silent":
            payloads = tuple(self.outbox(src))
            if payloads:
                for dest in self.names:
                    if dest != src:
                        self._deliver(src, dest, _AppMessage(src, payloads))

    def _equivocate(self, src: str, m: Proposal | Vote) -> None:
        key = self.keys[src]
        tag = f"equivocation/{m.height}/{m.round}/{src}".encode()
        other: Proposal | Vote
        if isinstance(m, Vote):
            other = Vote(m.kind, m.height, m.round, hashlib.sha256(tag).digest(), src)
            other = Vote(
                other.kind,
                other.height,
                other.round,
                other.value_id,
                src,
                key.sign(b"", other.signed_bytes()),
            )
        else:
            other = Proposal(m.height, m.round, hashlib.sha256(tag).digest(), tag, -1, src)
            other = Proposal(
                other.height,
                other.round,
                other.value_id,
                other.value,
                -1,
                src,
                key.sign(b"", other.signed_bytes()),
            )
        half = set(self.rng.sample(self.names, len(self.names) // 2))
        for dest in self.names:
            if dest != src:
                self._deliver(src, dest, m if dest in half else other)

    def start(self) -> None:
        for v, machine in self.machines.items():
            if self.clock is not None:
                self.clock(v, self.now)
            self._act(v, machine.start())

    def run(self, until: Callable[[], bool], limit_ms: int) -> bool:
        """Deliver events in time order until ``until()`` holds (True) or ``limit_ms`` of
        virtual time pass (False)."""
        while self.queue:
            if until():
                return True
            if self.queue[0][0] > limit_ms:
                return False
            at, _, dest, what = heapq.heappop(self.queue)
            self.now = at
            machine = self.machines[dest]
            if self.clock is not None:
                self.clock(dest, self.now)
            if isinstance(what, Schedule):
                self._act(dest, machine.on_timeout(what.kind, what.height, what.round))
            elif isinstance(what, _AppMessage):
                if self.on_app is not None:
                    for payload in what.payloads:
                        self.on_app(dest, payload)
                self._act(dest, [])
            else:
                self.delivered += 1
                self._act(dest, machine.on_message(what))
        return until()
