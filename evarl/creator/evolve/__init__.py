"""eva's `evolve` step: X_t = evolve(X_info) with any registered strategies (seed 001 §3.3.2 step 3, appendix F).

Importing this package registers every built-in strategy. `evolve_prompts` spreads `ctx.num_children` children
per parent over the configured methods: child k of parent p gets methods[(offset_p + k) % len(methods)], where
offset_p is drawn from (ctx.seed, p.id), so each parent's children cover the methods evenly, the assignment is
reproducible, and it does not depend on the order of the parents. Each method then evolves its slots in one
batch (one generate call per chain step).
"""

from __future__ import annotations

from dataclasses import replace

from evarl.creator.evolve import (  # noqa: F401  (registers the strategies)
    constraint,
    evol_complexity,
    evol_quality,
    evolinstruct,
    fewshot_selfinstruct,
    self_instruct,
    tree_bon,
    wizardlm,
)
from evarl.creator.evolve.base import EvolveContext, Evolver, SlotEvolver
from evarl.dist import stable_int
from evarl.registry import EVOLVERS
from evarl.types import Prompt

__all__ = ["EvolveContext", "Evolver", "SlotEvolver", "assign_methods", "evolve_prompts"]


def assign_methods(
    parents: list[Prompt], methods: list[str], num_children: int, seed: int
) -> dict[str, list]:
    """method -> [(parent, k), ...]: the deterministic spread of children over methods."""
    slots: dict[str, list] = {m: [] for m in methods}
    for p in parents:
        offset = stable_int(seed, "assign", p.id) % len(methods)
        for k in range(num_children):
            slots[methods[(offset + k) % len(methods)]].append((p, k))
    return slots


def _check_ctx(ctx: EvolveContext) -> None:
    for name in ("num_children", "chain_depth"):
        v = getattr(ctx, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            field = "num_evolutions" if name == "num_children" else name
            raise ValueError(f"creator.{field}: must be an integer >= 1, got {v!r}")
    if ctx.max_new_tokens < 1:
        raise ValueError(f"creator.max_new_tokens: must be >= 1, got {ctx.max_new_tokens}")
    if ctx.temperature < 0:
        raise ValueError(f"creator.temperature: must be >= 0, got {ctx.temperature}")


def evolve_prompts(parents: list[Prompt], methods: list[str], ctx: EvolveContext) -> list[Prompt]:
    """Children of `parents` (lineage filled in), grouped by method in the order of `methods`.

    Unusable creator outputs are returned too (empty text / meta["evolve_error"] / finish_reason "length"), so
    `apply_filters` counts them by reason.
    """
    if not methods:
        raise ValueError("creator.methods: at least one evolve method is needed")
    if len(set(methods)) != len(methods):
        raise ValueError(f"creator.methods: duplicate method names in {methods}")
    _check_ctx(ctx)
    if len({p.id for p in parents}) != len(parents):
        raise ValueError("parents: prompt ids must be unique")
    strategies = {m: EVOLVERS.get(m) for m in methods}
    out: list[Prompt] = []
    for m, slots in assign_methods(parents, methods, ctx.num_children, ctx.seed).items():
        if not slots:
            continue
        strat = strategies[m]() if isinstance(strategies[m], type) else strategies[m]
        if isinstance(strat, SlotEvolver):
            out.extend(strat.evolve_slots(slots, ctx))
        else:  # a third-party Evolver: call it per parent with that parent's child count
            counts: dict[str, int] = {}
            for p, _ in slots:
                counts[p.id] = counts.get(p.id, 0) + 1
            by_count: dict[int, list[Prompt]] = {}
            for p in parents:
                if p.id in counts:
                    by_count.setdefault(counts[p.id], []).append(p)
            for c, ps in sorted(by_count.items()):
                out.extend(strat.evolve(ps, replace(ctx, num_children=c)))
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            raise RuntimeError(f"evolve method {c.method!r} produced a duplicate prompt id {c.id!r}")
        seen.add(c.id)
    return out
