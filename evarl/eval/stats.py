"""Pure statistics for evaluation: reward summaries, reward-length correlation, bootstrap intervals.

- `reward_stats`: mean, std, quantiles and failed count of rewards under any reward source. Failed items
  (`RewardResult.failed`) are counted and excluded, never read as 0.
- `pearson` / `per_prompt_pearson`: the reward-length bias analysis of seed 003 (RLHF Workflow, §2.2,
  Figure 3): the Pearson coefficient between reward and response length, computed per prompt over its n
  responses and then averaged ("the mean coefficient of UltraRM-13B is 0.19"). `pearson` over all pairs is
  what a held-out set with one response per prompt allows.
- `bootstrap_ci`: percentile bootstrap over items with a seeded numpy Generator, as used for win rates.

Conventions: std is the population std (ddof=0, numpy's default); quantiles use numpy's linear
interpolation; an undefined statistic (empty input, zero variance) is None, never NaN, so JSON stays valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def reward_stats(rewards: Sequence[float | None], failed: Sequence[bool] | None = None) -> dict:
    """Summary of rewards: n (scored), failed, mean, std, min, q10, q25, median, q75, q90, max.

    An item is failed when `failed[i]` is true or its reward is None / NaN.
    """
    fails = list(failed) if failed is not None else [False] * len(rewards)
    if len(fails) != len(rewards):
        raise ValueError(f"rewards ({len(rewards)}) and failed ({len(fails)}) differ in length")
    ok = [float(r) for r, f in zip(rewards, fails) if not f and r is not None and not np.isnan(float(r))]
    out: dict = {"n": len(ok), "failed": len(rewards) - len(ok)}
    if not ok:
        out.update({k: None for k in ("mean", "std", "min", "q10", "q25", "median", "q75", "q90", "max")})
        return out
    a = np.asarray(ok, dtype=float)
    qs = np.quantile(a, QUANTILES)
    out.update(
        mean=float(a.mean()),
        std=float(a.std()),
        min=float(a.min()),
        q10=float(qs[0]),
        q25=float(qs[1]),
        median=float(qs[2]),
        q75=float(qs[3]),
        q90=float(qs[4]),
        max=float(a.max()),
    )
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation coefficient; None with fewer than 2 points or a constant variable."""
    if len(x) != len(y):
        raise ValueError(f"x ({len(x)}) and y ({len(y)}) differ in length")
    if len(x) < 2:
        return None
    a = np.asarray(x, dtype=float) - np.mean(x)
    b = np.asarray(y, dtype=float) - np.mean(y)
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0.0:
        return None
    return float((a * b).sum() / den)


def per_prompt_pearson(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict:
    """Seed 003 Figure 3: Pearson(reward, length) within each prompt's responses, then the mean.

    `groups` holds one (rewards, lengths) pair per prompt. Prompts where the coefficient is undefined (fewer
    than 2 responses, constant reward or length) are counted in `undefined` and left out of the mean.
    """
    coefs = [pearson(r, ln) for r, ln in groups]
    ok = [c for c in coefs if c is not None]
    return {
        "mean": float(np.mean(ok)) if ok else None,
        "n": len(ok),
        "undefined": len(coefs) - len(ok),
        "coefficients": coefs,
    }


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Percentile bootstrap (1 - alpha) interval of `statistic` over resampled rows of `values`.

    Rows are resampled with replacement (a 2-D array keeps its columns together, e.g. preference and
    length difference). Seeded: the same inputs give the same interval. None for empty input.
    """
    arr = np.asarray(values, dtype=float)
    if arr.shape[0] == 0 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[0], size=(n_boot, arr.shape[0]))
    stats = np.array([statistic(arr[i]) for i in idx], dtype=float)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
