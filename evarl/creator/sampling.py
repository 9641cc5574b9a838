"""Picking the informative subset X_info that the creator evolves (eva's `sample` step).

eva (seed 000 Algorithm 1, appendix A; seed 001 §3.3.2 step 2) draws a 25% subset "w.p. ∝ info(x)" by weighted
sampling without replacement (pandas `df.sample(n, weights, replace=False)` in the eva code); Table 4's
"sample vs greedy" arm takes the top-k instead. Registered samplers:

    weighted   successive weighted draws without replacement, weights from `to_weights` (seeded numpy)
    greedy     top-k by informativeness, ties broken by prompt id (ascending)

Both are pure functions of (ids, values, k, seed). Prompt ids are sorted before sampling so the result does not
depend on the order of the `info` dict. The subset size is k = round_half_up(fraction x n), at least 1 and at
most n.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from evarl.creator.informativeness import to_weights
from evarl.registry import SAMPLERS

Sampler = Callable[[Sequence[str], Sequence[float], int, int], list[str]]


@SAMPLERS.register("weighted")
def weighted(ids: Sequence[str], values: Sequence[float], k: int, seed: int) -> list[str]:
    """Weighted sampling without replacement, probability ∝ informativeness (eva's default)."""
    if k > len(ids):
        raise ValueError(f"k: cannot draw {k} prompts without replacement from {len(ids)}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ids), size=k, replace=False, p=to_weights(values))
    return [ids[int(i)] for i in idx]


@SAMPLERS.register("greedy")
def greedy(ids: Sequence[str], values: Sequence[float], k: int, seed: int) -> list[str]:
    """Greedy top-k by informativeness; ties broken by prompt id (the seed is not used)."""
    order = sorted(range(len(ids)), key=lambda i: (-float(values[i]), ids[i]))
    return [ids[i] for i in order[:k]]


def subset_size(n: int, fraction: float) -> int:
    """round_half_up(fraction x n), clamped to [1, n] (0 when n is 0)."""
    if n == 0:
        return 0
    return min(n, max(1, math.floor(fraction * n + 0.5)))


def sample_prompts(sampler: str, info: dict[str, float], fraction: float = 0.25, seed: int = 0) -> list[str]:
    """Ids of the informative subset, in draw order (best first for greedy)."""
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"creator.sample_fraction: must be a number in [0, 1], got {fraction!r}")
    fn: Sampler = SAMPLERS.get(sampler)
    ids = sorted(info)
    values = [float(info[i]) for i in ids]
    for pid, v in zip(ids, values):
        if not math.isfinite(v):
            raise ValueError(f"info[{pid!r}]: informativeness must be finite, got {v}")
    k = subset_size(len(ids), fraction)
    if k == 0:
        return []
    out = fn(ids, values, k, seed)
    if len(out) != k or len(set(out)) != k:
        raise RuntimeError(
            f"sampler {sampler!r} returned {len(out)} ids ({len(set(out))} unique), expected {k}"
        )
    return out
