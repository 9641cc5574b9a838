"""Pairwise (PairRM-style) scoring sees all n siblings of a prompt in one call, whatever n and chunk size.

eva's informativeness (Ye et al. 2024, arXiv:2411.00062, §3.3.2) and a pairwise reward compare a prompt's n
responses with each other; a call that held only some of them would score against a subset.
"""

from __future__ import annotations

import pytest

from evarl.rewards.sharded import ShardedReward
from evarl.types import Prompt, RewardResult


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        self.calls.append([p.id for p in prompts])
        return [RewardResult(float(len(r))) for r in responses]


@pytest.mark.parametrize("n", [1, 2, 5, 6, 8])
@pytest.mark.parametrize("chunk_prompts", [1, 3, 16])
@pytest.mark.parametrize("num_prompts", [1, 7, 33])
def test_every_call_holds_whole_sibling_groups(n: int, chunk_prompts: int, num_prompts: int) -> None:
    prompts = [
        Prompt(id=f"p{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(num_prompts)
    ]
    flat = [p for p in prompts for _ in range(n)]
    responses = [f"{p.id}-{j}" * (j + 1) for p in prompts for j in range(n)]
    inner = Recorder()
    out = ShardedReward(inner, chunk_prompts).score(flat, responses)
    assert [r.score for r in out] == [float(len(r)) for r in responses]  # results in item order
    for call in inner.calls:
        for pid in set(call):
            assert call.count(pid) == n, (pid, call)  # all n siblings of every prompt in the call
        assert len(set(call)) <= chunk_prompts
    assert sum(len(c) for c in inner.calls) == len(flat)
