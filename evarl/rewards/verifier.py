"""Verifiable reward: IFEval checkers from `if-verifiable` (RLVR-style exact reward for the default task).

reward = fraction of the prompt's constraints satisfied, under IFEval's strict or loose semantics (loose also
accepts the response with its first/last line or markdown asterisks removed). A prompt with no constraints
cannot be verified: its items are flagged failed, never scored 0.
"""

from __future__ import annotations

from evarl.registry import REWARDS
from evarl.tasks.constraints import check
from evarl.types import Prompt, RewardResult


@REWARDS.register("verifier")
class VerifierReward:
    """Fraction of IFEval constraints satisfied (mode: strict | loose)."""

    name = "verifier"

    def __init__(self, mode: str = "loose") -> None:
        if mode not in ("strict", "loose"):
            raise ValueError(f"verifier mode must be 'strict' or 'loose', got {mode!r}")
        self.mode = mode

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        out: list[RewardResult] = []
        for p, r in zip(prompts, responses, strict=True):
            if not p.constraints:
                out.append(RewardResult(0.0, failed=True, info={"reason": "no constraints to verify"}))
                continue
            res = check(p.constraints, p.text, r)
            passed = [(s if self.mode == "strict" else lo) for _, s, lo in res]
            out.append(
                RewardResult(
                    sum(passed) / len(passed),
                    info={"passed": {cid: bool(x) for (cid, _, _), x in zip(res, passed)}},
                )
            )
        return out
