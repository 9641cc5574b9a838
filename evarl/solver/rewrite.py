"""The solver-side rewriter of seed 001 appendix H.2.1: before training, the solver itself rewrites each chosen
response y+ into y+' "with improved helpfulness, relevance, reasoning depths, creativity and details while
keeping the similar length" (a rewriting instruction after Liu et al. 2023b, EvolQuality), and trains on
(x, y+', y-).

The meta-prompt is the text file ``evarl/prompts/solver/rewrite.txt`` (placeholders ``{prompt}`` and
``{response}``); pass ``template=`` a path to use another. Any :class:`evarl.generation.base.Generator` works
(the policy through ``hf``, or an endpoint).

Deviation / safeguard (not in the paper): a rewrite is *rejected* and the original y+ kept when it is empty,
was cut off by ``max_new_tokens``, echoes the template's markers, is identical to y+ or y-, or is more than
``max_length_ratio`` times longer (or shorter) than y+ in characters. Each pair records what happened in
``meta["rewrite"]`` (``"rewritten"`` or ``"kept: <reason>"``) and keeps ``meta["original_chosen"]``, so the
pairs file shows what the rewriter did.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

from evarl.generation.base import Generator, SamplingParams
from evarl.types import Pair

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts" / "solver"
_MARKERS = ("#Given Prompt#", "#Given Response#", "#Rewritten Response#")


def load_rewrite_template(template: str = "rewrite") -> str:
    """A rewriter meta-prompt: a file path, or a name under evarl/prompts/solver/."""
    p = Path(template).expanduser()
    if not p.exists():
        p = PROMPTS_DIR / f"{template}.txt"
    if not p.exists():
        raise FileNotFoundError(
            f"rewrite template {template!r} not found (shipped: {PROMPTS_DIR}/rewrite.txt)"
        )
    text = p.read_text().rstrip("\n")
    missing = [ph for ph in ("{prompt}", "{response}") if ph not in text]
    if missing:
        raise ValueError(f"{p}: rewrite template lacks placeholder(s) {', '.join(missing)}")
    return text


def _prompt_text(messages: list[dict[str, str]]) -> str:
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return turns[0].get("content", "")
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in turns)


def _fill(template: str, **values: str) -> str:
    # one pass, so braces inside the prompt or response are left alone
    rx = re.compile("|".join(re.escape("{" + k + "}") for k in values))
    return rx.sub(lambda m: values[m.group(0)[1:-1]], template)


def _clean(text: str) -> str:
    text = text.strip()
    for marker in ("#Rewritten Response#:", "#Rewritten Response#"):
        if text.startswith(marker):
            text = text[len(marker) :].strip()
    return text


def _verdict(new: str, finish: str, pair: Pair, max_ratio: float) -> str | None:
    """None if the rewrite is accepted, else the reason it is rejected."""
    if not new:
        return "empty"
    if finish == "length":
        return "truncated"
    if any(m in new for m in _MARKERS):
        return "template echo"
    if new == pair.chosen.strip():
        return "unchanged"
    if new == pair.rejected.strip():
        return "equals rejected"
    n, o = len(new), max(1, len(pair.chosen.strip()))
    if n > max_ratio * o or n * max_ratio < o:
        return "length"
    return None


def rewrite_chosen(
    pairs: list[Pair],
    generator: Generator,
    seed: int,
    max_new_tokens: int,
    *,
    template: str = "rewrite",
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_length_ratio: float = 2.0,
) -> list[Pair]:
    """New pairs whose ``chosen`` is the generator's rewrite of y+ (or y+ itself where the rewrite is rejected).

    ``rejected``, rewards and the prompt are unchanged. One generator call for all pairs (``n = 1``), seeded
    with ``seed``, so the stage is reproducible.
    """
    if not pairs:
        return []
    tpl = load_rewrite_template(template)
    convs = [
        [{"role": "user", "content": _fill(tpl, prompt=_prompt_text(p.prompt), response=p.chosen)}]
        for p in pairs
    ]
    params = SamplingParams(
        n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
    )
    outs = generator.generate(convs, params)
    if len(outs) != len(pairs):
        raise RuntimeError(f"rewriter: generator returned {len(outs)} results for {len(pairs)} pairs")
    result: list[Pair] = []
    for p, out in zip(pairs, outs):
        o = out[0]
        new = _clean(o.text)
        why = _verdict(new, o.finish_reason, p, max_length_ratio)
        meta: dict[str, Any] = {**p.meta, "original_chosen": p.chosen}
        if why is None:
            meta["rewrite"] = "rewritten"
            result.append(dataclasses.replace(p, chosen=new, meta=meta))
        else:
            meta["rewrite"] = f"kept: {why}"
            result.append(dataclasses.replace(p, meta=meta))
    return result


def rewrite_stats(pairs: list[Pair]) -> dict[str, int]:
    """Counts of ``meta["rewrite"]`` outcomes (for the stage manifest)."""
    return dict(Counter(p.meta.get("rewrite", "not rewritten") for p in pairs))
