"""The 48 half-hour delivery slots of a day in Japan time (DESIGN.md §2).

A slot is the half-hour starting at ``00:00 + 30 min × index`` JST (UTC+9, no daylight saving).
Orders for a slot open 24 h before its start and close at its gate, by default 5 minutes before
the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from peerpower.errors import InvalidInput

JST = timezone(timedelta(hours=9), "JST")
SLOTS_PER_DAY = 48
SLOT_LENGTH = timedelta(minutes=30)
DEFAULT_GATE_MINUTES = 5
ORDER_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One delivery interval: a JST calendar day and an index 0–47."""

    day: date
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < SLOTS_PER_DAY:
            raise InvalidInput(
                "slot.index", f"slot index {self.index!r} is outside 0–{SLOTS_PER_DAY - 1}"
            )

    @property
    def start(self) -> datetime:
        """Start of delivery, timezone-aware JST."""
        midnight = datetime(self.day.year, self.day.month, self.day.day, tzinfo=JST)
        return midnight + self.index * SLOT_LENGTH

    @property
    def end(self) -> datetime:
        """End of delivery (exclusive)."""
        return self.start + SLOT_LENGTH

    def gate(self, gate_minutes: int = DEFAULT_GATE_MINUTES) -> datetime:
        """Gate closure: the last moment orders for this slot are accepted.

        Parameters
        ----------
        gate_minutes
            Minutes before the slot's start [min]; 0 ≤ gate_minutes ≤ 1440.
        """
        if not 0 <= gate_minutes <= 24 * 60:
            raise InvalidInput("gate_minutes", f"gate {gate_minutes!r} min is outside 0–1440")
        return self.start - timedelta(minutes=gate_minutes)

    @property
    def opens(self) -> datetime:
        """When orders for this slot open: 24 h before its start."""
        return self.start - ORDER_WINDOW

    def next(self) -> Slot:
        if self.index + 1 < SLOTS_PER_DAY:
            return Slot(self.day, self.index + 1)
        return Slot(self.day + timedelta(days=1), 0)

    def __str__(self) -> str:
        return f"{self.day.isoformat()}#{self.index:02d}"

    @classmethod
    def parse(cls, text: str) -> Slot:
        """Read ``YYYY-MM-DD#NN`` (as printed by ``str``)."""
        day_text, sep, index_text = text.partition("#")
        try:
            if not sep:
                raise ValueError
            return cls(date.fromisoformat(day_text), int(index_text))
        except ValueError:
            raise InvalidInput("slot", f"{text!r} is not a slot like '2026-08-18#24'") from None


def slot_of(moment: datetime) -> Slot:
    """The slot whose delivery interval contains ``moment`` (must be timezone-aware)."""
    if moment.tzinfo is None:
        raise InvalidInput("time", f"{moment.isoformat()} has no timezone; give one, e.g. +09:00")
    local = moment.astimezone(JST)
    minutes = local.hour * 60 + local.minute
    return Slot(local.date(), minutes // 30)
