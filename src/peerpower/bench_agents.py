"""``peerpower bench agents``: a day of 1,000 sites' controllers.

A community of ``sites`` sites of every catalogue type (consumers, PHEV drivers, PV homes with
and without batteries and PHEVs, shops and business sites, in the mix of
:func:`peerpower.ledger.synthetic.site_types`), one shared sky, each with its own seed. For each
of the day's 48 half hours every controller forecasts, runs its policy over the open slots and
signs what changed (orders and cancels), then delivers the slot — dispatches its storage, and its
meter signs the reading. No market: nothing is matched, so every site meets its needs from the
retail provider and its bids stay standing (re-signed only when the policy changes them).
Target: under 10 s on this machine.
"""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timedelta
from typing import IO

from peerpower.agents.catalogue import site
from peerpower.agents.controller import Controller, MarketTerms
from peerpower.crypto import KeyPair
from peerpower.devices.weather import Weather
from peerpower.ledger.genesis import CATALOGUE_TYPES
from peerpower.ledger.transactions import sign_encoded
from peerpower.timeslots import JST, SLOTS_PER_DAY, Slot

TARGET_SECONDS = 10.0
DAY = date(2026, 8, 18)
MIX = (
    # (type, share): a suburb of homes with a few shops
    ("consumer", 20),
    ("consumer-phev", 8),
    ("pv", 25),
    ("pv-battery", 20),
    ("pv-phev", 12),
    ("pv-battery-phev", 10),
    ("shop", 3),
    ("business", 2),
)


def community(sites: int, seed: int = 1) -> list[Controller]:
    """``sites`` controllers in the :data:`MIX`, deterministic in ``seed``."""
    assert {t for t, _ in MIX} == set(CATALOGUE_TYPES)
    total = sum(share for _, share in MIX)
    kinds: list[str] = []
    for t, share in MIX:
        kinds += [t] * (sites * share // total)
    kinds += ["consumer"] * (sites - len(kinds))
    weather = Weather(seed, DAY - timedelta(days=1))
    terms = MarketTerms(chain="bench-agents")
    out = []
    for k, t in enumerate(kinds):
        spec = site(t, f"site{k}", seed=seed * 1_000_003 + k)
        out.append(
            Controller(
                spec,
                terms,
                KeyPair.derive(f"bench/site{k}"),
                KeyPair.derive(f"bench/site{k}/meter"),
                weather,
            )
        )
    return out


def run(sites: int = 1000, seed: int = 1, out: IO[str] = sys.stdout) -> int:
    """Time a day; 0 when it meets the target, else 1."""
    t0 = time.perf_counter()
    controllers = community(sites, seed)
    setup = time.perf_counter() - t0
    signed = readings = 0
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=JST)
    t1 = time.perf_counter()
    for k in range(SLOTS_PER_DAY):
        now = start + timedelta(minutes=30 * k) - timedelta(minutes=10)
        # every controller decides; the community's transactions are signed in one batch
        todo = [item for c in controllers for item in c.plan(now)]
        signed += len(sign_encoded(todo))
        slot = Slot(DAY, k)
        readings += len(sign_encoded([c.deliver(slot, sign=False).unsigned for c in controllers]))
    seconds = time.perf_counter() - t1
    ok = seconds < TARGET_SECONDS
    print(
        f"agents: a day of {sites:,} sites' controllers (48 rounds of forecasts, policies and "
        f"signing, then delivery and a signed meter reading each): {seconds:.2f} s "
        f"(target < {TARGET_SECONDS:g} s: {'met' if ok else 'NOT met'}); {signed:,} orders "
        f"and cancels signed, {readings:,} readings; setting up the community took "
        f"{setup:.2f} s",
        file=out,
    )
    return 0 if ok else 1
