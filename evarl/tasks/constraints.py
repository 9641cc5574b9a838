"""Verifiable constraints from the IFEval registry (`if-verifiable`), for the default task and its evolver.

A constraint is an IFEval checker id plus keyword arguments. Its description (the text appended to a task) is
produced by the checker itself (`build_description`), so the text a model reads and the check that scores it
can never drift apart. Only checkers a small model can plausibly satisfy are sampled; pairs listed in IFEval's
own conflict table are never combined.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from evarl.types import Constraint

_WORDS = [
    "simple", "future", "balance", "energy", "journey", "example", "focus", "clear", "community", "growth",
    "detail", "value", "practice", "nature", "story", "plan", "important", "friendly", "quality", "idea",
]  # fmt: skip
_END_PHRASES = ["Any other questions?", "Is there anything else I can help with?", "Hope this helps."]


def _pick(rng: random.Random, xs: list[Any]) -> Any:
    return xs[rng.randrange(len(xs))]


# checker id -> sampler of its kwargs
SAMPLERS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "punctuation:no_comma": lambda r: {},
    "change_case:english_lowercase": lambda r: {},
    "change_case:english_capital": lambda r: {},
    "length_constraints:number_words": lambda r: {
        "num_words": _pick(r, [30, 40, 50, 60, 80, 100]),
        "relation": _pick(r, ["less than", "at least"]),
    },
    "length_constraints:number_sentences": lambda r: {
        "num_sentences": _pick(r, [2, 3, 4, 5]),
        "relation": _pick(r, ["less than", "at least"]),
    },
    "length_constraints:number_paragraphs": lambda r: {"num_paragraphs": _pick(r, [2, 3])},
    "keywords:existence": lambda r: {"keywords": r.sample(_WORDS, 2)},
    "keywords:forbidden_words": lambda r: {"forbidden_words": r.sample(_WORDS, 2)},
    "keywords:frequency": lambda r: {
        "keyword": _pick(r, _WORDS),
        "frequency": _pick(r, [1, 2, 3]),
        "relation": "at least",
    },
    "keywords:letter_frequency": lambda r: {
        "letter": _pick(r, list("aeiost")),
        "let_frequency": _pick(r, [3, 5, 8]),
        "let_relation": "at least",
    },
    "detectable_content:postscript": lambda r: {"postscript_marker": _pick(r, ["P.S.", "P.P.S"])},
    "detectable_content:number_placeholders": lambda r: {"num_placeholders": _pick(r, [1, 2])},
    "detectable_format:number_bullet_lists": lambda r: {"num_bullets": _pick(r, [2, 3, 4])},
    "detectable_format:number_highlighted_sections": lambda r: {"num_highlights": _pick(r, [1, 2])},
    "detectable_format:title": lambda r: {},
    "detectable_format:json_format": lambda r: {},
    "detectable_format:multiple_sections": lambda r: {
        "section_spliter": _pick(r, ["Section", "SECTION"]),
        "num_sections": _pick(r, [2, 3]),
    },
    "startend:end_checker": lambda r: {"end_phrase": _pick(r, _END_PHRASES)},
    "startend:quotation": lambda r: {},
}


def _registry() -> tuple[dict[str, Any], dict[str, set[str]]]:
    import langdetect
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT

    # langdetect (the case and language checkers) is random unless seeded: rewards must be reproducible
    langdetect.DetectorFactory.seed = 0

    return INSTRUCTION_DICT, INSTRUCTION_CONFLICTS


def compatible(new_id: str, existing: list[Constraint]) -> bool:
    _, conflicts = _registry()
    for c in existing:
        if c.id == new_id or c.id in conflicts.get(new_id, set()) or new_id in conflicts.get(c.id, set()):
            return False
    return True


def random_constraint(rng: random.Random, existing: list[Constraint]) -> Constraint | None:
    """A constraint compatible with `existing` (IFEval's conflict table), or None if none is left."""
    ids = [i for i in sorted(SAMPLERS) if compatible(i, existing)]
    if not ids:
        return None
    cid = _pick(rng, ids)
    return Constraint(cid, SAMPLERS[cid](rng))


def sample_constraints(rng: random.Random, k: int) -> list[Constraint]:
    out: list[Constraint] = []
    for _ in range(k):
        c = random_constraint(rng, out)
        if c is None:
            break
        out.append(c)
    return out


def describe(c: Constraint) -> str:
    """The checker's own instruction text for these kwargs."""
    registry, _ = _registry()
    if c.id not in registry:
        raise KeyError(f"unknown IFEval constraint {c.id!r}")
    checker = registry[c.id](c.id)
    kwargs = {k: v for k, v in c.kwargs.items() if v is not None}
    return checker.build_description(**kwargs).strip()


def build_prompt_text(task: str, constraints: list[Constraint]) -> str:
    """The user turn: the task followed by each constraint's description."""
    parts = [task.strip(), *(describe(c) for c in constraints)]
    return " ".join(p for p in parts if p)


def check(constraints: list[Constraint], prompt_text: str, response: str) -> list[tuple[str, bool, bool]]:
    """(id, strict_pass, loose_pass) per constraint, with IFEval's own strict/loose semantics."""
    from if_verifiable.common import evaluate_instructions

    from evarl.tasks.punkt import ensure_punkt

    ensure_punkt()
    registry, _ = _registry()
    results, _scores = evaluate_instructions(
        response=response,
        instruction_id_list=[c.id for c in constraints],
        kwargs_list=[dict(c.kwargs) for c in constraints],
        prompt=prompt_text,
        instruction_registry=registry,
    )
    by_id = {r.instruction_id: r for r in results}
    return [
        (c.id, by_id[c.id].strict_pass, by_id[c.id].loose_pass) if c.id in by_id else (c.id, False, False)
        for c in constraints
    ]
