"""A generator spread over the processes of a run (and, later, Ray actors) by fixed prompt chunks.

`ShardedGenerator.generate` cuts the conversations into chunks of ``chunk_prompts`` (fixed by the config, never
by the world size), gives chunk c the seed ``evarl.dist.chunk_seed(params.seed, c)`` and lets rank ``c mod N``
compute it; every rank gets all results in prompt order (see :mod:`evarl.dist`). So the evolve step, held-out
evaluation and any other caller that holds a generator is sharded without knowing it, and one process gives the
same samples as N. Inside a chunk (a judge that generates while its chunk is being scored) calls run locally.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from evarl.dist import chunk_seed, in_shard, map_sharded
from evarl.generation.base import Generator, GenOutput, SamplingParams


class ShardedGenerator:
    """Wraps any :class:`~evarl.generation.base.Generator`; attributes (``model``, ``tokenizer``) pass through."""

    def __init__(self, inner: Generator, chunk_prompts: int) -> None:
        self.inner = inner
        self.chunk_prompts = chunk_prompts
        self.name = inner.name

    def __getattr__(self, key: str) -> Any:  # model, tokenizer, ... of the wrapped generator
        return getattr(self.inner, key)

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        if in_shard():
            return self.inner.generate(conversations, params)

        def one(c: int, chunk: list[list[dict[str, str]]]) -> list[list[GenOutput]]:
            return self.inner.generate(chunk, replace(params, seed=chunk_seed(params.seed, c)))

        return map_sharded(conversations, self.chunk_prompts, one)
