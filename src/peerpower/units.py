"""Integer quantities of the exchange (DESIGN.md §2).

===========  ======  ===================================================
quantity     unit    note
===========  ======  ===================================================
energy       Wh      a market lot is 100 Wh (0.1 kWh) by default
price        sen/kWh 1 sen = 0.01 yen
money        µ¥      price [sen/kWh] × energy [Wh] × 10 = money [µ¥]
===========  ======  ===================================================

The types are :class:`typing.NewType` aliases of ``int``: mypy rejects passing a ``Wh`` where a
``MicroYen`` is expected, and at run time they cost nothing on the clearing hot paths.
"""

from __future__ import annotations

from typing import NewType

Wh = NewType("Wh", int)
SenPerKWh = NewType("SenPerKWh", int)
MicroYen = NewType("MicroYen", int)

DEFAULT_LOT_WH = Wh(100)
PRICE_MIN_SEN_PER_KWH = SenPerKWh(0)
PRICE_MAX_SEN_PER_KWH = SenPerKWh(100_000)
MICROYEN_PER_YEN = 1_000_000


def money_microyen(price: SenPerKWh, energy: Wh) -> MicroYen:
    """Money for ``energy`` at ``price``.

    Parameters
    ----------
    price
        Price [sen/kWh].
    energy
        Energy [Wh].

    Returns
    -------
    MicroYen
        Money [µ¥], exact.

    Notes
    -----
    1 sen/kWh × 1 Wh = 0.01 yen / 1000 = 10⁻⁵ yen = 10 µ¥, so
    ``money [µ¥] = price [sen/kWh] × energy [Wh] × 10``.
    """
    return MicroYen(price * energy * 10)


def yen_str(amount: MicroYen) -> str:
    """Format money [µ¥] as yen with two decimals (rounded half away from zero to the sen)."""
    sen, rest = divmod(abs(amount), 10_000)
    if rest * 2 >= 10_000:
        sen += 1
    sign = "-" if amount < 0 and sen else ""
    return f"{sign}{sen // 100:,}.{sen % 100:02d}"


def kwh_str(energy: Wh) -> str:
    """Format energy [Wh] as kWh with one decimal place per lot of 0.1 kWh (three if needed)."""
    if energy % 100 == 0:
        return f"{energy / 1000:.1f}"
    return f"{energy / 1000:.3f}"


def price_str(price: int) -> str:
    """Format a price [sen/kWh] as yen/kWh with two decimals."""
    sign = "-" if price < 0 else ""
    return f"{sign}{abs(price) // 100}.{abs(price) % 100:02d}"
