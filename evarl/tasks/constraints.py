"""Verifiable constraints for the default task and its evolver: IFEval and IFBench checkers (`if-verifiable`).

A constraint is a checker id plus keyword arguments. Its description (the text appended to a task) is produced
by the checker itself (`build_description`), so the text a model reads and the check that scores it can never
drift apart. Only checkers a small model can plausibly satisfy are sampled, with arguments sized for short
answers, from one of three pools (`task.checkers`): "ifeval" (the default), "ifbench" (IFBench's
out-of-distribution constraints, Pyatkin et al., 2025) or "all". Pairs listed in IFEval's own conflict table
are never combined; IFBench has no such table, so the pairs below that contradict each other (or an IFEval
format/length constraint) are kept apart here.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from evarl.registry import CHECKER_POOLS
from evarl.types import Constraint

POOLS = ("ifeval", "ifbench", "all")

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

# IFBench checkers that can be appended to a task, with arguments a short answer can meet. Left out: the
# stand-alone tasks (custom:*, repeat:*), those needing a reference text or Japanese, the feats a 135M model
# cannot attempt (palindromes, alliteration, prime lengths, ...) and two that pass vacuously on any plain
# answer (format:sub-bullets without bullets, ratio:sentence_type with no question and no statement).
IFBENCH_SAMPLERS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "count:word_count_range": lambda r: (lambda lo: {"min_words": lo, "max_words": lo + _pick(r, [20, 40])})(
        _pick(r, [20, 30, 40])
    ),
    "count:unique_word_count": lambda r: {"N": _pick(r, [15, 25, 40])},
    "ratio:stop_words": lambda r: {"percentage": _pick(r, [30, 40, 50])},
    "count:conjunctions": lambda r: {"small_n": _pick(r, [2, 3])},
    "count:numbers": lambda r: {"N": _pick(r, [1, 2, 3])},
    "count:pronouns": lambda r: {"N": _pick(r, [3, 5])},
    "words:repeats": lambda r: {"small_n": _pick(r, [2, 3])},
    "sentence:keyword": lambda r: {"word": _pick(r, _WORDS), "N": _pick(r, [1, 2])},
    "words:words_position": lambda r: {"keyword": _pick(r, _WORDS)},
    "words:start_verb": lambda r: {},
    "words:no_consecutive": lambda r: {},
    "format:list": lambda r: {"sep": _pick(r, ["SEPARATOR", "***", "&&"])},
    "format:title_case": lambda r: {},
    "format:emoji": lambda r: {},
    "format:no_bullets_bullets": lambda r: {},
    "format:output_template": lambda r: {},
    "format:newline": lambda r: {},
}

# IFBench pairs (and IFBench x IFEval pairs) that cannot both hold, or that make one another meaningless
_IFBENCH_LAYOUT = {"format:list", "format:sub-bullets", "format:no_bullets_bullets", "format:output_template"}
_EXTRA_CONFLICTS: dict[str, set[str]] = {
    "format:newline": _IFBENCH_LAYOUT | {"format:title_case", "words:words_position"},
    "format:list": _IFBENCH_LAYOUT,
    "format:sub-bullets": _IFBENCH_LAYOUT,
    "format:no_bullets_bullets": _IFBENCH_LAYOUT,
    "format:output_template": _IFBENCH_LAYOUT
    | {"words:start_verb", "format:title_case", "words:words_position"},
    "format:title_case": {"change_case:english_lowercase", "change_case:english_capital"},
    "count:word_count_range": {"length_constraints:number_words"},
    "words:repeats": {"keywords:frequency"},
    "count:numbers": {"detectable_content:number_placeholders"},
    "words:start_verb": {"startend:quotation", "detectable_format:title", "detectable_format:json_format"},
}
for _id in _IFBENCH_LAYOUT | {"format:newline", "format:emoji", "words:start_verb"}:
    # IFEval's layout checkers fix the response's shape; an IFBench layout on top contradicts them
    _EXTRA_CONFLICTS.setdefault(_id, set()).update(
        {
            "detectable_format:json_format",
            "detectable_format:number_bullet_lists",
            "detectable_format:multiple_sections",
            "startend:quotation",
        }
    )


def pool_samplers(pool: str = "ifeval") -> dict[str, Callable[[random.Random], dict[str, Any]]]:
    """The checker id -> kwargs sampler table of a pool ("ifeval", "ifbench" or "all")."""
    if pool == "ifeval":
        return SAMPLERS
    if pool == "ifbench":
        return IFBENCH_SAMPLERS
    if pool == "all":
        return {**SAMPLERS, **IFBENCH_SAMPLERS}
    raise ValueError(f"task.checkers: must be one of {', '.join(POOLS)}, got {pool!r}")


for _pool in POOLS:  # `task.checkers` is validated against these names (evarl.config imports no task module)
    CHECKER_POOLS.register(_pool)(functools.partial(pool_samplers, _pool))


def _conflicts() -> dict[str, set[str]]:
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    return INSTRUCTION_CONFLICTS


def _conflict(a: str, b: str) -> bool:
    table = _conflicts()
    return (
        a == b
        or b in table.get(a, set())
        or a in table.get(b, set())
        or b in _EXTRA_CONFLICTS.get(a, set())
        or a in _EXTRA_CONFLICTS.get(b, set())
    )


def compatible(new_id: str, existing: list[Constraint]) -> bool:
    return not any(_conflict(new_id, c.id) for c in existing)


def random_constraint(
    rng: random.Random, existing: list[Constraint], pool: str = "ifeval"
) -> Constraint | None:
    """A constraint from `pool` compatible with `existing`, or None if none is left."""
    samplers = pool_samplers(pool)
    ids = [i for i in sorted(samplers) if compatible(i, existing)]
    if not ids:
        return None
    cid = _pick(rng, ids)
    return Constraint(cid, samplers[cid](rng))


def sample_constraints(rng: random.Random, k: int, pool: str = "ifeval") -> list[Constraint]:
    out: list[Constraint] = []
    for _ in range(k):
        c = random_constraint(rng, out, pool)
        if c is None:
            break
        out.append(c)
    return out


def describe(c: Constraint) -> str:
    """The checker's own instruction text for these kwargs."""
    from evarl.tasks.checkers import describe as checker_text

    return checker_text(c.id, c.kwargs)


def build_prompt_text(task: str, constraints: list[Constraint]) -> str:
    """The user turn: the task followed by each constraint's description."""
    parts = [task.strip(), *(describe(c) for c in constraints)]
    return " ".join(p for p in parts if p)
