"""With f Byzantine validators (equivocating, inflating their clearings, silent, withholding
their claims) the clearing the chain records for an LP goal is the optimum: compared, slot by
slot, with an independent pairwise MILP (scipy) on the sealed book, over many seeds."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import oracle
from peerpower.consensus.devnet import DevnetConfig, run_devnet
from peerpower.ledger.rules import apply_block, genesis_state, slot_book
from peerpower.ledger.state import SlotRec
from peerpower.market.verify import result_from_json, verify

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("goal", ["volume", "welfare"])
@pytest.mark.parametrize(
    ("validators", "byzantine", "seeds"),
    [(4, 1, range(1, 5)), (7, 2, range(1, 4)), (13, 4, range(1, 3))],
)
def test_recorded_clearing_is_optimal_with_byzantine_validators(
    goal: str, validators: int, byzantine: int, seeds: range
) -> None:
    decided = 0
    kinds: Counter[str] = Counter()
    for seed in seeds:
        run = run_devnet(
            DevnetConfig(
                validators=validators,
                byzantine=byzantine,
                drop=0.1,
                seed=seed,
                heights=130,
                goal=goal,
            )
        )
        assert run.summary["safety_violations"] == 0
        if byzantine >= 2:  # validator-1 inflates its claims: it never wins
            assert run.summary["winners_by_validator"]["validator-1"] == 0
        state = genesis_state(run.genesis)
        for block in run.blocks:
            for tx in block.txs:
                body = tx["body"]
                kinds[body["type"]] += 1
                if body["type"] != "decide":
                    continue
                rec = state.get("slots", body["slot"])
                assert isinstance(rec, SlotRec) and rec.seed
                book = slot_book(state, run.genesis, body["slot"], bytes.fromhex(rec.seed))
                result = result_from_json(body["result"])
                check = verify(book, result)
                assert check.ok, check.problems
                want = oracle(book, goal)
                assert result.objective is not None
                assert (result.objective.primary, result.objective.secondary) == (
                    want["primary"],
                    want["secondary"],
                ), f"seed {seed} slot {body['slot']}"
                assert len(body["claims"]) >= 2 * ((validators - 1) // 3) + 1
                decided += 1
            state = apply_block(state, block, run.genesis)
    assert decided >= 2 * len(seeds)  # slots were really cleared through claims
    assert kinds["order"] > 0
