"""``peerpower bench consensus``: how fast validators agree.

Measured so far: the simulated network — ``validators`` validators (default 7) running the
exchange under Tendermint on :class:`peerpower.net.memory.SimNetwork`, with twenty sites
trading every half hour and slots cleared by claims (``peerpower devnet simulate``), timed for
``heights`` blocks. Target: 1,000 heights a minute or faster. The TCP measurement (4 validators
as processes, blocks of 2,000 signed orders at 1 block/s) comes with the TCP transport.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import IO

from peerpower.consensus.devnet import DevnetConfig, simulate

TARGET_HEIGHTS_PER_MINUTE = 1000


def run(validators: int = 7, heights: int = 1000, seed: int = 1, out: IO[str] = sys.stdout) -> int:
    """Time the simulated network; 0 when it meets the target, else 1."""
    start = time.perf_counter()
    summary = simulate(DevnetConfig(validators=validators, heights=heights, seed=seed))
    seconds = time.perf_counter() - start
    committed = summary["heights_committed"]
    rate = committed / seconds * 60
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"simulated network: {validators} validators, {committed} heights committed "
        f"({summary['clearing_decisions']} slots cleared by claims, "
        f"{summary['messages_delivered']} messages) in {seconds:.1f} s wall = "
        f"{rate:,.0f} heights/min (target >= {TARGET_HEIGHTS_PER_MINUTE:,}: "
        f"{'met' if rate >= TARGET_HEIGHTS_PER_MINUTE else 'NOT met'}); "
        f"safety violations {summary['safety_violations']}; peak memory of the whole "
        f"simulation (all validators in one process) {peak_mb:.0f} MB",
        file=out,
    )
    print("TCP between processes: not built yet (issue 4)", file=out)
    return 0 if rate >= TARGET_HEIGHTS_PER_MINUTE and not summary["safety_violations"] else 1
