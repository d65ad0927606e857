"""Tendermint BFT agreement on one value per height, as a sans-IO state machine.

Inputs are method calls — :meth:`Tendermint.start`, :meth:`Tendermint.on_message`,
:meth:`Tendermint.on_timeout` — and outputs are the actions they return: messages to broadcast,
timers to schedule, and decisions. The machine reads no clock and does no I/O, so the same code
runs on the simulated network in virtual time and on TCP, and every run is reproducible.

Notes
-----
Algorithm 1 of Buchman, Kwon and Milosevic, *The latest gossip on BFT consensus* (2018,
arXiv:1807.04938), for ``n`` validators of equal power tolerating ``f = ⌊(n − 1)/3⌋`` Byzantine
ones. A quorum is more than two thirds of ``n`` (``2f + 1`` when ``n = 3f + 1``); "some honest
validator is ahead" is more than one third (``f + 1``). Each height runs rounds; the proposer of
round ``r`` at height ``h`` is validator ``(h + r) mod n`` in genesis order. In a round:

* the proposer broadcasts a proposal (its *valid value* if it has one, else a new value);
* each validator prevotes the proposal if it is valid and it is not locked on another value
  (or a quorum prevoted the proposal in a round at or after its lock), else nil;
* on a quorum of prevotes for a value a validator locks on it and precommits it; on a quorum of
  nil prevotes (or a prevote timeout) it precommits nil;
* a quorum of precommits for a value decides it — final at once: two quorums intersect in an
  honest validator, which never precommits two values in one round and, once locked, prevotes
  only its locked value unless a later quorum released it;
* timeouts grow with the round, so after the network heals every honest validator meets in a
  round long enough to decide (liveness).

Votes and proposals are signed with the validators' Ed25519 keys and checked on receipt; a
second, different vote of one validator for one (kind, height, round) is kept as evidence of
equivocation and never counted. A precommit for a value is signed over
``"peerpower/commit/1\\0" ‖ value id`` — when the value is a block, exactly the signature a
commit certificate holds (:mod:`peerpower.ledger.blocks`), so a decision's precommits are its
certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from peerpower.crypto import KeyPair, canonical_unchecked, verify_signature
from peerpower.ledger.blocks import COMMIT_DOMAIN

PROPOSAL_DOMAIN = b"peerpower/proposal/1\x00"
MAX_VOTES_PER_VALIDATOR = 4  # distinct votes kept per validator, kind and round
MAX_PROPOSALS_PER_ROUND = 4  # distinct proposals kept per round (a Byzantine proposer's extra)
MAX_ROUNDS_AHEAD = 1000  # messages for rounds further ahead than this are ignored
MAX_KEPT = 100  # rejected proposals and evidence kept (the latest)
PREVOTE_DOMAIN = b"peerpower/prevote/1\x00"
NIL_PRECOMMIT_DOMAIN = b"peerpower/precommit-nil/1\x00"

Step = Literal["propose", "prevote", "precommit"]
VoteKind = Literal["prevote", "precommit"]
TimeoutKind = Literal["propose", "prevote", "precommit", "gossip", "commit"]


@dataclass(frozen=True, slots=True)
class Proposal:
    """``value`` proposed at (height, round); ``valid_round`` is the round of the quorum of
    prevotes that made it the proposer's valid value (−1: none)."""

    height: int
    round: int
    value_id: bytes
    value: Any
    valid_round: int
    proposer: str
    sig: bytes = b""

    def signed_bytes(self) -> bytes:
        return PROPOSAL_DOMAIN + canonical_unchecked(
            [self.height, self.round, self.value_id.hex(), self.valid_round, self.proposer]
        )


@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit of ``validator`` for ``value_id`` (``None``: nil)."""

    kind: VoteKind
    height: int
    round: int
    value_id: bytes | None
    validator: str
    sig: bytes = b""

    def signed_bytes(self) -> bytes:
        if self.kind == "precommit" and self.value_id is not None:
            return COMMIT_DOMAIN + self.value_id
        domain = PREVOTE_DOMAIN if self.kind == "prevote" else NIL_PRECOMMIT_DOMAIN
        value = None if self.value_id is None else self.value_id.hex()
        return domain + canonical_unchecked([self.height, self.round, value, self.validator])


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """``requester`` is at ``height`` and asks for how it was decided (unsigned: answering a
    forged request only sends signed messages anyone may see)."""

    height: int
    requester: str


Message = Proposal | Vote


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to validator ``to`` only."""

    to: str
    message: Message | SyncRequest


@dataclass(frozen=True, slots=True)
class Schedule:
    """Call :meth:`Tendermint.on_timeout` with this timer after ``delay_ms`` [ms]."""

    kind: TimeoutKind
    height: int
    round: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    """``value`` is decided at ``height``; ``commit`` holds the quorum of precommits for it."""

    height: int
    round: int
    value_id: bytes
    value: Any
    commit: tuple[Vote, ...]


Action = Broadcast | Send | Schedule | Decide


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Round timeouts [ms]: ``base + round × increase`` for each step."""

    propose_ms: int = 3000
    prevote_ms: int = 1000
    precommit_ms: int = 1000
    increase_ms: int = 500
    gossip_ms: int = 1000
    # after a decision, how long to wait before the next height starts: the block interval
    # (0: at once)
    commit_ms: int = 0

    def of(self, kind: TimeoutKind, round_: int) -> int:
        if kind == "gossip":
            return self.gossip_ms
        if kind == "commit":
            return self.commit_ms
        base = {"propose": self.propose_ms, "prevote": self.prevote_ms}.get(kind, self.precommit_ms)
        return base + round_ * self.increase_ms


class Application:
    """What consensus asks of the node: a new value to propose and whether a value is valid."""

    def propose(self, height: int, round_: int) -> tuple[bytes, Any]:
        """A new value for ``height`` and its id."""
        raise NotImplementedError

    def validate(self, height: int, value: Any) -> bytes | None:
        """The id of ``value`` if it is a valid value for ``height``, else ``None``."""
        raise NotImplementedError

    def block_interval_ms(self, default_ms: int) -> int:
        """How long after a decision the next height starts (``default_ms``: the
        ``commit_ms`` timeout); an application may space its blocks by the clock."""
        return default_ms


@dataclass
class _Round:
    proposal: Proposal | None = None  # the first received: what this validator prevotes on
    # every proposal seen for the round by value id (a Byzantine proposer may send several; a
    # quorum may form on any of them)
    proposals: dict[bytes, Proposal] = field(default_factory=dict)
    # validator → value id → its vote: an equivocating validator's votes for different values
    # are all kept (a few at most) and each counts for its value — two quorums still meet in an
    # honest validator — and the conflict is kept as evidence
    prevotes: dict[str, dict[bytes | None, Vote]] = field(default_factory=dict)
    precommits: dict[str, dict[bytes | None, Vote]] = field(default_factory=dict)
    prevote_timer: bool = False
    precommit_timer: bool = False
    locked_here: bool = False


def quorum(n: int) -> int:
    """More than two thirds of ``n``."""
    return n * 2 // 3 + 1


def one_third(n: int) -> int:
    """More than one third of ``n``: at least one honest validator among them."""
    return n // 3 + 1


class Tendermint:
    """One validator's consensus state machine (see the module notes).

    Parameters
    ----------
    validators
        ``(id, public key)`` of every validator, in genesis order.
    me, key
        This validator's id and key (``None`` for an observer that only follows decisions).
    app
        Proposes and validates values.
    height
        The first height to decide.
    """

    def __init__(
        self,
        validators: Sequence[tuple[str, bytes]],
        me: str | None,
        key: KeyPair | None,
        app: Application,
        height: int = 1,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.order = [v for v, _ in validators]
        self.keys = dict(validators)
        if len(self.keys) != len(self.order):
            raise ValueError("validator ids must be distinct")
        self.n = len(self.order)
        self.me = me
        self.key = key
        self.app = app
        self.timeouts = timeouts or Timeouts()
        self.height = height
        self.evidence: list[tuple[Vote, Vote]] = []
        self.rejected: list[Proposal] = []
        self._future: list[Message] = []
        self._last: list[Message] = []  # proposal and precommits of the last decided height
        # How each height was decided (its proposal and commit), to answer a validator that
        # fell behind; only the last ``keep_heights`` are kept (older ones come from storage).
        self.history: dict[int, list[Message]] = {}
        self.keep_heights = 64
        self._asked = False
        self._ticks = 0  # gossip ticks since the current height began
        self._tick = 0  # gossip ticks since the start
        # (validator, height) → the tick it was first seen behind at that height
        self._behind: dict[tuple[str, int], int] = {}
        self._helped: set[tuple[str, int]] = set()
        self._waiting = False  # between a decision and the next height's start
        # Called with messages to keep before they take effect: this validator's own proposals
        # and votes, and the proposal it locks on. A validator restarted after a crash gets
        # them back (:meth:`restore`) and so never signs two different votes in one round.
        self.persist: Callable[[list[Message]], None] | None = None
        self._resend: list[Message] = []
        self._reset_height()

    # -- state -------------------------------------------------------------------------------
    def _reset_height(self) -> None:
        self._ticks = 0
        self.round = 0
        self.step: Step = "propose"
        self.locked_value: tuple[bytes, Any] | None = None
        self.locked_round = -1
        self.valid_value: tuple[bytes, Any] | None = None
        self.valid_round = -1
        self.rounds: dict[int, _Round] = {}
        self._valid_ids: dict[int, bytes | None] = {}  # id(proposal) → validated id

    def proposer(self, height: int, round_: int) -> str:
        return self.order[(height + round_) % self.n]

    def _r(self, round_: int) -> _Round:
        rnd = self.rounds.get(round_)
        if rnd is None:
            rnd = self.rounds[round_] = _Round()
        return rnd

    def restore(self, kept: Sequence[Message]) -> None:
        """Take back, before :meth:`start`, what :attr:`persist` kept at the current height:
        the machine resumes at the last round it signed in, locked as it was, and re-sends
        rather than re-signs."""
        for m in kept:
            if m.height == self.height and self._authentic(m):
                self._record(m)
        mine = self.me
        self._resend = [
            m
            for m in kept
            if m.height == self.height
            and (m.proposer if isinstance(m, Proposal) else m.validator) == mine
        ]
        for r, rnd in sorted(self.rounds.items()):
            signed = (mine in rnd.prevotes or mine in rnd.precommits) or any(
                p.proposer == mine for p in rnd.proposals.values()
            )
            if signed:
                self.round = r
            for value_id in rnd.precommits.get(mine or "", {}):
                p = rnd.proposals.get(value_id) if value_id is not None else None
                if p is not None:
                    self.locked_value = self.valid_value = (p.value_id, p.value)
                    self.locked_round = self.valid_round = r

    # -- inputs ------------------------------------------------------------------------------
    def start(self) -> list[Action]:
        """Begin the current round (0, or the one :meth:`restore` resumed) of the current
        height, and the gossip timer."""
        out: list[Action] = [Schedule("gossip", 0, 0, self.timeouts.of("gossip", 0))]
        resend, self._resend = self._resend, []
        out.extend(Broadcast(m) for m in resend if isinstance(m, Vote))
        self._start_round(self.round, out)
        self._settle(out)
        return out

    def on_message(self, message: Message | SyncRequest) -> list[Action]:
        """Take a proposal, vote or sync request from the network (checked here; bad ones are
        dropped)."""
        out: list[Action] = []
        if isinstance(message, SyncRequest):
            for m in self.history.get(message.height, []):
                out.append(Send(message.requester, m))
            return out
        if message.height > self.height:
            if not self._authentic(message):
                return out
            if message.height == self.height + 1:
                self._future.append(message)
            sender = message.proposer if isinstance(message, Proposal) else message.validator
            if not self._asked and self.me is not None and sender != self.me:
                # Others are ahead: ask one of them how our height was decided.
                self._asked = True
                out.append(Send(sender, SyncRequest(self.height, self.me)))
            return out
        if message.height < self.height:
            # The sender is behind — usually for a moment only: it has not seen the last
            # precommits yet. Only if it is still behind at a later gossip tick, send it how
            # its height was decided (a whole block: not for every passing laggard).
            sender = message.proposer if isinstance(message, Proposal) else message.validator
            seen = (sender, message.height)
            if sender in self.keys and sender != self.me and message.height in self.history:
                first = self._behind.setdefault(seen, self._tick)
                if first < self._tick and seen not in self._helped:
                    self._helped.add(seen)
                    out.extend(Send(sender, m) for m in self.history.get(message.height, []))
            return out
        if message.round > self.round + MAX_ROUNDS_AHEAD:
            return out  # no honest validator is that far ahead: memory is not for the taking
        if self._known(message):
            return out  # a copy of what is recorded: gossip sends things again
        if not self._authentic(message):
            return out
        self._record(message)
        self._settle(out)
        return out

    def on_timeout(self, kind: TimeoutKind, height: int, round_: int) -> list[Action]:
        out: list[Action] = []
        if kind == "gossip":
            return self._gossip()
        if kind == "commit":
            if height == self.height and self._waiting:
                self._waiting = False
                self._start_round(0, out)
                self._settle(out)
            return out
        if height != self.height or round_ != self.round:
            return out
        if kind == "propose" and self.step == "propose":
            self._vote("prevote", None, out)
            self.step = "prevote"
        elif kind == "prevote" and self.step == "prevote":
            self._vote("precommit", None, out)
            self.step = "precommit"
        elif kind == "precommit":
            self._start_round(self.round + 1, out)
        self._settle(out)
        return out

    def _gossip(self) -> list[Action]:
        """Send again what others may have missed (messages can be lost): this height's
        proposals and own votes. (A validator that fell behind asks for the heights it missed:
        :class:`SyncRequest`.)"""
        self._asked = False
        self._ticks += 1
        self._tick += 1
        self._helped = set()
        self._behind = {k: t for k, t in self._behind.items() if t >= self._tick - 5}
        out: list[Action] = []
        for r, rnd in sorted(self.rounds.items()):
            if self._ticks > 1 and r in (self.round, self.valid_round):
                # Proposals (whole blocks) go again only once a height has lasted a full tick,
                # and only the current round's and the one this validator holds as valid.
                out.extend(Broadcast(x) for x in rnd.proposals.values())
            for votes in (rnd.prevotes, rnd.precommits):
                mine = votes.get(self.me, {}) if self.me is not None else {}
                out.extend(Broadcast(v) for v in mine.values())
        out.append(Schedule("gossip", 0, 0, self.timeouts.of("gossip", 0)))
        return out

    # -- checking and recording messages ----------------------------------------------------
    def _known(self, m: Message) -> bool:
        """Whether exactly this message is already recorded (no need to check it again)."""
        rnd = self.rounds.get(m.round)
        if rnd is None:
            return False
        if isinstance(m, Proposal):
            return rnd.proposals.get(m.value_id) == m
        votes = rnd.prevotes if m.kind == "prevote" else rnd.precommits
        return votes.get(m.validator, {}).get(m.value_id) == m

    def _authentic(self, m: Message) -> bool:
        signer = m.proposer if isinstance(m, Proposal) else m.validator
        key = self.keys.get(signer)
        if key is None or m.round < 0:
            return False
        if isinstance(m, Proposal) and m.proposer != self.proposer(m.height, m.round):
            return False
        return verify_signature(key, b"", m.signed_bytes(), m.sig)

    def _record(self, m: Message) -> None:
        rnd = self._r(m.round)
        if isinstance(m, Proposal):
            if rnd.proposal is None:
                rnd.proposal = m
            if len(rnd.proposals) < MAX_PROPOSALS_PER_ROUND:
                rnd.proposals.setdefault(m.value_id, m)
            return
        votes = rnd.prevotes if m.kind == "prevote" else rnd.precommits
        theirs = votes.setdefault(m.validator, {})
        if m.value_id in theirs:
            return
        if theirs:
            self.evidence.append((next(iter(theirs.values())), m))
            del self.evidence[:-MAX_KEPT]
        if len(theirs) < MAX_VOTES_PER_VALIDATOR:
            theirs[m.value_id] = m

    def _valid_id(self, p: Proposal) -> bytes | None:
        """The proposal's value id if the application finds the value valid and the id right."""
        key = id(p)
        if key not in self._valid_ids:
            try:
                got = self.app.validate(p.height, p.value)
            except Exception:  # an application that fails on a value does not take it
                got = None
            ok = got if got == p.value_id else None
            self._valid_ids[key] = ok
            if ok is None:
                self.rejected.append(p)
                del self.rejected[:-MAX_KEPT]
        return self._valid_ids[key]

    # -- actions -----------------------------------------------------------------------------
    def _sign(self, m: Any) -> Any:
        assert self.key is not None
        return _with_sig(m, self.key.sign(b"", m.signed_bytes()))

    def _vote(
        self,
        kind: VoteKind,
        value_id: bytes | None,
        out: list[Action],
        locking: Proposal | None = None,
    ) -> None:
        if self.me is None or self.key is None:
            return
        rnd = self._r(self.round)
        earlier = (rnd.prevotes if kind == "prevote" else rnd.precommits).get(self.me)
        if earlier:
            # Signed before a restart: send that vote again, never a different one.
            out.extend(Broadcast(v) for v in earlier.values())
            return
        vote = self._sign(Vote(kind, self.height, self.round, value_id, self.me))
        if self.persist is not None:
            self.persist([vote] if locking is None else [locking, vote])
        self._record(vote)
        out.append(Broadcast(vote))

    def _start_round(self, round_: int, out: list[Action]) -> None:
        self.round = round_
        self.step = "propose"
        mine = [p for p in self._r(round_).proposals.values() if p.proposer == self.me]
        if mine:
            out.extend(Broadcast(p) for p in mine)  # proposed before a restart
        elif self.me is not None and self.proposer(self.height, round_) == self.me:
            if self.valid_value is not None:
                value_id, value = self.valid_value
            else:
                value_id, value = self.app.propose(self.height, round_)
            p = self._sign(
                Proposal(self.height, round_, value_id, value, self.valid_round, self.me)
            )
            if self.persist is not None:
                self.persist([p])
            self._record(p)
            out.append(Broadcast(p))
        else:
            out.append(
                Schedule("propose", self.height, round_, self.timeouts.of("propose", round_))
            )

    def _count(self, votes: dict[str, dict[bytes | None, Vote]], value_id: bytes | None) -> int:
        return sum(1 for theirs in votes.values() if value_id in theirs)

    # -- the rules ---------------------------------------------------------------------------
    def _settle(self, out: list[Action]) -> None:
        """Apply every rule that holds, until none does."""
        while self._step_once(out):
            pass

    def _step_once(self, out: list[Action]) -> bool:
        if self._waiting:
            return False
        h, r = self.height, self.round
        q = quorum(self.n)
        # A quorum of precommits for a proposed, valid value, in any round: decide.
        for rr, rnd in sorted(self.rounds.items()):
            for cand in rnd.proposals.values():
                if self._count(rnd.precommits, cand.value_id) < q or self._valid_id(cand) is None:
                    continue
                commit = tuple(
                    theirs[cand.value_id]
                    for theirs in rnd.precommits.values()
                    if cand.value_id in theirs
                )
                out.append(Decide(h, rr, cand.value_id, cand.value, commit))
                self._last = [cand, *commit]
                self.history[h] = self._last
                self.history.pop(h - self.keep_heights, None)
                self.height += 1
                self._reset_height()
                # The next height starts on a timer (at once when commit_ms is 0), after the
                # driver has acted on the decision: its application must apply the decided
                # block before it is asked for the next one.
                self._waiting = True
                interval = self.app.block_interval_ms(self.timeouts.commit_ms)
                out.append(Schedule("commit", self.height, 0, interval))
                waiting, self._future = self._future, []
                for m in waiting:
                    if m.height == self.height:
                        self._record(m)
                    elif m.height == self.height + 1:
                        self._future.append(m)
                return True
        # Some honest validator is in a later round: join it.
        for rr in sorted(self.rounds):
            if rr > r:
                rnd = self.rounds[rr]
                senders = set(rnd.prevotes) | set(rnd.precommits)
                if rnd.proposal is not None:
                    senders.add(rnd.proposal.proposer)
                if len(senders) >= one_third(self.n):
                    self._start_round(rr, out)
                    return True
        rnd = self._r(r)
        p = rnd.proposal
        if self.step == "propose" and p is not None:
            vr = p.valid_round
            if vr == -1:
                ok = self._valid_id(p) is not None and (
                    self.locked_round == -1
                    or (self.locked_value is not None and self.locked_value[0] == p.value_id)
                )
                self._vote("prevote", p.value_id if ok else None, out)
                self.step = "prevote"
                return True
            if 0 <= vr < r and self._count(self._r(vr).prevotes, p.value_id) >= q:
                ok = self._valid_id(p) is not None and (
                    self.locked_round <= vr
                    or (self.locked_value is not None and self.locked_value[0] == p.value_id)
                )
                self._vote("prevote", p.value_id if ok else None, out)
                self.step = "prevote"
                return True
        if self.step == "prevote" and not rnd.prevote_timer and len(rnd.prevotes) >= q:
            rnd.prevote_timer = True
            out.append(Schedule("prevote", h, r, self.timeouts.of("prevote", r)))
            return True
        backed = next(
            (
                x
                for x in rnd.proposals.values()
                if self._count(rnd.prevotes, x.value_id) >= q and self._valid_id(x) is not None
            ),
            None,
        )
        if backed is not None and self.step in ("prevote", "precommit") and not rnd.locked_here:
            p = backed
            rnd.locked_here = True
            if self.step == "prevote":
                self.locked_value = (p.value_id, p.value)
                self.locked_round = r
                self._vote("precommit", p.value_id, out, locking=p)
                self.step = "precommit"
            self.valid_value = (p.value_id, p.value)
            self.valid_round = r
            return True
        if self.step == "prevote" and self._count(rnd.prevotes, None) >= q:
            self._vote("precommit", None, out)
            self.step = "precommit"
            return True
        if not rnd.precommit_timer and len(rnd.precommits) >= q:
            rnd.precommit_timer = True
            out.append(Schedule("precommit", h, r, self.timeouts.of("precommit", r)))
            return True
        return False


def _with_sig(m: Any, sig: bytes) -> Any:
    if isinstance(m, Proposal):
        return Proposal(m.height, m.round, m.value_id, m.value, m.valid_round, m.proposer, sig)
    return Vote(m.kind, m.height, m.round, m.value_id, m.validator, sig)
