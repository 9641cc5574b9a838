"""Plain records passed between stages. Every stage reads and writes these as JSONL rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Constraint:
    """A verifiable constraint from the IFEval registry: checker id and its keyword arguments."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prompt:
    """A training or evaluation prompt with its lineage.

    `messages` is TRL's conversational prompt (the user turn(s)). For the default task `task` is the base task
    text and `constraints` the verifiable constraints whose descriptions were appended to it.
    """

    id: str
    messages: list[dict[str, str]]
    task: str = ""
    constraints: list[Constraint] = field(default_factory=list)
    category: str = ""
    parent_id: str | None = None
    method: str | None = None  # evolve method that produced it; None for seed prompts
    round: int = 0
    depth: int = 0  # number of evolutions from the seed prompt
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The last user turn."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return m.get("content", "")
        return ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        d = dict(d)
        d["constraints"] = [
            c if isinstance(c, Constraint) else Constraint(**c) for c in d.get("constraints") or []
        ]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Completion:
    """One sampled response to a prompt."""

    prompt_id: str
    index: int
    text: str
    num_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RewardResult:
    """The score of one (prompt, response). Failed items carry `failed=True` and are excluded downstream."""

    score: float
    failed: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scored:
    prompt_id: str
    index: int
    reward: float | None
    failed: bool = False
    components: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pair:
    """A preference pair in TRL's conversational format plus the rewards that ordered it."""

    prompt_id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
