"""Generation backends: `hf` (transformers), `openai` (any OpenAI-compatible endpoint), `vllm` (lazy extra)."""

from evarl.generation import hf  # noqa: F401  (registers "hf")
from evarl.generation.base import Generator, GenOutput, SamplingParams

__all__ = ["GenOutput", "Generator", "SamplingParams"]

for _optional in ("evarl.generation.openai_api", "evarl.generation.vllm_backend"):
    try:
        __import__(_optional)
    except ModuleNotFoundError as _e:  # module not written yet or its extra not installed
        if _e.name != _optional and not _optional.startswith(str(_e.name)):
            raise
