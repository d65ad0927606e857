"""Keys, signatures, hashes and the one canonical byte encoding (DESIGN.md §1, §4).

Canonical encoding
------------------
Everything that is hashed or signed is first written as **canonical JSON**:

* UTF-8 bytes of JSON text with no whitespace (``,`` and ``:`` separators);
* object keys sorted by code point, each key a string, no duplicate keys;
* strings escaped as JSON requires, every character outside printable ASCII written as ``\\uXXXX``
  (lowercase hex, surrogate pairs above U+FFFF), so the bytes are pure ASCII;
* integers in decimal with no leading zeros, plus sign or exponent; ``true``, ``false``, ``null``;
* **no floats**: money, energy and prices are integers; byte strings are lowercase hex text.

This is exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
on values built from ``dict``/``list``/``str``/``int``/``bool``/``None``; :func:`canonical`
checks the value first and names the first thing it cannot encode. Pinned vectors:
``tests/vectors/canonical.json``.

Signatures are Ed25519 (RFC 8032) through libsodium (PyNaCl), over a domain tag followed by the
canonical bytes, so a signature made for one purpose (a transaction, a block) is never valid for
another. Hashes are SHA-256. The Merkle root of a list of items hashes leaves as
``SHA-256(0x00 ‖ item)`` and inner nodes as ``SHA-256(0x01 ‖ left ‖ right)``; an odd node at the
end of a level is carried up unchanged (never paired with itself), and the root of no items is
``SHA-256("")``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import hashlib
import json
import logging
import marshal
import os
import queue
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nacl.bindings
import nacl.exceptions
import nacl.signing

from peerpower.errors import InvalidInput

_log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

KEY_HEX_LENGTH = 64
SIGNATURE_HEX_LENGTH = 128
HASH_HEX_LENGTH = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _check_encodable(value: Any, path: str) -> None:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidInput(path, f"object key {key!r} is not a string")
            _check_encodable(item, f"{path}.{key}")
        return
    if kind is list or kind is tuple:
        for k, item in enumerate(value):
            _check_encodable(item, f"{path}[{k}]")
        return
    if kind is float:
        raise InvalidInput(path, f"floats are not allowed in canonical JSON, got {value!r}")
    raise InvalidInput(path, f"cannot encode {kind.__name__} {value!r} in canonical JSON")


# An integer this long might be too long for ``str()`` (the limit, sys.get_int_max_str_digits(),
# is 640 digits at least): the quick check below leaves it to the full one.
_SURE_BITS = 2000


def _surely_encodable(value: Any) -> bool:
    """True when :func:`canonical` surely encodes ``value``: only dicts with string keys, lists,
    tuples, strings, booleans, ``None`` and integers shorter than ``_SURE_BITS`` bits. False
    means "look closer" (then :func:`canonical` names what is wrong, if anything is)."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return (
            kind is str
            or kind is bool
            or value is None
            or (kind is int and value.bit_length() < _SURE_BITS)
        )
    for item in items:  # leaves inline: most items are
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if item.bit_length() >= _SURE_BITS:
                return False
        elif not _surely_encodable(item):
            return False
    return True


def check_encodable(value: Any) -> None:
    """Raise what :func:`canonical` raises for ``value``, and unless something in it is
    doubtful, without encoding it.

    Raises
    ------
    InvalidInput
        Naming the path of the first float, non-string key or unsupported type.
    """
    if not _surely_encodable(value):
        canonical(value)


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (see the module notes).

    Raises
    ------
    InvalidInput
        Naming the path of the first float, non-string key or unsupported type.
    """
    if not _surely_encodable(value):
        _check_encodable(value, "$")  # builds the path of every item: only when it must name one
    try:
        return canonical_unchecked(value)
    except ValueError as err:  # e.g. an integer beyond Python's digit limit for str()
        raise InvalidInput("$", f"cannot encode in canonical JSON: {err}") from None


# ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` makes this same encoder on every
# call; one made once gives the same bytes.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_unchecked(value: Any) -> bytes:
    """:func:`canonical` for values already known to hold only encodable types (hot paths)."""
    return _ENCODER.encode(value).encode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(items: Sequence[bytes]) -> bytes:
    """Merkle root [32 bytes] of ``items`` (each the canonical bytes of one element)."""
    if not items:
        return EMPTY_ROOT
    sha = hashlib.sha256
    level = [sha(b"\x00" + item).digest() for item in items]
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[k] + level[k + 1]).digest() for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def parse_hex(text: Any, length: int, field: str) -> bytes:
    """Decode lowercase hex of exactly ``length`` characters, naming ``field`` when it is not."""
    if type(text) is not str or len(text) != length:
        raise InvalidInput(field, f"must be {length} lowercase hex characters, got {text!r}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidInput(
            field, f"must be {length} lowercase hex characters, got {text!r}"
        ) from None
    if raw.hex() != text:
        raise InvalidInput(field, f"must be lowercase hex, got {text!r}")
    return raw


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair; ``seed`` is the 32-byte secret, ``public`` the 32-byte public key."""

    seed: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        key = nacl.signing.SigningKey.generate()
        return cls(bytes(key), bytes(key.verify_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte seed (deterministic: tests, examples)."""
        if len(seed) != 32:
            raise InvalidInput("seed", f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        key = nacl.signing.SigningKey(seed)
        return cls(seed, bytes(key.verify_key))

    @classmethod
    def derive(cls, label: str) -> KeyPair:
        """A key pair from SHA-256 of ``label``: reproducible keys for examples and tests only."""
        return cls.from_seed(sha256(b"peerpower/test-key\x00" + label.encode()))

    @property
    def public_hex(self) -> str:
        return self.public.hex()

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Detached Ed25519 signature [64 bytes] of ``domain ‖ message``."""
        signed = nacl.bindings.crypto_sign(domain + message, self.seed + self.public)
        return signed[:64]

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public_hex})"


def verify_signature(public: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``domain ‖ message``
    by ``public``."""
    if len(signature) != 64 or len(public) != 32:
        return False
    cache = _VERIFIED
    if cache is not None:
        key = (public, domain, message, signature)
        if key in cache:
            return True
    try:
        nacl.bindings.crypto_sign_open(signature + domain + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    if cache is not None:
        _remember(key)
    return True


def _remember(key: tuple[bytes, bytes, bytes, bytes]) -> None:
    """Keep a signature found valid (``(public, domain, message, signature)``)."""
    cache = _VERIFIED
    if cache is not None:
        if len(cache) >= _VERIFIED_LIMIT:
            cache.clear()
        cache.add(key)


# Signatures already found valid, when several validators share one process (the simulator):
# each would otherwise check every transaction's signature again. Off by default.
_VERIFIED: set[tuple[bytes, bytes, bytes, bytes]] | None = None
_VERIFIED_LIMIT = 0


def share_verified_signatures(limit: int = 500_000) -> None:
    """Remember up to ``limit`` valid signatures for this process (``0``: stop)."""
    global _VERIFIED, _VERIFIED_LIMIT
    _VERIFIED = set() if limit > 0 else None
    _VERIFIED_LIMIT = limit


# Checks of many signatures run on threads: libsodium is called through cffi, which releases the
# GIL, so two cores verify about 1.4 times as many signatures a second as one.
_POOL: ThreadPoolExecutor | None = None
PARALLEL_MIN = 512


def _workers() -> int:
    return min(os.cpu_count() or 1, 8)


def _pool() -> ThreadPoolExecutor | None:
    """The signature threads (one per core, at most 8), or None on one core."""
    global _POOL
    workers = _workers()
    if workers < 2:
        return None
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ed25519")
    return _POOL


# Signing ahead: batches signed in worker processes while this one goes on with Python work.
# Threads would not do: a thread that calls libsodium once per signature needs the GIL back
# after every call and waits up to the switch interval (5 ms) for it while this thread runs
# Python, so it signs a few hundred a second. The workers are plain child processes running
# :mod:`peerpower.signer` (multiprocessing's would import the caller's main script again).
_SIGNERS: list[SigningProcess] | None = None
_SIGNERS_LOCK = threading.Lock()


def _signers() -> list[SigningProcess]:
    """The signing processes, started on first use (none on one core, or where none starts)."""
    global _SIGNERS
    with _SIGNERS_LOCK:
        if _SIGNERS is None:
            started = []
            for _ in range(_workers() if _workers() >= 2 else 0):
                try:
                    started.append(SigningProcess())
                except OSError:  # no interpreter to start, no process left: sign here
                    break
            _SIGNERS = started
        return _SIGNERS


def sign_ahead(items: Sequence[tuple[bytes, bytes, bytes]]) -> Callable[[], list[bytes]]:
    """Start signing each ``(secret ‖ public [64 bytes], domain, message)`` (over ``domain ‖
    message``, as :meth:`KeyPair.sign`) in a worker process; returns a function that waits for
    the signatures, in order.

    Where this process remembers valid signatures (:func:`share_verified_signatures`), each is
    checked in the worker too and remembered here, so the validators of this process find it
    checked. Without workers (one core, or a worker that failed) the signatures are made when
    asked for, as :func:`sign_many` makes them. Safe to call from several threads.
    """
    items = list(items)

    def here() -> list[bytes]:
        return sign_many([(secret, domain + m) for secret, domain, m in items])

    signers = [w for w in _signers() if w.alive] if items else []
    if not signers:
        return here
    worker = min(signers, key=lambda w: w.waiting)
    started = worker.submit(items, check=_VERIFIED is not None)

    def wait() -> list[bytes]:
        done = started.result()
        if done is None:  # the worker died or answered out of turn: sign here
            return here()
        sigs = []
        for (secret, domain, message), (sig, ok) in zip(items, done, strict=True):
            if ok:
                _remember((secret[32:], domain, message, sig))
            sigs.append(sig)
        return sigs

    return wait


#: The largest answer frame a signing process may send [bytes] (a batch of 128 answers is
#: about 10 kB).
MAX_SIGNER_FRAME = 64 << 20


class SigningProcess:
    """One signing process (:mod:`peerpower.signer`). Batches go to it on its standard input
    through a writer thread; answers come back on a pipe of their own (not its standard
    output, where a stray print would land) through a reader thread, which hands each to the
    batch it answers: the batches are numbered, and an answer with another's number, or
    malformed, ends the process (its batches are then signed by their callers)."""

    MODULE = "peerpower.signer"

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        answers, answer_fd = os.pipe()
        try:
            # -P: the working directory does not come first on the path (a peerpower/signer.py
            # there would be handed the keys)
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", self.MODULE, str(answer_fd)],
                stdin=subprocess.PIPE,
                env=env,
                pass_fds=(answer_fd,),
            )
        except BaseException:
            os.close(answers)
            raise
        finally:
            os.close(answer_fd)
        self._answers = os.fdopen(answers, "rb")
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[int, Future[list[tuple[bytes, bool]] | None]]]
        self._pending = collections.deque()
        self._sent = 0
        self.alive = True
        self._closing = False
        threading.Thread(target=self._write, daemon=True, name="signer-in").start()
        self._reader = threading.Thread(target=self._read, daemon=True, name="signer-out")
        self._reader.start()

    @property
    def waiting(self) -> int:
        """Batches sent and not yet answered."""
        return len(self._pending)

    def submit(
        self, items: list[tuple[bytes, bytes, bytes]], check: bool
    ) -> Future[list[tuple[bytes, bool]] | None]:
        """Send a batch; its future holds the ``(signature, checked)`` pairs, in order, or
        None if the process could not answer."""
        done: Future[list[tuple[bytes, bool]] | None] = Future()
        with self._lock:
            if not self.alive:
                done.set_result(None)
                return done
            number = self._sent
            self._sent += 1
            data = marshal.dumps((number, items, check))
            self._pending.append((number, done))
            self._out.put(len(data).to_bytes(8, "big") + data)
        return done

    def _write(self) -> None:
        pipe = self._proc.stdin
        assert pipe is not None
        try:
            while (data := self._out.get()) is not None:
                pipe.write(data)
                pipe.flush()
        except (OSError, ValueError):  # the process is gone: the reader says so
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def _read(self) -> None:
        pipe = self._answers
        why = "it exited"
        try:
            while len(head := pipe.read(8)) == 8:
                size = int.from_bytes(head, "big")
                if size > MAX_SIGNER_FRAME:
                    why = f"it sent a frame of {size} bytes (at most {MAX_SIGNER_FRAME})"
                    break
                number, answers = marshal.loads(pipe.read(size))
                with self._lock:
                    expected, done = self._pending.popleft()
                if number != expected or not isinstance(answers, list):
                    why = f"it answered batch {number!r} in the turn of batch {expected}"
                    done.set_result(None)
                    break
                done.set_result(answers)
        except Exception as err:  # a malformed answer: the process is no longer trusted
            why = f"its answer could not be read ({type(err).__name__}: {err})"
        finally:
            with self._lock:
                self.alive = False
                pending, self._pending = list(self._pending), collections.deque()
            for _, done in pending:
                done.set_result(None)
            pipe.close()
            self._out.put(None)  # the writer closes its input: the process ends
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait()
            if not self._closing:
                _log.warning(
                    "signing process %d dropped: %s; this process signs its batches",
                    self._proc.pid,
                    why,
                )

    def close(self, timeout: float | None = None) -> None:
        """Let the process finish (it exits when its input closes); with ``timeout`` [s], wait
        that long for it, then stop it."""
        self._closing = True
        self._out.put(None)
        if timeout is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _close_signers() -> None:
    for w in _SIGNERS or ():
        w.close()


def _forget_workers() -> None:
    """In a forked child: the parent's threads did not come along, and its signing processes
    are the parent's to talk to; this process starts its own when it needs them."""
    global _POOL, _SIGNERS, _SIGNERS_LOCK
    _POOL = None
    _SIGNERS = None
    _SIGNERS_LOCK = threading.Lock()  # another thread may have held it at the fork


atexit.register(_close_signers)
os.register_at_fork(after_in_child=_forget_workers)


def _on_threads(work: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``work`` over ``items`` split across threads (libsodium runs without the GIL), in
    order; small batches on this thread."""
    pool = _pool() if len(items) >= PARALLEL_MIN else None
    if pool is None:
        return work(items)
    workers = _workers()
    step = -(-len(items) // workers)
    out: list[R] = []
    for part in pool.map(work, [items[k : k + step] for k in range(0, len(items), step)]):
        out.extend(part)
    return out


def verify_many(checks: Sequence[tuple[bytes, bytes, bytes, bytes]]) -> list[bool]:
    """:func:`verify_signature` of each ``(public, domain, message, signature)``, in order."""
    return _on_threads(lambda cs: [verify_signature(*c) for c in cs], checks)


def _sign_detached(secret: bytes, message: bytes) -> bytes:
    return bytes(nacl.bindings.crypto_sign(message, secret)[:64])


def sign_many(items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """Detached Ed25519 signatures of each ``(secret ‖ public [64 bytes], message)``, in order,
    on threads for large batches (as :func:`verify_many`)."""
    return _on_threads(lambda xs: [_sign_detached(s, m) for s, m in xs], items)


def write_key_file(path: Path, key: KeyPair) -> None:
    """Write ``key`` as JSON to a new file readable and writable by its owner only (mode 0600).

    Refuses to overwrite an existing file, so a key is never lost by mistake.
    """
    data = json.dumps(
        {"kind": "ed25519", "public_key": key.public_hex, "secret_seed": key.seed.hex()},
        indent=1,
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        raise InvalidInput(
            "out", f"{str(path)!r} exists; a key file is never overwritten"
        ) from None
    except OSError as err:
        raise InvalidInput("out", f"cannot create {str(path)!r}: {err.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data + "\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def read_key_file(path: Path) -> KeyPair:
    """Read a key file written by :func:`write_key_file` (``peerpower keys new``)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput("key", f"cannot read {str(path)!r}: {err.strerror}") from None
    except json.JSONDecodeError:
        raise InvalidInput("key", f"{str(path)!r} is not a key file (not JSON)") from None
    if not isinstance(obj, dict) or obj.get("kind") != "ed25519":
        raise InvalidInput("key", f"{str(path)!r} is not an ed25519 key file")
    seed = parse_hex(obj.get("secret_seed"), 64, "key.secret_seed")
    key = KeyPair.from_seed(seed)
    if obj.get("public_key") != key.public_hex:
        raise InvalidInput("key.public_key", f"does not belong to the secret in {str(path)!r}")
    return key
