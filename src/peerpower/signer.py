"""A signing process, ``python -P -m peerpower.signer FD``, started by
:func:`peerpower.crypto.sign_ahead`.

It reads batches from standard input and writes the answers to the pipe ``FD`` (its standard
output stays free for anything else that prints), each frame an 8-byte big-endian length and a
:mod:`marshal` body (the process is the simulator's own child, so nothing untrusted is read).
A batch is ``(number, items, check)`` with items ``(secret ‖ public, domain, message)``; the
answer is ``(number, [(signature, checked), ...])``, where ``checked`` says the signature was
checked against the public half (only with ``check``). It exits when its input closes.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions

NICE = 10


def sign_batch(
    items: Sequence[tuple[bytes, bytes, bytes]], check: bool
) -> list[tuple[bytes, bool]]:
    """Each ``(secret ‖ public, domain, message)`` signed over ``domain ‖ message``; with
    ``check`` each signature is also checked as a validator checks it."""
    out = []
    for secret, domain, message in items:
        sig = bytes(nacl.bindings.crypto_sign(domain + message, secret)[:64])
        ok = False
        if check:
            try:
                nacl.bindings.crypto_sign_open(sig + domain + message, secret[32:])
                ok = True
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
                ok = False
        out.append((sig, ok))
    return out


def main() -> None:
    # Below the caller: it is the one that waits; this process fills the other cores.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(NICE)
    inp = sys.stdin.buffer
    with os.fdopen(int(sys.argv[1]), "wb") as out:
        while len(head := inp.read(8)) == 8:
            number, items, check = marshal.loads(inp.read(int.from_bytes(head, "big")))
            body = marshal.dumps((number, sign_batch(items, check)))
            out.write(len(body).to_bytes(8, "big") + body)
            out.flush()


if __name__ == "__main__":
    main()
