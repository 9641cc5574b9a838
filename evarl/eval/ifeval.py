"""Instruction-following accuracy in the IFEval protocol (Zhou et al., 2023, "Instruction-Following
Evaluation for Large Language Models"), on `if-verifiable`'s IFEval checker registry.

IFEval's four numbers over a set of (prompt, response) with verifiable instructions:

- prompt-level strict: fraction of prompts whose response follows *every* instruction;
- instruction-level strict: passed instructions / all instructions, pooled over prompts (micro average);
- the loose variants: an instruction passes if any of IFEval's 8 response variants passes (the response with
  markdown `*` removed, and/or its first and/or last line dropped).

Checks are per instruction, with `if_verifiable.common.get_loose_transformations` and `strip_thinking`, so a
pass here is a pass there; `tests/unit/test_eval_ifeval.py` checks the agreement with
`if_verifiable.api.evaluate_output_for_sample`. Deviations from `if-verifiable`'s aggregate (both follow the
original IFEval evaluation code): an empty response fails all its instructions instead of contributing none,
and an unknown instruction id is an error naming it instead of being skipped silently.

The sentence-based checkers use NLTK's punkt_tab; `evarl.tasks.punkt.ensure_punkt` provides it offline. The
case and language checkers use langdetect, which is random unless seeded; it is seeded (0) here, so the same
responses always get the same accuracies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evarl.types import Constraint, Prompt

METRIC_KEYS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")


@dataclass(frozen=True)
class InstructionCheck:
    instruction_id: str
    strict: bool
    loose: bool


def _registry() -> dict[str, Any]:
    import langdetect
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    from evarl.tasks.punkt import ensure_punkt

    ensure_punkt()
    # The language and case checkers call langdetect, which samples at random unless seeded: short answers
    # would pass or fail from one call to the next. Seeded, every evaluation is reproducible.
    langdetect.DetectorFactory.seed = 0
    return INSTRUCTION_DICT


def check_response(
    prompt: str, response: str, instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any]]
) -> list[InstructionCheck]:
    """Strict and loose pass of every instruction for one response (one result per instruction, in order)."""
    from if_verifiable.common import get_loose_transformations, strip_thinking

    if len(kwargs) != len(instruction_ids):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs dicts")
    registry = _registry()
    unknown = [i for i in instruction_ids if i not in registry]
    if unknown:
        raise KeyError(f"unknown IFEval instruction id(s) {unknown}; see if_verifiable.ifeval registry")
    response = strip_thinking(response)
    if not response.strip():
        return [InstructionCheck(i, False, False) for i in instruction_ids]
    variants = get_loose_transformations(response)
    out = []
    for iid, kw in zip(instruction_ids, kwargs):
        checker = registry[iid](iid)
        checker.build_description(**{k: v for k, v in (kw or {}).items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=prompt)
        strict = bool(checker.check_following(response))
        loose = any(v.strip() and checker.check_following(v) for v in variants)
        out.append(InstructionCheck(iid, strict, bool(loose)))
    return out


def check_prompt(prompt: Prompt, response: str) -> list[InstructionCheck]:
    """IFEval checks of a response against an evarl Prompt's constraints (the last user turn as `prompt`, as
    the verifier reward does)."""
    cs: list[Constraint] = prompt.constraints
    return check_response(prompt.text, response, [c.id for c in cs], [c.kwargs for c in cs])


def ifeval_metrics(results: Sequence[Sequence[InstructionCheck]]) -> dict[str, float | int | None]:
    """IFEval's four accuracies from per-prompt instruction checks (pure).

    Prompts with no instructions are left out (they would pass the prompt-level test vacuously); the counts
    `n_prompts` and `n_instructions` say what was averaged. With no instruction at all every accuracy is None.
    """
    rows = [r for r in results if len(r) > 0]
    n_inst = sum(len(r) for r in rows)
    out: dict[str, float | int | None] = {"n_prompts": len(rows), "n_instructions": n_inst}
    if not rows:
        out.update({k: None for k in METRIC_KEYS})
        return out
    out["prompt_strict"] = sum(all(c.strict for c in r) for r in rows) / len(rows)
    out["prompt_loose"] = sum(all(c.loose for c in r) for r in rows) / len(rows)
    out["inst_strict"] = sum(c.strict for r in rows for c in r) / n_inst
    out["inst_loose"] = sum(c.loose for r in rows for c in r) / n_inst
    return out


def per_instruction_accuracy(results: Sequence[Sequence[InstructionCheck]]) -> dict[str, dict[str, float]]:
    """Strict/loose accuracy and count per instruction id (IFEval's per-instruction breakdown; pure)."""
    acc: dict[str, list[InstructionCheck]] = defaultdict(list)
    for r in results:
        for c in r:
            acc[c.instruction_id].append(c)
    return {
        iid: {
            "n": len(cs),
            "strict": sum(c.strict for c in cs) / len(cs),
            "loose": sum(c.loose for c in cs) / len(cs),
        }
        for iid, cs in sorted(acc.items())
    }


def evaluate_prompts(prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
    """The four IFEval numbers plus the per-instruction breakdown for prompts with constraints."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    results = [check_prompt(p, r) for p, r in zip(prompts, responses)]
    return {**ifeval_metrics(results), "by_instruction": per_instruction_accuracy(results)}
