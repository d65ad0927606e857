"""``peerpower bench agents`` on a small community: it measures and reports what it measured."""

from __future__ import annotations

import io
import re

from peerpower.bench_agents import community, run
from peerpower.cli import main


def test_bench_agents_small_run() -> None:
    out = io.StringIO()
    code = run(sites=40, out=out)
    text = out.getvalue()
    found = re.search(
        r"a day of 40 sites.*: ([\d.]+) s .* ([\d,]+) orders and cancels signed, "
        r"([\d,]+) readings",
        text,
    )
    assert found is not None, text
    assert int(found.group(3).replace(",", "")) == 40 * 48
    assert int(found.group(2).replace(",", "")) >= 40 * 20  # every site bids through the day
    assert code == (0 if float(found.group(1)) < 10 else 1)


def test_bench_agents_community_has_every_type() -> None:
    kinds = {c.spec.site_type for c in community(100)}
    assert len(kinds) == 8


def test_invalid_bench_agents_sites(capsys: object) -> None:
    assert main(["bench", "agents", "--sites", "0"]) == 2
