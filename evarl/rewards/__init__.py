"""Reward sources: reward models, pairwise preference models, LLM judges, verifiers and shaping.

Importing this package registers every built-in source in `evarl.registry.REWARDS`:

- `verifier`   IFEval and IFBench checkers from `if-verifiable` (strict / loose), `evarl.rewards.verifier`
- `classifier` any sequence-classification reward model (ArmoRM-/Skywork-style, or one from `evarl train-rm`)
- `pairwise`   an LLM preference model P(a > b) in RLHFlow's [CONTEXT]/[RESPONSE A]/[RESPONSE B] format
- `judge`      LLM-as-a-judge with the additive 5-point prompt (self-reward or a teacher model/endpoint)
- `length`     shaping: -|y| in characters or tokens

`build_reward(cfg.reward, policy, policy_tokenizer, device)` turns a `RewardConfig` into one source that
returns the weighted sum minus the length penalty, with model-based sources on `device` (None = CPU); see
docs/rewards.md for the failure protocol and how to add a source.
"""

from __future__ import annotations

try:  # the lead's IFEval verifier; optional while it is being written
    from evarl.rewards import verifier  # noqa: F401  (registers "verifier")
except ModuleNotFoundError as _e:
    if _e.name != "evarl.rewards.verifier":
        raise

from evarl.rewards import classifier, judge, length, pairwise  # noqa: F401, E402  (register sources)
from evarl.rewards.base import RewardSource  # noqa: E402
from evarl.rewards.combine import CombinedReward, build_reward, build_source, summarize  # noqa: E402

__all__ = ["CombinedReward", "RewardSource", "build_reward", "build_source", "summarize"]
