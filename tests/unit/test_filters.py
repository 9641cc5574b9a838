"""Filters on evolved prompts: each reason, precedence, counts, argument errors; near_dup on real MiniLM."""

from __future__ import annotations

import pytest

from evarl.creator import filters as F
from evarl.creator.filters import apply_filters, filter_reasons, leaks
from evarl.io import load_template
from evarl.types import Prompt

ALL = ["empty", "truncated", "copy", "leak", "length", "exact_dup"]


def P(pid: str, text: str, parent: str | None = None, **meta: object) -> Prompt:
    return Prompt(id=pid, messages=[{"role": "user", "content": text}], parent_id=parent, meta=dict(meta))


PARENTS = [P("a", "Write a haiku about autumn leaves."), P("b", "Explain how a bicycle gear works.")]


def test_each_reason_counted_once() -> None:
    kids = [
        P("k1", "", "a"),  # empty
        P(
            "k2",
            "Write a haiku about autumn leaves falling on a quiet lake at dusk and",
            "a",
            finish_reason="length",
        ),
        P("k3", "  write a HAIKU about autumn leaves. ", "a"),  # copy of its own parent (normalised)
        P("k4", "#Rewritten Prompt#: Write a sonnet about winter.", "a"),  # leak
        P("k5", "x" * 51, "b"),  # length
        P("k6", "Explain how a bicycle gear works.", "a"),  # copy of another parent: exact_dup
        P("k7", "Compose a limerick about a cat.", "a"),
        P("k8", "compose a limerick about a  cat.", "b"),  # duplicate of k7
        P("k9", "Describe the gears of a mountain bike.", "b"),
    ]
    kept, counts = apply_filters(kids, PARENTS, ALL, max_chars=50, near_dup_threshold=0.95)
    assert [k.id for k in kept] == ["k7", "k9"]
    assert counts == {"empty": 1, "truncated": 1, "copy": 1, "leak": 1, "length": 1, "exact_dup": 2}
    reasons = filter_reasons(kids, PARENTS, ALL, 50, 0.95)
    assert reasons == ["empty", "truncated", "copy", "leak", "length", "exact_dup", None, "exact_dup", None]


def test_order_decides_the_reason() -> None:
    kids = [P("k", "", "a", finish_reason="length")]
    assert apply_filters(kids, PARENTS, ["truncated", "empty"], 100, 0.9)[1] == {"truncated": 1, "empty": 0}
    assert apply_filters(kids, PARENTS, ["empty", "truncated"], 100, 0.9)[1] == {"empty": 1, "truncated": 0}


def test_no_filters_keeps_everything() -> None:
    kids = [P("k", "", "a")]
    assert apply_filters(kids, PARENTS, [], 10, 0.9) == (kids, {})


def test_leak_markers_and_template_ngrams() -> None:
    assert leaks("Here it is. #The Given Prompt#: do X")
    assert leaks("I want you act as a Prompt Rewriter and help")
    # an 8-word run from the in-depth meta-prompt file
    words = load_template("in_depth", "evolve").split()
    run = " ".join(words[8:16])
    assert leaks(f"Please {run} thanks")
    assert not leaks("Write a short story about a lighthouse keeper who finds a message in a bottle.")
    # a creator talking about the prompt instead of rewriting it (seen from SmolLM2 in the default run)
    assert leaks(
        "I'm ready to help. What prompt would you like to edit?", "How does a fridge keep food cold?"
    )
    assert leaks(
        "#This Prompt is a re-imagining of how refrigerators keep food warm.", "How do fridges work?"
    )
    assert not leaks(
        "Write an image-generation prompt for a foggy harbour.", "Write a prompt for a harbour scene."
    )
    assert not leaks("Explain how promptly paying bills helps your credit score.", "Explain credit scores.")
    # text the parent already had is not a leak
    parent = "Summarise the given prompt# guidelines: be short"
    assert not leaks("Summarise the given prompt# guidelines: be short and kind", parent)


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="creator.max_prompt_chars"):
        apply_filters([], PARENTS, ALL, 0, 0.9)
    with pytest.raises(ValueError, match="creator.near_dup_threshold"):
        apply_filters([], PARENTS, ALL, 10, 1.5)
    with pytest.raises(KeyError, match="unknown filter 'nope'"):
        apply_filters([], PARENTS, ["nope"], 10, 0.9)
    with pytest.raises(ValueError, match="duplicate"):
        apply_filters([], PARENTS, ["empty", "empty"], 10, 0.9)


def test_encoder_loaded_only_when_near_dup_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise AssertionError("MiniLM must not load")

    monkeypatch.setattr(F, "minilm_encoder", boom)
    kids = [P("k", "Tell me a joke about penguins.", "a")]
    assert apply_filters(kids, PARENTS, ALL, 1000, 0.9)[0] == kids


def test_near_dup_with_real_minilm() -> None:
    kids = [
        P("k1", "Write a haiku about autumn leaves, please.", "a"),  # paraphrase of parent a
        P("k2", "What is the capital of Australia and why was it chosen?", "b"),
        P("k3", "What's the capital city of Australia, and why was it chosen?", "b"),  # near k2
        P("k4", "Give me a recipe for vegan lasagna.", "b"),
    ]
    kept, counts = apply_filters(kids, PARENTS, ["near_dup"], 1000, 0.9)
    assert [k.id for k in kept] == ["k2", "k4"] and counts == {"near_dup": 2}
    # threshold 1.0 keeps anything that is not identical
    assert len(apply_filters(kids, PARENTS, ["near_dup"], 1000, 1.0)[0]) == 4
