"""``docs/results.md``: what the presets show, next to what the trials reported.

Every figure of peerpower's in the document is computed here from sweeps made when it is
written (``peerpower results``): ``misono`` with its batteries and without them (every battery
removed, all else the same: same seeds, weather, loads, cars), and ``higashifuji`` in August,
each over the same seeds (:mod:`.sweep`), reported as means with 95 % intervals. The trials'
figures are cited with their sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from peerpower.sim.scenario import Scenario, load_scenario
from peerpower.sim.summary import renewable_share
from peerpower.sim.sweep import interval, sweep

# What the trials reported (see shared/seeds and the sources named beside each).
TRIAL_EV_SAVING_PERCENT = 25.4  # EV drivers' energy cost, Higashi-Fuji, August 2020
TRIAL_HOUSEHOLD_SAVING_PERCENT = 9.0  # household bills, about
TRIAL_EV_RENEWABLE_PERCENT = 43.0  # share of EV driving energy from renewables
RESIDENTIAL = ("consumer", "consumer-phev", "pv", "pv-battery", "pv-battery-phev", "pv-phev")
PHEV_HOMES = ("consumer-phev", "pv-battery-phev", "pv-phev")

__all__ = ["RESIDENTIAL", "build", "renewable_share", "without_batteries", "write"]

Sweeps = dict[str, dict[str, Any]]


def without_batteries(scenario: Scenario) -> Scenario:
    """``scenario`` with every site's battery removed (cars stay)."""
    return replace(scenario, sites=tuple(replace(s, battery=None) for s in scenario.sites))


def build(
    seeds: list[int],
    days: int,
    client: Any,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> tuple[str, Sweeps]:
    """Sweep the presets over ``seeds`` × ``days`` on ``client``'s Dask cluster and write the
    document; returns (markdown, the sweeps by name)."""
    misono = load_scenario("misono").with_overrides(days=days)
    hf = load_scenario("higashifuji").with_overrides(days=days)
    cases = {
        "misono": misono,
        "misono-no-batteries": without_batteries(misono),
        "higashifuji": hf,
    }
    sweeps = {
        name: sweep(sc, seeds, None, client, None if progress is None else progress(name))
        for name, sc in cases.items()
    }
    return render(sweeps, misono, hf), sweeps


def saving_of_gross(summary: dict[str, Any], types: tuple[str, ...]) -> float | None:
    """The saving of the sites of ``types`` together, as a share of what they paid without
    the market before the buyback [%] (``None`` if that is zero)."""
    rows = [t for n, t in summary["by_type"].items() if n in types]
    gross = sum(t["gross_cost_yen"] for t in rows)
    saving = sum(t["baseline_cost_yen"] - t["p2p_cost_yen"] for t in rows)
    return None if gross <= 0 else 100 * saving / gross


def per_run(sw: dict[str, Any], figure: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
    """``figure`` of each run's summary, as a mean and interval over the runs that have it."""
    xs = [x for x in (figure(r["summary"]) for r in sw["runs"]) if x is not None]
    return interval(xs) if xs else {"mean": None, "ci95": None, "n": 0}


def _ci(
    f: dict[str, Any] | None,
    unit: str = "",
    digits: int = 1,
    sign: int = 1,
    runs: int | None = None,
) -> str:
    """A figure as ``mean [low, high] unit`` (``sign`` −1: shown negated, a saving as a cost
    change), and in how many of the sweep's ``runs`` it was measured where not all."""
    if f is None or f["mean"] is None:
        return "–"
    if runs is not None and f["n"] < runs:
        return _ci(f, unit, digits, sign) + f" (in {f['n']} of {runs} runs)"
    mean = sign * f["mean"]
    text = f"{mean:+.{digits}f}" if sign < 0 else f"{mean:.{digits}f}"
    if f["ci95"] is not None:
        lo, hi = sorted(sign * x for x in f["ci95"])
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text + unit


#: Below this gross bill [yen per site and day] in any run, a type's saving is not shown as a
#: share of it: a home's gross bill is some 300–800 yen a day, and a share of a few yen swings
#: by hundreds of points with a kWh or two (misono's one PV + battery + PHEV home).
GROSS_FLOOR_YEN = 10.0


def _type_table(sw: dict[str, Any]) -> list[str]:
    rows = [
        "| participant type | sites | saving per site and day, yen | saving, % of gross bill "
        "| storage credit per site and day, yen |",
        "|---|---:|---:|---:|---:|",
    ]
    figures = sw["figures"]["scenario"]
    first = sw["runs"][0]["summary"]
    days: int = sw["days"]
    for name, t in first["by_type"].items():

        def storage_per_day(s: dict[str, Any], n: str = name) -> float:
            return (
                float(s["by_type"][n]["storage_credit_yen"]) / int(s["by_type"][n]["sites"]) / days
            )

        storage = per_run(sw, storage_per_day)
        per_day = figures.get(f"by_type.{name}.saving_yen_per_site_day")
        of_gross = _ci(figures.get(f"by_type.{name}.saving_percent_of_gross"))
        gross = [
            float(r["summary"]["by_type"][name]["gross_cost_yen"]) / int(t["sites"]) / days
            for r in sw["runs"]
        ]
        if min(gross) < GROSS_FLOOR_YEN:
            of_gross = f"– (gross bill {min(gross):.1f}–{max(gross):.1f} yen a site-day)"
        rows.append(
            f"| {name} | {t['sites']} | {_ci(per_day, digits=2)} | {of_gross} "
            f"| {_ci(storage, digits=2)} |"
        )
    return rows


def _market_line(sw: dict[str, Any]) -> str:
    f = sw["figures"]["scenario"]
    runs = len(sw["runs"])
    return (
        f"Traded {_ci(f['market.traded_kwh'], ' kWh')} per run, against a cap of "
        f"{_ci(f['market.cap_kwh'], ' kWh')} (what could trade without anyone shifting load or "
        f"storage): {_ci(f['market.absorbed_of_cap_percent'], ' %')} of the cap; "
        f"{_ci(f['market.wash_kwh'], ' kWh')} bought and sold by one site in one slot. Prices: "
        f"{_ci(f.get('market.midday_price_yen_per_kwh'), ' yen/kWh', 2, runs=runs)} at midday "
        "(10:00–15:00), "
        f"{_ci(f.get('market.evening_price_yen_per_kwh'), ' yen/kWh', 2, runs=runs)} in the "
        "evening (17:00–21:00)."
    )


def render(sweeps: Sweeps, misono: Scenario, hf: Scenario) -> str:
    m, nb, h = sweeps["misono"], sweeps["misono-no-batteries"], sweeps["higashifuji"]
    mf, nbf, hf_f = (x["figures"]["scenario"] for x in (m, nb, h))
    households = per_run(m, lambda s: saving_of_gross(s, RESIDENTIAL))
    hf_households = per_run(h, lambda s: saving_of_gross(s, RESIDENTIAL))
    hf_ev = per_run(h, lambda s: saving_of_gross(s, PHEV_HOMES))
    seeds = m["seeds"]
    seed_text = (
        f"{seeds[0]}–{seeds[-1]}"
        if seeds == list(range(seeds[0], seeds[-1] + 1))
        else (", ".join(map(str, seeds)))
    )
    lines = [
        "# What the presets show, next to the trials",
        "",
        "Written by `peerpower results` (`make results`) from the sweeps it makes; no figure of "
        "peerpower's below is typed in. The trials' figures are as reported (sources at the end).",
        f"Each figure is a mean over {len(seeds)} seeds ({seed_text}) with its 95 % interval "
        f"[low, high] (Student's t over the runs). Runs: `misono` for {misono.days} day(s) from "
        f"{misono.start} with its batteries and again with every battery removed (same seeds, "
        f"weather, loads and cars); `higashifuji` for {hf.days} day(s) from {hf.start}. Market: "
        f"{misono.mechanism}/{misono.goal}, {misono.pricing} pricing, {misono.validators} "
        f"validator(s); tariff {misono.tariff_sen_per_kwh / 100:g} yen/kWh, buyback "
        f"{misono.buyback_sen_per_kwh / 100:g} yen/kWh.",
        "",
        "## Side by side",
        "",
        "| | trial | peerpower |",
        "|---|---:|---:|",
        f"| household bills | about −{TRIAL_HOUSEHOLD_SAVING_PERCENT:g} % | "
        f"{_ci(households, ' %', sign=-1)} (misono), {_ci(hf_households, ' %', sign=-1)} "
        "(higashifuji) |",
        f"| EV drivers' energy cost, August | −{TRIAL_EV_SAVING_PERCENT:g} % | "
        f"{_ci(hf_ev, ' %', sign=-1)} (higashifuji PHEV homes, whole bill and fuel) |",
        f"| EV driving energy from renewables | {TRIAL_EV_RENEWABLE_PERCENT:g} % | "
        f"{_ci(hf_f.get('ev.renewable_percent'), ' %')} (higashifuji) |",
        f"| EV charging at midday (10:00–15:00) | most of the PV surplus | "
        f"{_ci(hf_f.get('ev.midday_charged_percent'), ' %')} of what the cars stored "
        "(higashifuji) |",
        f"| midday price vs the evening | low | "
        f"{_ci(hf_f.get('market.midday_price_yen_per_kwh'), '', 2, runs=len(h['runs']))} vs "
        f"{_ci(hf_f.get('market.evening_price_yen_per_kwh'), ' yen/kWh', 2, runs=len(h['runs']))}"
        " (higashifuji); "
        f"{_ci(mf.get('market.midday_price_yen_per_kwh'), '', 2, runs=len(m['runs']))} vs "
        f"{_ci(mf.get('market.evening_price_yen_per_kwh'), ' yen/kWh', 2, runs=len(m['runs']))}"
        " (misono) |",
        f"| steadier prices with batteries | yes | spread of the slots' mean prices "
        f"{_ci(mf.get('market.price_sd_yen_per_kwh'), '', 2)} with, "
        f"{_ci(nbf.get('market.price_sd_yen_per_kwh'), ' yen/kWh', 2)} without (misono) |",
        "",
        "(Bills: a negative figure is a saving, as a share of what the sites paid without the "
        "market before the buyback: imports at the tariff, and fuel.)",
        "",
        "In the tables below, the gross bill is that same sum. A type's saving is not given as a "
        f"share of it where that bill was under {GROSS_FLOOR_YEN:.0f} yen a site-day in some run "
        "(a home's is some 300–800): a share of a few yen says nothing.",
        "",
        "## misono",
        "",
        *_type_table(m),
        "",
        _market_line(m),
        "",
        "Without batteries:",
        "",
        *_type_table(nb),
        "",
        _market_line(nb),
        "",
        f"The cars of misono's PHEV homes drove on {_ci(mf.get('ev.trip_kwh'), ' kWh')} of "
        f"traction energy a run, {_ci(mf.get('ev.fuel_kwh'), ' kWh')} of it from fuel.",
        "",
        "## higashifuji",
        "",
        *_type_table(h),
        "",
        _market_line(h),
        "",
        f"The PHEVs drove on {_ci(hf_f.get('ev.trip_kwh'), ' kWh')} of traction energy a run "
        f"({_ci(hf_f.get('ev.fuel_kwh'), ' kWh')} from fuel) and stored "
        f"{_ci(hf_f.get('ev.charged_kwh'), ' kWh')} while plugged in.",
        "",
        ASSUMPTIONS,
    ]
    return "\n".join(lines) + "\n"


ASSUMPTIONS = """## Assumptions, and why the figures differ

- **What is compared.** A site's cost with the market is what it paid on chain (contracts,
  fees, imbalance penalties) plus the retail bill for its meter beyond its contracts, plus a
  PHEV's fuel; the baseline is the same site, same physics and forecasts, buying from and
  selling to the retail provider only. Energy left in a battery or car at the end beyond the
  baseline's (or short of it) is credited (or charged) at what refilling it costs: the buyback
  at a home with PV, the tariff without. The trials compared against the households' own
  earlier bills or a reference tariff, over months, with real people.
- **Policies.** Homes with storage bid the Misono SOC table's amounts at the forecast market
  price ∓ 1 yen/kWh, taking a row's price as the least they sell for and the most they pay,
  with three limits peerpower adds (the table does not say): a sale leaves what the house will
  need before its PV refills the storage, a purchase is only of what the storage will lack for
  that, and stored energy is sold only above what refilling it from the house's later PV
  costs. A site without storage offers its forecast surplus at the forecast market price less
  1 yen/kWh and bids for its forecast deficit at the forecast price plus 1 yen/kWh, as many
  whole lots as its forecast errors make worth trading (the newsvendor rule against the
  30 yen/kWh imbalance charge: at 25 yen/kWh a purchase saves 1 yen against the tariff and
  risks 55, so consumers buy at midday prices and hardly in the evening); its own errors are
  mixed with a prior that keeps the weight of a week of them (assumed; a few days of errors
  miss a change of weather). A controller forecasts a day's sky from its site's climate as a
  year of its readings would show it — the chance of each kind of day after yesterday's and
  the clearness each kind has (assumed: the simulator's weather model) — weighed by what it
  has measured that day (Bayes' rule); the prior's PV part is that forecast's spread. (With
  "tomorrow like today", PV homes sold on a sunny forecast the morning after a sunny day and
  were short of most of it when it rained: they lost 0.09 [−2.19, 2.02] yen a site-day on
  misono.) The PHEV homes without batteries charge
  their cars from their own PV first and in the cheapest slots (`ev-cheap-charging`); in
  higashifuji every PHEV is plugged in at the business site's charger during the working day
  and buys there on its own account. The trials' agents differed, and their participants
  shifted their own use.
- **Why household savings are smaller than the trials'.** Most residential demand is in the
  evening and most PV surplus at midday; what a battery holds at dusk the house needs itself
  that night, so little stored energy is left to sell, and the market mostly moves midday
  surplus to neighbours who need it then (the shop, cars at home). The trials' households
  also cut their use and moved it into the day when they saw prices.
- **EV drivers.** The trial's −25.4 % is "all EV drivers reduced energy cost", shown as the
  energy cost of their households in August 2020; peerpower's figure is likewise the whole
  bill of a PHEV home plus its fuel and what its car bought at work, as a share of what that
  home paid without the market before the buyback (imports at home and at work at the tariff,
  and fuel). The higashifuji PHEV homes are consumers and PV homes with and without a battery
  (the published counts, 9 PHEVs among 20 PV homes and the consumers, with the split across
  types assumed); what a PV home sells comes partly out of its storage, which the comparison
  charges at the buyback its PV would have earned refilling it. The trial's 43 % renewable
  share was measured at the chargers; peerpower counts a car's battery driving at the
  renewable share of what it charged from (its home's own PV and PV bought from neighbours at
  home and at work, against retail imports) and fuel as not renewable.
- **Prices.** The market prices each slot by node at its competitive equilibrium (nodal
  pricing, issue 15): where more is offered than bid, as at midday, the price falls to the
  marginal seller's ask; where less, as in the evening, it rises to the marginal buyer's bid.
  (Until issue 15 every pair was paid its midpoint, about 17.4 yen/kWh at midday and in the
  evening alike.) Sites without storage and the cars price from a forecast learnt from the
  chain's prices by time of day and the community's solar forecast, and homes with storage
  price from it within their table's rows. Misono's batteries (7 kWh beside about as much
  drawn by the house from dusk to the morning sun) hold what their own house needs that
  night, so they hardly reach the evening market, where they would steady prices; with them
  and without, the midday glut and the evening shortage set the slots' prices alike. In the
  evening (17:00–21:00) hardly anything is offered: the sun is down, storage keeps what its
  own house will draw that night (selling it to buy it back at the tariff is a loss), and a
  site offers no more than its forecast. Most of the buyers' bids (the forecast price plus
  1 yen/kWh, at most the tariff) stand unmatched and the households import at the tariff; an
  evening price shown "in n of 10 runs" rests on the few runs where anything traded then
  (–: none did). The trials' agents re-priced as supply changed.
- **Weather and season.** Seeded synthetic weather (pvlib clear sky with a Markov chain of day
  kinds), not the trial months' weather. Each seed is one community (its weather, loads, cars
  and the differences between its sites); every figure is a mean over the seeds with its 95 %
  interval (Student's t), and a difference counts only where the intervals are apart.

Sources: the EV drivers' −25.4 % and the midday absorption of PV surplus by EVs at low
prices: talk slides "Cooperative Social Service design utilizing distributed resources with IoT
devices" (Tanaka lab, University of Tokyo), Results ① and ② of the Higashi-Fuji demonstration
with Toyota and TRENDE, August 2020 (shared/seeds); the household bills of about −9 % and the
43 % renewable share of EV driving energy: as the trials reported them, quoted in peerpower's
issue 6; the SOC table: Misono project talk slides.
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
