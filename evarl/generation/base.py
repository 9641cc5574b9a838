"""Generation backend protocol. The chat template is applied in exactly one place: inside each backend
(`hf` renders it with the model's tokenizer; `openai` sends the messages to the server, which renders it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96
    seed: int = 0


@dataclass
class GenOutput:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length"
    # Optional, filled by backends that have them (vllm): the sampled token ids (with the stop token when the
    # sample stopped on one; `num_tokens` never counts it) and, when asked for, each sampled token's log-prob
    # under the sampler (raw model distribution, before temperature / top-p). None elsewhere.
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


class Generator(Protocol):
    """Samples `params.n` responses for each conversation; output[i][j] is sample j of prompt i.

    Results must depend only on (conversation, params, position in the call), so that a stage that is
    resumed batch by batch reproduces an uninterrupted run.
    """

    name: str

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]: ...


@runtime_checkable
class Releasable(Protocol):
    """A generator that can give its accelerator memory back while the policy trains (vllm).

    The loop calls ``release()`` before a training stage and ``wake(path)`` after it, with the directory of the
    new checkpoint (``None``: the same weights as before). Backends without it (hf, openai) are simply rebuilt
    or left alone; ``isinstance(gen, Releasable)`` tells them apart.
    """

    def release(self) -> None: ...

    def wake(self, path: str | None = None) -> None: ...
