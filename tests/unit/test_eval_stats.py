"""Reward statistics, Pearson correlations and the bootstrap, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evarl.eval.stats import bootstrap_ci, pearson, per_prompt_pearson, reward_stats


def test_reward_stats_hand_values_and_failed_excluded():
    s = reward_stats([1.0, 2.0, 3.0, 4.0, 100.0, None], [False, False, False, False, True, False])
    assert s["n"] == 4 and s["failed"] == 2  # one flagged, one None
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert s["min"] == 1.0 and s["max"] == 4.0
    # numpy linear interpolation: position q * (n - 1)
    assert s["q10"] == pytest.approx(1.3)
    assert s["q25"] == pytest.approx(1.75)
    assert s["median"] == pytest.approx(2.5)
    assert s["q75"] == pytest.approx(3.25)
    assert s["q90"] == pytest.approx(3.7)


def test_reward_stats_nan_counts_as_failed_and_empty_is_none():
    s = reward_stats([float("nan"), 2.0])
    assert s["n"] == 1 and s["failed"] == 1 and s["mean"] == 2.0 and s["std"] == 0.0
    e = reward_stats([None], [True])
    assert e["n"] == 0 and e["failed"] == 1 and e["mean"] is None and e["median"] is None
    with pytest.raises(ValueError, match="differ in length"):
        reward_stats([1.0], [False, True])


def test_pearson_hand_value_and_undefined_cases():
    # x = [1,2,3], y = [2,4,7]: sum(ab) = 5, sum(a^2) = 2, sum(b^2) = 38/3
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 38 / 3))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1], [2]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        pearson([1, 2], [1])


def test_per_prompt_pearson_is_mean_of_defined_coefficients():
    out = per_prompt_pearson(
        [
            ([1.0, 2.0, 3.0], [10, 20, 30]),  # r = 1
            ([1.0, 2.0, 3.0], [30, 20, 10]),  # r = -1
            ([1.0, 2.0], [5, 9]),  # r = 1
            ([1.0, 1.0], [5, 9]),  # constant reward: undefined
        ]
    )
    assert out["n"] == 3 and out["undefined"] == 1
    assert out["mean"] == pytest.approx(1 / 3)
    assert out["coefficients"][3] is None


def test_bootstrap_is_seeded_and_brackets_the_mean():
    vals = [0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0, 1.0]
    a = bootstrap_ci(vals, n_boot=500, seed=3)
    b = bootstrap_ci(vals, n_boot=500, seed=3)
    c = bootstrap_ci(vals, n_boot=500, seed=4)
    assert a == b and a != c
    lo, hi = a
    assert 0.0 <= lo < np.mean(vals) < hi <= 1.0
    # a constant sample has a degenerate interval
    assert bootstrap_ci([2.0, 2.0, 2.0], n_boot=50) == (2.0, 2.0)
    assert bootstrap_ci([], n_boot=50) is None


# ---------------------------------------------------------------- intervals on every summary number


def test_mean_interval_covers_the_mean_and_narrows_with_n() -> None:
    from evarl.eval.stats import mean_interval

    rng = np.random.default_rng(1)
    small = mean_interval(rng.normal(0.5, 1.0, 20).tolist())
    big = mean_interval(rng.normal(0.5, 1.0, 2000).tolist())
    assert small["n"] == 20 and big["n"] == 2000
    for m in (small, big):
        assert m["lo"] <= m["mean"] <= m["hi"]
    assert (big["hi"] - big["lo"]) < (small["hi"] - small["lo"]) / 5
    assert mean_interval([]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    assert mean_interval([1.0, 1.0, 1.0])["lo"] == 1.0  # degenerate but defined


def test_ratio_interval_resamples_clusters_not_items() -> None:
    from evarl.eval.stats import ratio_interval

    # two prompts: one with 10 instructions all passed, one with 1 failed: a cluster bootstrap sees 2 clusters
    m = ratio_interval([10, 0], [10, 1])
    assert m["n"] == 2 and m["mean"] == pytest.approx(10 / 11)
    assert m["lo"] == pytest.approx(0.0) and m["hi"] == pytest.approx(1.0)
    assert ratio_interval([], [])["mean"] is None


def test_paired_difference_pairs_by_key_and_says_whether_it_excludes_zero() -> None:
    from evarl.eval.stats import fmt_interval, paired_difference

    old = {f"p{i}": 0.0 for i in range(40)}
    new = {f"p{i}": 1.0 + 0.01 * i for i in range(40)}
    new["only-new"] = 100.0  # unpaired keys are left out
    d = paired_difference(new, old)
    assert d["n"] == 40 and d["excludes_zero"] is True and d["lo"] > 0
    same = paired_difference(old, {k: v + (0.1 if i % 2 else -0.1) for i, (k, v) in enumerate(old.items())})
    assert same["excludes_zero"] is False
    assert fmt_interval(d, key="diff").startswith("+1.")
    assert "(n=40)" in fmt_interval(d, key="diff")
