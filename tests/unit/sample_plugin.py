"""A plug-in module as a user writes one: a metric, a reward source and a loss, registered when it is imported.

A config names it (`plugins: [tests.unit.sample_plugin]`) and then uses `creator.metric: sample_spread`,
`reward.sources: [{name: sample_length}]` and `solver.loss: sample_hinge` like built-ins. `CALLS` counts how
often evarl called each, so tests/unit/test_plugins.py can assert they were used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evarl.registry import METRICS, REWARDS
from evarl.solver.losses import LossInputs, log_ratios, preference_loss, reward_metrics

CALLS = {"metric": 0, "reward": 0, "loss": 0}


@METRICS.register("sample_spread")
def sample_spread(rewards: Sequence[float]) -> float:
    """max - min of a prompt's rewards (a plug-in informativeness metric)."""
    CALLS["metric"] += 1
    return max(rewards) - min(rewards) if rewards else 0.0


@REWARDS.register("sample_length")
def sample_length(prompts: list[Any], responses: list[str]) -> list[float]:
    """Characters of the response / 100 (a plug-in reward function)."""
    CALLS["reward"] += 1
    return [len(r) / 100.0 for r in responses]


@preference_loss("sample_hinge", needs_reference=True)
def sample_hinge(inp: LossInputs, p: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinge on the DPO log-ratio margin: max(0, 1 - beta * h) (a plug-in preference loss)."""
    CALLS["loss"] += 1
    lc, lr = log_ratios(inp, "sample_hinge")
    loss = torch.relu(1.0 - p.beta * (lc - lr)).mean()
    return loss, reward_metrics(inp, p.beta * lc, p.beta * lr)
