"""A site's smart meter: the net exchange with the grid of each slot, signed for the ledger.

Sign convention
---------------
Energies are at the site's AC bus, per half-hour slot [Wh], all ≥ 0: ``import_wh`` flows from
the grid into the site, ``export_wh`` from the site to the grid. A storage device's charge is
energy it draws from the bus, its discharge energy it delivers to the bus (the magnitudes of the
``step`` results of ``peerpower.devices.battery`` and ``peerpower.devices.ev``).
"""

from __future__ import annotations

import math
from typing import Any

from peerpower.crypto import KeyPair
from peerpower.errors import InvalidInput
from peerpower.ledger.genesis import check_account_id
from peerpower.ledger.transactions import MAX_METER_WH, parse_slot, sign_body
from peerpower.timeslots import Slot


def bus_balance(
    pv_wh: float, load_wh: float, charge_wh: float, discharge_wh: float
) -> tuple[int, int]:
    """A slot's net exchange with the grid, as the meter reads it.

    Parameters
    ----------
    pv_wh
        Generation delivered to the bus [Wh], ≥ 0.
    load_wh
        Consumption drawn from the bus [Wh], ≥ 0.
    charge_wh
        Energy storage drew from the bus [Wh], ≥ 0.
    discharge_wh
        Energy storage delivered to the bus [Wh], ≥ 0.

    Returns
    -------
    tuple[int, int]
        ``(import_wh, export_wh)`` [Wh], whole, both ≥ 0, at least one of them 0.

    Notes
    -----
    The bus balances: ``pv + import + discharge = load + charge + export``. The net import
    ``n = load + charge − pv − discharge`` is rounded to the nearest Wh (half to even), so the
    quantisation error is at most 0.5 Wh per slot; ``import = max(n, 0)``,
    ``export = max(−n, 0)``. A real meter may register both directions within a half-hour; one
    net figure per slot is what the site settles.
    """
    values = {
        "pv_wh": pv_wh,
        "load_wh": load_wh,
        "charge_wh": charge_wh,
        "discharge_wh": discharge_wh,
    }
    for field, value in values.items():
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise InvalidInput(field, f"must be a finite number ≥ 0 [Wh], got {value!r}")
    net = round(load_wh + charge_wh - pv_wh - discharge_wh)
    return (net, 0) if net > 0 else (0, -net)


class Meter:
    """The smart meter of one site, signing its readings with the site's meter key.

    Parameters
    ----------
    site
        The site's account id (as registered on the ledger).
    key
        The meter's key pair (its public half is the account's ``meter_key``).
    chain
        The chain the readings are for: the genesis' ``tx_chain``.
    """

    __slots__ = ("chain", "key", "site")

    def __init__(self, site: str, key: KeyPair, chain: str) -> None:
        self.site = check_account_id(site, "site")
        if not isinstance(key, KeyPair):
            raise InvalidInput("key", f"must be a KeyPair, got {type(key).__name__}")
        if type(chain) is not str or not chain:
            raise InvalidInput("chain", f"must be the genesis' tx_chain (hex), got {chain!r}")
        self.key = key
        self.chain = chain

    @property
    def public_hex(self) -> str:
        """The meter's public key, hex (what ``register`` names as ``meter_key``)."""
        return self.key.public_hex

    def reading(self, slot: Slot | str, import_wh: int, export_wh: int) -> dict[str, Any]:
        """The signed meter transaction of ``slot``.

        Parameters
        ----------
        slot
            The slot read, a :class:`Slot` or its name like ``2026-08-18#24``.
        import_wh, export_wh
            Energy from and to the grid in the slot [Wh], whole, 0–10⁹
            (:func:`bus_balance` gives them).

        Returns
        -------
        dict
            ``{"body": {...}, "sig": "<hex>"}`` of type ``meter``, made by
            :func:`peerpower.ledger.transactions.meter_reading`.
        """
        return sign_body(self.key, self.reading_body(slot, import_wh, export_wh))

    def reading_body(self, slot: Slot | str, import_wh: int, export_wh: int) -> dict[str, Any]:
        """The body of :meth:`reading`, unsigned (for signing many at once), checked alike."""
        name = str(slot) if isinstance(slot, Slot) else slot
        if type(name) is not str:
            raise InvalidInput("slot", f"must be a slot like '2026-08-18#24', got {slot!r}")
        parse_slot(name)
        for field, value in (("import_wh", import_wh), ("export_wh", export_wh)):
            if type(value) is not int:
                raise InvalidInput(field, f"must be a whole number of Wh (int), got {value!r}")
            if not 0 <= value <= MAX_METER_WH:
                raise InvalidInput(field, f"must be 0–{MAX_METER_WH} Wh, got {value}")
        return {
            "chain": self.chain,
            "type": "meter",
            "site": self.site,
            "slot": name,
            "import_wh": import_wh,
            "export_wh": export_wh,
        }
