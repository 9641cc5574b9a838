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
