from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from peerpower.errors import InvalidInput
from peerpower.timeslots import JST, Slot, slot_of
from peerpower.units import MicroYen, SenPerKWh, Wh, money_microyen, yen_str


def test_money_is_price_times_energy_times_ten() -> None:
    # 26 yen/kWh for 1 kWh is 26 yen = 26,000,000 µ¥
    assert money_microyen(SenPerKWh(2600), Wh(1000)) == 26_000_000
    assert yen_str(MicroYen(26_000_000)) == "26.00"
    assert yen_str(MicroYen(-5_000)) == "-0.01"


def test_slot_24_is_noon_jst() -> None:
    moment = datetime(2026, 8, 18, 12, 0, tzinfo=JST)
    slot = slot_of(moment)
    assert slot == Slot(date(2026, 8, 18), 24)
    assert slot.start == moment
    assert slot.gate() == moment - timedelta(minutes=5)
    assert slot.gate(15) == moment - timedelta(minutes=15)
    assert slot.opens == moment - timedelta(hours=24)
    assert str(slot) == "2026-08-18#24" and Slot.parse("2026-08-18#24") == slot


def test_slot_of_converts_from_utc() -> None:
    # 15:10 UTC on 17 Aug is 00:10 JST on 18 Aug: slot 0 of the 18th
    assert slot_of(datetime(2026, 8, 17, 15, 10, tzinfo=UTC)) == Slot(date(2026, 8, 18), 0)
    assert Slot(date(2026, 8, 18), 47).next() == Slot(date(2026, 8, 19), 0)


def test_invalid_slot_index_and_naive_time() -> None:
    with pytest.raises(InvalidInput, match="48"):
        Slot(date(2026, 8, 18), 48)
    with pytest.raises(InvalidInput, match="timezone"):
        slot_of(datetime(2026, 8, 18, 12, 0))
    with pytest.raises(InvalidInput, match="slot like"):
        Slot.parse("2026-08-18")
