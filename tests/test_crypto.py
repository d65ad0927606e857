"""Canonical JSON, Merkle roots, Ed25519 signatures and key files (peerpower.crypto).

Expected values come from outside the code under test: hand-written vectors
(``tests/vectors/canonical.json``), hashlib, RFC 8032 §7.1 and PyNaCl called directly.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import stat
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from peerpower import crypto
from peerpower.cli import main
from peerpower.crypto import (
    KeyPair,
    canonical,
    merkle_root,
    read_key_file,
    verify_many,
    verify_signature,
    write_key_file,
)
from peerpower.errors import InvalidInput
from peerpower.ledger.blocks import BLOCK_DOMAIN, COMMIT_DOMAIN
from peerpower.ledger.transactions import TX_DOMAIN

VECTORS = Path(__file__).parent / "vectors" / "canonical.json"


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return data


# --- canonical JSON -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["about"][:40])
def test_canonical_matches_pinned_vector(vector: dict[str, Any]) -> None:
    expected = vector["canonical"].encode("ascii")  # the vectors are pure ASCII by the rules
    assert canonical(vector["value"]) == expected


def test_canonical_vectors_cover_the_rules() -> None:
    # The pinned file must keep exercising each rule; a vector deleted by mistake fails here.
    text = "".join(v["canonical"] for v in _vectors())
    for needle in ("\\ud83d\\ude00", "\\u00e9", "\\u001f", "\\u007f", '\\"', "\\\\", "\\n", "[]"):
        assert needle in text
    assert any(v["value"] == {} for v in _vectors())


def test_canonical_tuple_is_a_list() -> None:
    assert canonical(("a", (1, -2), [])) == b'["a",[1,-2],[]]'


def test_canonical_output_is_ascii_for_any_text() -> None:
    rng = random.Random(8032)
    for _ in range(200):
        points = [rng.choice((rng.randrange(0x7F), rng.randrange(0x80, 0x110000))) for _ in "12345"]
        text = "".join(chr(p) for p in points if not 0xD800 <= p <= 0xDFFF)
        out = canonical({text: [text]})
        assert out.isascii()
        assert json.loads(out) == {text: [text]}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (1.0, "$"),
        (0.5, "$"),
        ({"a": [1, {"b": 2.5}]}, "$.a[1].b"),
        ([1, 2, [3, 4.0]], "$[2][1]"),
        ({"ok": 1, "price_sen_per_kwh": 12.5}, "$.price_sen_per_kwh"),
    ],
)
def test_invalid_canonical_float_names_path(value: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        canonical(value)
    assert err.value.field == field
    assert "float" in err.value.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_invalid_canonical_nan_and_infinity(value: float) -> None:
    with pytest.raises(InvalidInput) as err:
        canonical({"x": [value]})
    assert err.value.field == "$.x[0]"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({1: "a"}, "$"),
        ({"a": {None: 1}}, "$.a"),
        ({"a": [{(1, 2): 1}]}, "$.a[0]"),
        ({"a": {True: 1}}, "$.a"),
    ],
)
def test_invalid_canonical_non_string_key(value: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        canonical(value)
    assert err.value.field == field
    assert "not a string" in err.value.message


class _Level(IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("value", "field", "kind"),
    [
        ({1, 2}, "$", "set"),
        (frozenset(), "$", "frozenset"),
        ({"sig": b"\x00\x01"}, "$.sig", "bytes"),
        ([bytearray(b"x")], "$[0]", "bytearray"),
        ({"d": Decimal("1.5")}, "$.d", "Decimal"),
        ({"e": _Level.LOW}, "$.e", "_Level"),
        (object(), "$", "object"),
    ],
)
def test_invalid_canonical_foreign_type(value: Any, field: str, kind: str) -> None:
    with pytest.raises(InvalidInput) as err:
        canonical(value)
    assert err.value.field == field
    assert kind in err.value.message


# --- Merkle root ----------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf(item: bytes) -> bytes:
    return _h(b"\x00" + item)


def _node(left: bytes, right: bytes) -> bytes:
    return _h(b"\x01" + left + right)


ITEMS = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]


def test_merkle_root_of_nothing_is_sha256_of_empty() -> None:
    assert merkle_root([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_merkle_root_one_leaf() -> None:
    a = ITEMS[0]
    assert merkle_root([a]) == _leaf(a)
    assert merkle_root([a]) != _h(a)  # the leaf prefix is there


def test_merkle_root_two_leaves() -> None:
    a, b = ITEMS[:2]
    assert merkle_root([a, b]) == _node(_leaf(a), _leaf(b))
    assert merkle_root([b, a]) != merkle_root([a, b])


def test_merkle_root_three_leaves_carries_odd_node_up() -> None:
    a, b, c = ITEMS[:3]
    expected = _node(_node(_leaf(a), _leaf(b)), _leaf(c))
    assert merkle_root([a, b, c]) == expected
    # never paired with itself (the Bitcoin rule would give this, and a duplicate-leaf collision)
    assert merkle_root([a, b, c]) != _node(_node(_leaf(a), _leaf(b)), _node(_leaf(c), _leaf(c)))
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_merkle_root_five_leaves() -> None:
    a, b, c, d, e = ITEMS
    level1 = [_node(_leaf(a), _leaf(b)), _node(_leaf(c), _leaf(d)), _leaf(e)]
    level2 = [_node(level1[0], level1[1]), level1[2]]
    assert merkle_root(ITEMS) == _node(level2[0], level2[1])


def test_merkle_root_inner_node_is_not_a_leaf() -> None:
    # Second-preimage guard: the two-leaf root is not the root of one leaf holding l ‖ r.
    a, b = ITEMS[:2]
    assert merkle_root([_leaf(a) + _leaf(b)]) != merkle_root([a, b])


# --- Ed25519 --------------------------------------------------------------------------------

# RFC 8032 §7.1, TEST 1
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
    "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_keypair_rfc8032_test_1() -> None:
    key = KeyPair.from_seed(RFC_SEED)
    assert key.public == RFC_PUBLIC
    assert key.public_hex == RFC_PUBLIC.hex()
    assert key.sign(b"", b"") == RFC_SIGNATURE
    assert verify_signature(RFC_PUBLIC, b"", b"", RFC_SIGNATURE)


def test_verify_signature_flipped_bit_fails() -> None:
    for bit in (0, 7, 255, 256, 511):
        bad = bytearray(RFC_SIGNATURE)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not verify_signature(RFC_PUBLIC, b"", b"", bytes(bad))
    assert not verify_signature(RFC_PUBLIC, b"", b"\x00", RFC_SIGNATURE)
    other = bytearray(RFC_PUBLIC)
    other[0] ^= 1
    assert not verify_signature(bytes(other), b"", b"", RFC_SIGNATURE)


def test_verify_signature_wrong_lengths_fail() -> None:
    assert not verify_signature(RFC_PUBLIC, b"", b"", RFC_SIGNATURE[:63])
    assert not verify_signature(RFC_PUBLIC, b"", b"", RFC_SIGNATURE + b"\x00")
    assert not verify_signature(RFC_PUBLIC[:31], b"", b"", RFC_SIGNATURE)


def test_keypair_sign_is_ed25519_over_domain_and_message() -> None:
    key = KeyPair.derive("crypto-test")
    message = b'{"a":1}'
    # PyNaCl, called directly, over the concatenation
    direct = nacl.signing.SigningKey(key.seed).sign(TX_DOMAIN + message).signature
    assert key.sign(TX_DOMAIN, message) == direct
    assert bytes(nacl.signing.SigningKey(key.seed).verify_key) == key.public


def test_keypair_derive_is_sha256_of_label() -> None:
    seed = hashlib.sha256(b"peerpower/test-key\x00" + b"home-1").digest()
    assert KeyPair.derive("home-1").seed == seed
    assert KeyPair.derive("home-1") != KeyPair.derive("home-2")


def test_keypair_repr_hides_secret() -> None:
    key = KeyPair.from_seed(RFC_SEED)
    assert RFC_SEED.hex() not in repr(key)
    assert RFC_PUBLIC.hex() in repr(key)


def test_invalid_keypair_seed_length() -> None:
    with pytest.raises(InvalidInput) as err:
        KeyPair.from_seed(b"\x01" * 31)
    assert err.value.field == "seed"


def test_signature_domain_separation() -> None:
    key = KeyPair.derive("validator")
    block_hash = hashlib.sha256(b"some block").digest()
    tx_sig = key.sign(TX_DOMAIN, block_hash)
    assert verify_signature(key.public, TX_DOMAIN, block_hash, tx_sig)
    assert not verify_signature(key.public, COMMIT_DOMAIN, block_hash, tx_sig)
    assert not verify_signature(key.public, BLOCK_DOMAIN, block_hash, tx_sig)
    commit_sig = key.sign(COMMIT_DOMAIN, block_hash)
    assert verify_signature(key.public, COMMIT_DOMAIN, block_hash, commit_sig)
    assert not verify_signature(key.public, TX_DOMAIN, block_hash, commit_sig)


def test_signature_domains_are_prefix_free() -> None:
    # Signing covers domain ‖ message, so no domain may be a prefix of another: each ends in
    # NUL and holds no other NUL.
    domains = [TX_DOMAIN, BLOCK_DOMAIN, COMMIT_DOMAIN]
    assert len(set(domains)) == len(domains)
    for d in domains:
        assert d.endswith(b"\x00") and d.count(b"\x00") == 1
        for other in domains:
            assert d == other or not other.startswith(d)


def _mixed_checks(n: int) -> tuple[list[tuple[bytes, bytes, bytes, bytes]], list[bool]]:
    rng = random.Random(600)
    keys = [KeyPair.derive(f"signer-{k}") for k in range(7)]
    checks: list[tuple[bytes, bytes, bytes, bytes]] = []
    truth: list[bool] = []
    for k in range(n):
        key = keys[k % len(keys)]
        message = rng.randbytes(rng.randrange(0, 80))
        sig = nacl.signing.SigningKey(key.seed).sign(TX_DOMAIN + message).signature
        case = rng.randrange(6)
        if case == 0:  # a flipped bit in the signature
            bad = bytearray(sig)
            bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
            checks.append((key.public, TX_DOMAIN, message, bytes(bad)))
        elif case == 1:  # another signer's key
            checks.append((keys[(k + 1) % len(keys)].public, TX_DOMAIN, message, sig))
        elif case == 2:  # another domain
            checks.append((key.public, COMMIT_DOMAIN, message, sig))
        elif case == 3:  # truncated signature
            checks.append((key.public, TX_DOMAIN, message, sig[:-1]))
        else:
            checks.append((key.public, TX_DOMAIN, message, sig))
        truth.append(case >= 4)
    return checks, truth


def test_verify_many_agrees_with_verify_signature_on_threads(monkeypatch) -> None:
    checks, truth = _mixed_checks(640)
    assert len(checks) >= crypto.PARALLEL_MIN and 0 < sum(truth) < len(truth)
    monkeypatch.setattr(crypto.os, "cpu_count", lambda: 4)  # take the thread path anywhere
    monkeypatch.setattr(crypto, "_POOL", None)
    got = verify_many(checks)
    pool = crypto._POOL
    assert pool is not None  # the thread path ran
    pool.shutdown()
    assert got == truth
    assert got == [verify_signature(*c) for c in checks]


def test_verify_many_small_list_in_order() -> None:
    checks, truth = _mixed_checks(40)
    assert verify_many(checks) == truth
    assert verify_many([]) == []


# --- key files ------------------------------------------------------------------------------


def _keys_new(path: Path, capsys) -> tuple[int, str, str]:
    code = main(["keys", "new", "--out", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_new_writes_private_file_and_prints_public_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "node.key"
    code, out, err = _keys_new(path, capsys)
    assert code == 0 and err == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = out.strip()
    assert out == public + "\n" and len(public) == 64
    assert read_key_file(path).public_hex == public
    # the public key belongs to the secret seed, by PyNaCl directly
    obj = json.loads(path.read_text())
    derived = nacl.signing.SigningKey(bytes.fromhex(obj["secret_seed"])).verify_key
    assert bytes(derived).hex() == public
    assert obj["kind"] == "ed25519"


def test_keys_new_twice_gives_two_keys(tmp_path: Path, capsys) -> None:
    _, first, _ = _keys_new(tmp_path / "a.key", capsys)
    _, second, _ = _keys_new(tmp_path / "b.key", capsys)
    assert first != second


def test_invalid_keys_new_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    path = tmp_path / "node.key"
    assert _keys_new(path, capsys)[0] == 0
    before = path.read_bytes()
    code, out, err = _keys_new(path, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["field"] == "out"
    assert str(path) in error["error"] and "overwritten" in error["error"]
    assert path.read_bytes() == before


def test_invalid_keys_new_missing_folder(tmp_path: Path, capsys) -> None:
    code, out, err = _keys_new(tmp_path / "no-such-folder" / "k.key", capsys)
    assert code == 2 and out == ""
    assert json.loads(err)["field"] == "out"


def test_key_file_round_trip(tmp_path: Path) -> None:
    key = KeyPair.from_seed(RFC_SEED)
    path = tmp_path / "rfc.key"
    write_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    obj = json.loads(path.read_text())
    assert obj == {"kind": "ed25519", "public_key": RFC_PUBLIC.hex(), "secret_seed": RFC_SEED.hex()}
    assert read_key_file(path) == key


def _key_file(tmp_path: Path, **change: Any) -> Path:
    obj = {"kind": "ed25519", "public_key": RFC_PUBLIC.hex(), "secret_seed": RFC_SEED.hex()}
    obj.update(change)
    path = tmp_path / "edited.key"
    path.write_text(json.dumps(obj))
    return path


def test_invalid_key_file_tampered_public_key(tmp_path: Path) -> None:
    other = bytearray(RFC_PUBLIC)
    other[31] ^= 0x01
    path = _key_file(tmp_path, public_key=bytes(other).hex())
    with pytest.raises(InvalidInput) as err:
        read_key_file(path)
    assert err.value.field == "key.public_key"
    assert str(path) in err.value.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "rsa"}, "key"),
        ({"secret_seed": RFC_SEED.hex().upper()}, "key.secret_seed"),
        ({"secret_seed": RFC_SEED.hex()[:-2]}, "key.secret_seed"),
        ({"secret_seed": None}, "key.secret_seed"),
    ],
)
def test_invalid_key_file_fields(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        read_key_file(_key_file(tmp_path, **change))
    assert err.value.field == field


def test_invalid_key_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "garbage.key"
    path.write_text("not json")
    with pytest.raises(InvalidInput) as err:
        read_key_file(path)
    assert err.value.field == "key" and "not JSON" in err.value.message
    with pytest.raises(InvalidInput) as err:
        read_key_file(tmp_path / "missing.key")
    assert err.value.field == "key"


def test_shared_verified_signatures_never_accept_a_bad_one() -> None:
    from peerpower.crypto import share_verified_signatures

    key = KeyPair.derive("cache")
    sig = key.sign(b"d", b"m")
    share_verified_signatures(2)
    try:
        assert verify_signature(key.public, b"d", b"m", sig)
        assert verify_signature(key.public, b"d", b"m", sig)  # from the cache
        assert not verify_signature(key.public, b"d", b"other", sig)
        assert not verify_signature(key.public, b"e", b"m", sig)
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        assert not verify_signature(key.public, b"d", b"m", bad)
        for k in range(5):  # the cache is bounded
            verify_signature(key.public, b"d", b"m%d" % k, key.sign(b"d", b"m%d" % k))
    finally:
        share_verified_signatures(0)
    assert verify_signature(key.public, b"d", b"m", sig)


# --- signing ahead in worker processes -------------------------------------------------------


@pytest.fixture
def signers(monkeypatch):
    """Two signing processes of this test's own, and a fresh set of remembered signatures."""
    monkeypatch.setattr(crypto.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(crypto, "_SIGNERS", None)
    monkeypatch.setattr(crypto, "_VERIFIED", set())
    monkeypatch.setattr(crypto, "_VERIFIED_LIMIT", 10_000)
    yield
    for w in crypto._SIGNERS or ():
        w.close(timeout=10)


def _sign_items(n: int) -> list[tuple[bytes, bytes, bytes]]:
    keys = [KeyPair.derive(f"ahead-{k}") for k in range(7)]
    return [
        (keys[k % 7].seed + keys[k % 7].public, TX_DOMAIN, f"message {k}".encode() * (k % 5 + 1))
        for k in range(n)
    ]


def _by_pynacl(items: list[tuple[bytes, bytes, bytes]]) -> list[bytes]:
    return [nacl.signing.SigningKey(s[:32]).sign(d + m).signature for s, d, m in items]


def test_sign_ahead_signs_in_worker_processes_in_order_and_remembers_the_checks(signers) -> None:
    items = _sign_items(230)
    waits = [crypto.sign_ahead(items[k : k + 40]) for k in range(0, len(items), 40)]
    workers = crypto._SIGNERS
    assert workers is not None and len(workers) == 2
    assert all(w._sent > 0 for w in workers)  # both processes had batches
    batches = [wait() for wait in reversed(waits)][::-1]  # collected last first
    assert [sig for batch in batches for sig in batch] == _by_pynacl(items)
    expect = _by_pynacl(items)
    verified = crypto._VERIFIED
    assert verified is not None
    for (secret, domain, message), sig in zip(items, expect, strict=True):
        assert (secret[32:], domain, message, sig) in verified


def test_sign_ahead_batches_come_back_in_the_order_given(signers) -> None:
    items = _sign_items(300)
    waits = [crypto.sign_ahead(items[k : k + 25]) for k in range(0, len(items), 25)]
    got = [sig for wait in waits for sig in wait()]
    assert got == _by_pynacl(items)


def test_sign_ahead_remembers_nothing_a_bad_key_pair_signed(signers) -> None:
    a, b = KeyPair.derive("ahead-a"), KeyPair.derive("ahead-b")
    items = [(a.seed + b.public, TX_DOMAIN, b"mismatched"), (a.seed + a.public, TX_DOMAIN, b"ok")]
    sigs = crypto.sign_ahead(items)()
    assert crypto._SIGNERS and crypto._SIGNERS[0]._sent + crypto._SIGNERS[1]._sent == 1
    verified = crypto._VERIFIED
    assert verified is not None
    assert (b.public, TX_DOMAIN, b"mismatched", sigs[0]) not in verified
    assert (a.public, TX_DOMAIN, b"ok", sigs[1]) in verified
    assert not verify_signature(b.public, TX_DOMAIN, b"mismatched", sigs[0])


def test_sign_ahead_signs_here_when_its_worker_died(signers) -> None:
    items = _sign_items(60)
    crypto.sign_ahead(items[:1])()  # start the workers
    workers = crypto._SIGNERS
    assert workers
    for w in workers:
        w._proc.kill()
        w._proc.wait(timeout=10)
    for _ in workers:  # each call finds one more worker dead and signs here
        assert crypto.sign_ahead(items)() == _by_pynacl(items)
    assert not any(w.alive for w in workers)
    assert crypto.sign_ahead(items[:5])() == _by_pynacl(items[:5])  # no worker left: here


def test_sign_ahead_on_one_core_starts_no_process(monkeypatch) -> None:
    monkeypatch.setattr(crypto.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(crypto, "_SIGNERS", None)
    items = _sign_items(20)
    assert crypto.sign_ahead(items)() == _by_pynacl(items)
    assert crypto._SIGNERS == []


def test_sign_ahead_of_transactions_equals_signing_each_in_turn(signers, monkeypatch) -> None:
    from peerpower.ledger.transactions import SignAhead, sign_body

    monkeypatch.setattr(SignAhead, "BATCH", 16)
    keys = [KeyPair.derive(f"site-{k}") for k in range(9)]
    bodies = [
        {"chain": "t", "type": "order", "from": f"site-{k % 9}", "nonce": k, "energy_wh": 100 * k}
        for k in range(150)
    ]
    ahead = SignAhead()
    for k in range(0, 150, 10):  # as controllers hand in their orders, ten at a time
        ahead.extend(
            (keys[j % 9], bodies[j], crypto.canonical(bodies[j])) for j in range(k, k + 10)
        )
    started = sum(w._sent for w in crypto._SIGNERS or ())
    got = ahead.result()
    assert started == 7  # 7 batches of 20 (once 16 or more wait) went out, the last 10 here
    assert got == [sign_body(keys[j % 9], bodies[j]) for j in range(150)]
    assert ahead.result() == []  # nothing left behind


def test_a_forked_child_signs_with_workers_of_its_own(signers) -> None:
    import os

    items = _sign_items(30)
    assert crypto.sign_ahead(items)() == _by_pynacl(items)  # the parent's workers started
    parents = crypto._SIGNERS
    assert parents
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own workers (or none), never the parent's pipes
        ok = crypto._SIGNERS is None and crypto.sign_ahead(items)() == _by_pynacl(items)
        ok = ok and all(w not in parents for w in crypto._SIGNERS or ())
        for w in crypto._SIGNERS or ():
            w.close(timeout=10)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    got = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert got == b"1"
    assert all(w.alive for w in parents)
    assert crypto.sign_ahead(items)() == _by_pynacl(items)


def test_sign_ahead_from_many_threads_at_once_remembers_only_valid_signatures(signers) -> None:
    import threading

    failures: list[str] = []

    def work(t: int) -> None:
        for r in range(15):
            items = _sign_items(5 + (t * 7 + r) % 23)
            items = [(s, d, m + f" t{t} r{r}".encode()) for s, d, m in items]
            if crypto.sign_ahead(items)() != _by_pynacl(items):
                failures.append(f"thread {t} round {r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads) and failures == []
    verified = crypto._VERIFIED
    assert verified is not None and len(verified) > 100
    for public, domain, message, sig in verified:  # each checked again without the cache
        nacl.signing.VerifyKey(public).verify(domain + message, sig)


_LIAR = """
import marshal, os, sys
out = os.fdopen(int(sys.argv[1]), "wb")
inp = sys.stdin.buffer
print("a stray line on standard output")
while len(head := inp.read(8)) == 8:
    number, items, check = marshal.loads(inp.read(int.from_bytes(head, "big")))
    MODE
"""


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (  # the answer of another batch, each signature "checked"
            "body = marshal.dumps((number + 1, [(bytes(64), True) for _ in items]))\n"
            "    out.write(len(body).to_bytes(8, 'big') + body); out.flush()",
            "out of turn",
        ),
        ("out.write((1 << 62).to_bytes(8, 'big')); out.flush()", "a frame far too long"),
        (
            "out.write((7).to_bytes(8, 'big') + b'garbage'); out.flush(); out.close(); break",
            "not marshal",
        ),
    ],
)
def test_a_signing_process_that_lies_is_dropped_and_its_batches_signed_here(
    signers, monkeypatch, tmp_path: Path, caplog, mode: str, why: str
) -> None:
    (tmp_path / "liar.py").write_text(_LIAR.replace("MODE", mode))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(crypto.SigningProcess, "MODULE", "liar")
    items = _sign_items(40)
    assert crypto.sign_ahead(items)() == _by_pynacl(items), why
    assert crypto.sign_ahead(items[:9])() == _by_pynacl(items[:9]), why
    verified = crypto._VERIFIED
    assert verified is not None
    assert not any(sig == bytes(64) for *_, sig in verified), why
    for w in crypto._SIGNERS or ():
        w._reader.join(timeout=10)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and all("this process signs its batches" in m for m in dropped), why
    assert any(
        ("in the turn of batch" in m, "bytes (at most" in m, "could not be read" in m)[
            ("out of turn", "a frame far too long", "not marshal").index(why)
        ]
        for m in dropped
    ), dropped


def test_a_signer_module_in_the_working_directory_is_not_run(
    signers, monkeypatch, tmp_path: Path
) -> None:
    planted = tmp_path / "peerpower"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "signer.py").write_text(_LIAR.replace("MODE", "raise SystemExit(3)"))
    monkeypatch.chdir(tmp_path)
    items = _sign_items(20)
    assert crypto.sign_ahead(items)() == _by_pynacl(items)
    workers = crypto._SIGNERS
    assert workers and all(w.alive for w in workers)  # the real ones answered


def test_no_signing_process_starts_without_an_interpreter(signers, monkeypatch) -> None:
    monkeypatch.setattr(crypto.sys, "executable", "/nonexistent/python")
    items = _sign_items(12)
    assert crypto.sign_ahead(items)() == _by_pynacl(items)
    assert crypto._SIGNERS == []
