import random
from collections import Counter

from evarl.rewards.verifier import VerifierReward
from evarl.tasks import default
from evarl.tasks.constraints import SAMPLERS, build_prompt_text, compatible, describe, random_constraint
from evarl.types import Constraint, Prompt


def test_base_tasks_are_many_and_varied() -> None:
    rows = default.load_base_tasks()
    assert len(rows) >= 200
    cats = Counter(r["category"] for r in rows)
    assert {"writing", "advice", "explanation", "coding", "maths", "planning"} <= set(cats)
    assert len({r["task"] for r in rows}) == len(rows)


def test_train_and_heldout_are_disjoint_and_deterministic() -> None:
    a = default.train_prompts(40, seed=3)
    b = default.train_prompts(40, seed=3)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    held = default.heldout_prompts()
    assert {p.task for p in a}.isdisjoint({p.task for p in held})
    assert all(1 <= len(p.constraints) <= 3 for p in a)
    for p in a:
        assert p.text == build_prompt_text(p.task, p.constraints)


def test_every_sampled_constraint_describes_itself() -> None:
    rng = random.Random(0)
    for cid, sampler in SAMPLERS.items():
        d = describe(Constraint(cid, sampler(rng)))
        assert len(d) > 10, cid


def test_conflicts_respected() -> None:
    low = Constraint("change_case:english_lowercase")
    assert not compatible("change_case:english_capital", [low])
    rng = random.Random(1)
    existing = [low]
    for _ in range(5):
        c = random_constraint(rng, existing)
        assert c is not None and compatible(c.id, existing)
        existing.append(c)


def test_verifier_reward_fraction_and_strict_vs_loose() -> None:
    cons = [Constraint("punctuation:no_comma"), Constraint("change_case:english_lowercase")]
    p = Prompt("x", [{"role": "user", "content": build_prompt_text("Say hello.", cons)}], "Say hello.", cons)
    v = VerifierReward("strict")
    r = v.score([p, p, p], ["hello there friend", "Hello there friend", "Hello, there"])
    assert [x.score for x in r] == [1.0, 0.5, 0.0]
    # loose mode accepts the response with its first line removed
    p2 = Prompt("y", [{"role": "user", "content": "x"}], "x", [Constraint("punctuation:no_comma")])
    text = "Sure, here it is:\nno commas at all here"
    assert VerifierReward("strict").score([p2], [text])[0].score == 0.0
    assert VerifierReward("loose").score([p2], [text])[0].score == 1.0


def test_unverifiable_prompt_is_flagged_failed_not_zero() -> None:
    p = Prompt("z", [{"role": "user", "content": "hi"}])
    r = VerifierReward().score([p], ["hello"])[0]
    assert r.failed


def test_heldout_set_is_300_distinct_tasks_none_near_a_training_task() -> None:
    import re

    held = default.heldout_prompts()
    assert len(held) == 300 and len({p.task for p in held}) == 300
    assert len(default.heldout_prompts(None, "ifbench")) == 300
    train_rows = [r for r in default.load_base_tasks()]
    rule_held = {r["task"] for r in default.heldout_rows()[:51]}
    stop = {"a", "the", "to", "of", "and", "in", "for", "how", "what", "why", "is", "on", "an", "with", "that",
            "it", "explain", "describe", "write", "can", "i", "you", "your", "my", "do", "should", "are", "some",
            "ways", "make"}  # fmt: skip

    def words(s: str) -> set[str]:
        return set(re.findall(r"[a-z]+", s.lower())) - stop

    for extra in default.load_base_tasks("heldout_tasks.jsonl"):
        w = words(extra["task"])
        for r in train_rows:
            if r["task"] in rule_held:
                continue
            v = words(r["task"])
            assert len(w & v) / len(w | v) <= 0.45, (extra["task"], r["task"])
