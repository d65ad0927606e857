"""``renewable-preference``: a buyer that prefers PV-origin energy.

Orders on the exchange carry no origin, so a buyer cannot ask for solar energy by name (the
Tanaka–Abe concept leaves an "electric power identification function" for later). What it can do
is the seeds' renewable-priority bidding by timing: it bids ``premium_yen`` more in the slots
where the community's supply is likely to be solar — the forecast output of a reference 1 kW
panel is at least ``sunny_wh_per_kw`` in the half hour — and ``premium_yen`` less elsewhere, on
top of its base policy's bids; sales are left as the base policy made them. Flexible demand (an
EV, a battery) so moves into the sunny hours, where the sellers are PV homes.
"""

from __future__ import annotations

from peerpower.agents.policy import (
    Bid,
    Policy,
    SiteView,
    make_policy,
    prefix_consistent,
    register,
)
from peerpower.errors import InvalidInput


@register("renewable-preference")
def renewable_preference(
    base: str = "soc-table",
    premium_yen: float = 2.0,
    sunny_wh_per_kw: int = 150,
    **base_options: object,
) -> Policy:
    if base == "renewable-preference":
        raise InvalidInput("base", "must be another policy")
    if not 0 <= premium_yen <= 100:
        raise InvalidInput("premium_yen", f"must be 0–100 yen/kWh, got {premium_yen}")
    if not 0 < sunny_wh_per_kw <= 1000:
        raise InvalidInput("sunny_wh_per_kw", f"must be 1–1000 Wh, got {sunny_wh_per_kw}")
    inner = make_policy(base, **base_options)
    premium = round(premium_yen * 100)

    def policy(view: SiteView) -> list[Bid]:
        sunny = {
            view.slots[k]
            for k, wh in enumerate(view.solar_wh_per_kw)
            if wh >= sunny_wh_per_kw and k < len(view.slots)
        }
        out = []
        for b in inner(view):
            if b.side == "buy":
                p = b.price_sen_per_kwh
                if b.slot in sunny:  # more, but never past the tariff (retail is cheaper)
                    price = min(p + premium, max(p, view.tariff_sen_per_kwh))
                else:
                    price = max(p - premium, 0)
                b = b._replace(price_sen_per_kwh=view.clamp_price(price))
            out.append(b)
        return out

    policy.prefix_consistent = prefix_consistent(inner)  # type: ignore[attr-defined]
    return policy
