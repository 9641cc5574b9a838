"""Samplers (weighted without replacement, greedy) and prompt-set mixing."""

from __future__ import annotations

import pytest

from evarl.creator.mixing import mix_prompts
from evarl.creator.sampling import greedy, sample_prompts, subset_size
from evarl.types import Prompt


@pytest.mark.parametrize(
    "n, fraction, k",
    [(10, 0.25, 3), (4, 0.25, 1), (3, 0.25, 1), (2, 0.25, 1), (8, 0.25, 2), (6, 0.25, 2), (5, 0.5, 3)]
    + [(7, 0.0, 1), (7, 1.0, 7), (1, 0.25, 1), (0, 0.25, 0), (100, 0.25, 25)],
)
def test_subset_size_rounds_half_up_and_clamps(n: int, fraction: float, k: int) -> None:
    assert subset_size(n, fraction) == k


def test_single_prompt() -> None:
    for s in ("weighted", "greedy"):
        assert sample_prompts(s, {"only": 0.0}, 0.25, seed=3) == ["only"]


def test_empty_info() -> None:
    assert sample_prompts("weighted", {}, 0.25, 0) == []


def test_weighted_without_replacement_and_all_equal() -> None:
    info = {f"p{i}": 1.0 for i in range(12)}
    out = sample_prompts("weighted", info, 0.5, seed=0)
    assert len(out) == 6 and len(set(out)) == 6 and set(out) <= set(info)


def test_weighted_zero_weights_still_draw() -> None:
    # all-zero and mostly-zero informativeness: numpy would refuse p with zeros; the floor keeps them drawable
    assert len(sample_prompts("weighted", {"a": 0.0, "b": 0.0, "c": 0.0}, 1.0, 1)) == 3
    out = sample_prompts("weighted", {"a": 5.0, "b": 0.0, "c": 0.0}, 1.0, 1)
    assert sorted(out) == ["a", "b", "c"]


def test_weighted_seed_reproducible_and_order_independent() -> None:
    info = {f"p{i}": float(i % 5) for i in range(40)}
    a = sample_prompts("weighted", info, 0.25, seed=7)
    assert a == sample_prompts("weighted", dict(reversed(list(info.items()))), 0.25, seed=7)
    draws = {tuple(sample_prompts("weighted", info, 0.25, seed=s)) for s in range(5)}
    assert len(draws) > 1


def test_weighted_prefers_informative_prompts() -> None:
    # w_a = 100 + 0.01 * 100 = 101, the nine others 1 each: P(a first) = 101 / 110
    info = {"a": 100.0, **{f"z{i}": 0.0 for i in range(9)}}
    hits = sum(sample_prompts("weighted", info, 0.1, seed=s) == ["a"] for s in range(50))
    assert hits >= 40


def test_greedy_top_k_with_id_tiebreak() -> None:
    info = {"c": 2.0, "a": 2.0, "b": 5.0, "d": 1.0}
    assert sample_prompts("greedy", info, 0.75, seed=0) == ["b", "a", "c"]
    assert greedy(["x", "y"], [1.0, 1.0], 1, 0) == ["x"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="creator.sample_fraction"):
        sample_prompts("weighted", {"a": 1.0}, 1.5, 0)
    with pytest.raises(KeyError, match="unknown sampler"):
        sample_prompts("stratified-ish", {"a": 1.0}, 0.5, 0)
    with pytest.raises(ValueError, match=r"info\['a'\]"):
        sample_prompts("greedy", {"a": float("inf")}, 0.5, 0)


# ---------------------------------------------------------------- mixing


def _ps(prefix: str, n: int) -> list[Prompt]:
    return [
        Prompt(id=f"{prefix}{i}", messages=[{"role": "user", "content": f"{prefix} {i}"}]) for i in range(n)
    ]


def test_mix_default_total_keeps_all_evolved() -> None:
    ev, orig = _ps("e", 8), _ps("o", 10)
    out = mix_prompts(ev, orig, 0.8, seed=0)
    assert [p.id for p in out[:8]] == [p.id for p in ev]  # all evolved, in order
    assert len(out) == 10 and all(p.id.startswith("o") for p in out[8:])  # round(8 * 0.2 / 0.8) = 2


def test_mix_with_total_and_top_up() -> None:
    ev, orig = _ps("e", 20), _ps("o", 3)
    out = mix_prompts(ev, orig, 0.5, seed=1, total=10)
    assert sum(p.id.startswith("o") for p in out) == 3 and len(out) == 10  # originals short: evolved top up
    out = mix_prompts(_ps("e", 20), _ps("o", 20), 0.8, seed=1, total=10)
    assert sum(p.id.startswith("e") for p in out) == 8


def test_mix_deterministic_and_seeded() -> None:
    ev, orig = _ps("e", 30), _ps("o", 30)
    a = [p.id for p in mix_prompts(ev, orig, 0.8, seed=5, total=10)]
    assert a == [p.id for p in mix_prompts(ev, orig, 0.8, seed=5, total=10)]
    assert a != [p.id for p in mix_prompts(ev, orig, 0.8, seed=6, total=10)]


def test_mix_edge_cases() -> None:
    orig = _ps("o", 4)
    assert [p.id for p in mix_prompts([], orig, 0.8, 0)] == [p.id for p in orig]  # never an empty round
    assert mix_prompts(_ps("e", 3), orig, 0.0, 0) == orig
    assert len(mix_prompts(_ps("e", 3), orig, 1.0, 0)) == 3
    dup = mix_prompts([orig[0]], orig, 0.5, 0)
    assert [p.id for p in dup].count("o0") == 1
    with pytest.raises(ValueError, match="creator.mix_ratio"):
        mix_prompts([], orig, 1.2, 0)
