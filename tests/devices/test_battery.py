"""The stationary battery: power and SOC limits, energy balance every slot, rejected configs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerpower.devices.battery import Battery, BatteryConfig, exchange_wh
from peerpower.errors import InvalidInput

TOL_WH = 1e-5


def test_battery_defaults_initial_state() -> None:
    battery = Battery(BatteryConfig())
    assert battery.stored_wh == 3500.0
    assert battery.soc_percent == 50.0
    assert battery.max_charge_wh() == 1500.0  # 3 kW × 0.5 h
    assert battery.max_discharge_wh() == 1500.0


def test_battery_charge_limited_by_power() -> None:
    battery = Battery(BatteryConfig())
    assert battery.step(10_000) == 1500.0
    assert battery.stored_wh == pytest.approx(3500 + 1500 * 0.95)


def test_battery_discharge_limited_by_power() -> None:
    battery = Battery(BatteryConfig())
    assert battery.step(-10_000) == -1500.0
    assert battery.stored_wh == pytest.approx(3500 - 1500 / 0.95)


def test_battery_partial_request_served_exactly() -> None:
    battery = Battery(BatteryConfig())
    assert battery.step(400.0) == 400.0
    assert battery.step(-250.5) == -250.5
    assert battery.stored_wh == pytest.approx(3500 + 400 * 0.95 - 250.5 / 0.95)


def test_battery_zero_request_changes_nothing() -> None:
    battery = Battery(BatteryConfig())
    assert battery.step(0) == 0.0
    assert battery.stored_wh == 3500.0


def test_battery_charge_limited_by_soc() -> None:
    battery = Battery(BatteryConfig(soc_initial_percent=95))
    room = (7000 - 6650) / 0.95
    assert battery.max_charge_wh() == pytest.approx(room)
    assert battery.step(1500) == pytest.approx(room)
    assert battery.stored_wh == 7000.0
    assert battery.soc_percent == 100.0


def test_battery_discharge_limited_by_soc() -> None:
    battery = Battery(BatteryConfig(soc_initial_percent=15))
    room = (1050 - 700) * 0.95
    assert battery.max_discharge_wh() == pytest.approx(room)
    assert battery.step(-1500) == pytest.approx(-room)
    assert battery.stored_wh == 700.0


def test_battery_charging_full_returns_zero() -> None:
    battery = Battery(BatteryConfig())
    for _ in range(10):
        battery.step(1234.5)
    assert battery.soc_percent == 100.0
    assert battery.max_charge_wh() == 0.0
    assert battery.step(500) == 0.0
    assert battery.stored_wh == 7000.0


def test_battery_discharging_empty_returns_zero() -> None:
    battery = Battery(BatteryConfig())
    for _ in range(10):
        battery.step(-987.6)
    assert battery.soc_percent == 10.0
    assert battery.max_discharge_wh() == 0.0
    assert battery.step(-500) == 0.0
    assert battery.stored_wh == 700.0


def test_battery_step_of_max_returns_max() -> None:
    battery = Battery(BatteryConfig(soc_initial_percent=80))
    limit = battery.max_charge_wh()
    assert battery.step(limit) == limit
    limit = battery.max_discharge_wh()
    assert battery.step(-limit) == -limit


def test_battery_exchange_function_matches_object() -> None:
    bus, after = exchange_wh(
        3500.0,
        2000.0,
        min_wh=700.0,
        max_wh=7000.0,
        charge_w=3000,
        discharge_w=3000,
        efficiency=0.95,
    )
    battery = Battery(BatteryConfig())
    assert battery.step(2000.0) == bus
    assert battery.stored_wh == after


configs = st.builds(
    lambda cap, ch, dis, eta, lo, span, init: BatteryConfig(
        capacity_wh=cap,
        charge_w=ch,
        discharge_w=dis,
        efficiency=eta,
        soc_min_percent=lo,
        soc_max_percent=lo + span,
        soc_initial_percent=lo + init * span // 100,
    ),
    st.integers(100, 100_000),
    st.integers(100, 20_000),
    st.integers(100, 20_000),
    st.floats(0.5, 1.0),
    st.integers(0, 60),
    st.integers(1, 40),
    st.integers(0, 100),
)
requests = st.lists(
    st.one_of(st.floats(-30_000, 30_000, allow_nan=False), st.integers(-30_000, 30_000)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(configs, requests)
def test_battery_energy_balance_and_soc_limits(cfg: BatteryConfig, steps: list[float]) -> None:
    battery = Battery(cfg)
    lo, hi = cfg.min_wh, cfg.max_wh
    for request in steps:
        before = battery.stored_wh
        limit_charge, limit_discharge = battery.max_charge_wh(), battery.max_discharge_wh()
        bus = battery.step(request)
        after = battery.stored_wh
        # same sign as the request, no larger, within power × 0.5 h and this slot's limits
        if request >= 0:
            assert 0.0 <= bus <= request
            assert bus <= cfg.charge_w * 0.5
            assert bus <= limit_charge
            assert after - before == pytest.approx(bus * cfg.efficiency, abs=TOL_WH)
        else:
            assert request <= bus <= 0.0
            assert -bus <= cfg.discharge_w * 0.5
            assert -bus <= limit_discharge
            assert after - before == pytest.approx(bus / cfg.efficiency, abs=TOL_WH)
        assert lo <= after <= hi
        assert cfg.soc_min_percent <= battery.soc_percent <= cfg.soc_max_percent


def test_invalid_capacity_negative() -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(capacity_wh=-7000)
    assert err.value.field == "capacity_wh"
    assert "-7000" in str(err.value)


def test_invalid_capacity_not_int() -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(capacity_wh=7000.5)  # type: ignore[arg-type]
    assert err.value.field == "capacity_wh"


def test_invalid_power_zero() -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(discharge_w=0)
    assert err.value.field == "discharge_w"


@pytest.mark.parametrize("eta", [0.0, -0.5, 1.01, math.nan, math.inf])
def test_invalid_efficiency(eta: float) -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(efficiency=eta)
    assert err.value.field == "efficiency"


def test_invalid_soc_limits_reversed() -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(soc_min_percent=95, soc_max_percent=90, soc_initial_percent=92)
    assert err.value.field == "soc_min_percent"
    assert str(err.value) == "soc_min_percent: must be below soc_max_percent (90), got 95"


def test_invalid_soc_max_above_100() -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(soc_max_percent=101)
    assert err.value.field == "soc_max_percent"


@pytest.mark.parametrize("initial", [5, 100, -1])
def test_invalid_initial_soc_outside_limits(initial: int) -> None:
    with pytest.raises(InvalidInput) as err:
        BatteryConfig(soc_min_percent=10, soc_max_percent=90, soc_initial_percent=initial)
    assert err.value.field == "soc_initial_percent"
    assert str(initial) in str(err.value)


@pytest.mark.parametrize("request_wh", [math.nan, math.inf, "100", True])
def test_invalid_request(request_wh: object) -> None:
    battery = Battery(BatteryConfig())
    with pytest.raises(InvalidInput) as err:
        battery.step(request_wh)  # type: ignore[arg-type]
    assert err.value.field == "request_wh"
    assert battery.stored_wh == 3500.0
