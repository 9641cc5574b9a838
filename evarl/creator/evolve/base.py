"""Evolve-method protocol (eva's creator: X_t = evolve(X_info)).

An evolver takes the sampled informative parents and returns children with lineage filled in
(parent_id, method, round, depth). It uses `ctx.generator` as the creator model, whatever backend that is.
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


class Evolver(Protocol):
    name: str

    def evolve(self, parents: list[Prompt], ctx: EvolveContext) -> list[Prompt]: ...
