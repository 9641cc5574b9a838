"""The creator step on real local models: estimate -> sample -> evolve -> filter -> mix, with lineage and counts.

SmolLM2-135M-Instruct (the embedded default creator) evolves two real default-task prompts; the tiny random
Llama covers every registered strategy and the judge path quickly. Generations are kept to a few tokens: the
point is the plumbing (batching, parsing, lineage, filter counts), not the quality of a 135M creator.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from evarl.creator.evolve import EvolveContext, evolve_prompts
from evarl.creator.filters import apply_filters
from evarl.creator.informativeness import informativeness
from evarl.creator.mixing import mix_prompts
from evarl.creator.sampling import sample_prompts
from evarl.creator.scoring import curriculum_stats, score_prompts
from evarl.generation.hf import HFGenerator
from evarl.registry import EVOLVERS
from evarl.tasks.constraints import build_prompt_text
from evarl.tasks.default import train_prompts

FILTERS = ["empty", "truncated", "copy", "leak", "length", "exact_dup"]


def _check_lineage(kids, parents, round_: int) -> None:
    by_id = {p.id: p for p in parents}
    assert len({k.id for k in kids}) == len(kids)
    for k in kids:
        root = by_id[k.parent_id]
        assert k.round == round_ and k.depth == root.depth + k.meta["chain_step"]
        assert k.category == root.category and k.id.startswith(f"{root.id}-r{round_}-{k.method}-")
        assert k.meta["finish_reason"] in ("stop", "length")
        if k.task:  # default task: the text states exactly the constraints the verifier checks
            assert k.text == build_prompt_text(k.task, k.constraints)


@pytest.mark.slow
def test_creator_step_with_smollm2(smollm2_dir: Path) -> None:
    gen = HFGenerator.from_path(str(smollm2_dir), batch_size=8)
    seeds = train_prompts(4, seed=0)
    # estimate (hand-set rewards standing in for the solver's scored responses) and sample half
    rewards = {p.id: [0.0, 1.0, 0.5] if i % 2 else [1.0, 1.0, 1.0] for i, p in enumerate(seeds)}
    info = informativeness("a_min", rewards)
    chosen = sample_prompts("weighted", info, 0.5, seed=0)
    assert len(chosen) == 2
    parents = [p for p in seeds if p.id in chosen]
    ctx = EvolveContext(generator=gen, round=1, seed=0, temperature=0.7, max_new_tokens=24, num_children=2)
    kids = evolve_prompts(parents, ["evolinstruct", "constraint"], ctx)
    assert Counter(k.method for k in kids) == {"evolinstruct": 2, "constraint": 2}
    _check_lineage(kids, parents, 1)
    llm = [k for k in kids if k.method == "evolinstruct"]
    assert all(k.meta["raw"] is not None and k.constraints == by.constraints
               for k, by in ((k, next(p for p in parents if p.id == k.parent_id)) for k in llm))  # fmt: skip
    kept, dropped = apply_filters(kids, seeds, FILTERS, 1200, 0.95)
    assert set(dropped) == set(FILTERS) and len(kept) + sum(dropped.values()) == len(kids)
    # the constraint children keep the task, change the constraints, and survive the filters
    assert sum(k.method == "constraint" for k in kept) == 2
    mixed = mix_prompts(kept, seeds, 0.8, seed=0)
    assert mixed[: len(kept)] == kept and len(mixed) >= len(kept)
    stats = curriculum_stats(mixed, info, None)
    assert stats["num_prompts"] == len(mixed) and stats["methods"].get("constraint") == 2


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.from_path(str(tiny_model_dir), batch_size=16)


def test_every_strategy_runs_on_a_real_model(tiny: HFGenerator) -> None:
    parents = train_prompts(2, seed=3)
    methods = [m for m in EVOLVERS.names() if m in _BUILTIN]
    assert set(methods) == _BUILTIN
    ctx = EvolveContext(
        generator=tiny, round=2, seed=1, max_new_tokens=4, num_children=len(methods), tree_width=2
    )
    kids = evolve_prompts(parents, methods, ctx)
    _check_lineage(kids, parents, 2)
    # each parent got exactly one child per method
    assert Counter((k.parent_id, k.method) for k in kids) == {(p.id, m): 1 for p in parents for m in methods}
    kept, dropped = apply_filters(kids, parents, FILTERS, 400, 0.95)
    assert len(kept) + sum(dropped.values()) == len(kids)
    # 4 new tokens from a random model: most LLM rewrites are cut at max_new_tokens and counted as truncated
    assert dropped["truncated"] > 0

    # chains and determinism end to end on the real backend (two methods keep it quick)
    chained = EvolveContext(generator=tiny, round=2, seed=1, max_new_tokens=4, num_children=2, chain_depth=2)
    a = evolve_prompts(parents, ["evolinstruct", "constraint"], chained)
    assert [k.to_dict() for k in a] == [
        k.to_dict() for k in evolve_prompts(parents, ["evolinstruct", "constraint"], chained)
    ]
    assert max(k.meta["chain_step"] for k in a if k.method == "constraint") == 2


def test_scoring_with_a_real_judge(tiny: HFGenerator) -> None:
    ps = train_prompts(2, seed=5)
    scores = score_prompts(ps, tiny, seed=0, max_new_tokens=4)
    assert [s["prompt_id"] for s in scores] == [p.id for p in ps]
    for s in scores:  # a random model rarely says a number: failures are None, never a made-up score
        assert all(s[a] is None or 1 <= s[a] <= 5 for a in ("complexity", "quality"))
    st = curriculum_stats(ps, {p.id: 1.0 for p in ps}, scores)
    assert st["scored"] == 2 and st["complexity_failed"] + st["quality_failed"] <= 4


_BUILTIN = {
    "evolinstruct", "persona", "shift-in", "shift-out", "mix", "abstract", "constraints", "deepening",
    "concretizing", "reasoning", "expansion", "evolquality", "evolcomplexity", "selfinstruct", "tree-bon",
    "constraint",
}  # fmt: skip
