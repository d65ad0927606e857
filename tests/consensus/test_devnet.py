"""``peerpower devnet simulate``: safe, deterministic, and clear about bad input."""

from __future__ import annotations

import json

import pytest

from peerpower.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["devnet", "simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_devnet_simulate_is_safe_and_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--validators", "4", "--byzantine", "1", "--drop", "0.1", "--seed", "3")
    code, out, _ = run(capsys, *args, "--heights", "100")
    assert code == 0
    summary = json.loads(out)
    assert summary["safety_violations"] == 0
    assert summary["heights_committed"] >= 95
    assert summary["clearing_decisions"] >= 2  # slots sealed and cleared under consensus
    # every decision has at least one winning claim
    assert sum(summary["winners_by_validator"].values()) >= summary["clearing_decisions"]
    assert summary["virtual_seconds"] >= 100 * 60
    code, again, _ = run(capsys, *args, "--heights", "100")
    assert again == out


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("--validators", "4", "--byzantine", "2"), "byzantine"),
        (("--drop", "1.5"), "drop"),
        (("--goal", "most"), "goal"),
        (("--heights", "0"), "heights"),
    ],
)
def test_invalid_devnet_simulate(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], field: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    error = json.loads(err)
    assert error["field"] == field


def test_devnet_byzantine_inflator_never_wins(capsys: pytest.CaptureFixture[str]) -> None:
    # 7 validators, 2 Byzantine: validator-0 equivocates, validator-1 inflates its claims and
    # records a forged clearing when it proposes; honest validators refuse both
    args = ("--validators", "7", "--byzantine", "2", "--drop", "0.2", "--seed", "3")
    code, out, _ = run(capsys, *args, "--heights", "150")
    assert code == 0
    summary = json.loads(out)
    assert summary["safety_violations"] == 0
    assert summary["heights_committed"] >= 140
    assert summary["clearing_decisions"] >= 3
    assert summary["winners_by_validator"]["validator-1"] == 0
    assert summary["rejected_claims"] > 0  # its inflated claims, verified and refused
    # seed 3: it proposes while a slot is due, and its forged blocks are refused
    assert summary["rejected_proposals"] > 0
