"""Reward protocol: batched scoring of (prompt, response) lists.

Every source returns one `RewardResult` per item; an item a source cannot score (judge output that does not
parse, endpoint error) has `failed=True` and is excluded from aggregates and pairs, never scored 0.
"""

from __future__ import annotations

from typing import Protocol

from evarl.types import Prompt, RewardResult


class RewardSource(Protocol):
    name: str

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]: ...
