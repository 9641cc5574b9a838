"""Evolve-method protocol (eva's creator: X_t = evolve(X_info)).

An evolver takes the sampled informative parents and returns children with lineage filled in
(parent_id, method, round, depth). It uses `ctx.generator` as the creator model, whatever backend that is.

Built-in strategies derive from `SlotEvolver`: they evolve a list of *slots* (parent, child index k), so that
`evolve_prompts` can spread a parent's children over several methods and still give every child a unique,
deterministic id. A third-party evolver only needs `name` and `evolve(parents, ctx)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from evarl.generation.base import Generator
from evarl.types import Prompt


@dataclass
class EvolveContext:
    generator: Generator  # the creator model (the policy by default)
    round: int
    seed: int
    temperature: float = 0.7
    max_new_tokens: int = 96
    num_children: int = 1  # children per parent
    chain_depth: int = 1  # successive evolutions per child
    options: dict[str, Any] = field(default_factory=dict)
    # Every step of a chain becomes a child (distilabel's store_evolutions=True, as eva used); False keeps
    # only the last step of each chain.
    keep_intermediate: bool = True
    tree_width: int = 3  # tree-bon: candidates per node (Figure 11)
    judge: Generator | None = None  # tree-bon scorer; None = the creator model itself
    max_constraints: int = 6  # constraint evolver: at this many it changes a constraint instead of adding
    checkers: str = "ifeval"  # constraint evolver: the pool new constraints come from (task.checkers)

    @classmethod
    def from_config(
        cls,
        c: Any,
        generator: Generator,
        round: int,
        seed: int,
        judge: Generator | None = None,
        checkers: str = "ifeval",
    ) -> EvolveContext:
        """The context for a `CreatorConfig` (every creator field the strategies read comes from it)."""
        return cls(
            generator=generator,
            round=round,
            seed=seed,
            temperature=c.temperature,
            max_new_tokens=c.max_new_tokens,
            num_children=c.num_evolutions,
            chain_depth=c.chain_depth,
            keep_intermediate=c.keep_intermediate,
            tree_width=c.tree_width,
            judge=judge,
            max_constraints=c.max_constraints,
            checkers=checkers,
        )


class Evolver(Protocol):
    name: str

    def evolve(self, parents: list[Prompt], ctx: EvolveContext) -> list[Prompt]: ...


class SlotEvolver:
    """Base class of the built-in strategies: `evolve` = `evolve_slots` over (parent, k) for k < num_children."""

    name: str = ""

    def evolve(self, parents: list[Prompt], ctx: EvolveContext) -> list[Prompt]:
        return self.evolve_slots([(p, k) for p in parents for k in range(ctx.num_children)], ctx)

    def evolve_slots(self, slots: list[tuple[Prompt, int]], ctx: EvolveContext) -> list[Prompt]:
        raise NotImplementedError
