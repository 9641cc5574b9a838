"""Verifiable reward: IFEval and IFBench checkers from `if-verifiable` (RLVR-style exact reward).

reward = fraction of the prompt's constraints satisfied, under IFEval's strict or loose semantics (loose also
accepts the response with its first/last line or markdown asterisks removed). Constraint ids may come from
either benchmark (`evarl.tasks.checkers`). A prompt with no constraints cannot be verified: its items are
flagged failed, never scored 0. A checker that raises on a response counts that constraint as not satisfied;
the exception is kept in the item's info["errors"].
"""

from __future__ import annotations

from evarl.registry import REWARDS
from evarl.tasks.checkers import check_response
from evarl.types import Prompt, RewardResult


@REWARDS.register("verifier")
class VerifierReward:
    """Fraction of IFEval/IFBench constraints satisfied (mode: strict | loose)."""

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
            cs = p.constraints
            res = check_response(p.text, r, [c.id for c in cs], [c.kwargs for c in cs])
            passed = [(x.strict if self.mode == "strict" else x.loose) for x in res]
            info: dict[str, object] = {"passed": {x.instruction_id: bool(ok) for x, ok in zip(res, passed)}}
            errors = {x.instruction_id: x.error for x in res if x.error}
            if errors:
                info["errors"] = errors
            out.append(RewardResult(sum(passed) / len(passed), info=info))
        return out
