"""Generation backend protocol. The chat template is applied in exactly one place: inside each backend
(`hf` renders it with the model's tokenizer; `openai` sends the messages to the server, which renders it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class Generator(Protocol):
    """Samples `params.n` responses for each conversation; output[i][j] is sample j of prompt i.

    Results must depend only on (conversation, params, position in the call), so that a stage that is
    resumed batch by batch reproduces an uninterrupted run.
    """

    name: str

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]: ...
