"""Prompt informativeness: eva's reward-advantage proxy for the solver's regret on a prompt.

eva (seeds 000 §3.2 eq. 5-6 and 001 §4.2.1 Table 3) estimates, for each prompt x with sampled responses
y_1..y_n and rewards r_i, info(x) = |Regret(x)| = |r(x, y_baseline) - r(x, y_+)|, where y_+ is the best response
and the baseline is the worst response (A*_min, the offline default) or the average (A*_avg, the online
default). Table 4's ablation arms are registered here too:

    a_min      |max r - min r|                    worst-case optimal advantage (minimax regret)
    a_avg      |max r - mean r|                   average optimal advantage (Bayesian regret)
    a_dis      |best r - second best r|           dueling optimal advantage (min-margin regret)
    uniform    1                                  every prompt equally likely
    var        population variance of r
    avg        mean r
    inv_avg    1 / mean r                         "where the policy is weak"
    inv_a_min  1 / A*_min

Each metric is a pure function of one prompt's list of *valid* rewards (failed / None / NaN rewards are removed
before it is called, so a metric never sees them). Deviations, all for numerical safety:

- A single valid response gives advantage 0 (there is nothing to compare), variance 0.
- The inverse metrics use 1 / max(x, EPS) with EPS = 1e-3 and, for x < EPS, continue along the tangent line
  (1/EPS + (EPS - x) / EPS^2), so the result is finite, positive and still strictly decreasing in x for any
  reward scale, including negative rewards (1/avg alone flips sign at 0 and is not order-reversing there).

`to_weights` turns metric values into sampling probabilities (Algorithm 1: "drawn w.p. ∝ info(x)"). eva's code
min-max normalises, which gives the least informative prompt weight 0 and a constant metric NaN; here instead

- non-negative values are used as they are (w ∝ v, as in the paper), plus a floor of FLOOR x max(v), so a prompt
  with zero advantage keeps a small positive chance;
- if any value is negative, values are shifted by their minimum first (w ∝ v - min v + FLOOR x (max v - min v));
- constant values (including all zero) give uniform weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from evarl.registry import METRICS

EPS = 1e-3  # smallest denominator of the inverse metrics
FLOOR = 1e-2  # every prompt keeps at least FLOOR x (spread of the values) of weight before normalising

Metric = Callable[[Sequence[float]], float]


def _inverse(x: float) -> float:
    """1/x for x >= EPS; tangent-line continuation below EPS (finite, positive, strictly decreasing)."""
    if x >= EPS:
        return 1.0 / x
    return 1.0 / EPS + (EPS - x) / (EPS * EPS)


@METRICS.register("a_min")
def a_min(rewards: Sequence[float]) -> float:
    """A*_min = |max r - min r|, worst-case optimal advantage (eva's offline default)."""
    return float(abs(max(rewards) - min(rewards)))


@METRICS.register("a_avg")
def a_avg(rewards: Sequence[float]) -> float:
    """A*_avg = |max r - mean r|, average optimal advantage (eva's online default)."""
    return float(abs(max(rewards) - math.fsum(rewards) / len(rewards)))


@METRICS.register("a_dis")
def a_dis(rewards: Sequence[float]) -> float:
    """A*_dis = |best r - second best r|, dueling optimal advantage; 0 with a single response."""
    if len(rewards) < 2:
        return 0.0
    top = sorted(rewards, reverse=True)
    return float(abs(top[0] - top[1]))


@METRICS.register("uniform")
def uniform(rewards: Sequence[float]) -> float:
    """Uniform: every prompt gets the same informativeness (Table 4 baseline)."""
    return 1.0


@METRICS.register("var")
def var(rewards: Sequence[float]) -> float:
    """var(r): population variance of the rewards (Table 4 baseline)."""
    mean = math.fsum(rewards) / len(rewards)
    return float(math.fsum((r - mean) ** 2 for r in rewards) / len(rewards))


@METRICS.register("avg")
def avg(rewards: Sequence[float]) -> float:
    """avg(r): mean reward (Table 4 baseline)."""
    return float(math.fsum(rewards) / len(rewards))


@METRICS.register("inv_avg")
def inv_avg(rewards: Sequence[float]) -> float:
    """1/avg(r): inverse mean reward, finite and order-reversing for any reward scale (Table 4 baseline)."""
    return _inverse(avg(rewards))


@METRICS.register("inv_a_min")
def inv_a_min(rewards: Sequence[float]) -> float:
    """1/A*_min: inverse worst-case advantage, finite when all rewards tie (Table 4 baseline)."""
    return _inverse(a_min(rewards))


def valid_rewards(rewards: Sequence[float | None]) -> list[float]:
    """The rewards that count: None (failed) and non-finite values are removed."""
    out: list[float] = []
    for r in rewards:
        if r is None or isinstance(r, bool):
            continue
        f = float(r)
        if math.isfinite(f):
            out.append(f)
    return out


def informativeness(metric: str, rewards: dict[str, list[float]]) -> dict[str, float]:
    """info(x) for each prompt id from its responses' rewards (failed / None / NaN rewards excluded).

    A prompt whose rewards all failed has no estimate and is left out of the result (it cannot be ranked);
    the caller can see which by comparing keys.
    """
    fn: Metric = METRICS.get(metric)
    if not isinstance(rewards, dict):
        raise TypeError(
            f"rewards: expected a dict of prompt id -> list of rewards, got {type(rewards).__name__}"
        )
    out: dict[str, float] = {}
    for pid, rs in rewards.items():
        if rs is None or isinstance(rs, str | bytes | dict) or not hasattr(rs, "__iter__"):
            raise TypeError(f"rewards[{pid!r}]: expected a list of numbers, got {type(rs).__name__}")
        valid = valid_rewards(list(rs))
        if not valid:
            continue
        value = float(fn(valid))
        if not math.isfinite(value):
            raise ValueError(f"metric {metric!r} returned {value} for prompt {pid!r}")
        out[pid] = value
    return out


def to_weights(values: Sequence[float]) -> np.ndarray:
    """Normalised sampling weights: positive, finite, summing to 1 (see the module docstring for the rule)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("values: need a non-empty list of numbers")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"values[{int(bad[0])}]: weights need finite numbers, got {v[bad[0]]}")
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.full(v.size, 1.0 / v.size)
    w = v + FLOOR * hi if lo >= 0 else v - lo + FLOOR * (hi - lo)
    return w / w.sum()
