"""Tree best-of-N evolving (eva seed 001 §3 and Figure 11).

"Given a seed prompt, we uniformly sample evolving strategies [the ten appendix-F methods] to apply to it, which
results in multiple generations; we then proceed with the best one (e.g., by the complexity and quality scorer)
as the seed prompt for the next generation." Each node here expands `ctx.tree_width` candidates (one sample
each, method drawn uniformly per candidate), scores the usable ones with the appendix-E complexity and quality
rubrics (`evarl.creator.scoring`, judge = `ctx.judge` or the creator model) and keeps the candidate with the
highest mean score; candidates whose scores do not parse rank below scored ones, ties go to the lower index.
One child is emitted per level (every level if ctx.keep_intermediate). Unusable candidates (no text, or cut at
max_new_tokens) are never selected; if all are unusable the first is returned so the filters count it, and the
branch stops. meta["tree"] records every candidate's method and scores.
"""

from __future__ import annotations

import random

from evarl.creator.evolve.base import EvolveContext, SlotEvolver
from evarl.creator.evolve.common import generate_one, make_child, parse_rewrite, source_text
from evarl.creator.evolve.evolinstruct import EVOL_METHODS, render_method
from evarl.creator.scoring import combined_score, score_texts
from evarl.dist import stable_int
from evarl.generation.base import SamplingParams
from evarl.registry import EVOLVERS
from evarl.types import Prompt


def select_best(usable: list[bool], scores: list[float | None]) -> int | None:
    """Index of the best usable candidate: highest score, unscored below scored, ties to the lowest index."""
    best, key = None, None
    for i, (ok, s) in enumerate(zip(usable, scores)):
        if not ok:
            continue
        k = (s is not None, s if s is not None else 0.0)
        if key is None or k > key:
            best, key = i, k
    return best


@EVOLVERS.register("tree-bon")
class TreeBoN(SlotEvolver):
    """Tree best-of-N: several evolved candidates per node, continue from the best by complexity/quality."""

    name = "tree-bon"

    def evolve_slots(self, slots: list[tuple[Prompt, int]], ctx: EvolveContext) -> list[Prompt]:
        if ctx.tree_width < 1:
            raise ValueError(f"creator.tree_width: must be >= 1, got {ctx.tree_width}")
        judge = ctx.judge or ctx.generator
        out: list[Prompt] = []
        active = [(root, k, root) for root, k in slots]
        w = ctx.tree_width
        for step in range(1, ctx.chain_depth + 1):
            if not active:
                break
            methods: list[str] = []
            convs = []
            for root, k, prev in active:
                rng = random.Random(f"{ctx.seed}|{ctx.round}|{self.name}|{root.id}|{k}|{step}")
                for _ in range(w):
                    m = rng.choice(EVOL_METHODS)
                    methods.append(m)
                    convs.append([{"role": "user", "content": render_method(m, source_text(prev))}])
            params = SamplingParams(
                n=1,
                temperature=ctx.temperature,
                top_p=1.0,
                max_new_tokens=ctx.max_new_tokens,
                seed=stable_int(ctx.seed, ctx.round, self.name, step),
            )
            gens = generate_one(ctx.generator, convs, params)
            texts = [parse_rewrite(g.text) for g in gens]
            usable = [bool(t) and g.finish_reason != "length" for t, g in zip(texts, gens)]
            to_score = [i for i, ok in enumerate(usable) if ok]
            scored = score_texts([texts[i] for i in to_score], judge, stable_int(ctx.seed, ctx.round, step))
            scores: list[float | None] = [None] * len(texts)
            raw_scores: list[dict | None] = [None] * len(texts)
            for i, s in zip(to_score, scored):
                scores[i], raw_scores[i] = combined_score(s), s
            nxt = []
            for j, (root, k, prev) in enumerate(active):
                lo = j * w
                pick = select_best(usable[lo : lo + w], scores[lo : lo + w])
                c = lo + (pick if pick is not None else 0)
                tree = [
                    {"method": methods[i], "score": scores[i], "scores": raw_scores[i], "usable": usable[i]}
                    for i in range(lo, lo + w)
                ]
                child = make_child(
                    root,
                    texts[c],
                    method=self.name,
                    mutation=methods[c],
                    ctx_round=ctx.round,
                    k=k,
                    step=step,
                    prev=prev,
                    finish_reason=gens[c].finish_reason,
                    raw=gens[c].text,
                    error=None if texts[c] else "no usable text in creator output",
                    extra={"tree": tree, "tree_choice": c - lo},
                )
                ends = pick is None or step == ctx.chain_depth
                if ends or ctx.keep_intermediate:
                    out.append(child)
                if not ends:
                    nxt.append((root, k, child))
            active = nxt
        return out
