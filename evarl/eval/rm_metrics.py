"""Reward-model evaluation metrics (pure functions over scores; no model code).

- `preference_accuracy`: fraction of (chosen, rejected) pairs with r(chosen) > r(rejected) (RewardBench;
  ties count 1/2), and `per_category_accuracy` / `rewardbench_sections` on RewardBench-format rows
  ({"prompt", "chosen", "rejected", "subset"}).
- Ranking metrics of seed 002_f89dd5ef30dd671f.txt, section 4.1.2 / Table 2, for prompts with several responses
  and a reference ranking (higher reference score = better): pairwise order accuracy, 5-best % (how often a
  response the model scores a perfect max_score is the reference's best), top-1 accuracy (the model's best
  response is the reference's best; "best of 5 ranked first" when 5 responses are given), exact ordering
  match, Spearman and Kendall tau-b, per prompt (mean over prompts) and pooled.
- `length_correlation`: the reward-length Pearson correlation per prompt of seed 003_62f5fe925a407d7a.txt,
  Figure 3, with the mean over prompts and the per-bucket means by mean response length.

Conventions: reference ties are not scored as pairs; prediction ties on a reference-ordered pair count 1/2
(random tie-break expectation). Correlations undefined for a prompt (a constant vector) are skipped and
counted in `n_undefined`, never taken as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# RewardBench (Lambert et al., 2024) subset -> section
REWARDBENCH_SECTIONS: dict[str, str] = {
    **{s: "chat" for s in ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy",
                            "mt-bench-med")},
    **{s: "chat_hard" for s in ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor",
                                 "llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual")},
    **{s: "safety" for s in ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse",
                              "xstest-should-respond", "donotanswer")},
    **{s: "reasoning" for s in ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python",
                                 "hep-rust")},
}  # fmt: skip


def _arr(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of scores, got shape {a.shape}")
    return a


def _check_groups(pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> None:
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predicted groups but {len(ref)} reference groups")
    for k, (p, r) in enumerate(zip(pred, ref)):
        if len(p) != len(r):
            raise ValueError(f"group {k}: {len(p)} predicted scores but {len(r)} reference scores")


# ------------------------------------------------------------------ chosen / rejected pairs


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float], tie: float = 0.5) -> float:
    """Fraction of pairs with r(chosen) > r(rejected); a tie counts `tie`."""
    c, r = _arr(chosen), _arr(rejected)
    if len(c) != len(r):
        raise ValueError(f"{len(c)} chosen scores but {len(r)} rejected scores")
    if len(c) == 0:
        raise ValueError("preference_accuracy of zero pairs is undefined")
    return float(np.mean(np.where(c > r, 1.0, np.where(c == r, tie, 0.0))))


def per_category_accuracy(
    chosen: Sequence[float], rejected: Sequence[float], categories: Sequence[str], tie: float = 0.5
) -> dict[str, dict[str, float | int]]:
    """{category: {"accuracy", "n"}} for RewardBench-style `subset` labels."""
    if not len(chosen) == len(rejected) == len(categories):
        raise ValueError("chosen, rejected and categories must have the same length")
    out: dict[str, dict[str, float | int]] = {}
    for cat in sorted(set(categories)):
        idx = [i for i, c in enumerate(categories) if c == cat]
        out[cat] = {
            "accuracy": preference_accuracy([chosen[i] for i in idx], [rejected[i] for i in idx], tie),
            "n": len(idx),
        }
    return out


def rewardbench_sections(per_subset: dict[str, dict[str, float | int]]) -> dict[str, float]:
    """Example-weighted accuracy per RewardBench section (chat, chat_hard, safety, reasoning) and their mean.

    Deviation: RewardBench weights the reasoning section's math and code halves equally; this weights every
    example equally. Subsets outside the RewardBench map are ignored here (they stay in `per_subset`).
    """
    acc: dict[str, list[float]] = {}
    for subset, d in per_subset.items():
        section = REWARDBENCH_SECTIONS.get(subset)
        if section is None:
            continue
        acc.setdefault(section, []).extend([float(d["accuracy"])] * int(d["n"]))
    out = {s: float(np.mean(v)) for s, v in sorted(acc.items())}
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


# ------------------------------------------------------------------ ranking metrics


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Average ranks (1-based), ties get the mean of their ranks (as scipy.stats.rankdata)."""
    a = _arr(x)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either vector is constant or has fewer than 2 items."""
    a, b = _arr(x), _arr(y)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} values")
    if len(a) < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float((da * db).sum() / den) if den > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when undefined."""
    return pearson(rankdata(x), rankdata(y))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b (handles ties, as scipy.stats.kendalltau's default); NaN when undefined."""
    a, b = _arr(x), _arr(y)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} values")
    n = len(a)
    if n < 2:
        return math.nan
    i, j = np.triu_indices(n, k=1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    s = float((sa * sb).sum())
    n1, n2 = float((sa != 0).sum()), float((sb != 0).sum())
    if n1 == 0 or n2 == 0:
        return math.nan
    return s / math.sqrt(n1 * n2)


def pairwise_order_accuracy(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]], tie: float = 0.5
) -> dict[str, float | int]:
    """Over every within-prompt pair the reference orders: fraction the prediction orders the same way."""
    _check_groups(pred, ref)
    total, hits = 0, 0.0
    for p, r in zip(pred, ref):
        pa, ra = _arr(p), _arr(r)
        i, j = np.triu_indices(len(pa), k=1)
        rs = np.sign(ra[i] - ra[j])
        ps = np.sign(pa[i] - pa[j])
        keep = rs != 0
        total += int(keep.sum())
        hits += float(np.where(ps[keep] == rs[keep], 1.0, np.where(ps[keep] == 0, tie, 0.0)).sum())
    return {"accuracy": hits / total if total else math.nan, "n_pairs": total}


def top1_accuracy(pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> dict[str, float | int]:
    """How often the response the model ranks first is (one of) the reference's best. Ties in the model's
    maximum count fractionally (the chance a random tie-break picks a reference-best one)."""
    _check_groups(pred, ref)
    hits, n = 0.0, 0
    for p, r in zip(pred, ref):
        pa, ra = _arr(p), _arr(r)
        if len(pa) < 2 or np.all(ra == ra[0]):
            continue
        top = np.flatnonzero(pa == pa.max())
        hits += float(np.mean(ra[top] == ra.max()))
        n += 1
    return {"accuracy": hits / n if n else math.nan, "n_prompts": n}


def five_best(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]], max_score: float = 5.0
) -> dict[str, float | int]:
    """Seed 002's 5-best %: of the responses the model gives a perfect `max_score`, the fraction that are
    the reference's highest-ranked response of their prompt. NaN when the model gives no perfect score."""
    _check_groups(pred, ref)
    hits, n = 0, 0
    for p, r in zip(pred, ref):
        pa, ra = _arr(p), _arr(r)
        for k in np.flatnonzero(pa >= max_score):
            n += 1
            hits += int(ra[k] == ra.max())
    return {"accuracy": hits / n if n else math.nan, "n_perfect": n}


def exact_match(pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> dict[str, float | int]:
    """Fraction of prompts whose total order is identical: every pair has the same sign (ties included)."""
    _check_groups(pred, ref)
    hits, n = 0, 0
    for p, r in zip(pred, ref):
        pa, ra = _arr(p), _arr(r)
        if len(pa) < 2:
            continue
        i, j = np.triu_indices(len(pa), k=1)
        n += 1
        hits += int(np.array_equal(np.sign(pa[i] - pa[j]), np.sign(ra[i] - ra[j])))
    return {"accuracy": hits / n if n else math.nan, "n_prompts": n}


def rank_correlations(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]
) -> dict[str, float | int]:
    """Spearman and Kendall tau-b: mean over prompts (undefined ones skipped and counted) and pooled."""
    _check_groups(pred, ref)
    sp, kt = [], []
    for p, r in zip(pred, ref):
        sp.append(spearman(p, r))
        kt.append(kendall_tau(p, r))
    sp_ok = [v for v in sp if math.isfinite(v)]
    kt_ok = [v for v in kt if math.isfinite(v)]
    flat_p = [v for g in pred for v in g]
    flat_r = [v for g in ref for v in g]
    return {
        "spearman": float(np.mean(sp_ok)) if sp_ok else math.nan,
        "kendall_tau": float(np.mean(kt_ok)) if kt_ok else math.nan,
        "spearman_pooled": spearman(flat_p, flat_r) if len(flat_p) >= 2 else math.nan,
        "kendall_tau_pooled": kendall_tau(flat_p, flat_r) if len(flat_p) >= 2 else math.nan,
        "n_prompts": len(pred),
        "n_undefined": len(pred) - len(sp_ok),
    }


def ranking_report(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]], max_score: float | None = None
) -> dict[str, Any]:
    """All ranking metrics of seed 002 Table 2 in one dict (5-best only when `max_score` is given)."""
    out: dict[str, Any] = {
        "pairwise_accuracy": pairwise_order_accuracy(pred, ref),
        "top1": top1_accuracy(pred, ref),
        "exact_match": exact_match(pred, ref),
        **rank_correlations(pred, ref),
    }
    if max_score is not None:
        out["five_best"] = five_best(pred, ref, max_score)
    return out


# ------------------------------------------------------------------ length bias


def length_correlation(
    lengths: Iterable[Sequence[float]],
    rewards: Iterable[Sequence[float]],
    buckets: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Per-prompt Pearson correlation between response length and reward (seed 003 Figure 3).

    Returns the per-prompt coefficients (NaN where undefined), their mean over defined prompts, and when
    `buckets` (ascending mean-length edges) is given, the mean coefficient per mean-length bucket.
    """
    L, R = list(lengths), list(rewards)
    if len(L) != len(R):
        raise ValueError(f"{len(L)} length groups but {len(R)} reward groups")
    coefs = [pearson(lg, rg) for lg, rg in zip(L, R)]
    ok = [c for c in coefs if math.isfinite(c)]
    out: dict[str, Any] = {
        "per_prompt": coefs,
        "mean": float(np.mean(ok)) if ok else math.nan,
        "n_prompts": len(coefs),
        "n_undefined": len(coefs) - len(ok),
    }
    if buckets is not None:
        edges = list(buckets)
        table: dict[str, list[float]] = {}
        for lg, c in zip(L, coefs):
            if not math.isfinite(c):
                continue
            m = float(np.mean(lg))
            k = int(np.searchsorted(edges, m, side="right"))
            lo = "-inf" if k == 0 else f"{edges[k - 1]:g}"
            hi = "inf" if k == len(edges) else f"{edges[k]:g}"
            table.setdefault(f"[{lo}, {hi})", []).append(c)
        out["by_mean_length"] = {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in table.items()}
    return out


# ------------------------------------------------------------------ ranking metrics with intervals


RANKING_METRICS = ("pairwise_accuracy", "five_best", "exact_match", "top1", "spearman", "kendall_tau")


def _ranking_values(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]], max_score: float | None
) -> dict[str, tuple[float, int]]:
    """metric -> (value, n) over the given groups (n: pairs, perfect scores or prompts, as each metric counts)."""
    pa, em, t1 = pairwise_order_accuracy(pred, ref), exact_match(pred, ref), top1_accuracy(pred, ref)
    out: dict[str, tuple[float, int]] = {
        "pairwise_accuracy": (float(pa["accuracy"]), int(pa["n_pairs"])),
        "exact_match": (float(em["accuracy"]), int(em["n_prompts"])),
        "top1": (float(t1["accuracy"]), int(t1["n_prompts"])),
    }
    rc = rank_correlations(pred, ref)
    n_def = int(rc["n_prompts"]) - int(rc["n_undefined"])
    out["spearman"] = (float(rc["spearman"]), n_def)
    out["kendall_tau"] = (float(rc["kendall_tau"]), n_def)
    if max_score is not None:
        fb = five_best(pred, ref, max_score)
        out["five_best"] = (float(fb["accuracy"]), int(fb["n_perfect"]))
    return out


def ranking_report_with_intervals(
    pred: Sequence[Sequence[float]],
    ref: Sequence[Sequence[float]],
    max_score: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Seed 002 Table 2's reward-modelling metrics against a reference ranking, each as {"value", "n", "lo", "hi"}:
    pairwise accuracy (n = reference-ordered pairs), 5-best % (n = responses scored a perfect `max_score`; only
    with `max_score`), exact ordering match, top-1 (n = prompts), Spearman and Kendall tau-b (mean over prompts
    where defined; n = those prompts). The interval is a seeded percentile bootstrap over prompts (groups are
    resampled whole, so within-prompt pairs stay together); NaN values of a resample are skipped."""
    _check_groups(pred, ref)
    point = _ranking_values(pred, ref, max_score)
    k = len(pred)
    boots: dict[str, list[float]] = {m: [] for m in point}
    if k and n_boot > 0:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            idx = rng.integers(0, k, size=k)
            vals = _ranking_values([pred[i] for i in idx], [ref[i] for i in idx], max_score)
            for m, (v, _) in vals.items():
                if math.isfinite(v):
                    boots[m].append(v)
    out: dict[str, Any] = {"n_prompts": k, "confidence": 1 - alpha, "bootstrap_samples": n_boot, "seed": seed}
    for m, (v, n) in point.items():
        lo = hi = None
        if boots[m] and math.isfinite(v):
            lo, hi = (float(x) for x in np.quantile(boots[m], [alpha / 2, 1 - alpha / 2]))
        out[m] = {"value": v if math.isfinite(v) else None, "n": n, "lo": lo, "hi": hi}
    return out
