"""Signed transactions of the exchange contract (DESIGN.md §4).

A transaction is ``{"body": {...}, "sig": "<128 hex>"}``. The body always has ``chain`` (the
genesis hash in hex, :attr:`Genesis.tx_chain`: a transaction signed for one chain is never valid
on another, even one with the same name) and ``type``; every type but
``meter`` has ``from`` (the signing account) and ``nonce`` (that account's previous nonce + 1).
``sig`` is Ed25519 over ``"peerpower/tx/1\\0" ‖ canonical(body)``.

=========  ==================  ==================================================================
type       signed by           other fields
=========  ==================  ==================================================================
register   the operator        account, key, meter_key, node, site_type
reinstate  the operator        account  (lifts a suspension; the default count starts again)
deposit    the operator        account, amount_microyen  (operator → account)
withdraw   a participant       amount_microyen  (participant's free balance → operator)
order      a participant       slot, side, energy_wh, price_sen_per_kwh  (id ``<from>#<nonce>``)
cancel     a participant       order
clear      a validator         slot, result  (a clearing result, as ``peerpower clear`` prints)
decide     a validator         slot, result, claims  (an optimal clearing with a quorum of
                               validators' claims: proof of optimal clearing, ledger/claims.py)
settle     a validator         slot
meter      the site's meter    site, slot, import_wh, export_wh  (no from, no nonce)
=========  ==================  ==================================================================

Bodies with unknown or missing fields are rejected, so one transaction has exactly one encoding.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from peerpower.crypto import (
    KEY_HEX_LENGTH,
    SIGNATURE_HEX_LENGTH,
    KeyPair,
    canonical_unchecked,
    parse_hex,
    sha256,
    sign_ahead,
    sign_many,
)
from peerpower.errors import InvalidInput, InvalidTransaction
from peerpower.ledger.genesis import MAX_SLOT_YEAR, MIN_SLOT_YEAR, SITE_TYPES, check_account_id
from peerpower.market.result import ClearingResult
from peerpower.market.verify import result_from_json
from peerpower.timeslots import Slot

TX_DOMAIN = b"peerpower/tx/1\x00"
MAX_AMOUNT_MICROYEN = 10**18
MAX_METER_WH = 10**9

# type → (signed by, fields with their kinds). "slot" is a slot name like 2026-08-18#24.
_FIELDS: dict[str, dict[str, str]] = {
    "register": {
        "account": "id",
        "key": "key",
        "meter_key": "key",
        "node": "str",
        "site_type": "site",
    },
    "reinstate": {"account": "id"},
    "deposit": {"account": "id", "amount_microyen": "amount"},
    "withdraw": {"amount_microyen": "amount"},
    "order": {"slot": "slot", "side": "side", "energy_wh": "wh", "price_sen_per_kwh": "price"},
    "cancel": {"order": "str"},
    "clear": {"slot": "slot", "result": "result"},
    "decide": {"slot": "slot", "result": "result", "claims": "claims"},
    "settle": {"slot": "slot"},
    "meter": {"site": "id", "slot": "slot", "import_wh": "meter", "export_wh": "meter"},
}
TX_TYPES = tuple(_FIELDS)
# type → (its fields with their kinds, every field its body has)
_SPECS: dict[str, tuple[dict[str, str], frozenset[str]]] = {
    kind: (
        fields,
        frozenset(fields) | {"chain", "type"} | (set() if kind == "meter" else {"from", "nonce"}),
    )
    for kind, fields in _FIELDS.items()
}


@functools.lru_cache(maxsize=4096)
def parse_slot(text: str) -> Slot:
    """:meth:`Slot.parse`, remembered (orders name few slots, many times)."""
    slot = Slot.parse(text)
    if str(slot) != text:
        raise InvalidInput("slot", f"{text!r} is not written as {str(slot)!r}")
    if not MIN_SLOT_YEAR <= slot.day.year <= MAX_SLOT_YEAR:
        raise InvalidInput("slot", f"{text!r} is outside the years {MIN_SLOT_YEAR}–{MAX_SLOT_YEAR}")
    return slot


@dataclass(frozen=True, slots=True)
class Tx:
    """A decoded, well-formed transaction (its signature and rules are checked on apply).

    ``sender`` is the ``from`` account, or the site for a meter reading; ``nonce`` is ``None``
    for meter readings. ``message`` is the canonical body, the bytes that were signed.
    """

    type: str
    sender: str
    nonce: int | None
    body: dict[str, Any]
    sig: bytes
    message: bytes
    result: ClearingResult | None = None

    @property
    def id(self) -> str:
        """SHA-256 of the signed body, hex: what a client uses to find its transaction."""
        return sha256(self.message).hex()

    def encoded(self) -> bytes:
        """Canonical bytes of the whole transaction (the Merkle leaf)."""
        return b'{"body":' + self.message + b',"sig":"' + self.sig.hex().encode() + b'"}'

    def to_json(self) -> dict[str, Any]:
        return {"body": self.body, "sig": self.sig.hex()}


def tx_id_of(obj: dict[str, Any]) -> str:
    """:attr:`Tx.id` of a transaction already known to be well formed (one in a committed
    block), without decoding it again."""
    return sha256(canonical_unchecked(obj["body"])).hex()


def _bad(field: str, message: str) -> InvalidTransaction:
    return InvalidTransaction("format", f"{field}: {message}")


# Transactions decoded in this process, by signature, with the very object decoded: see
# share_decoded_transactions.
_DECODED: dict[str, tuple[dict[str, Any], Tx]] | None = None
_DECODED_LIMIT = 0


@contextlib.contextmanager
def share_decoded_transactions(limit: int = 200_000) -> Iterator[None]:
    """Within the block, :func:`decode_tx` remembers up to ``limit`` transactions it decoded
    and gives the same :class:`Tx` again when handed the very same object (not an equal one).

    For validators sharing one process (the simulator), which pass each other the objects a
    client submitted; only for code that never changes a transaction's dict once made.
    """
    global _DECODED, _DECODED_LIMIT
    before = _DECODED, _DECODED_LIMIT
    _DECODED, _DECODED_LIMIT = {}, limit
    try:
        yield
    finally:
        _DECODED, _DECODED_LIMIT = before


def decode_tx(obj: Any, chain: str, where: str = "tx") -> Tx:
    """Check the shape of a transaction and every field's type; raise ``InvalidTransaction``
    (rule ``format``, or ``chain`` for another chain's transaction) naming field and value."""
    cache = _DECODED
    if cache is None or type(obj) is not dict:
        return _decode(obj, chain, where)
    sig = obj.get("sig")
    hit = cache.get(sig) if type(sig) is str else None
    if hit is not None and hit[0] is obj and hit[1].body.get("chain") == chain:
        return hit[1]
    tx = _decode(obj, chain, where)
    if len(cache) >= _DECODED_LIMIT:
        cache.clear()
    cache[obj["sig"]] = (obj, tx)
    return tx


def _decode(obj: Any, chain: str, where: str) -> Tx:
    if not isinstance(obj, dict) or len(obj) != 2 or "body" not in obj or "sig" not in obj:
        raise _bad(where, 'must be an object {"body": {...}, "sig": "<hex>"}')
    body = obj["body"]
    sig_hex = obj["sig"]
    if type(sig_hex) is not str or len(sig_hex) != SIGNATURE_HEX_LENGTH:
        raise _bad(
            f"{where}.sig", f"must be {SIGNATURE_HEX_LENGTH} hex characters, got {sig_hex!r}"
        )
    try:
        sig = parse_hex(sig_hex, SIGNATURE_HEX_LENGTH, f"{where}.sig")
    except InvalidInput as err:
        raise _bad(err.field, err.message) from None
    if not isinstance(body, dict):
        raise _bad(f"{where}.body", "must be an object")
    kind = body.get("type")
    spec = _SPECS.get(kind) if type(kind) is str else None
    if spec is None:
        raise _bad(f"{where}.body.type", f"{kind!r} is not one of {', '.join(TX_TYPES)}")
    fields, expected = spec
    if body.get("chain") != chain:
        raise InvalidTransaction(
            "chain",
            f"{where}.body.chain is {body.get('chain')!r}, this chain's genesis is {chain!r}",
        )
    if len(body) != len(expected) or not expected.issuperset(body):
        missing = sorted(expected - set(body))
        extra = sorted(set(body) - expected)
        raise _bad(
            f"{where}.body",
            f"{kind} needs fields {sorted(expected)}; missing {missing}, unknown {extra}",
        )
    result: ClearingResult | None = None
    for name, check in fields.items():
        value = body[name]
        field = f"{where}.body.{name}"
        if check == "result":
            try:
                result = result_from_json(value)
            except InvalidInput as err:
                raise _bad(f"{field}.{err.field}", err.message) from None
        else:
            _check_field(check, value, field)
    nonce: int | None = None
    sender: str
    if kind == "meter":
        sender = body["site"]
    else:
        sender = body["from"]
        if type(sender) is not str:
            raise _bad(f"{where}.body.from", f"must be an account id, got {sender!r}")
        nonce = body["nonce"]
        if type(nonce) is not int or not 0 < nonce < 2**63:
            raise _bad(f"{where}.body.nonce", f"must be an integer 1–2^63−1, got {nonce!r}")
    message = canonical_unchecked(body)
    return Tx(str(kind), sender, nonce, body, sig, message, result)


def _check_field(check: str, value: Any, field: str) -> None:
    kind = type(value)
    if check == "price" or check == "wh" or check == "amount" or check == "meter":
        if kind is not int:
            raise _bad(field, f"must be an integer, got {value!r}")
        if check == "amount" and not 0 < value <= MAX_AMOUNT_MICROYEN:
            raise _bad(field, f"must be 1–{MAX_AMOUNT_MICROYEN} µ¥, got {value}")
        if check == "meter" and not 0 <= value <= MAX_METER_WH:
            raise _bad(field, f"must be 0–{MAX_METER_WH} Wh, got {value}")
    elif check == "slot":
        if kind is not str:
            raise _bad(field, f"must be a slot like '2026-08-18#24', got {value!r}")
        try:
            parse_slot(value)
        except InvalidInput as err:
            raise _bad(field, err.message) from None
    elif check == "claims":
        if kind is not list or not 0 < len(value) <= 1000:
            raise _bad(field, f"must be a list of 1–1000 claims, got {value!r:.80}")
    elif check == "side":
        if value != "buy" and value != "sell":
            raise _bad(field, f"must be 'buy' or 'sell', got {value!r}")
    elif check == "id":
        try:
            check_account_id(value, field)
        except InvalidInput as err:
            raise _bad(field, err.message) from None
    elif check == "key":
        try:
            parse_hex(value, KEY_HEX_LENGTH, field)
        except InvalidInput as err:
            raise _bad(field, err.message) from None
    elif check == "site":
        if value not in SITE_TYPES:
            raise _bad(field, f"{value!r} is not one of {', '.join(SITE_TYPES)}")
    elif check == "str" and (kind is not str or not 0 < len(value) <= 200):
        raise _bad(field, f"must be a string of 1–200 characters, got {value!r}")


def sign_body(key: KeyPair, body: dict[str, Any]) -> dict[str, Any]:
    """A transaction: ``body`` signed by ``key``."""
    return {"body": body, "sig": key.sign(TX_DOMAIN, canonical_unchecked(body)).hex()}


def sign_bodies(items: Sequence[tuple[KeyPair, dict[str, Any]]]) -> list[dict[str, Any]]:
    """:func:`sign_body` of each ``(key, body)``, in order; large batches are signed on
    threads (libsodium runs without the GIL), e.g. a whole community's orders of a round."""
    return sign_encoded([(key, body, canonical_unchecked(body)) for key, body in items])


def sign_encoded(items: Sequence[tuple[KeyPair, dict[str, Any], bytes]]) -> list[dict[str, Any]]:
    """As :func:`sign_bodies`, each body given with its canonical bytes already made."""
    sigs = sign_many([(key.seed + key.public, TX_DOMAIN + m) for key, _, m in items])
    return [{"body": body, "sig": sig.hex()} for (_, body, _), sig in zip(items, sigs, strict=True)]


class SignAhead:
    """Signs transactions in batches (sent once :attr:`BATCH` or more wait) in worker
    processes while the caller goes on making more (the simulator's controllers plan while the
    orders of those before them are signed); see :func:`peerpower.crypto.sign_ahead`, which
    also checks each signature there where this process's validators share checked signatures.

    ``ahead = SignAhead(); ahead.extend(items); txs = ahead.result()``: the transactions in the
    order given.
    """

    BATCH = 128

    def __init__(self) -> None:
        self._batch: list[tuple[KeyPair, dict[str, Any], bytes]] = []
        self._started: list[tuple[list[dict[str, Any]], Callable[[], list[bytes]]]] = []

    def extend(self, items: Iterable[tuple[KeyPair, dict[str, Any], bytes]]) -> None:
        """Add ``(key, body, canonical bytes of body)`` items; full batches start at once."""
        self._batch.extend(items)
        if len(self._batch) >= self.BATCH:
            self._start()

    def _start(self) -> None:
        batch, self._batch = self._batch, []
        wait = sign_ahead([(key.seed + key.public, TX_DOMAIN, m) for key, _, m in batch])
        self._started.append(([body for _, body, _ in batch], wait))

    def result(self) -> list[dict[str, Any]]:
        """Every transaction added, signed, in order. The last batch, short of a full one, is
        signed here while the workers finish theirs (a small community's orders never leave
        this process)."""
        rest, self._batch = sign_encoded(self._batch), []
        started, self._started = self._started, []
        done = [
            {"body": body, "sig": sig.hex()}
            for bodies, wait in started
            for body, sig in zip(bodies, wait(), strict=True)
        ]
        return done + rest


@dataclass(slots=True)
class Signer:
    """Builds and signs one account's transactions, counting its nonce.

    ``Signer(genesis.tx_chain, "home-1", key)``;
    ``signer.order("2026-08-18#24", "sell", 1000, 1500)`` returns the signed transaction as a
    JSON-ready dict. ``next_nonce`` is the nonce the next
    transaction will carry (start it at the account's nonce + 1).
    """

    chain: str
    account: str
    key: KeyPair
    next_nonce: int = 1

    def _tx(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {
            "chain": self.chain,
            "type": kind,
            "from": self.account,
            "nonce": self.next_nonce,
        }
        body.update(fields)
        self.next_nonce += 1
        return sign_body(self.key, body)

    def register(
        self, account: str, key: str, meter_key: str, node: str, site_type: str
    ) -> dict[str, Any]:
        return self._tx(
            "register",
            account=account,
            key=key,
            meter_key=meter_key,
            node=node,
            site_type=site_type,
        )

    def reinstate(self, account: str) -> dict[str, Any]:
        return self._tx("reinstate", account=account)

    def deposit(self, account: str, amount_microyen: int) -> dict[str, Any]:
        return self._tx("deposit", account=account, amount_microyen=amount_microyen)

    def withdraw(self, amount_microyen: int) -> dict[str, Any]:
        return self._tx("withdraw", amount_microyen=amount_microyen)

    def order(self, slot: str, side: str, energy_wh: int, price_sen_per_kwh: int) -> dict[str, Any]:
        return self._tx(
            "order", slot=slot, side=side, energy_wh=energy_wh, price_sen_per_kwh=price_sen_per_kwh
        )

    def cancel(self, order: str) -> dict[str, Any]:
        return self._tx("cancel", order=order)

    def clear(self, slot: str, result: dict[str, Any]) -> dict[str, Any]:
        return self._tx("clear", slot=slot, result=result)

    def decide(
        self, slot: str, result: dict[str, Any], claims: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self._tx("decide", slot=slot, result=result, claims=claims)

    def settle(self, slot: str) -> dict[str, Any]:
        return self._tx("settle", slot=slot)


def meter_reading(
    chain: str, meter_key: KeyPair, site: str, slot: str, import_wh: int, export_wh: int
) -> dict[str, Any]:
    """A meter reading of ``site`` for ``slot``, signed by the site's meter key."""
    body = {
        "chain": chain,
        "type": "meter",
        "site": site,
        "slot": slot,
        "import_wh": import_wh,
        "export_wh": export_wh,
    }
    return sign_body(meter_key, body)


def order_id(account: str, nonce: int) -> str:
    """The id of the order placed by ``account`` with ``nonce``."""
    return f"{account}#{nonce}"
