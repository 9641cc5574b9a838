"""Instruction-following accuracy in the IFEval protocol (Zhou et al., 2023, "Instruction-Following
Evaluation for Large Language Models"), on `if-verifiable`'s IFEval and IFBench checker registries.

IFBench (Pyatkin et al., 2025) reports the same four numbers over its own 58 checkers, so a file in IFBench's
format (`key`, `prompt`, `instruction_id_list`, `kwargs`) is evaluated by the same code; the per-instruction
breakdown tells the two apart by id (see `evarl.tasks.checkers`).

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

The sentence-based checkers use NLTK's punkt_tab and IFBench's stop-word checker NLTK's stop words;
`evarl.tasks.nltk_data` provides both offline. The case and language checkers use langdetect, which is random
unless seeded; it is seeded (0), so the same responses always get the same accuracies. A checker that raises on
a response counts as not followed, with the exception kept (`InstructionCheck.error`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from evarl.tasks.checkers import InstructionCheck, check_response
from evarl.types import Constraint, Prompt

__all__ = [
    "InstructionCheck",
    "benchmark_label",
    "by_benchmark",
    "check_prompt",
    "check_response",
    "evaluate_prompts",
    "ifeval_metrics",
    "per_instruction_accuracy",
]

METRIC_KEYS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")


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


BENCHMARK_LABELS = {"ifeval": "IFEval", "ifbench": "IFBench"}


def benchmark_label(results: Sequence[Sequence[InstructionCheck]]) -> str:
    """ "IFEval", "IFBench" or "IFEval+IFBench": whose checkers these results come from ("IFEval" if none)."""
    from evarl.tasks.checkers import benchmark_of

    names = {benchmark_of(c.instruction_id) for r in results for c in r}
    return "+".join(label for n, label in BENCHMARK_LABELS.items() if n in names) or "IFEval"


def by_benchmark(results: Sequence[Sequence[InstructionCheck]]) -> dict[str, dict[str, float | int | None]]:
    """The four accuracies per benchmark (pure given the registry): instruction level over that benchmark's
    instructions, prompt level over the instructions of that benchmark in each prompt (a prompt mixing both
    counts for each, on its own instructions)."""
    from evarl.tasks.checkers import benchmark_of

    out = {}
    for name in ("ifeval", "ifbench"):
        part = [[c for c in r if benchmark_of(c.instruction_id) == name] for r in results]
        if any(part):
            out[name] = ifeval_metrics(part)
    return out


def evaluate_prompts(prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
    """The four IFEval numbers plus the per-instruction breakdown for prompts with constraints."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    results = [check_prompt(p, r) for p, r in zip(prompts, responses)]
    return {
        **ifeval_metrics(results),
        "benchmark": benchmark_label(results),
        "by_benchmark": by_benchmark(results),
        "by_instruction": per_instruction_accuracy(results),
    }
