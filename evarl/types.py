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


def assistant_text(value: Any) -> str:
    """The response text of a pair side: a plain string (evarl's old pairs.jsonl) or TRL's conversational
    completion, a message list whose last turn is the assistant's."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        if value[-1].get("role", "assistant") != "assistant":
            raise TypeError(f"the last message has role {value[-1].get('role')!r}, expected 'assistant'")
        return str(value[-1]["content"])
    raise TypeError(f"expected a string or a list of messages ending with the assistant's, got {value!r:.80}")


@dataclass
class Pair:
    """A preference pair plus the rewards that ordered it.

    In memory ``chosen`` / ``rejected`` are the two response texts. On disk (``pairs.jsonl``, :meth:`to_dict`) a
    pair is a row of TRL's conversational preference format, which ``trl.DPOTrainer`` and ``datasets`` read as
    is: ``prompt`` the message list, ``chosen`` / ``rejected`` ``[{"role": "assistant", "content": ...}]``, plus
    evarl's own fields (``prompt_id``, ``chosen_reward``, ``rejected_reward``, ``margin``, ``meta``).
    :meth:`from_dict` reads that and the older rows with plain-string ``chosen`` / ``rejected``.
    """

    prompt_id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def margin(self) -> float | None:
        """chosen_reward - rejected_reward, None when either is missing."""
        if self.chosen_reward is None or self.rejected_reward is None:
            return None
        return float(self.chosen_reward) - float(self.rejected_reward)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen"] = [{"role": "assistant", "content": self.chosen}]
        d["rejected"] = [{"role": "assistant", "content": self.rejected}]
        d["margin"] = self.margin
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        for side in ("chosen", "rejected"):
            if side in d:
                try:
                    d[side] = assistant_text(d[side])
                except TypeError as e:
                    raise TypeError(f"field {side!r}: {e}") from e
        return cls(**d)
