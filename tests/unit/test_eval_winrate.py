"""Pairwise win rate: verdict parsing, both-order combination, counts and standard error, the LC win rate
(hand-computed saturated case, and scipy on the same penalised objective), and judging with fake judges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evarl.eval.winrate import (
    combine_orders,
    fit_length_glm,
    judge_pairwise,
    length_controlled_win_rate,
    parse_pairwise_verdict,
    summarize_judgements,
    win_rate_summary,
)
from evarl.generation.base import GenOutput, SamplingParams


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Output (a)", "a"),
        ("**Output (B)**", "b"),
        ("  output(b).", "b"),
        ("b", "b"),
        ("(a)", "a"),
        ("Output (a) is better than Output (b)", None),
        ("I cannot decide.", None),
        ("", None),
        ("Output (a)\nOutput (a)", "a"),
    ],
)
def test_parse_pairwise_verdict(text, expected):
    assert parse_pairwise_verdict(text) == expected


def test_combine_orders():
    assert combine_orders("model", "model") == 1.0
    assert combine_orders("baseline", "baseline") == 0.0
    assert combine_orders("model", "baseline") == 0.5
    assert combine_orders("baseline", "model") == 0.5
    assert combine_orders(None, "model") is None
    assert combine_orders("model", None) is None


def test_win_rate_summary_counts_and_standard_error():
    s = win_rate_summary([1.0, 0.5, 0.0, None, 1.0], n_boot=200, seed=1)
    assert (s["n_total"], s["n_failed"], s["n_wins"], s["n_losses"], s["n_ties"]) == (4, 1, 2, 1, 1)
    assert s["win_rate"] == pytest.approx(62.5)
    # std(ddof=1) of [1, .5, 0, 1] = sqrt(0.6875 / 3); / sqrt(4)
    assert s["standard_error"] == pytest.approx(100 * math.sqrt(0.6875 / 3) / 2)
    lo, hi = s["win_rate_ci"]
    assert 0 <= lo <= 62.5 <= hi <= 100
    assert s["lc_win_rate"] is None  # no lengths given
    assert win_rate_summary([1.0, 0.5, 0.0, None, 1.0], n_boot=200, seed=1) == s  # seeded
    empty = win_rate_summary([None, None])
    assert empty["n_failed"] == 2 and empty["win_rate"] is None


def test_lc_win_rate_saturated_case_by_hand():
    # Two length groups at Δ = +10 and Δ = -10: the 2-parameter logistic model is saturated, so
    # sigmoid(b0 + b1 c) = 0.8 and sigmoid(b0 - b1 c) = 0.25, hence b0 = (logit 0.8 + logit 0.25) / 2.
    prefs = [1, 1, 1, 1, 0] + [1, 0, 0, 0]
    diff = [10] * 5 + [-10] * 4
    b0, b1 = fit_length_glm(prefs, diff, l2=0.0)
    assert b0 == pytest.approx((math.log(4) - math.log(3)) / 2, abs=1e-6)
    assert b1 > 0  # longer answers won more often
    expected = 100 * math.sqrt(4 / 3) / (1 + math.sqrt(4 / 3))  # = 53.59 %
    assert length_controlled_win_rate(prefs, diff, l2=0.0) == pytest.approx(expected, abs=1e-4)
    raw = 100 * 5 / 9
    assert expected < raw  # the length bias is removed from the raw 55.6 %


def test_lc_win_rate_no_length_effect_equals_raw_rate():
    # Same win rate in both length groups: slope 0, LC = raw win rate (up to the small L2 shrinkage)
    prefs = [1, 1, 1, 0, 1, 1, 1, 0]
    diff = [5, 5, 5, 5, -5, -5, -5, -5]
    assert length_controlled_win_rate(prefs, diff, l2=0.0) == pytest.approx(75.0, abs=1e-6)
    _, b1 = fit_length_glm(prefs, diff, l2=0.0)
    assert b1 == pytest.approx(0.0, abs=1e-6)
    # constant length difference: feature is 0, the intercept alone is the raw rate
    assert length_controlled_win_rate([1, 0, 1, 1], [3, 3, 3, 3], l2=0.0) == pytest.approx(75.0, abs=1e-6)


def test_lc_fit_matches_scipy_on_penalised_objective():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    diff = rng.normal(0, 200, size=60)
    x = np.tanh(diff / diff.std())
    prefs = (rng.random(60) < 1 / (1 + np.exp(-(0.3 + 1.5 * x)))).astype(float)
    prefs[:6] = 0.5  # some ties
    l2 = 0.001

    def obj(w):
        z = w[0] + w[1] * x
        return np.sum(np.logaddexp(0, z) - prefs * z) + 0.5 * l2 * (w @ w)

    ref = minimize(obj, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    b0, b1 = fit_length_glm(prefs, diff, l2=l2)
    assert (b0, b1) == pytest.approx((ref[0], ref[1]), abs=1e-5)


def test_lc_all_wins_is_finite_and_near_100():
    lc = length_controlled_win_rate([1.0] * 10, list(range(10)))
    assert 99.0 < lc < 100.0


class ContentJudge:
    """Prefers the output containing GOOD; optionally always answers (a) (maximal position bias)."""

    name = "content-judge"

    def __init__(self, mode: str = "content") -> None:
        self.mode = mode
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate(self, conversations, params):
        self.calls.append(conversations)
        outs = []
        for conv in conversations:
            text = conv[-1]["content"]
            a = text.split("## Output (a)")[1].split("## Output (b)")[0]
            if self.mode == "first":
                reply = "Output (a)"
            elif self.mode == "garbage":
                reply = "hmm, hard to say"
            else:
                reply = "Output (a)" if "GOOD" in a else "**Output (b)**"
            outs.append([GenOutput(reply, 3, "stop")])
        return outs


def test_judge_pairwise_both_orders_with_content_judge():
    judge = ContentJudge()
    ins = ["i1", "i2", "i3"]
    model = ["GOOD answer", "meh", "GOOD too long answer"]
    base = ["meh", "GOOD baseline", "short"]
    js = judge_pairwise(judge, ins, model, base, ids=["x", "y", "z"])
    assert len(judge.calls) == 1 and len(judge.calls[0]) == 6  # one batch, both orders
    first, second = judge.calls[0][0][0]["content"], judge.calls[0][1][0]["content"]
    assert first.index("GOOD answer") < first.index("## Output (b)")  # model shown first
    assert second.index("GOOD answer") > second.index("## Output (b)")  # then second
    assert [j.preference for j in js] == [1.0, 0.0, 1.0]
    assert js[0].verdicts == ("model", "model") and js[1].verdicts == ("baseline", "baseline")
    assert js[2].len_model == len("GOOD too long answer") and js[2].len_baseline == 5
    s = summarize_judgements(js, n_boot=100)
    assert s["win_rate"] == pytest.approx(200 / 3) and s["order_disagreement"] == 0.0
    assert s["avg_length_model"] == pytest.approx(np.mean([len(m) for m in model]))


def test_position_biased_judge_gives_ties_and_garbage_gives_failures():
    s = summarize_judgements(judge_pairwise(ContentJudge("first"), ["a", "b"], ["GOOD", "x"], ["y", "GOOD"]))
    assert s["n_ties"] == 2 and s["win_rate"] == 50.0 and s["order_disagreement"] == 1.0
    g = summarize_judgements(judge_pairwise(ContentJudge("garbage"), ["a", "b"], ["x", "y"], ["y", "x"]))
    assert g["n_failed"] == 2 and g["n_total"] == 0 and g["win_rate"] is None


def test_judge_pairwise_template_braces_and_length_mismatch():
    judge = ContentJudge()
    tpl = "I: {instruction}\n## Output (a)\n{output_a}\n## Output (b)\n{output_b}"
    js = judge_pairwise(judge, ["use {output_b} literally"], ["GOOD {x}"], ["b"], template=tpl)
    sent = judge.calls[0][0][0]["content"]
    assert "use {output_b} literally" in sent and "GOOD {x}" in sent  # inserted text is not re-filled
    assert js[0].preference == 1.0
    with pytest.raises(ValueError, match="instructions"):
        judge_pairwise(judge, ["a"], ["x", "y"], ["z"], params=SamplingParams(n=1))
