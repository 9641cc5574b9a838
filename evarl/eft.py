"""Evaluation fine-tuning (EFT) data: judge-prompt -> judgement SFT examples for the self-rewarding pipeline.

Paper: "Exploring Self-Learning and Teacher-Guided Paradigms in LM Alignment" (the self-reward / teacher-reward /
teacher-demonstration study on Phi-2), §3.1.1: M_1 is fine-tuned on instruction data (IFT) *and* on evaluation
examples (EFT), "evaluation instruction prompt and evaluation result response", so the model can act as the
5-point judge of its own responses (§3.1.2 step 3, Figure 4).

A row ``{"prompt", "response", "score", "rationale"}`` becomes one :class:`evarl.solver.sft.SFTExample`: the prompt
is the judge prompt the ``judge`` reward source sends (``evarl/prompts/judge/additive_5point.txt`` by default,
filled with the prompt and the response exactly as the judge fills it), the target the judgement the judge should
emit: the rationale, then ``Score: <score>``. The target is checked to parse back to its score with the judge's
own parser, so what is trained is what the judge reads. This module joins the judge (rewards) and the SFT
examples (solver), which do not import each other; `evarl sft --eft` and the run's ``round-000/sft`` stage use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evarl.io import DataError, iter_jsonl, load_template
from evarl.rewards.judge import DEFAULT_TEMPLATE, conversation_text, fill, parse_score
from evarl.solver.sft import SFTExample, sft_example_from_row

EFT_FIELDS = ("prompt", "response", "score", "rationale")


def judge_template(name_or_path: str | None = None) -> str:
    """The judge prompt EFT examples are built with (a file, or a name under evarl/prompts/judge/)."""
    return load_template(name_or_path or DEFAULT_TEMPLATE, "judge", ("instruction", "response"))


def eft_example_from_row(
    row: dict[str, Any], where: str, template: str, max_score: float = 5.0
) -> SFTExample:
    """One judge-prompt -> judgement example from an EFT row; errors name ``where`` and the field."""
    missing = [f for f in EFT_FIELDS if f not in row]
    if missing:
        raise DataError(f"{where}: field {missing[0]!r}: missing (an EFT row has {', '.join(EFT_FIELDS)})")
    p = row["prompt"]
    if isinstance(p, list):  # messages: checked like an SFT prompt (roles, no empty turn)
        instruction = conversation_text(sft_example_from_row({"prompt": p, "completion": "x"}, where).prompt)
    elif isinstance(p, str) and p.strip():
        instruction = p
    else:
        raise DataError(f"{where}: field 'prompt': expected a non-empty string or a list of messages")
    resp = row["response"]
    if not isinstance(resp, str) or not resp.strip():
        raise DataError(f"{where}: field 'response': expected a non-empty string")
    score = row["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise DataError(f"{where}: field 'score': expected a number, got {score!r}")
    if not 0 <= score <= max_score:
        raise DataError(f"{where}: field 'score': must be in [0, {max_score:g}], got {score}")
    rationale = row["rationale"]
    if not isinstance(rationale, str):
        raise DataError(f"{where}: field 'rationale': expected a string, got {type(rationale).__name__}")
    target = (rationale.strip() + "\n\n" if rationale.strip() else "") + f"Score: {score:g}"
    read = parse_score(target, max_score)
    if read != float(score):
        raise DataError(
            f"{where}: field 'rationale': the judge's parser would read the score {read!r} from this judgement, "
            f"not {score:g} (a 'score' statement or fraction in the rationale)"
        )
    return SFTExample(
        [{"role": "user", "content": fill(template, instruction=instruction, response=resp)}], target
    )


SHIPPED_EFT = Path(__file__).resolve().parent / "data" / "eft_seed.jsonl"  # 24 rows written for evarl


def load_eft_examples(path: str | Path, template: str) -> list[SFTExample]:
    """EFT examples from a JSONL file, or "embedded" for the shipped set (bad rows stop with
    ``file:line: field '...': problem``)."""
    path = SHIPPED_EFT if str(path) == "embedded" else path
    return [eft_example_from_row(row, f"{path}:{i}", template) for i, row in iter_jsonl(path)]
