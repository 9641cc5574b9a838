"""Prompt complexity and quality scores (1-5) and the per-round curriculum summary.

eva (seed 001 appendix E, Table 7) scores prompts with the complexity and quality rubrics of Liu et al.
(2023b) and gemini-1.5-flash as the judge; here any `Generator` is the judge, with the rubrics in
`evarl/prompts/scoring/{complexity,quality}.txt`. Deviation: appendix E ranks a list of questions at once; we
score one prompt per call (a small local judge cannot rank a list reliably, and per-prompt calls are
resumable). The judge decodes greedily (temperature 0). A reply with no score in 1..5 is a failure, kept as
None and counted, never replaced by a default.

`curriculum_stats` is a pure summary for the report: informativeness distribution, score means, and the
category / method / depth mix of a prompt set (seed 001 §4.3, Figures 6-7).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from evarl.dist import stable_int
from evarl.generation.base import Generator, SamplingParams
from evarl.io import fill_template, load_template
from evarl.types import Prompt

ASPECTS = ("complexity", "quality")

# "Score: 4", "4/5", "[[4]]", "Rating: 4" first; then a lone digit 1-5 at the start; then any standalone 1-5.
_PATTERNS = [
    re.compile(r"(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*\[*\s*([1-5])(?:\.0+)?\s*\]*(?!\d)", re.I),
    re.compile(r"\[\[\s*([1-5])\s*\]\]"),
    re.compile(r"(?<![\d.])([1-5])\s*(?:/|out of)\s*5(?!\d)", re.I),
    re.compile(r"^\W*([1-5])(?:\.0+)?(?![\d.])"),
    re.compile(r"(?<![\d.\-/])(?<!of )([1-5])(?![\d.]|\s*(?:/|out of)\s*\d)"),
]


def parse_score(text: str) -> int | None:
    """The 1-5 score in a judge reply, or None when there is none."""
    if not text:
        return None
    for pat in _PATTERNS:
        m = pat.search(text)
        if m:
            return int(m.group(1))
    return None


def score_texts(
    texts: list[str], generator: Generator, seed: int, max_new_tokens: int = 8
) -> list[dict[str, int | None]]:
    """{"complexity", "quality"} (1-5 or None) for each text, one greedy judge call per (text, aspect)."""
    out: list[dict[str, int | None]] = [{} for _ in texts]
    for aspect in ASPECTS:
        template = load_template(aspect, "scoring")
        convs = [[{"role": "user", "content": fill_template(template, prompt=t)}] for t in texts]
        if not convs:
            continue
        params = SamplingParams(
            n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=stable_int(seed, aspect)
        )
        replies = generator.generate(convs, params)
        if len(replies) != len(texts):
            raise RuntimeError(f"judge returned {len(replies)} replies for {len(texts)} prompts")
        for row, reply in zip(out, replies):
            row[aspect] = parse_score(reply[0].text) if reply else None
    return out


def score_prompts(
    prompts: list[Prompt], generator: Generator, seed: int, max_new_tokens: int = 8
) -> list[dict[str, Any]]:
    """Appendix-E complexity and quality (1-5, None when the judge reply does not parse) for each prompt."""
    scores = score_texts([p.text for p in prompts], generator, seed, max_new_tokens)
    return [{"prompt_id": p.id, **s} for p, s in zip(prompts, scores)]


def combined_score(s: dict[str, int | None]) -> float | None:
    """Mean of the aspects that parsed (tree-bon's selection key), None if none did."""
    vals = [float(s[a]) for a in ASPECTS if s.get(a) is not None]
    return sum(vals) / len(vals) if vals else None


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, float | int | None] = {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }
    for q in (10, 25, 50, 75, 90):
        out[f"q{q}"] = float(np.percentile(v, q))
    return out


def curriculum_stats(
    prompts: list[Prompt], info: dict[str, float], scores: list[dict] | None = None
) -> dict[str, Any]:
    """Summary of a prompt set: informativeness distribution over its prompts, complexity / quality means,
    category, method and depth mix. JSON-ready (all keys are strings)."""
    ids = {p.id for p in prompts}
    info_vals = [float(v) for k, v in info.items() if k in ids and math.isfinite(float(v))]
    out: dict[str, Any] = {
        "num_prompts": len(prompts),
        "info": _summary(info_vals),
        "categories": dict(sorted(Counter(p.category or "none" for p in prompts).items())),
        "methods": dict(sorted(Counter(p.method or "seed" for p in prompts).items())),
        "depth_histogram": {str(d): c for d, c in sorted(Counter(p.depth for p in prompts).items())},
        "num_constraints_mean": (sum(len(p.constraints) for p in prompts) / len(prompts))
        if prompts
        else None,
        "chars_mean": (sum(len(p.text) for p in prompts) / len(prompts)) if prompts else None,
    }
    if scores is not None:
        rows = [s for s in scores if s.get("prompt_id") in ids]
        for aspect in ASPECTS:
            vals = [float(s[aspect]) for s in rows if s.get(aspect) is not None]
            out[f"{aspect}_mean"] = sum(vals) / len(vals) if vals else None
            out[f"{aspect}_failed"] = sum(1 for s in rows if s.get(aspect) is None)
        out["scored"] = len(rows)
    return out
