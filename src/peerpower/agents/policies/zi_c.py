"""``zi-c``: zero-intelligence constrained bidding, the classic baseline.

Each slot the site offers its forecast PV surplus or bids for its forecast deficit (whole lots;
storage is not used) at a price drawn uniformly (once per site and slot: re-planning does not
draw again) from the range where a trade cannot lose against
the retail alternatives: between the buyback price (what a seller gets otherwise) and the tariff
(what a buyer pays otherwise). A seller never asks below its cost and a buyer never bids above
its value — the budget constraint of Gode and Sunder's ZI-C traders.

References
----------
D. K. Gode and S. Sunder, "Allocative efficiency of markets with zero-intelligence traders:
market as a partial substitute for individual rationality", Journal of Political Economy
101(1):119–137, 1993. doi:10.1086/261868
"""

from __future__ import annotations

from peerpower.agents.policy import (
    FORECAST_TRUST,
    Bid,
    Policy,
    SiteView,
    net_position,
    register,
    slot_draw,
)


def zi_c_bids(view: SiteView) -> list[Bid]:
    low, high = sorted((view.buyback_sen_per_kwh, view.tariff_sen_per_kwh))
    out: list[Bid] = []
    for k, net in enumerate(net_position(view)):
        energy = view.lots(abs(net) * FORECAST_TRUST)
        if not energy:
            continue
        draw = slot_draw(view.site_seed, view.slots[k])
        price = view.clamp_price(low + int(draw * (high - low + 1)))
        out.append(Bid(view.slots[k], "sell" if net > 0 else "buy", energy, price))
    return out


zi_c_bids.prefix_consistent = True  # type: ignore[attr-defined]


@register("zi-c")
def zi_c() -> Policy:
    return zi_c_bids
