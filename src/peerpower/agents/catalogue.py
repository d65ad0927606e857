"""The site catalogue: the participant types of the trials, with sensible defaults.

The University of Tokyo / Toyota / TRENDE trial had two kinds of consumer (with and without a
PHEV) and four kinds of prosumer (PV only; PV + battery; PV + PHEV; PV + battery + PHEV), plus
business sites; Urawa-Misono added a shop. Defaults (all overridable):

============== ======== ============ ============ ====================== ===================
type            PV [kW]  battery [kWh] EV           load                   policy
============== ======== ============ ============ ====================== ===================
consumer        –        –            –            household 4,500 kWh/a  soc-table
consumer-phev   –        –            PHEV 40 kWh  household 4,500 kWh/a  ev-cheap-charging
pv              4.5      –            –            household 4,500 kWh/a  soc-table
pv-battery      5.0      7            –            household 4,500 kWh/a  soc-table
pv-phev         5.0      –            PHEV 40 kWh  household 4,500 kWh/a  ev-cheap-charging
pv-battery-phev 6.0      10           PHEV 40 kWh  family 6,000 kWh/a     soc-table
shop            10.0     –            –            shop 25,000 kWh/a      soc-table
business        10.0     –            –            business 30,000 kWh/a  soc-table
============== ======== ============ ============ ====================== ===================

(Homes carry 4–6 kW of PV and 5–10 kWh batteries, as the issue asks; a PHEV is the 40 kWh car
of Energies 14(24):8309.) A site's seed varies its load, its driving and its policy's draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from peerpower.agents.policy import make_policy, policy_names
from peerpower.devices.battery import BatteryConfig
from peerpower.devices.ev import DrivingConfig, EVConfig
from peerpower.devices.load import LoadConfig
from peerpower.devices.pv import PVConfig
from peerpower.errors import InvalidInput
from peerpower.ledger.genesis import CATALOGUE_TYPES, check_account_id

# the register transaction's site types (peerpower.ledger.genesis.CATALOGUE_TYPES)


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """One site: its devices, its policy and its seed."""

    id: str
    site_type: str
    node: str = "root"
    pv: PVConfig | None = None
    load: LoadConfig = field(default_factory=LoadConfig)
    battery: BatteryConfig | None = None
    ev: EVConfig | None = None
    driving: DrivingConfig | None = None
    policy: str = "soc-table"
    policy_options: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    # the grid node of the charger the car plugs into at work (``driving.charge_at_work``);
    # the car has its own account there, :func:`car_account_id`
    charge_at: str | None = None

    def __post_init__(self) -> None:
        try:
            check_account_id(self.id, "id")
        except InvalidInput as err:
            raise InvalidInput("id", err.message) from None
        if self.site_type not in CATALOGUE_TYPES:
            raise InvalidInput(
                "site_type", f"{self.site_type!r} is not one of {', '.join(CATALOGUE_TYPES)}"
            )
        if self.policy not in policy_names():
            raise InvalidInput(
                "policy", f"{self.policy!r} is not one of {', '.join(policy_names())}"
            )
        if self.ev is not None and self.driving is None:
            raise InvalidInput("driving", "a site with an EV needs a driving pattern")
        at_work = self.driving is not None and self.driving.charge_at_work
        if at_work and self.charge_at is None:
            raise InvalidInput("charge_at", "a car that charges at work needs its charger's node")
        if self.charge_at is not None:
            if not at_work or self.ev is None:
                raise InvalidInput(
                    "charge_at", f"{self.charge_at!r} given for a car that does not charge at work"
                )
            car_account_id(self.id)
        make_policy(self.policy, **dict(self.policy_options))  # options checked now


def car_account_id(site_id: str) -> str:
    """The account of ``site_id``'s car at its workplace charger: ``<site id>-car``."""
    car = f"{site_id}-car"
    try:
        return check_account_id(car, "id")
    except InvalidInput as err:
        raise InvalidInput(
            "id", f"{site_id!r} leaves no room for its car's account: {err.message}"
        ) from None


def _defaults(site_type: str) -> dict[str, Any]:
    household = LoadConfig("household", 4500.0, "working")
    phev = EVConfig(phev=True)
    commute = DrivingConfig()
    table: dict[str, dict[str, Any]] = {
        "consumer": {"load": household},
        "consumer-phev": {
            "load": household,
            "ev": phev,
            "driving": commute,
            "policy": "ev-cheap-charging",
        },
        "pv": {"load": household, "pv": PVConfig(capacity_kw=4.5)},
        "pv-battery": {
            "load": household,
            "pv": PVConfig(capacity_kw=5.0),
            "battery": BatteryConfig(capacity_wh=7000),
        },
        "pv-phev": {
            "load": household,
            "pv": PVConfig(capacity_kw=5.0),
            "ev": phev,
            "driving": commute,
            "policy": "ev-cheap-charging",
        },
        "pv-battery-phev": {
            "load": LoadConfig("household", 6000.0, "family"),
            "pv": PVConfig(capacity_kw=6.0),
            "battery": BatteryConfig(capacity_wh=10_000, charge_w=4000, discharge_w=4000),
            "ev": phev,
            "driving": commute,
        },
        "shop": {"load": LoadConfig("shop", 25_000.0), "pv": PVConfig(capacity_kw=10.0)},
        "business": {
            "load": LoadConfig("business", 30_000.0),
            "pv": PVConfig(capacity_kw=10.0),
        },
    }
    if site_type not in table:
        raise InvalidInput("site_type", f"{site_type!r} is not one of {', '.join(CATALOGUE_TYPES)}")
    return table[site_type]


def site(
    site_type: str, site_id: str, seed: int = 0, node: str = "root", **overrides: Any
) -> SiteSpec:
    """A site of the catalogue's ``site_type`` with ``overrides`` (any :class:`SiteSpec`
    field, e.g. ``pv=PVConfig(capacity_kw=6)``, ``policy="zi-c"``)."""
    spec = SiteSpec(site_id, site_type, node, seed=seed, **_defaults(site_type))
    if "policy_options" in overrides and isinstance(overrides["policy_options"], dict):
        overrides["policy_options"] = tuple(sorted(overrides["policy_options"].items()))
    known = set(SiteSpec.__dataclass_fields__)
    for name in overrides:
        if name not in known:
            raise InvalidInput(name, f"is not a site field (known: {', '.join(sorted(known))})")
    return replace(spec, **overrides)
