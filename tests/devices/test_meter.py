"""The smart meter: signed readings the ledger accepts, and the bus balance of a slot."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerpower.crypto import KeyPair, verify_signature
from peerpower.devices.meter import Meter, bus_balance
from peerpower.errors import InvalidInput
from peerpower.ledger.transactions import TX_DOMAIN, decode_tx
from peerpower.timeslots import Slot

CHAIN = "ab" * 32
KEY = KeyPair.derive("meter/home-1")
SLOT = Slot(date(2026, 8, 18), 24)


def test_meter_reading_verifies() -> None:
    meter = Meter("home-1", KEY, CHAIN)
    tx = decode_tx(meter.reading(SLOT, 1200, 0), CHAIN)
    assert tx.type == "meter"
    assert tx.sender == "home-1"
    assert tx.nonce is None
    assert tx.body == {
        "chain": CHAIN,
        "type": "meter",
        "site": "home-1",
        "slot": "2026-08-18#24",
        "import_wh": 1200,
        "export_wh": 0,
    }
    assert verify_signature(KEY.public, TX_DOMAIN, tx.message, tx.sig)
    assert meter.public_hex == KEY.public_hex


def test_meter_reading_slot_name_same_as_slot() -> None:
    meter = Meter("home-1", KEY, CHAIN)
    assert meter.reading("2026-08-18#24", 0, 350) == meter.reading(SLOT, 0, 350)


def test_meter_reading_other_key_does_not_verify() -> None:
    tx = decode_tx(Meter("home-1", KEY, CHAIN).reading(SLOT, 5, 0), CHAIN)
    other = KeyPair.derive("meter/home-2")
    assert not verify_signature(other.public, TX_DOMAIN, tx.message, tx.sig)


@pytest.mark.parametrize(
    ("import_wh", "export_wh", "field"),
    [
        (-1, 0, "import_wh"),
        (0, -5, "export_wh"),
        (10.0, 0, "import_wh"),
        (0, 2.5, "export_wh"),
        (True, 0, "import_wh"),
        (10**9 + 1, 0, "import_wh"),
    ],
)
def test_invalid_meter_reading_energy(import_wh: object, export_wh: object, field: str) -> None:
    meter = Meter("home-1", KEY, CHAIN)
    with pytest.raises(InvalidInput) as err:
        meter.reading(SLOT, import_wh, export_wh)  # type: ignore[arg-type]
    assert err.value.field == field
    assert repr(import_wh if field == "import_wh" else export_wh) in str(err.value)


@pytest.mark.parametrize("slot", ["2026-08-18#48", "2026-8-18#24", "tomorrow", 24])
def test_invalid_meter_reading_slot(slot: object) -> None:
    with pytest.raises(InvalidInput) as err:
        Meter("home-1", KEY, CHAIN).reading(slot, 0, 0)  # type: ignore[arg-type]
    assert err.value.field.startswith("slot")


def test_invalid_meter_site() -> None:
    with pytest.raises(InvalidInput) as err:
        Meter("home 1", KEY, CHAIN)
    assert err.value.field == "site"


def test_invalid_meter_chain() -> None:
    with pytest.raises(InvalidInput) as err:
        Meter("home-1", KEY, "")
    assert err.value.field == "chain"


def test_bus_balance_export() -> None:
    assert bus_balance(pv_wh=1000, load_wh=300, charge_wh=0, discharge_wh=0) == (0, 700)


def test_bus_balance_import() -> None:
    assert bus_balance(pv_wh=0, load_wh=450.4, charge_wh=1500, discharge_wh=0) == (1950, 0)


def test_bus_balance_storage_covers_load() -> None:
    assert bus_balance(pv_wh=200, load_wh=900, charge_wh=0, discharge_wh=700) == (0, 0)


def test_bus_balance_rounds_to_nearest() -> None:
    assert bus_balance(pv_wh=0, load_wh=100.6, charge_wh=0, discharge_wh=0) == (101, 0)
    assert bus_balance(pv_wh=100.6, load_wh=0, charge_wh=0, discharge_wh=0) == (0, 101)
    assert bus_balance(pv_wh=0, load_wh=0.4, charge_wh=0, discharge_wh=0) == (0, 0)


energies = st.floats(0, 50_000, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(energies, energies, energies, energies)
def test_bus_balance_identity(pv: float, load: float, charge: float, discharge: float) -> None:
    import_wh, export_wh = bus_balance(pv, load, charge, discharge)
    assert type(import_wh) is int
    assert type(export_wh) is int
    assert import_wh >= 0
    assert export_wh >= 0
    assert import_wh == 0 or export_wh == 0
    # generation + import + discharge = load + charge + export, up to the rounding
    assert abs((pv + import_wh + discharge) - (load + charge + export_wh)) <= 0.5 + 1e-9


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1.0, 0, 0, 0), "pv_wh"),
        ((0, math.nan, 0, 0), "load_wh"),
        ((0, 0, math.inf, 0), "charge_wh"),
        ((0, 0, 0, -3), "discharge_wh"),
        ((0, "5", 0, 0), "load_wh"),
    ],
)
def test_invalid_bus_balance(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        bus_balance(*args)  # type: ignore[arg-type]
    assert err.value.field == field
