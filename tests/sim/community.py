"""The small community the simulator's tests run: 8 sites of four types, one day."""

from __future__ import annotations

from pathlib import Path

from peerpower.sim.scenario import Scenario, parse_scenario


def community_toml(name: str = "small", validators: int = 1) -> str:
    return f"""
name = "{name}"
start = 2026-08-18
days = 1
seed = 3
validators = {validators}
[market]
mechanism = "optimal"
goal = "welfare"
[grid]
feeders = 1
sites_per_transformer = 4
[[sites]]
type = "pv"
count = 3
[[sites]]
type = "consumer"
count = 3
[[sites]]
type = "pv-battery"
count = 1
[[sites]]
type = "consumer-phev"
count = 1
"""


def community(name: str = "small", validators: int = 1) -> Scenario:
    return parse_scenario(community_toml(name, validators), f"{name}.toml", Path("."))
