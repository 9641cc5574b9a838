"""The configured generation backend for a run: built the same way by the offline and online loops and by a
Ray actor (`evarl.cluster`), so every process samples from the same kind of generator."""

from __future__ import annotations

from typing import Any

from evarl.config import ConfigError, RunConfig
from evarl.generation import hf  # noqa: F401  (registers both transformers backends)
from evarl.generation.base import Generator
from evarl.generation.sharded import ShardedGenerator
from evarl.registry import BACKENDS


def make_generator(cfg: RunConfig, model_path: str, device: Any = None) -> Generator:
    """The configured backend on ``model_path``, on this process's device, sharded by prompt chunks."""
    g = cfg.generation
    if g.backend in ("hf", "hf-static"):
        gen: Any = BACKENDS.get(g.backend).from_path(
            model_path, g.dtype or cfg.model.dtype, g.batch_size, cfg.model.trust_remote_code, device=device
        )
        return ShardedGenerator(gen, g.chunk_prompts)

    backend = BACKENDS.get(g.backend)
    if hasattr(backend, "from_config"):
        return ShardedGenerator(backend.from_config(cfg, model_path), g.chunk_prompts)
    raise ConfigError([f"generation.backend: {g.backend!r} cannot be built from a config"])
