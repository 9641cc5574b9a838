"""A reward source spread over the processes of a run by fixed prompt chunks (see :mod:`evarl.dist`).

Items are grouped by prompt: consecutive items with the same prompt id form one group, and a chunk holds
``chunk_prompts`` groups, so a prompt's sibling responses are always scored together (pairwise models and
judges that compare siblings see all of them). Chunk c is scored by rank ``c mod N``; every rank gets all
results in item order.
"""

from __future__ import annotations

from typing import Any

from evarl.dist import consecutive_groups, map_sharded
from evarl.types import Prompt, RewardResult


class ShardedReward:
    """Wraps a reward source (``score(prompts, responses)``); other attributes pass through."""

    def __init__(self, inner: Any, chunk_prompts: int) -> None:
        self.inner = inner
        self.chunk_prompts = chunk_prompts
        self.name = getattr(inner, "name", "reward")

    def __getattr__(self, key: str) -> Any:
        return getattr(self.inner, key)

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts for {len(responses)} responses")
        groups = consecutive_groups([p.id for p in prompts])

        def one(c: int, chunk: list[list[int]]) -> list[RewardResult]:
            idx = [i for g in chunk for i in g]
            return list(self.inner.score([prompts[i] for i in idx], [responses[i] for i in idx]))

        return map_sharded(groups, self.chunk_prompts, one)
