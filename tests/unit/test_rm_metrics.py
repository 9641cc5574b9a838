"""Reward-model metrics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evarl.eval import rm_metrics as M


def test_preference_accuracy_and_ties():
    assert M.preference_accuracy([2, 1, 3], [1, 2, 3]) == pytest.approx((1 + 0 + 0.5) / 3)
    with pytest.raises(ValueError):
        M.preference_accuracy([1], [1, 2])
    with pytest.raises(ValueError):
        M.preference_accuracy([], [])


def test_per_category_and_sections():
    per = M.per_category_accuracy(
        [1, 1, 0, 5], [0, 2, 1, 1], ["alpacaeval-easy", "alpacaeval-easy", "math-prm", "x"]
    )
    assert per["alpacaeval-easy"] == {"accuracy": 0.5, "n": 2}
    assert per["math-prm"]["accuracy"] == 0.0 and per["x"]["accuracy"] == 1.0
    sec = M.rewardbench_sections(per)
    assert sec == {"chat": 0.5, "reasoning": 0.0, "mean": 0.25}


def test_rank_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=7).astype(float)  # with ties
        y = x + rng.normal(0, 1.5, size=7)
        y[2] = y[3]
        assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
        assert M.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
        assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
        assert np.allclose(M.rankdata(y), stats.rankdata(y))
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(M.kendall_tau([1], [2]))


def test_ranking_metrics_by_hand():
    pred = [[3, 2, 1, 0], [1, 2, 3, 4], [5, 5, 1, 0]]
    ref = [[4, 3, 2, 1], [4, 3, 2, 1], [2, 1, 1, 0]]
    pa = M.pairwise_order_accuracy(pred, ref)
    # group 0: 6/6, group 1: 0/6, group 2: ref pairs (0,1) tie in pred -> .5, (0,2),(0,3),(1,3),(2,3) ok,
    # (1,2) reference tie skipped -> 5 pairs, 4.5 hits
    assert pa["n_pairs"] == 17 and pa["accuracy"] == pytest.approx(10.5 / 17)
    top = M.top1_accuracy(pred, ref)
    assert top["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert M.exact_match(pred, ref)["accuracy"] == pytest.approx(1 / 3)
    fb = M.five_best(pred, ref, max_score=5)
    assert fb == {"accuracy": 0.5, "n_perfect": 2}
    assert math.isnan(M.five_best([[1, 2]], [[1, 2]], 5)["accuracy"])
    rc = M.rank_correlations(pred, ref)
    assert rc["n_prompts"] == 3 and rc["n_undefined"] == 0
    assert rc["spearman"] == pytest.approx(np.mean([1.0, -1.0, M.spearman(pred[2], ref[2])]))
    rep = M.ranking_report(pred, ref, max_score=5)
    assert set(rep) >= {"pairwise_accuracy", "top1", "exact_match", "spearman", "kendall_tau", "five_best"}
    with pytest.raises(ValueError, match="group 0"):
        M.pairwise_order_accuracy([[1, 2]], [[1]])


def test_length_correlation():
    L = [[10, 20, 30], [5, 5, 5], [100, 200, 300, 400]]
    R = [[1, 2, 3], [1, 2, 3], [4, 3, 2, 1]]
    out = M.length_correlation(L, R, buckets=[50])
    assert out["per_prompt"][0] == pytest.approx(1.0) and math.isnan(out["per_prompt"][1])
    assert out["mean"] == pytest.approx(0.0) and out["n_undefined"] == 1
    assert out["by_mean_length"] == {"[-inf, 50)": {"mean": 1.0, "n": 1}, "[50, inf)": {"mean": -1.0, "n": 1}}
