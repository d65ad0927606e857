from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from peerpower.errors import InvalidInput
from peerpower.grid.tree import GridTree
from peerpower.sim.scenario import PRESETS, Scenario, load_scenario, parse_scenario
from peerpower.timeslots import JST

HEAD = """
name = "test"
start = 2026-09-28
days = 1
seed = 7
"""


def parse(body: str, base_dir: Path | None = None) -> Scenario:
    return parse_scenario(HEAD + body, "test.toml", base_dir or Path("."))


def rejected(body: str, base_dir: Path | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse(body, base_dir)
    assert "test.toml" in info.value.message
    return info.value


PV = '[[sites]]\ntype = "pv"\n'


def check_grid(s: Scenario) -> None:
    tree = GridTree.from_json(s.grid)
    for spec in s.sites:
        assert spec.node in tree.index
    assert s.market_rules().grid == tree


# -- presets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "counts", "start", "latitude"),
    [
        (
            "misono",
            {
                "consumer": 10,
                "pv": 15,
                "pv-battery": 12,
                "pv-phev": 4,
                "consumer-phev": 3,
                "pv-battery-phev": 1,
                "shop": 1,
            },
            date(2026, 9, 28),
            35.88,
        ),
        (
            "higashifuji",
            {
                "consumer": 4,
                "consumer-phev": 3,
                "pv": 7,
                "pv-battery": 7,
                "pv-phev": 3,
                "pv-battery-phev": 3,
                "business": 1,
            },
            date(2026, 8, 3),
            35.20,
        ),
        (
            "large",
            {
                "consumer": 200,
                "consumer-phev": 80,
                "pv": 250,
                "pv-battery": 200,
                "pv-phev": 120,
                "pv-battery-phev": 100,
                "shop": 30,
                "business": 20,
            },
            date(2026, 9, 28),
            35.68,
        ),
    ],
)
def test_preset_loads(preset: str, counts: dict[str, int], start: date, latitude: float) -> None:
    s = load_scenario(preset)
    assert s.name == preset
    assert Counter(x.site_type for x in s.sites) == counts
    assert (s.start, s.days, s.validators) == (start, 1, 4)
    assert (s.mechanism, s.goal) == ("optimal", "welfare")
    assert (s.tariff_sen_per_kwh, s.buyback_sen_per_kwh) == (2600, 850)
    assert len({x.id for x in s.sites}) == len(s.sites)
    assert len({x.seed for x in s.sites}) == len(s.sites)
    assert all(x.pv.latitude_deg == latitude for x in s.sites if x.pv is not None)
    check_grid(s)


def test_preset_names() -> None:
    assert PRESETS == ("misono", "higashifuji", "large")


def test_invalid_preset_name() -> None:
    with pytest.raises(InvalidInput, match="neither a preset"):
        load_scenario("nowhere")


def test_scenario_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(HEAD + '[[sites]]\ntype = "pv"\ncount = 3\n', encoding="utf-8")
    s = load_scenario(str(path))
    assert [x.id for x in s.sites] == ["site-000", "site-001", "site-002"]


# -- overrides -------------------------------------------------------------------------------


def test_with_overrides_changes_and_checks() -> None:
    s = load_scenario("misono")
    t = s.with_overrides(days=3, seed=9, mechanism="cda", validators=1)
    assert (t.days, t.seed, t.mechanism, t.goal, t.validators) == (3, 9, "cda", None, 1)
    assert t.sites[5].seed == 9 * 1_000_003 + 5
    assert [x.id for x in t.sites] == [x.id for x in s.sites]
    u = t.with_overrides(mechanism="optimal")
    assert u.goal == "welfare"
    assert s.with_overrides(goal="maxmin").goal == "maxmin"
    assert s.with_overrides() == s


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"days": 0}, "days"),
        ({"days": True}, "days"),
        ({"validators": 3}, "validators"),
        ({"mechanism": "auction"}, "mechanism"),
        ({"mechanism": "call", "goal": "welfare"}, "goal"),
        ({"goal": "profit"}, "goal"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_override(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_scenario("misono").with_overrides(**overrides)  # type: ignore[arg-type]
    assert info.value.field == field


# -- grid ------------------------------------------------------------------------------------


def test_generated_grid_path_fee() -> None:
    s = parse(
        """
[grid]
feeders = 2
sites_per_transformer = 2
feeder_fee_yen_per_kwh = 1.5
transformer_fee_yen_per_kwh = 0.4
site_fee_yen_per_kwh = 0.1
[[sites]]
type = "pv"
count = 6
"""
    )
    tree = GridTree.from_json(s.grid)
    node = {x.id: tree.index[x.node] for x in s.sites}
    # round robin: sites 0, 2, 4 on f0 (transformers f0-t0: 0, 2; f0-t1: 4); 1, 3, 5 on f1
    assert s.grid["nodes"][tree.index["n-site-002"]]["parent"] == "f0-t0"
    assert s.grid["nodes"][tree.index["n-site-004"]]["parent"] == "f0-t1"
    assert tree.fee(node["site-000"], node["site-002"]) == 2 * 10
    assert tree.fee(node["site-000"], node["site-004"]) == 2 * (10 + 40)
    assert tree.fee(node["site-000"], node["site-001"]) == 2 * (10 + 40 + 150)
    check_grid(s)


def test_generated_grid_capacities_round_half_up() -> None:
    s = parse(
        """
[grid]
feeder_capacity_kwh = 50
site_capacity_kwh = 0.0125
[[sites]]
type = "consumer"
"""
    )
    nodes = {n["id"]: n for n in s.grid["nodes"]}
    assert nodes["f0"]["capacity_wh"] == 50_000
    assert nodes["n-site-000"]["capacity_wh"] == 13
    assert "capacity_wh" not in nodes["f0-t0"]


def test_given_grid_nodes() -> None:
    s = parse(
        """
[grid]
nodes = [
  {id = "sub"},
  {id = "f0", parent = "sub", fee_yen_per_kwh = 1.5, capacity_kwh = 50},
  {id = "a", parent = "f0", fee_yen_per_kwh = 0.25},
  {id = "b", parent = "sub", fee_yen_per_kwh = 2},
]
[[sites]]
type = "pv"
count = 2
node = "a"
[[sites]]
type = "consumer"
node = "b"
"""
    )
    assert [x.node for x in s.sites] == ["a", "a", "b"]
    tree = GridTree.from_json(s.grid)
    assert tree.capacity_wh[tree.index["f0"]] == 50_000
    assert tree.fee(tree.index["a"], tree.index["b"]) == 25 + 150 + 200
    check_grid(s)


def test_invalid_given_grid_unknown_node() -> None:
    err = rejected(
        """
[grid]
nodes = [{id = "sub"}, {id = "a", parent = "sub"}]
[[sites]]
type = "pv"
[[sites]]
type = "pv"
node = "z"
"""
    )
    assert err.field == "sites[0].node"  # the first entry names no node
    err = rejected(
        """
[grid]
nodes = [{id = "sub"}, {id = "a", parent = "sub"}]
[[sites]]
type = "pv"
node = "a"
[[sites]]
type = "pv"
node = "z"
"""
    )
    assert err.field == "sites[1].node"
    assert "'z'" in err.message


def test_invalid_given_grid_two_roots() -> None:
    err = rejected(
        """
[grid]
nodes = [{id = "sub"}, {id = "other"}]
[[sites]]
type = "pv"
node = "sub"
"""
    )
    assert err.field == "grid.nodes"


def test_invalid_grid_mixed_forms() -> None:
    err = rejected(
        """
[grid]
feeders = 2
nodes = [{id = "sub"}]
[[sites]]
type = "pv"
"""
    )
    assert err.field == "grid.feeders"


# -- file checks -----------------------------------------------------------------------------


def test_invalid_toml_syntax_names_line() -> None:
    err = rejected('\n[market]\nmechanism = "optimal\n[[sites]]\ntype = "pv"\n')
    assert err.field == "scenario"
    assert "line 8" in err.message


def test_invalid_unknown_key() -> None:
    err = rejected('[[sites]]\ntype = "pv"\n[[sites]]\ntype = "pv"\npv_kwp = 5.0\n')
    assert err.field == "sites[1].pv_kwp"
    assert "pv_kw" in err.message  # the known keys are listed
    err = rejected('[market]\nmechansim = "cda"\n[[sites]]\ntype = "pv"\n')
    assert err.field == "market.mechansim"
    err = rejected('colour = "red"\n[[sites]]\ntype = "pv"\n')
    assert err.field == "colour"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[[sites]]\ntype = "pv"\ncount = true\n', "sites[0].count"),
        ('[[sites]]\ntype = "pv"\ncount = 2.0\n', "sites[0].count"),
        ('[[sites]]\ntype = "pv"\ncount = 0\n', "sites[0].count"),
        ('[[sites]]\ntype = "pv"\npv_kw = "5"\n', "sites[0].pv_kw"),
        ('[[sites]]\ntype = "pv"\npv_kw = 0\n', "sites[0].pv_kw"),
        ('[[sites]]\ntype = "pv-battery"\nbattery_kwh = -1\n', "sites[0].battery_kwh"),
        ('[[sites]]\ntype = "pv-phev"\nphev = 1\n', "sites[0].phev"),
        ('[[sites]]\ntype = "solar"\n', "sites[0].type"),
        ('[[sites]]\ntype = "consumer"\npv_kw = 3.0\n', "sites[0].pv_kw"),
        ('[[sites]]\ntype = "pv"\nbattery_kwh = 3.0\n', "sites[0].battery_kwh"),
        ('[[sites]]\ntype = "pv"\npolicy = "greedy"\n', "sites[0].policy"),
        ('[[sites]]\ntype = "pv"\npolicy_options = {nonsense = 1}\n', "sites[0].policy_options"),
        ('[[sites]]\ntype = "pv"\nid_prefix = "-x"\n', "sites[0].id_prefix"),
        ('[grid]\nfeeders = 0\n[[sites]]\ntype = "pv"\n', "grid.feeders"),
        ('[[sites]]\ntype = "pv"\nnode = "a"\n', "sites[0].node"),
        ('validators = 2\n[[sites]]\ntype = "pv"\n', "validators"),
        ('[retail]\ntariff_yen_per_kwh = 8\n[[sites]]\ntype = "pv"\n', "retail.tariff_yen_per_kwh"),
        ('[retail]\nbuyback_yen_per_kwh = "8.5"\n' + PV, "retail.buyback_yen_per_kwh"),
        ('[market]\nmechanism = "auction"\n[[sites]]\ntype = "pv"\n', "market.mechanism"),
        ('[market]\ngate_minutes = 0\n[[sites]]\ntype = "pv"\n', "market.gate_minutes"),
        ("[market]\nprice_min_yen_per_kwh = 50\nprice_max_yen_per_kwh = 40\n" + PV,
         "market.price_min_yen_per_kwh"),
        ("market = 3\n", "market"),
        ("", "sites"),
    ],
)  # fmt: skip
def test_invalid_value(body: str, field: str) -> None:
    assert rejected(body).field == field


def test_invalid_days_and_start() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_scenario('start = 2026-09-28\ndays = 400\n[[sites]]\ntype = "pv"\n', "x", Path("."))
    assert info.value.field == "days"
    with pytest.raises(InvalidInput) as info:
        parse_scenario('start = "2026-09-28"\n[[sites]]\ntype = "pv"\n', "x", Path("."))
    assert info.value.field == "start"
    with pytest.raises(InvalidInput) as info:
        parse_scenario('start = 2026-09-28T00:00:00\n[[sites]]\ntype = "pv"\n', "x", Path("."))
    assert info.value.field == "start"


@pytest.mark.parametrize(
    ("mechanism", "goal", "ok"),
    [
        ("optimal", "maxmin", True),
        ("optimal", "profit", False),
        ("cda", None, True),
        ("cda", "welfare", False),
        ("call", "volume", False),
    ],
)
def test_goal_for_mechanism(mechanism: str, goal: str | None, ok: bool) -> None:
    market = f'[market]\nmechanism = "{mechanism}"\n'
    if goal is not None:
        market += f'goal = "{goal}"\n'
    body = market + '[[sites]]\ntype = "pv"\n'
    if ok:
        s = parse(body)
        assert s.goal == (goal if mechanism == "optimal" else None)
        assert s.market_rules().mechanism == mechanism
    else:
        assert rejected(body).field == "market.goal"


def test_invalid_device_config_named_by_entry() -> None:
    # 0.0004 kWh passes "> 0" here but rounds to 0 Wh, which the battery's own check rejects
    err = rejected('[[sites]]\ntype = "pv"\n[[sites]]\ntype = "pv-battery"\nbattery_kwh = 0.0004\n')
    assert err.field == "sites[1].battery_kwh"
    assert "capacity_wh" not in err.field
    err = rejected('[[sites]]\ntype = "pv"\ntilt_deg = 95\n')
    assert err.field == "sites[0].tilt_deg"
    err = rejected('[[sites]]\ntype = "consumer"\noccupancy = "nightshift"\n')
    assert err.field == "sites[0].occupancy"
    err = rejected('[location]\nlatitude_deg = 95.0\n[[sites]]\ntype = "pv"\n')
    assert err.field == "location.latitude_deg"


def test_site_overrides_applied() -> None:
    s = parse(
        """
[location]
latitude_deg = 35.2
longitude_deg = 138.9
[retail]
tariff_yen_per_kwh = 30.005
buyback_yen_per_kwh = 7
[[sites]]
type = "pv-battery-phev"
id_prefix = "home"
pv_kw = 5.5
tilt_deg = 20
battery_kwh = 12.5
battery_kw = 5
ev_kwh = 60
phev = false
annual_kwh = 5200
occupancy = "home"
policy = "zi-c"
[[sites]]
type = "consumer"
count = 2
"""
    )
    home = s.sites[0]
    assert home.id == "home-000"
    assert home.pv is not None and home.battery is not None and home.ev is not None
    assert (home.pv.capacity_kw, home.pv.tilt_deg, home.pv.latitude_deg) == (5.5, 20.0, 35.2)
    assert (home.battery.capacity_wh, home.battery.charge_w, home.battery.discharge_w) == (
        12_500,
        5000,
        5000,
    )
    assert (home.ev.capacity_wh, home.ev.phev) == (60_000, False)
    assert (home.load.annual_kwh, home.load.occupancy, home.policy) == (5200.0, "home", "zi-c")
    assert [x.id for x in s.sites[1:]] == ["site-000", "site-001"]
    assert (s.tariff_sen_per_kwh, s.buyback_sen_per_kwh) == (3001, 700)  # half up


# -- meter data ------------------------------------------------------------------------------


def csv_rows(first: datetime, values: list[int]) -> list[str]:
    return [f"{(first + timedelta(minutes=30 * k)).isoformat()},{v}" for k, v in enumerate(values)]


def write_csv(tmp_path: Path, rows: list[str], header: str = "timestamp,wh") -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "home.csv").write_text("\n".join([header, *rows]) + "\n")


MIDNIGHT = datetime(2026, 9, 28, tzinfo=JST)
LOAD_ENTRY = '[[sites]]\ntype = "pv"\n[[sites]]\ntype = "consumer"\nload_csv = "data/home.csv"\n'


def daylight(values: list[int]) -> list[int]:
    """``values`` with the half hours before 07:00 and from 17:00 on at zero (PV at night is
    refused), and none above a 4.5 kW panel's half hour."""
    return [min(2250, v) if 14 <= k % 48 < 34 else 0 for k, v in enumerate(values)]


def test_meter_csv_round_trip(tmp_path: Path) -> None:
    values = [(k * 37) % 900 for k in range(96)]
    # 23:00 and 23:30 of the day before (incomplete, dropped), then two full days
    rows = csv_rows(MIDNIGHT - timedelta(hours=1), [5, 6, *values])
    write_csv(tmp_path, rows)
    sun = csv_rows(MIDNIGHT, daylight(values))
    (tmp_path / "data" / "pv.csv").write_text("\n".join(["timestamp,wh", *sun]) + "\n")
    body = LOAD_ENTRY.replace('"consumer"\n', '"pv"\npv_csv = "data/pv.csv"\n')
    s = parse(body, tmp_path)
    assert set(s.meter_data) == {"site-001"}
    data = s.meter_data["site-001"]
    assert data.load_wh is not None and data.pv_wh is not None
    assert set(data.load_wh) == {date(2026, 9, 28), date(2026, 9, 29)}
    assert list(data.load_wh[date(2026, 9, 28)]) == values[:48]
    assert list(data.load_wh[date(2026, 9, 29)]) == values[48:]
    assert list(data.pv_wh[date(2026, 9, 29)]) == daylight(values)[48:]
    assert s.with_overrides(days=2).days == 2
    with pytest.raises(InvalidInput, match="2026-09-30"):
        s.with_overrides(days=3)


def test_meter_csv_utc_offsets_keyed_by_jst_day(tmp_path: Path) -> None:
    # the same instants written in UTC ("2026-09-27T15:00:00+00:00" is JST midnight)
    utc = csv_rows(MIDNIGHT.astimezone(UTC), list(range(48)))
    assert utc[0].startswith("2026-09-27T15:00:00+00:00")
    write_csv(tmp_path, utc)
    load = parse(LOAD_ENTRY, tmp_path).meter_data["site-001"].load_wh
    assert load is not None
    assert list(load[date(2026, 9, 28)]) == list(range(48))


def csv_error(tmp_path: Path, rows: list[str], header: str = "timestamp,wh") -> InvalidInput:
    write_csv(tmp_path, rows, header)
    err = rejected(LOAD_ENTRY, tmp_path)
    assert err.field == "sites[1].load_csv"
    assert "data/home.csv" in err.message
    return err


def day_rows() -> list[str]:
    return csv_rows(MIDNIGHT, [100] * 48)


def test_invalid_csv_gap(tmp_path: Path) -> None:
    rows = day_rows()
    del rows[15]  # line 17 (header is line 1) would have been 07:30
    err = csv_error(tmp_path, rows)
    assert "line 16" in err.message
    assert "gap" in err.message


def test_invalid_csv_duplicate(tmp_path: Path) -> None:
    rows = day_rows()
    rows.insert(10, rows[9])
    err = csv_error(tmp_path, rows)
    assert "line 12" in err.message
    assert "duplicate of line 11" in err.message


def test_invalid_csv_step(tmp_path: Path) -> None:
    rows = [f"{(MIDNIGHT + timedelta(minutes=15 * k)).isoformat()},1" for k in range(96)]
    err = csv_error(tmp_path, rows)
    assert "line 3" in err.message
    assert "half hour" in err.message


def test_invalid_csv_kwh_values(tmp_path: Path) -> None:
    # kWh per half hour (every value small, some with fractions): told to multiply by 1000
    rows = csv_rows(MIDNIGHT, [0] * 48)
    rows = [r.replace(",0", f",{0.05 + 0.01 * k:.2f}") for k, r in enumerate(rows)]
    err = csv_error(tmp_path, rows)
    assert "line 2" in err.message and "kWh" in err.message and "1000" in err.message


def test_invalid_csv_wh_with_decimals_is_not_called_kwh(tmp_path: Path) -> None:
    # Wh with decimals: multiplying by 1000 would only lead to the next error
    rows = day_rows()
    rows[6] = rows[6].replace(",100", ",123.4")
    err = csv_error(tmp_path, rows)
    assert "line 8" in err.message and "round" in err.message
    assert "kWh" not in err.message and "1000" not in err.message


def test_invalid_csv_whole_kwh(tmp_path: Path) -> None:
    # a home's half hours as whole kWh: 0-3 "Wh" all day
    err = csv_error(tmp_path, csv_rows(MIDNIGHT, [k % 4 for k in range(48)]))
    assert "0–3 Wh" in err.message and "kWh" in err.message


def test_invalid_csv_end_labelled(tmp_path: Path) -> None:
    # the usual export of end-labelled data: 00:30, 01:00, ..., 24:00 (the next 00:00)
    err = csv_error(tmp_path, csv_rows(MIDNIGHT + timedelta(minutes=30), [100] * 48))
    assert "end of each half hour" in err.message and "subtract 30 minutes" in err.message


def test_invalid_csv_fifteen_minute_data(tmp_path: Path) -> None:
    rows = [f"{(MIDNIGHT + timedelta(minutes=15 * k)).isoformat()},50" for k in range(96)]
    err = csv_error(tmp_path, rows)
    assert "line 3" in err.message and "15-minute" in err.message and "sum" in err.message


def pv_error(tmp_path: Path, values: list[int]) -> InvalidInput:
    write_csv(tmp_path, csv_rows(MIDNIGHT, values))
    err = rejected('[[sites]]\ntype = "pv"\npv_kw = 2.0\npv_csv = "data/home.csv"\n', tmp_path)
    assert err.field == "sites[0].pv_csv"
    return err


def test_invalid_pv_csv_above_rated_power(tmp_path: Path) -> None:
    values = daylight([600] * 48)
    values[24] = 1001  # 2 kW for half an hour is 1000 Wh
    err = pv_error(tmp_path, values)
    assert "line 26" in err.message and "2 kW" in err.message and "1000 Wh" in err.message


def test_invalid_pv_csv_at_night(tmp_path: Path) -> None:
    values = daylight([600] * 48)
    values[2] = 40  # 01:00
    err = pv_error(tmp_path, values)
    assert "line 4" in err.message and "sun is down" in err.message


def test_pv_csv_at_dawn_and_dusk_is_accepted(tmp_path: Path) -> None:
    # a little PV in the half hours next to sunrise and sunset is light, not a label error
    values = daylight([600] * 48)
    values[10:14] = [2, 5, 30, 80]  # sunrise about 05:35 here
    values[34:36] = [60, 20]  # sunset about 17:30
    write_csv(tmp_path, csv_rows(MIDNIGHT, values))
    s = parse('[[sites]]\ntype = "pv"\npv_kw = 2.0\npv_csv = "data/home.csv"\n', tmp_path)
    assert s.meter_data["site-000"].pv_wh is not None


def test_csv_gap_outside_the_simulated_days_is_a_warning(tmp_path: Path) -> None:
    # three days before the start with a gap on the first, then the simulated day
    first = MIDNIGHT - timedelta(days=3)
    rows = csv_rows(first, [300] * (4 * 48))
    del rows[10:13]
    write_csv(tmp_path, rows)
    s = parse(LOAD_ENTRY, tmp_path)
    load = s.meter_data["site-001"].load_wh
    assert load is not None and sorted(load) == [date(2026, 9, d) for d in (26, 27, 28)]
    (warning,) = s.warnings()
    assert "site-001" in warning and "data/home.csv" in warning
    assert "3 half hour(s) from 2026-09-25T05:00:00+09:00" in warning
    assert "outside the simulated days" in warning
    # the same gap inside the simulated days is refused, naming it
    early = HEAD.replace("2026-09-28", "2026-09-25") + LOAD_ENTRY
    with pytest.raises(InvalidInput, match="gap of 3 half hour"):
        parse_scenario(early, "test.toml", tmp_path)


def test_invalid_csv_kwh_header(tmp_path: Path) -> None:
    err = csv_error(tmp_path, day_rows(), header="timestamp,kwh")
    assert "line 1" in err.message
    assert "kWh" in err.message


def test_invalid_csv_negative(tmp_path: Path) -> None:
    rows = day_rows()
    rows[20] = rows[20].replace(",100", ",-5")
    err = csv_error(tmp_path, rows)
    assert "line 22" in err.message
    assert "negative" in err.message


def test_invalid_csv_implausible(tmp_path: Path) -> None:
    rows = day_rows()
    rows[0] = rows[0].replace(",100", ",60000")
    err = csv_error(tmp_path, rows)
    assert "line 2" in err.message
    assert "implausible" in err.message


def test_invalid_csv_missing_day(tmp_path: Path) -> None:
    write_csv(tmp_path, day_rows())
    with pytest.raises(InvalidInput) as info:
        parse_scenario(HEAD.replace("days = 1", "days = 2") + LOAD_ENTRY, "test.toml", tmp_path)
    err = info.value
    assert err.field == "sites[1].load_csv"
    assert "data/home.csv" in err.message
    assert "2026-09-29" in err.message


def test_invalid_csv_wrong_header(tmp_path: Path) -> None:
    err = csv_error(tmp_path, day_rows(), header="time,energy")
    assert "line 1" in err.message
    assert "timestamp,wh" in err.message


def test_invalid_csv_no_offset(tmp_path: Path) -> None:
    rows = day_rows()
    rows[3] = "2026-09-28T01:30,100"
    err = csv_error(tmp_path, rows)
    assert "line 5" in err.message
    assert "offset" in err.message


def test_invalid_csv_missing_file(tmp_path: Path) -> None:
    err = rejected(LOAD_ENTRY, tmp_path)
    assert err.field == "sites[1].load_csv"
    assert "cannot be read" in err.message


def test_invalid_pv_csv_without_pv(tmp_path: Path) -> None:
    write_csv(tmp_path, day_rows())
    err = rejected('[[sites]]\ntype = "consumer"\npv_csv = "data/home.csv"\n', tmp_path)
    assert err.field == "sites[0].pv_csv"


def test_forecasts_use_the_meter_history_before_the_start(tmp_path: Path) -> None:
    # a week of 300 Wh half hours before the simulated day (of 100): the first day's load
    # forecast is the similar days' 300, not the model's profile
    from peerpower.devices.weather import Weather
    from peerpower.sim.runner import _controllers, build_genesis

    week = csv_rows(MIDNIGHT - timedelta(days=7), [300] * (7 * 48) + [100] * 48)
    write_csv(tmp_path, week)
    s = parse(LOAD_ENTRY, tmp_path)
    genesis, _ = build_genesis(s)
    weather = Weather(s.seed, s.start - timedelta(days=1))
    site = _controllers(s, genesis, weather)["site-001"]
    assert [d for d, _ in site.load_history] == [date(2026, 9, d) for d in range(21, 28)]
    assert site._forecast_day(s.start)[1] == [300] * 48
    site.load_history.clear()
    site._forecasts.clear()
    assert site._forecast_day(s.start)[1] != [300] * 48  # without it: the model's profile
    # and what the forecasts of that week would have missed by are the first forecast errors:
    # a week of 7 days × a slot and its two neighbours; once similar days exist, the
    # forecast of a steady 300 is 300 and misses by nothing
    got = site.errors.dists(10)
    assert got is not None
    errors = got[0].values
    assert len(errors) == 7 * 3 and errors.count(0.0) >= 3 * 3
    plain = _controllers(parse(PV, tmp_path), genesis, weather)["site-000"]
    assert plain.errors.dists(10) is None  # no meter data: the prior until it has measured


def test_first_pv_forecast_follows_the_metered_day_before(tmp_path: Path) -> None:
    from peerpower.devices.pv import clear_sky_wh
    from peerpower.devices.weather import Weather
    from peerpower.sim.runner import _controllers, build_genesis

    body = '[[sites]]\ntype = "pv"\npv_kw = 2.0\npv_csv = "data/home.csv"\n'
    write_csv(tmp_path, csv_rows(MIDNIGHT, [0] * 48))  # the panel's own day, to size it
    pv = parse(body, tmp_path).sites[0].pv
    assert pv is not None
    before = MIDNIGHT - timedelta(days=1)
    # the day before at 40 % of clear sky (whole Wh), then the simulated day
    dim = [round(0.4 * x) for x in clear_sky_wh(pv, before.date())]
    write_csv(tmp_path, csv_rows(before, dim + [0] * 48))
    s = parse(body, tmp_path)
    genesis, _ = build_genesis(s)
    site = _controllers(s, genesis, Weather(s.seed, s.start - timedelta(days=1)))["site-000"]
    assert site.clearness == pytest.approx(0.4, abs=0.01)


def test_simulate_warns_of_a_gap_outside_the_simulated_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peerpower.cli import main

    rows = csv_rows(MIDNIGHT - timedelta(days=1), [300] * (2 * 48))
    del rows[20]
    write_csv(tmp_path, rows)
    (tmp_path / "s.toml").write_text(HEAD + "validators = 1\n" + LOAD_ENTRY)
    code = main(["simulate", "--scenario", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: site-001: data/home.csv has a gap of 1 half hour(s)" in err


PHEV_HOME = '[[sites]]\ntype = "pv-phev"\ncount = 6\n'


def test_car_pattern_and_start_soc(tmp_path: Path) -> None:
    from peerpower.agents.controller import ev_day
    from peerpower.devices.ev import EV, DrivingPattern

    home = parse(PHEV_HOME + '[sites.car]\npattern = "home-day"\nstart_soc_percent = 55\n')
    away = parse(PHEV_HOME + '[sites.car]\npattern = "commuter"\n')
    default = parse(PHEV_HOME)
    assert all(s.ev is not None and s.ev.soc_initial_percent == 55 for s in home.sites)
    assert [s.driving for s in away.sites] == [s.driving for s in default.sites]

    def noon_at_home(sc: Scenario) -> float:
        # weekdays of two weeks: the share of 10:00-15:00 half hours each car is plugged in
        plugged = total = 0
        for spec in sc.sites:
            assert spec.ev is not None and spec.driving is not None
            car = EV(spec.ev, DrivingPattern(spec.driving, spec.seed))
            for d in range(14):
                day = date(2026, 9, 28) + timedelta(days=d)
                if day.weekday() < 5:
                    plan = ev_day(car, day)
                    plugged += sum(plan.plugged[20:30])
                    total += 10
        return plugged / total

    assert noon_at_home(away) < 0.3 < 0.7 < noon_at_home(home)


@pytest.mark.parametrize(
    ("car", "field", "says"),
    [
        ('pattern = "weekend"', "sites[0].car.pattern", "'weekend' is not one of commuter"),
        ('pattern = "workplace"', "sites[0].car.charge_at", "needs the grid node"),
        (
            'pattern = "workplace"\ncharge_at = "n-office"',
            "sites[0].car.charge_at",
            "'n-office' is not a node of the grid",
        ),
        (
            'pattern = "workplace"\ncharge_at = "n-site-000"',
            "sites[0].car.charge_at",
            "the site's own node",
        ),
        ('pattern = "commuter"\ncharge_at = "n-site-001"', "sites[0].car.charge_at", "only"),
        ('pattern = "workplace"\ncharge_at = 3', "sites[0].car.charge_at", "3"),
        ("start_soc_percent = 150", "sites[0].car.start_soc_percent", "150"),
        ("start_soc_percent = -1", "sites[0].car.start_soc_percent", "-1"),
        ("start_soc_percent = 50.5", "sites[0].car.start_soc_percent", "50.5"),
        ("colour = 1", "sites[0].car.colour", "unknown key"),
    ],
)
def test_invalid_car(car: str, field: str, says: str) -> None:
    err = rejected(PHEV_HOME + f"[sites.car]\n{car}\n")
    assert err.field == field and says in err.message


def test_workplace_car_charges_at_the_node_it_names() -> None:
    from peerpower.agents.controller import ev_day
    from peerpower.devices.ev import EV, DrivingPattern

    sc = parse(
        PHEV_HOME
        + '[sites.car]\npattern = "workplace"\ncharge_at = "n-business-000"\n'
        + '[[sites]]\ntype = "business"\nid_prefix = "business"\n'
    )
    cars = [s for s in sc.sites if s.ev is not None]
    assert len(cars) == 6 and all(s.charge_at == "n-business-000" for s in cars)
    at_work = trips = 0
    for spec in cars:
        assert spec.driving is not None and spec.driving.charge_at_work
        assert spec.ev is not None
        car = EV(spec.ev, DrivingPattern(spec.driving, spec.seed))
        for d in range(7):
            day = date(2026, 9, 28) + timedelta(days=d)  # a Monday
            plan = ev_day(car, day)
            legs = car.pattern.trips(day)
            if day.weekday() < 5 and legs:
                # two legs of half the commute each, plugged in at work between them
                assert len(legs) == 2 and legs[0].distance_km == legs[1].distance_km
                first, end = legs[0].return_slot, legs[1].depart_slot
                assert plan.at_work == tuple(first <= k < end for k in range(48))
                assert not any(plan.home[first:end]) and all(plan.plugged[first:end])
                at_work += sum(plan.at_work[20:30])
                trips += 1
            else:
                assert not any(plan.at_work)
    assert trips and at_work == 10 * trips  # plugged in at work through every weekday noon


def test_invalid_car_on_a_site_without_one() -> None:
    err = rejected('[[sites]]\ntype = "pv"\n[sites.car]\npattern = "home-day"\n')
    assert err.field == "sites[0].car" and "no car" in err.message
