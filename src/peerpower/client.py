"""A typed Python client of the HTTP API that signs locally.

    client = Client("http://127.0.0.1:8000", chain=genesis.tx_chain)
    me = client.participant("home-1", key)      # key: the site's KeyPair, never sent
    me.order("2026-08-18#24", "sell", 1000, 1500)
    client.ladder("2026-08-18#24")

A participant's transactions are signed here with its key and sent as they are; the server
checks them against the rules and cannot change them. A refusal raises :class:`ApiError` with
the HTTP status, the rule (for a refused transaction), the field and the detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from peerpower.crypto import KeyPair
from peerpower.errors import PeerpowerError
from peerpower.ledger.transactions import Signer, meter_reading


class ApiError(PeerpowerError):
    """The API refused a request: ``status`` (HTTP), ``rule``, ``field`` and the detail."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.rule: str | None = problem.get("rule")
        self.field: str | None = problem.get("field")
        self.detail = str(problem.get("detail", ""))
        rule = f" ({self.rule})" if self.rule else ""
        where = f" [{self.field}]" if self.field else ""
        super().__init__(f"HTTP {status}{rule}{where}: {self.detail}")


class Client:
    """The API at ``base_url`` of the chain whose transactions carry ``chain`` (the genesis
    hash, :attr:`~peerpower.ledger.genesis.Genesis.tx_chain`)."""

    def __init__(self, base_url: str, chain: str, timeout: float = 10.0) -> None:
        self.chain = chain
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"detail": r.text}
            raise ApiError(r.status_code, problem if isinstance(problem, dict) else {})
        return r.json()

    def submit(self, tx: dict[str, Any]) -> dict[str, Any]:
        """Send a signed transaction; its acceptance (type, sender, nonce)."""
        return self._ok(self.http.post("/tx", json=tx))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self._ok(self.http.get("/status"))  # type: ignore[no-any-return]

    def block(self, height: int) -> dict[str, Any]:
        return self._ok(self.http.get(f"/blocks/{height}"))  # type: ignore[no-any-return]

    def account(self, account_id: str) -> dict[str, Any]:
        return self._ok(  # type: ignore[no-any-return]
            self.http.get(f"/accounts/{quote(account_id, safe='')}")
        )

    def ladder(self, slot: str, depth: int | None = None) -> dict[str, Any]:
        params = {} if depth is None else {"depth": depth}
        return self._ok(  # type: ignore[no-any-return]
            self.http.get(f"/slots/{quote(slot, safe='')}/ladder", params=params)
        )

    def market(self) -> dict[str, Any]:
        """The market's rules and parameters."""
        return self._ok(self.http.get("/market"))  # type: ignore[no-any-return]

    def slots(self) -> list[dict[str, Any]]:
        """The slots on the chain and the cleared slots kept, in time order."""
        return self._ok(self.http.get("/slots"))  # type: ignore[no-any-return]

    def clearing(self, slot: str) -> dict[str, Any]:
        """A cleared slot's balanced units and prices."""
        return self._ok(  # type: ignore[no-any-return]
            self.http.get(f"/slots/{quote(slot, safe='')}/clearing")
        )

    def prices(self, day: str | None = None) -> dict[str, Any]:
        """Each cleared slot of ``day`` (YYYY-MM-DD; default: the chain's day)."""
        params = {} if day is None else {"day": day}
        return self._ok(self.http.get("/prices", params=params))  # type: ignore[no-any-return]

    def blocks(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest blocks' headers, newest first."""
        return self._ok(  # type: ignore[no-any-return]
            self.http.get("/blocks", params={"limit": limit})
        )

    def transaction(self, tx_id: str) -> dict[str, Any]:
        """A transaction by id: ``status`` committed (with height) or pending."""
        return self._ok(  # type: ignore[no-any-return]
            self.http.get(f"/transactions/{quote(tx_id, safe='')}")
        )

    def meter(
        self, site: str, meter_key: KeyPair, slot: str, import_wh: int, export_wh: int
    ) -> str:
        """Send a site's meter reading of ``slot``, signed with its meter's key; its id."""
        tx = meter_reading(self.chain, meter_key, site, slot, import_wh, export_wh)
        return str(self.submit(tx)["id"])

    def participant(self, account_id: str, key: KeyPair) -> Participant:
        """A participant signing with ``key``, its next nonce read from the chain."""
        nonce = int(self.account(account_id)["nonce"]) + 1
        return Participant(self, Signer(self.chain, account_id, key, nonce))


@dataclass
class Participant:
    """One participant's orders and cancels, signed locally and sent through ``client``."""

    client: Client
    signer: Signer

    def _send(self, tx: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.submit(tx)
        except ApiError:
            self.signer.next_nonce -= 1  # refused: the nonce is still free
            raise

    def order(self, slot: str, side: str, energy_wh: int, price_sen_per_kwh: int) -> str:
        """Place an order; returns its id (``account#nonce``)."""
        got = self._send(self.signer.order(slot, side, energy_wh, price_sen_per_kwh))
        return f"{got['sender']}#{got['nonce']}"

    def cancel(self, order_id: str) -> str:
        """Cancel an open order; returns the transaction's id."""
        return str(self._send(self.signer.cancel(order_id))["id"])

    def withdraw(self, amount_microyen: int) -> str:
        """Take money out of the exchange (what margin does not hold); the transaction's id."""
        return str(self._send(self.signer.withdraw(amount_microyen))["id"])

    # the operator's transactions (its account and key)
    def register(
        self, account: str, key_hex: str, meter_key_hex: str, node: str, site_type: str
    ) -> str:
        """Register a participant with its public keys and grid node (operator only)."""
        return str(
            self._send(self.signer.register(account, key_hex, meter_key_hex, node, site_type))["id"]
        )

    def deposit(self, account: str, amount_microyen: int) -> str:
        """Credit a participant's deposit (operator only)."""
        return str(self._send(self.signer.deposit(account, amount_microyen))["id"])

    def reinstate(self, account: str) -> str:
        """Let a suspended participant trade again (operator only)."""
        return str(self._send(self.signer.reinstate(account))["id"])
