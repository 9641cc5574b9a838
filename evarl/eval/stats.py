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


def mean_interval(values: Sequence[float], seed: int = 0, n_boot: int = 2000) -> dict:
    """Mean of ``values`` with its n and a 95% percentile-bootstrap interval: {"mean", "lo", "hi", "n"}.

    For per-prompt values (one number per held-out prompt) this is the interval over prompts. Empty input gives
    None fields; one value gives a degenerate interval.
    """
    a = np.asarray([float(v) for v in values], dtype=float)
    if a.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    ci = bootstrap_ci(a, n_boot=n_boot, seed=seed)
    lo, hi = ci if ci is not None else (None, None)
    return {"mean": float(a.mean()), "lo": lo, "hi": hi, "n": int(a.size)}


def ratio_interval(
    successes: Sequence[float], totals: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> dict:
    """sum(successes) / sum(totals) with a 95% interval from a bootstrap over clusters (rows).

    IFEval's instruction-level accuracy is such a ratio: a prompt (cluster) holds several instructions, so the
    prompts, not the instructions, are resampled. Returns {"mean", "lo", "hi", "n"} with n the number of clusters.
    """
    s = np.asarray(successes, dtype=float)
    t = np.asarray(totals, dtype=float)
    keep = t > 0
    s, t = s[keep], t[keep]
    if s.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    ci = bootstrap_ci(np.stack([s, t], axis=1), lambda m: m[:, 0].sum() / m[:, 1].sum(), n_boot, seed)
    lo, hi = ci if ci is not None else (None, None)
    return {"mean": float(s.sum() / t.sum()), "lo": lo, "hi": hi, "n": int(s.size)}


def paired_difference(
    new: dict[str, float], old: dict[str, float], seed: int = 0, n_boot: int = 2000
) -> dict:
    """Mean of new[k] - old[k] over the keys both hold (paired by prompt), with a 95% bootstrap interval.

    Returns {"diff", "lo", "hi", "n", "excludes_zero"}: ``excludes_zero`` says whether the interval excludes
    "no change" (None when there is no interval).
    """
    keys = sorted(set(new) & set(old))
    d = [float(new[k]) - float(old[k]) for k in keys]
    m = mean_interval(d, seed, n_boot)
    lo, hi = m["lo"], m["hi"]
    excl = None if lo is None else bool(lo > 0 or hi < 0)
    return {"diff": m["mean"], "lo": lo, "hi": hi, "n": m["n"], "excludes_zero": excl}


def fmt_interval(m: dict | None, digits: int = 3, key: str = "mean") -> str:
    """'0.412 [0.301, 0.522] (n=24)' for a mean_interval / ratio_interval / paired_difference dict."""
    if not m or m.get(key) is None:
        return "-"
    v = f"{m[key]:+.{digits}f}" if key == "diff" else f"{m[key]:.{digits}f}"
    if m.get("lo") is None:
        return f"{v} (n={m.get('n', 0)})"
    return f"{v} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}] (n={m['n']})"


def hierarchical_bootstrap(
    groups: Sequence[Sequence[float]], seed: int = 0, n_boot: int = 2000, alpha: float = 0.05
) -> dict:
    """Mean over groups of items (e.g. seeds x prompts) with a two-level percentile bootstrap interval.

    Each replicate resamples the groups (seeds) with replacement, then the items (prompts) within each drawn
    group, and takes the mean of the group means; the interval therefore carries both the seed-to-seed and the
    prompt-to-prompt variation. Returns {"mean", "lo", "hi", "n_groups", "n_items"} (n_items: the items of all
    groups); None fields when there is no item.
    """
    gs = [np.asarray([float(v) for v in g], dtype=float) for g in groups if len(g)]
    n_items = int(sum(g.size for g in gs))
    if not gs:
        return {"mean": None, "lo": None, "hi": None, "n_groups": 0, "n_items": 0}
    point = float(np.mean([g.mean() for g in gs]))
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot, dtype=float)
    for b in range(n_boot):
        pick = rng.integers(0, len(gs), size=len(gs))
        reps[b] = np.mean([gs[i][rng.integers(0, gs[i].size, size=gs[i].size)].mean() for i in pick])
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return {"mean": point, "lo": float(lo), "hi": float(hi), "n_groups": len(gs), "n_items": n_items}
