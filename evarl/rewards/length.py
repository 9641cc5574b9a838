"""Length shaping: r(x, y) = -|y|, in characters or in tokens of a named tokenizer.

Used on its own (as a weighted `length` source) or through `RewardConfig.length_penalty`, the
r - lambda * |y| penalty of RLHFlow (seed 003_62f5fe925a407d7a.txt, section 3.3: "it is relatively easier to
penalize the reward value with the length of the response") against the length bias of reward models and
judges. Token counts re-tokenize the decoded text, so any tokenizer can be used (never the policy's ids).
"""

from __future__ import annotations

from typing import Any

from evarl.config import RewardSourceConfig
from evarl.registry import REWARDS
from evarl.rewards.combine import UNITS, RewardBuildError, check_options, check_single_sample, response_length
from evarl.types import Prompt, RewardResult


@REWARDS.register("length")
class LengthReward:
    """Shaping: -|y| in characters (mode=chars) or tokens (mode=tokens; options.tokenizer or the policy's)."""

    name = "length"

    def __init__(self, unit: str = "chars", tokenizer: Any = None) -> None:
        if unit not in UNITS:
            raise RewardBuildError(f"length: mode must be one of {', '.join(UNITS)}, got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise RewardBuildError(
                "length: mode 'tokens' needs a tokenizer (options.tokenizer or the policy's)"
            )
        self.unit = unit
        self.tokenizer = tokenizer

    @classmethod
    def from_config(
        cls,
        cfg: RewardSourceConfig,
        *,
        policy: Any = None,
        policy_tokenizer: Any = None,
        device: Any = None,  # unused: no model; accepted like every built-in factory
    ) -> LengthReward:
        check_options("length", cfg.options, {"tokenizer"})
        check_single_sample("length", cfg)
        tok = policy_tokenizer
        if cfg.options.get("tokenizer"):
            from evarl.models.loading import load_tokenizer, resolve_model_path

            tok = load_tokenizer(resolve_model_path(str(cfg.options["tokenizer"])))
        return cls(cfg.mode or "chars", tok)

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        lengths = response_length(responses, self.unit, self.tokenizer)
        return [RewardResult(-float(n), info={"length": n, "unit": self.unit}) for n in lengths]
