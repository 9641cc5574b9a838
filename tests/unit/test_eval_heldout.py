"""Held-out evaluation with a fake generator and the real verifier reward: every number by hand, failed
items excluded, and byte-identical files on a repeat (the stage is pure)."""

from __future__ import annotations

import json
import math

import pytest

from evarl.eval.heldout import evaluate_heldout
from evarl.generation.base import GenOutput, SamplingParams
from evarl.rewards.verifier import VerifierReward
from evarl.types import Constraint, Prompt

SUN = "the weather is lovely today and the sun is shining over the hills"
RESPONSES = {
    "p1": (SUN, 2),  # follows both constraints
    "p2": ("Hello, world", 3),  # has a comma
    "p3": ("**Title**\n" + SUN, 5),  # strict fails (capital T), loose passes (first line dropped)
    "p4": ("anything", 4),  # no constraints: the verifier cannot score it
}


class TableGenerator:
    name = "table"

    def __init__(self) -> None:
        self.seen: list[SamplingParams] = []

    def generate(self, conversations, params):
        self.seen.append(params)
        return [[GenOutput(*RESPONSES[c[0]["content"]], "stop")] for c in conversations]


def _prompts() -> list[Prompt]:
    def p(pid, cs):
        return Prompt(pid, [{"role": "user", "content": pid}], constraints=[Constraint(c) for c in cs])

    return [
        p("p1", ["punctuation:no_comma", "change_case:english_lowercase"]),
        p("p2", ["punctuation:no_comma"]),
        p("p3", ["change_case:english_lowercase"]),
        p("p4", []),
    ]


def test_evaluate_heldout_hand_computed(tmp_path):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=32, seed=0)
    res = evaluate_heldout(TableGenerator(), _prompts(), VerifierReward("loose"), params, tmp_path)
    h = res["heldout"]
    assert h["n"] == 3 and h["failed"] == 1
    assert h["mean_reward"] == pytest.approx(2 / 3)  # rewards 1, 0, 1
    assert h["reward_std"] == pytest.approx(math.sqrt(2 / 9))
    assert h["ifeval"]["prompt_strict"] == pytest.approx(1 / 3)
    assert h["ifeval"]["prompt_loose"] == pytest.approx(2 / 3)
    assert h["ifeval"]["inst_strict"] == pytest.approx(2 / 4)
    assert h["ifeval"]["inst_loose"] == pytest.approx(3 / 4)
    assert h["ifeval"]["n_prompts"] == 3 and h["ifeval"]["n_instructions"] == 4
    assert h["mean_length"] == pytest.approx((2 + 3 + 5 + 4) / 4)
    # Pearson over the scored items: rewards (1, 0, 1) vs lengths (2, 3, 5) = 3 / sqrt(252)
    assert h["reward_length_pearson"] == pytest.approx(3 / math.sqrt(252))
    assert json.loads((tmp_path / "eval.json").read_text()) == res
    rows = [json.loads(x) for x in (tmp_path / "eval_generations.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["reward"], r["failed"]) for r in rows] == [
        ("p1", 1.0, False),
        ("p2", 0.0, False),
        ("p3", 1.0, False),
        ("p4", None, True),
    ]
    assert rows[2]["ifeval"] == [{"id": "change_case:english_lowercase", "strict": False, "loose": True}]


def test_evaluate_heldout_is_pure(tmp_path):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=32)
    a, b = tmp_path / "a", tmp_path / "b"
    evaluate_heldout(TableGenerator(), _prompts(), VerifierReward(), params, a)
    evaluate_heldout(TableGenerator(), _prompts(), VerifierReward(), params, b)
    for name in ("eval.json", "eval_generations.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_no_constraints_means_no_ifeval_and_empty_is_an_error(tmp_path):
    class ConstReward:
        name = "const"

        def score(self, prompts, responses):
            from evarl.types import RewardResult

            return [RewardResult(0.5) for _ in responses]

    res = evaluate_heldout(TableGenerator(), _prompts()[3:], ConstReward(), SamplingParams(n=1), tmp_path)
    assert res["heldout"]["ifeval"] is None and res["heldout"]["mean_reward"] == 0.5
    assert res["heldout"]["reward_length_pearson"] is None  # one item
    with pytest.raises(ValueError, match="no held-out prompts"):
        evaluate_heldout(TableGenerator(), [], ConstReward(), SamplingParams(n=1), tmp_path)
