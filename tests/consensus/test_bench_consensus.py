"""``peerpower bench consensus`` on a small run: it measures and reports what it measured."""

from __future__ import annotations

import io
import re

from peerpower.bench_consensus import run


def test_bench_consensus_small_run() -> None:
    out = io.StringIO()
    code = run(validators=4, heights=40, seed=2, out=out)
    text = out.getvalue()
    found = re.search(r"(\d+) heights committed .* = ([\d,]+) heights/min", text)
    assert found is not None, text
    assert int(found.group(1)) >= 38
    assert "safety violations 0" in text
    rate = int(found.group(2).replace(",", ""))
    assert code == (0 if rate >= 1000 else 1)
