"""Pairwise preference source: both-order debiasing, win matrices, grouping by prompt id (a fake p_A);
the real forward pass is tested on SmolLM2 / a tiny Llama in tests/integration/test_rewards_real.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evarl.rewards.pairwise import PairwiseReward
from evarl.types import Prompt

BIAS = 0.15  # the fake model prefers whatever is shown as A


class FakePairwise(PairwiseReward):
    def __init__(self) -> None:  # no model: p_A comes from the strings
        self.counts = {"comparisons": 0, "truncated": 0, "failed_items": 0}

    def prob_first(self, contexts, a, b):
        d = np.array([len(x) - len(y) for x, y in zip(a, b)], dtype=float)
        p = 1 / (1 + np.exp(-d)) * (1 - 2 * BIAS) + 2 * BIAS * 0.5 + BIAS
        p = np.clip(p, 0, 1)
        return p, np.zeros(len(a), dtype=bool)


def _p(i: str) -> Prompt:
    return Prompt(id=i, messages=[{"role": "user", "content": f"q{i}"}])


def test_both_orders_cancel_position_bias():
    src = FakePairwise()
    prob, _ = src.preference([_p("x")] * 3, ["aaa", "a", "aa"], ["a", "aaa", "aa"])
    assert prob[0] > 0.5 > prob[1]
    assert prob[0] + prob[1] == pytest.approx(1.0)
    assert prob[2] == pytest.approx(0.5)  # equal responses: the A-bias is gone


def test_win_matrix_is_antisymmetric():
    m = FakePairwise().win_matrix(_p("x"), ["a", "aaaa", "aa"])
    assert m.shape == (3, 3)
    assert np.allclose(np.diag(m), 0.5) and np.allclose(m + m.T, 1.0)
    assert m[1, 0] > 0.5 and m[1, 2] > 0.5 and m[2, 0] > 0.5


def test_score_groups_by_prompt_id_and_fails_singletons():
    src = FakePairwise()
    prompts = [_p("x"), _p("y"), _p("x"), _p("z"), _p("y"), _p("x")]
    responses = ["a", "bb", "aaa", "lonely", "b", "aa"]
    out = src.score(prompts, responses)
    mx = src.win_matrix(_p("x"), ["a", "aaa", "aa"])
    assert out[0].score == pytest.approx((mx[0, 1] + mx[0, 2]) / 2)
    assert out[2].score == pytest.approx((mx[1, 0] + mx[1, 2]) / 2)
    assert out[1].score > out[4].score  # within group y
    assert out[3].failed and math.isnan(out[3].score) and "one response" in out[3].info["error"]
    assert src.counts["failed_items"] == 1
