"""The one exception hierarchy of peerpower.

Every error names what was wrong, the offending value, and what is allowed. Errors raised while
reading user input carry ``field``, a path into the input such as ``orders[3].energy_wh``.
"""

from __future__ import annotations

from typing import Any


class PeerpowerError(Exception):
    """Root of every error peerpower raises on purpose."""


class InvalidInput(PeerpowerError):
    """A value read from outside (JSON, CLI, file) breaks a rule.

    Parameters
    ----------
    field
        Path of the offending field in the input, e.g. ``orders[3].side``.
    message
        What was wrong and what is allowed; it should include the value.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


class InvalidOrder(InvalidInput):
    """An order breaks an order rule (lot size, price band, side, ...)."""


class InvalidGrid(InvalidInput):
    """A grid description is not one tree with valid fees and capacities."""


class ClearingError(PeerpowerError):
    """A mechanism cannot clear this book (e.g. call auction with unequal fees)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


class InvalidResult(PeerpowerError):
    """A clearing result fails verification; ``rule`` names the first broken rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


class LedgerError(PeerpowerError):
    """A transaction or block breaks a rule of the exchange contract.

    ``rule`` is the short name of the broken rule (``nonce``, ``gate``, ``margin``, ...), listed
    in ``peerpower.ledger.rules``; the message names the offending value and what is allowed.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "rule": self.rule}


class InvalidTransaction(LedgerError):
    """A transaction is rejected; the state it was applied to is left as it was."""


class InvalidBlock(LedgerError):
    """A block is rejected at ``height``; ``rule`` names the first broken rule."""

    def __init__(self, height: int, rule: str, message: str) -> None:
        super().__init__(rule, message)
        self.args = (f"height {height}: {rule}: {message}",)
        self.height = height

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "rule": self.rule, "height": self.height}
