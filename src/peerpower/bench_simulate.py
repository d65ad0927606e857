"""``peerpower bench simulate``: a community for a day through the whole stack.

By default the ``large`` preset (1,000 sites of every type) for one day with 4 validators:
signatures, consensus, optimal clearing by claims, delivery, metering, settlement, and the
no-P2P baseline. Measured: wall time and the process's peak memory. Targets: under 60 s and
under 2 GiB on this machine. (For scale: gsy-e, a peer simulator, took about 110 s per
half-hour slot at 100 houses on this kind of machine.)
"""

from __future__ import annotations

import resource
import sys
import time
from typing import IO

from peerpower.sim.runner import run as simulate
from peerpower.sim.scenario import load_scenario

TARGET_SECONDS = 60.0
TARGET_MB = 2048.0


def run(
    scenario: str = "large",
    days: int = 1,
    validators: int | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    """Time the simulation; 0 when it meets both targets, else 1."""
    s = load_scenario(scenario).with_overrides(days=days, validators=validators)
    t0 = time.perf_counter()
    result = simulate(s)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = seconds < TARGET_SECONDS and peak_mb < TARGET_MB
    print(
        f"simulate: {s.name}, {len(s.sites):,} sites, {s.days} day(s), {s.validators} "
        f"validator(s), {s.mechanism}{'/' + s.goal if s.goal else ''}: "
        f"{result.validators.state.height:,} blocks, "
        f"{sum(len(u) for u in result.contracts.values()):,} contracts, in {seconds:.1f} s "
        f"(target < {TARGET_SECONDS:g} s: {'met' if seconds < TARGET_SECONDS else 'NOT met'}); "
        f"peak memory {peak_mb:,.0f} MB (target < {TARGET_MB:,.0f} MB: "
        f"{'met' if peak_mb < TARGET_MB else 'NOT met'})",
        file=out,
    )
    return 0 if ok else 1
