"""Mixing evolved prompts with original ones into the next prompt set (eva seed 000 / 001 appendix A).

eva "uniformly select[s] 80% prompts from this evolved dataset and 20% from the original dataset (i.e., the
buffer)"; its code does `shuffle(seed=42).select(int(len * ratio))` on each part. Here `ratio` is the evolved
fraction of the result and the selection is a seeded uniform subset of each part, kept in input order (evolved
first, then originals) so the file reads in lineage order.

Size of the result:
- `total` given: round(total x ratio) evolved and the rest originals; a part that is too small is topped up
  from the other, and the result is capped at what is available.
- `total` None: every evolved prompt is kept and originals are added to reach the ratio,
  round(len(evolved) x (1 - ratio) / ratio), capped by the originals available (ratio 0 = originals only).
- no evolved prompt at all (e.g. every child was filtered): the originals are returned, so a round never
  starts from an empty set.
Originals whose id is also among the evolved prompts are skipped.
"""

from __future__ import annotations

import random

from evarl.types import Prompt


def _subset(items: list[Prompt], k: int, rng: random.Random) -> list[Prompt]:
    if k >= len(items):
        return list(items)
    keep = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in keep]


def _round(x: float) -> int:
    return int(x + 0.5)


def mix_prompts(
    evolved: list[Prompt],
    originals: list[Prompt],
    ratio: float = 0.8,
    seed: int = 0,
    total: int | None = None,
) -> list[Prompt]:
    """The next prompt set: ~`ratio` evolved and ~(1 - ratio) originals (see the module docstring)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"creator.mix_ratio: must be a number in [0, 1], got {ratio!r}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"total: must be a non-negative integer or None, got {total!r}")
    evolved_ids = {p.id for p in evolved}
    originals = [p for p in originals if p.id not in evolved_ids]
    rng = random.Random(f"mix|{seed}")
    if not evolved:
        n_e, n_o = 0, len(originals) if total is None else min(total, len(originals))
    elif total is None:
        if ratio == 0.0:
            n_e, n_o = 0, len(originals)
        else:
            n_e = len(evolved)
            n_o = min(len(originals), _round(n_e * (1.0 - ratio) / ratio))
    else:
        want_e = _round(total * ratio)
        n_e = min(len(evolved), want_e)
        n_o = min(len(originals), total - n_e)
        n_e = min(len(evolved), total - n_o)  # top up with evolved if the originals ran short
    chosen_e = _subset(evolved, n_e, rng)
    chosen_o = _subset(originals, n_o, rng)
    return chosen_e + chosen_o
