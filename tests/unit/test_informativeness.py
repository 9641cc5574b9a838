"""Informativeness metrics and weights: hand-computed values, NaN safety, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evarl.creator import informativeness as inf
from evarl.creator.informativeness import EPS, FLOOR, informativeness, to_weights
from evarl.registry import METRICS

R = [1.0, 3.0, 2.0]  # max 3, min 1, mean 2, second best 2


@pytest.mark.parametrize(
    "name, rewards, expected",
    [
        ("a_min", R, 2.0),
        ("a_avg", R, 1.0),
        ("a_dis", R, 1.0),
        ("uniform", R, 1.0),
        ("var", R, 2.0 / 3.0),
        ("avg", R, 2.0),
        ("inv_avg", R, 0.5),
        ("inv_a_min", R, 0.5),
        # a second hand-worked list: max .9, min .2, mean .625, top two tie at .9
        ("a_min", [0.2, 0.9, 0.5, 0.9], 0.7),
        ("a_avg", [0.2, 0.9, 0.5, 0.9], 0.275),
        ("a_dis", [0.2, 0.9, 0.5, 0.9], 0.0),
        ("var", [0.2, 0.9, 0.5, 0.9], (0.425**2 + 0.275**2 + 0.125**2 + 0.275**2) / 4),
        # negative rewards: |max - min| and |max - mean| stay non-negative
        ("a_min", [-3.0, -1.0], 2.0),
        ("a_avg", [-3.0, -1.0], 1.0),
        ("avg", [-3.0, -1.0], -2.0),
        # inv_avg below EPS continues along the tangent: 1/EPS + (EPS - x)/EPS^2 with x = -2
        ("inv_avg", [-3.0, -1.0], 1.0 / EPS + (EPS + 2.0) / EPS**2),
        # a single response: no advantage, no variance
        ("a_min", [0.4], 0.0),
        ("a_avg", [0.4], 0.0),
        ("a_dis", [0.4], 0.0),
        ("var", [0.4], 0.0),
        ("avg", [0.4], 0.4),
        ("inv_a_min", [0.4], 1.0 / EPS + EPS / EPS**2),  # x = 0 is below EPS: tangent line
        ("inv_avg", [0.0, 0.0], 1.0 / EPS + 1.0 / EPS),
    ],
)
def test_metric_values(name: str, rewards: list[float], expected: float) -> None:
    assert METRICS.get(name)(rewards) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_all_table4_arms_registered() -> None:
    expected = {"a_min", "a_avg", "a_dis", "uniform", "var", "avg", "inv_avg", "inv_a_min"}
    assert expected <= set(METRICS.names())


def test_inverse_is_finite_positive_and_decreasing_everywhere() -> None:
    xs = [-5.0, -1.0, -1e-4, 0.0, 1e-4, EPS, 2 * EPS, 0.1, 1.0, 10.0]
    ys = [inf._inverse(x) for x in xs]
    assert all(math.isfinite(y) and y > 0 for y in ys)
    assert all(a > b for a, b in zip(ys, ys[1:]))


def test_informativeness_excludes_failed_and_nan() -> None:
    out = informativeness("a_min", {"a": [1.0, None, 3.0, float("nan")], "b": [None, None], "c": [2.0]})
    assert out == {"a": 2.0, "c": 0.0}  # "b" has no valid reward: no estimate


def test_informativeness_accepts_arrays() -> None:
    assert informativeness("a_avg", {"a": np.array([1.0, 3.0, 2.0])}) == {"a": 1.0}


def test_informativeness_bad_input() -> None:
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        informativeness("nope", {"a": [1.0]})
    with pytest.raises(TypeError, match=r"rewards\['a'\]"):
        informativeness("a_min", {"a": 1.0})  # type: ignore[dict-item]


def test_weights_proportional_with_floor() -> None:
    w = to_weights([0.0, 1.0, 3.0])
    raw = np.array([0.0, 1.0, 3.0]) + FLOOR * 3.0
    np.testing.assert_allclose(w, raw / raw.sum())
    assert w.min() > 0 and w.sum() == pytest.approx(1.0)


def test_weights_shift_negative_values() -> None:
    w = to_weights([-1.0, 0.0, 1.0])
    raw = np.array([0.0, 1.0, 2.0]) + FLOOR * 2.0
    np.testing.assert_allclose(w, raw / raw.sum())


@pytest.mark.parametrize("values", [[0.0, 0.0, 0.0], [2.5, 2.5], [-1.0, -1.0, -1.0, -1.0], [7.0]])
def test_weights_constant_is_uniform(values: list[float]) -> None:
    np.testing.assert_allclose(to_weights(values), np.full(len(values), 1.0 / len(values)))


def test_weights_reject_nan_and_empty() -> None:
    with pytest.raises(ValueError, match=r"values\[1\]"):
        to_weights([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        to_weights([])


def test_weights_of_every_metric_are_valid_on_awkward_sets() -> None:
    sets = {"p1": [0.5, 0.5], "p2": [-2.0, 1.0, 0.0], "p3": [0.0], "p4": [10.0, -10.0], "p5": [None, 1.0]}
    for name in METRICS.names():
        vals = list(informativeness(name, sets).values())
        w = to_weights(vals)
        assert np.all(np.isfinite(w)) and np.all(w > 0) and w.sum() == pytest.approx(1.0), name
