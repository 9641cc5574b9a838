"""Pair building: rules, filters with their counts, determinism, SPPO win probabilities, teacher demos."""

from __future__ import annotations

from evarl.registry import PAIR_RULES
from evarl.solver.pairs import SKIP_REASONS, build_pairs, teacher_demo_pairs
from evarl.types import Completion, Prompt, Scored


def P(pid: str) -> Prompt:
    return Prompt(id=pid, messages=[{"role": "user", "content": f"question {pid}"}])


def rows(pid: str, items: list[tuple[str, float | None]], failed: set[int] = frozenset()):
    comps = [Completion(pid, i, text) for i, (text, _) in enumerate(items)]
    scores = [Scored(pid, i, r, failed=i in failed) for i, (_, r) in enumerate(items)]
    return comps, scores


def build(rule: str, data: dict[str, list], min_margin: float = 0.0, seed: int = 0, failed=None):
    prompts, comps, scores = {}, [], []
    for pid, items in data.items():
        prompts[pid] = P(pid)
        c, s = rows(pid, items, (failed or {}).get(pid, set()))
        comps += c
        scores += s
    return build_pairs(rule, prompts, comps, scores, min_margin, seed)


def test_rules_registered() -> None:
    assert {"best_worst", "best_random"} <= set(PAIR_RULES.names())


def test_best_worst_picks_max_and_min() -> None:
    pairs, skipped = build("best_worst", {"a": [("mid", 0.5), ("top", 0.9), ("low", 0.1), ("mid2", 0.4)]})
    assert len(pairs) == 1
    p = pairs[0]
    assert (p.chosen, p.rejected, p.chosen_reward, p.rejected_reward) == ("top", "low", 0.9, 0.1)
    assert p.prompt == P("a").messages
    assert p.meta["chosen_index"] == 1 and p.meta["rejected_index"] == 2 and p.meta["candidates"] == 4
    assert sum(skipped.values()) == 0 and set(skipped) == set(SKIP_REASONS)


def test_ties_on_best_break_by_lowest_index() -> None:
    pairs, _ = build("best_worst", {"a": [("x", 0.2), ("first best", 1.0), ("second best", 1.0), ("w", 0.0)]})
    assert pairs[0].chosen == "first best"


def test_filters_are_counted_by_reason() -> None:
    data = {
        "tie": [("a", 0.5), ("b", 0.5), ("c", 0.5)],
        "same": [("hello ", 1.0), (" hello", 0.0)],
        "small": [("a", 0.52), ("b", 0.5)],
        "fail": [("a", 1.0), ("b", None), ("c", 0.0)],
        "ok": [("good", 1.0), ("bad", 0.0)],
    }
    pairs, skipped = build("best_worst", data, min_margin=0.1, failed={"fail": {2}})
    assert [p.prompt_id for p in pairs] == ["ok"]
    assert skipped == {"missing_prompt": 0, "too_few_valid": 1, "tie": 1, "identical": 1, "low_margin": 1}


def test_nan_reward_and_missing_score_are_failed() -> None:
    prompts = {"a": P("a")}
    comps = [Completion("a", 0, "x"), Completion("a", 1, "y"), Completion("a", 2, "z")]
    scores = [Scored("a", 0, float("nan")), Scored("a", 1, 1.0)]  # index 2 has no score
    pairs, skipped = build_pairs("best_worst", prompts, comps, scores, 0.0, 0)
    assert pairs == [] and skipped["too_few_valid"] == 1


def test_missing_prompt_counted() -> None:
    comps = [Completion("ghost", 0, "a"), Completion("ghost", 1, "b")]
    scores = [Scored("ghost", 0, 1.0), Scored("ghost", 1, 0.0)]
    pairs, skipped = build_pairs("best_worst", {}, comps, scores, 0.0, 0)
    assert pairs == [] and skipped["missing_prompt"] == 1


def test_best_random_draws_strictly_lower_and_is_seeded_per_prompt() -> None:
    items = [("best", 1.0), ("also best", 1.0)] + [(f"r{i}", i / 10) for i in range(8)]
    seen = set()
    for seed in range(40):
        pairs, _ = build("best_random", {"a": items}, seed=seed)
        assert pairs[0].chosen == "best" and pairs[0].rejected.startswith("r")
        seen.add(pairs[0].rejected)
    assert len(seen) >= 4  # really random across seeds
    # the same (seed, prompt) gives the same pair whatever else is in the batch
    alone, _ = build("best_random", {"a": items}, seed=3)
    crowd, _ = build("best_random", {"z": items, "a": items, "b": items}, seed=3)
    assert alone[0].rejected == [p for p in crowd if p.prompt_id == "a"][0].rejected


def test_best_random_all_equal_is_a_tie() -> None:
    pairs, skipped = build("best_random", {"a": [("x", 0.3), ("y", 0.3)]})
    assert pairs == [] and skipped["tie"] == 1


def test_win_probabilities_copied_for_sppo() -> None:
    prompts = {"a": P("a")}
    comps = [Completion("a", 0, "g"), Completion("a", 1, "b")]
    scores = [
        Scored("a", 0, 0.9, components={"win_prob": 0.8}),
        Scored("a", 1, 0.1, components={"win_prob": 0.2}),
    ]
    pairs, _ = build_pairs("best_worst", prompts, comps, scores, 0.0, 0)
    assert pairs[0].meta["chosen_win_prob"] == 0.8 and pairs[0].meta["rejected_win_prob"] == 0.2


def test_teacher_demo_pairs() -> None:
    prompts = {"a": P("a"), "b": P("b"), "c": P("c")}
    student = [Completion("a", 1, "student late"), Completion("a", 0, "student"), Completion("b", 0, "same")]
    student += [Completion("c", 0, "s")]
    teacher = {"a": "teacher answer", "b": "same", "c": "  "}
    pairs = teacher_demo_pairs(prompts, teacher, student)
    assert len(pairs) == 1
    p = pairs[0]
    assert (p.prompt_id, p.chosen, p.rejected, p.chosen_reward) == ("a", "teacher answer", "student", None)
    assert p.meta == {"rule": "teacher_demo", "rejected_index": 0}


# ---------------------------------------------------------------- H.2.1 rewriter (the pairs stage's optional step)


class ScriptedGenerator:
    """Returns one scripted output per conversation and records what it was asked."""

    name = "scripted"

    def __init__(self, outputs: list[tuple[str, str]]) -> None:
        self.outputs = outputs
        self.calls: list = []

    def generate(self, conversations, params):
        from evarl.generation.base import GenOutput

        self.calls.append((conversations, params))
        return [[GenOutput(text, len(text.split()), finish)] for text, finish in self.outputs]


def test_rewriter_prompt_outcomes_and_safeguards() -> None:
    from evarl.solver.rewrite import rewrite_chosen, rewrite_stats
    from evarl.types import Pair

    def pair(i: int, chosen: str = "A fine answer about {braces}.") -> Pair:
        return Pair(
            f"p{i}", [{"role": "user", "content": f"Question {i}?"}], chosen, "bad", 1.0, 0.0, {"rule": "x"}
        )

    pairs = [pair(i) for i in range(6)]
    gen = ScriptedGenerator(
        [
            (
                "#Rewritten Response#: A finer, more detailed answer about {braces}.",
                "stop",
            ),  # accepted, cleaned
            ("", "stop"),  # empty
            ("A finer answer that was cut", "length"),  # truncated
            ("bad", "stop"),  # equals rejected
            ("x" * 500, "stop"),  # too long
            ("A fine answer about {braces}.", "stop"),  # unchanged
        ]
    )
    out = rewrite_chosen(pairs, gen, seed=5, max_new_tokens=77)
    convs, params = gen.calls[0]
    assert params.n == 1 and params.seed == 5 and params.max_new_tokens == 77
    text = convs[0][0]["content"]
    assert (
        "#Given Prompt#:\nQuestion 0?" in text and "#Given Response#:\nA fine answer about {braces}." in text
    )
    assert out[0].chosen == "A finer, more detailed answer about {braces}."
    assert out[0].meta["original_chosen"] == pairs[0].chosen and out[0].meta["rule"] == "x"
    assert [p.meta["rewrite"] for p in out] == [
        "rewritten",
        "kept: empty",
        "kept: truncated",
        "kept: equals rejected",
        "kept: length",
        "kept: unchanged",
    ]
    assert all(o.chosen == p.chosen for o, p in zip(out[1:], pairs[1:]))
    assert all(o.rejected == "bad" for o in out)
    assert rewrite_stats(out)["rewritten"] == 1
    assert rewrite_chosen([], gen, 0, 8) == []


def test_rewriter_template_checks(tmp_path) -> None:
    import pytest

    from evarl.solver.rewrite import load_rewrite_template

    assert "{prompt}" in load_rewrite_template() and "{response}" in load_rewrite_template()
    bad = tmp_path / "t.txt"
    bad.write_text("only {prompt}")
    with pytest.raises(ValueError, match=r"lacks placeholder\(s\) \{response\}"):
        load_rewrite_template(str(bad))
    with pytest.raises(FileNotFoundError):
        load_rewrite_template("nope")
