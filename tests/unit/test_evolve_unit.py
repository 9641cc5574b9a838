"""Evolve strategies with scripted fake creator models: lineage, chains, parsing, method spread, the constraint
evolver on the real IFEval registry, tree-BoN selection, prompt scoring and curriculum stats."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest

from evarl.creator.evolve import EvolveContext, assign_methods, evolve_prompts
from evarl.creator.evolve.common import first_line, generate_one, parse_rewrite
from evarl.creator.evolve.constraint import evolve_constraints
from evarl.creator.evolve.evolinstruct import EVOL_METHODS, IN_BREADTH_KEYS
from evarl.creator.evolve.tree_bon import select_best
from evarl.creator.scoring import curriculum_stats, parse_score, score_prompts
from evarl.generation.base import GenOutput, SamplingParams
from evarl.registry import EVOLVERS
from evarl.tasks.constraints import build_prompt_text, describe
from evarl.tasks.default import train_prompts
from evarl.types import Constraint, Prompt

_GIVEN = re.compile(r"#(?:The )?Given Prompt#:\n(.*?)\n#(?:Rewritten|Created) Prompt#", re.S)
_CONTEXT = re.compile(r"# Context\n(.*?)\n\n# Output", re.S)


def given_prompt(meta_prompt: str) -> str:
    m = _GIVEN.search(meta_prompt) or _CONTEXT.search(meta_prompt)
    assert m, meta_prompt
    return m.group(1)


class FakeCreator:
    """Rewrites by appending ' +<n>' to the given prompt, behind a '#Rewritten Prompt#:' header and quotes.
    `script(given, call_index)` can override the reply as (text, finish_reason)."""

    name = "fake"

    def __init__(self, script: Callable[[str, int], tuple[str, str] | None] | None = None) -> None:
        self.script = script
        self.calls: list[list[str]] = []
        self.params: list[SamplingParams] = []
        self.n = 0

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        self.calls.append([c[-1]["content"] for c in conversations])
        self.params.append(params)
        out = []
        for conv in conversations:
            given = given_prompt(conv[-1]["content"])
            self.n += 1
            r = self.script(given, self.n) if self.script else None
            text, fin = r if r is not None else (f'#Rewritten Prompt#:\n"{given} +{self.n}"', "stop")
            out.append([GenOutput(text, 5, fin)])
        return out


class NoModel:
    name = "none"

    def generate(self, conversations, params):  # pragma: no cover - must not be called
        raise AssertionError("the constraint evolver must not call a model")


def file_prompts(n: int = 2) -> list[Prompt]:
    return [
        Prompt(id=f"p{i}", messages=[{"role": "user", "content": f"Question number {i} about rivers?"}],
               category="science", depth=i, round=0)
        for i in range(n)
    ]  # fmt: skip


def ctx(gen, **kw) -> EvolveContext:
    return EvolveContext(generator=gen, round=kw.pop("round", 3), seed=kw.pop("seed", 11), **kw)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "raw, text",
    [
        ('#Rewritten Prompt#:\n"Write a poem about cats."', "Write a poem about cats."),
        ("#Given Prompt#:\nA\n#Rewritten Prompt#:\nB", "B"),
        ("Sure! Here is the rewritten prompt: Write X.", "Write X."),
        ("Certainly, here's a new version of the prompt:\nPlan a trip to Oslo.", "Plan a trip to Oslo."),
        ("**Rewritten Prompt:** Do Y", "Do Y"),
        ("Rewritten prompt: 'Do Z'", "Do Z"),
        ("```\nDo W\n```", "Do W"),
        ("Prompt: \u201cHi there\u201d", "Hi there"),
        ("Here is a list of numbers:\n1, 2. Sort them.", "Here is a list of numbers:\n1, 2. Sort them."),
        ('"She said "hi" to me"', '"She said "hi" to me"'),  # not a single wrapping pair
        ("   ", ""),
        ("#Rewritten Prompt#:", ""),
        (
            "#Rewritten Prompt#:\nPlan a week in Rome.\n\nThis rewritten prompt adds a time frame.",
            "Plan a week in Rome.",
        ),
        ("Plan a trip.\n\nList three sights.\n\nNote: I added a list.", "Plan a trip.\n\nList three sights."),
        ("Note: keep it short.", "Note: keep it short."),  # a lone paragraph is never commentary
        ('The prompt for the #Given Prompt# is:\n"Why is the sky blue?"', "Why is the sky blue?"),
    ],
)
def test_parse_rewrite(raw: str, text: str) -> None:
    assert parse_rewrite(raw) == text


def test_first_line_strips_list_markers() -> None:
    assert first_line("\n1. What is X?\n2. And Y?") == "What is X?"
    assert first_line("- Detail the process.") == "Detail the process."


# ---------------------------------------------------------------- lineage and chains


def test_chain_lineage_ids_and_depth() -> None:
    gen = FakeCreator()
    parents = file_prompts(2)
    kids = evolve_prompts(parents, ["deepening"], ctx(gen, num_children=2, chain_depth=2))
    assert len(kids) == 8 and len({k.id for k in kids}) == 8
    by_id = {k.id: k for k in kids}
    for k in kids:
        root = next(p for p in parents if p.id == k.parent_id)
        step = k.meta["chain_step"]
        assert re.fullmatch(rf"{root.id}-r3-deepening-[01]\.{step}", k.id)
        assert (k.method, k.round, k.depth, k.category) == ("deepening", 3, root.depth + step, "science")
        assert k.meta["chain_methods"] == ["deepening"] * step and k.meta["finish_reason"] == "stop"
        if step == 2:  # the second step rewrote the first step's text
            prev = by_id[k.meta["prev_id"]]
            assert prev.meta["chain_step"] == 1 and k.text.startswith(prev.text + " +")
        else:
            assert k.meta["prev_id"] == root.id and k.text.startswith(root.text + " +")
    # one generate call per chain step, batched over all slots, seeded deterministically
    assert [len(c) for c in gen.calls] == [4, 4]
    assert gen.params[0].seed != gen.params[1].seed and gen.params[0].n == 1
    assert all("Prompt Rewriter" in m for m in gen.calls[0])


def test_keep_intermediate_false_keeps_last_step() -> None:
    kids = evolve_prompts(
        file_prompts(2), ["persona"], ctx(FakeCreator(), chain_depth=3, keep_intermediate=False)
    )
    assert len(kids) == 2 and all(k.depth == k.meta["chain_step"] + int(k.parent_id[1]) for k in kids)
    assert all(k.meta["chain_step"] == 3 for k in kids)


def test_unusable_and_truncated_outputs_are_returned_and_end_the_chain() -> None:
    def script(given: str, i: int) -> tuple[str, str] | None:
        if "number 0" in given:
            return "#Rewritten Prompt#:\n", "stop"
        return ("Write about the Nile and", "length") if "number 1" in given else None

    kids = evolve_prompts(file_prompts(3), ["expansion"], ctx(FakeCreator(script), chain_depth=2))
    by_parent = Counter(k.parent_id for k in kids)
    assert by_parent == {"p0": 1, "p1": 1, "p2": 2}
    bad = {k.parent_id: k for k in kids if k.parent_id in ("p0", "p1")}
    assert bad["p0"].text == "" and "evolve_error" in bad["p0"].meta
    assert bad["p1"].meta["finish_reason"] == "length" and bad["p1"].text == "Write about the Nile and"


def test_default_task_keeps_constraints_consistent() -> None:
    gen = FakeCreator()
    parents = train_prompts(2, seed=1, min_constraints=2, max_constraints=2)
    kids = evolve_prompts(parents, ["concretizing"], ctx(gen))
    for k, p in zip(kids, parents):
        assert k.task == f"{p.task} +{kids.index(k) + 1}"
        assert k.constraints == p.constraints
        assert k.text == build_prompt_text(k.task, k.constraints)
    # the creator rewrote the task text only, not the constraint descriptions
    for meta_prompt, p in zip(gen.calls[0], parents):
        assert p.task in meta_prompt and all(describe(c) not in meta_prompt for c in p.constraints)


def test_evolinstruct_uses_breadth_and_depth_templates() -> None:
    gen = FakeCreator()
    kids = evolve_prompts(file_prompts(6), ["evolinstruct"], ctx(gen, num_children=3))
    used = [k.meta["chain_methods"][0] for k in kids]
    assert set(used) <= set(EVOL_METHODS) and len(set(used)) > 2
    for meta_prompt, m in zip(gen.calls[0], used):
        assert ("Prompt Creator" in meta_prompt) == (m in IN_BREADTH_KEYS)
    assert all(k.method == "evolinstruct" for k in kids)


@pytest.mark.parametrize("method", EVOL_METHODS)
def test_each_appendix_f_method_is_a_strategy(method: str) -> None:
    from evarl.io import load_template

    gen = FakeCreator()
    (kid,) = evolve_prompts(file_prompts(1), [method], ctx(gen))
    assert kid.method == method and load_template(f"method_{method}", "evolve") in gen.calls[0][0]


@pytest.mark.parametrize(
    "name, marker", [("evolcomplexity", "10 to 20 words"), ("evolquality", "enhance the quality")]
)
def test_evol_complexity_and_quality_templates(name: str, marker: str) -> None:
    gen = FakeCreator()
    kids = evolve_prompts(file_prompts(4), [name], ctx(gen))
    assert all(marker in m for m in gen.calls[0]) and all(k.method == name for k in kids)
    assert all(k.text.endswith(f"+{i + 1}") for i, k in enumerate(kids))


def test_selfinstruct_takes_first_query_line() -> None:
    gen = FakeCreator(lambda given, i: (f"1. Describe the delta of river {i}.\n2. Another one", "stop"))
    kids = evolve_prompts(file_prompts(2), ["selfinstruct"], ctx(gen))
    assert [k.text for k in kids] == ["Describe the delta of river 1.", "Describe the delta of river 2."]
    assert "# Context\nQuestion number 0 about rivers?" in gen.calls[0][0]


# ---------------------------------------------------------------- spreading over methods


def test_children_spread_evenly_and_deterministically() -> None:
    parents = file_prompts(5)
    methods = ["persona", "deepening", "constraint"]
    a = evolve_prompts(parents, methods, ctx(FakeCreator(), num_children=3))
    b = evolve_prompts(list(reversed(parents)), methods, ctx(FakeCreator(), num_children=3))
    assert Counter((k.parent_id, k.method) for k in a) == {(p.id, m): 1 for p in parents for m in methods}
    assert sorted(k.id for k in a) == sorted(k.id for k in b)
    slots = assign_methods(parents, methods, 4, seed=0)
    assert sum(len(s) for s in slots.values()) == 20
    for p in parents:  # each parent's 4 children: one method twice, the others once
        per = sorted(sum(q.id == p.id for q, _ in slots[m]) for m in methods)
        assert per == [1, 1, 2]
    ks = sorted(k for m in methods for q, k in slots[m] if q.id == "p0")
    assert ks == [0, 1, 2, 3]


def test_third_party_evolver_gets_its_child_count() -> None:
    seen: list[int] = []

    class Echo:
        name = "echo-test"

        def evolve(self, parents: list[Prompt], c: EvolveContext) -> list[Prompt]:
            seen.append(c.num_children)
            return [
                Prompt(id=f"{p.id}-echo{k}", messages=p.messages, parent_id=p.id, method="echo-test")
                for p in parents
                for k in range(c.num_children)
            ]

    if "echo-test" not in EVOLVERS:
        EVOLVERS.register("echo-test")(Echo)
    parents = file_prompts(3)
    kids = evolve_prompts(parents, ["echo-test", "persona"], ctx(FakeCreator(), num_children=3))
    slots = assign_methods(parents, ["echo-test", "persona"], 3, seed=11)
    assert sum(k.method == "echo-test" for k in kids) == len(slots["echo-test"])
    assert set(seen) <= {1, 2} and sum(k.method == "persona" for k in kids) == len(slots["persona"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        evolve_prompts(file_prompts(1), ["persona", "persona"], ctx(FakeCreator()))
    with pytest.raises(KeyError, match="unknown evolve method 'nope'"):
        evolve_prompts(file_prompts(1), ["nope"], ctx(FakeCreator()))
    with pytest.raises(ValueError, match="creator.num_evolutions"):
        evolve_prompts(file_prompts(1), ["persona"], ctx(FakeCreator(), num_children=0))
    with pytest.raises(ValueError, match="creator.methods"):
        evolve_prompts(file_prompts(1), [], ctx(FakeCreator()))

    class Short:
        name = "short"

        def generate(self, conversations, params):
            return []

    with pytest.raises(RuntimeError, match="returned 0 results for 1"):
        generate_one(Short(), [[{"role": "user", "content": "x"}]], SamplingParams())


# ---------------------------------------------------------------- the constraint evolver


def test_constraint_evolver_adds_or_changes_one_constraint() -> None:
    parents = train_prompts(6, seed=2, min_constraints=1, max_constraints=2)
    kids = evolve_prompts(parents, ["constraint"], ctx(NoModel(), num_children=2, chain_depth=2))
    assert len(kids) == 24
    by_id = {p.id: p for p in parents} | {k.id: k for k in kids}
    ops = Counter()
    for k in kids:
        prev = by_id[k.meta["prev_id"]]
        root = by_id[k.parent_id]
        assert k.task == root.task and k.text == build_prompt_text(k.task, k.constraints)
        op = k.meta["chain_methods"][-1]
        ops[op.split(":")[0]] += 1
        if op.startswith("add:"):
            assert k.constraints[:-1] == prev.constraints and k.constraints[-1].id == op[4:]
        else:
            assert len(k.constraints) == len(prev.constraints)
            assert sum(a != b for a, b in zip(k.constraints, prev.constraints)) == 1
    assert ops["add"] > 0 and ops["change"] > 0
    again = evolve_prompts(parents, ["constraint"], ctx(NoModel(), num_children=2, chain_depth=2))
    assert [k.to_dict() for k in again] == [k.to_dict() for k in kids]


def test_constraint_evolver_at_cap_changes_and_handles_file_prompts() -> None:
    (p,) = train_prompts(1, seed=4, min_constraints=2, max_constraints=2)
    kids = evolve_prompts([p], ["constraint"], ctx(NoModel(), num_children=4, max_constraints=2))
    assert all(len(k.constraints) == 2 and k.meta["chain_methods"][0].startswith("change:") for k in kids)
    (f,) = evolve_prompts(file_prompts(1), ["constraint"], ctx(NoModel()))
    assert f.task == "Question number 0 about rivers?" and len(f.constraints) == 1
    assert f.text == build_prompt_text(f.task, f.constraints)


def test_evolve_constraints_none_when_nothing_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import evarl.tasks.constraints as tc

    monkeypatch.setattr(tc, "random_constraint", lambda rng, existing, pool="ifeval": None)
    assert evolve_constraints(random.Random(0), [Constraint("punctuation:no_comma")], 6) is None
    (k,) = evolve_prompts(train_prompts(1), ["constraint"], ctx(NoModel()))
    assert k.meta["evolve_error"] and k.text == train_prompts(1)[0].text  # the copy filter will count it


# ---------------------------------------------------------------- tree best-of-N


def test_select_best() -> None:
    assert select_best([True, True, True], [3.0, 4.5, 4.5]) == 1
    assert select_best([True, True], [None, 1.0]) == 1
    assert select_best([True, True], [None, None]) == 0
    assert select_best([False, True], [5.0, None]) == 1
    assert select_best([False, False], [5.0, 5.0]) is None


class Judge:
    """Scores a question by the number at its end: ' +7' -> 5 when 7 is the best candidate index mod 3."""

    name = "judge"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, conversations, params):
        self.calls += 1
        out = []
        for c in conversations:
            q = re.search(r"#Question#:\n(.*?)\n\nReply", c[-1]["content"], re.S).group(1)
            n = int(q.rsplit("+", 1)[1])
            out.append([GenOutput("Score: 5" if n % 3 == 2 else "I cannot rate this.", 2, "stop")])
        return out


def test_tree_bon_keeps_the_best_candidate() -> None:
    gen, judge = FakeCreator(), Judge()
    kids = evolve_prompts(file_prompts(2), ["tree-bon"], ctx(gen, chain_depth=2, tree_width=3, judge=judge))
    assert [len(c) for c in gen.calls] == [6, 6] and judge.calls == 4  # 2 aspects x 2 levels
    assert len(kids) == 4
    for k in kids:
        tree = k.meta["tree"]
        assert (
            len(tree) == 3 and k.meta["tree_choice"] == 1
        )  # candidate numbers 3j+1, 3j+2, 3j+3 -> the middle
        assert tree[1]["scores"] == {"complexity": 5, "quality": 5} and tree[0]["score"] is None
        assert k.meta["chain_methods"][-1] == tree[1]["method"] and k.method == "tree-bon"
    level2 = [k for k in kids if k.meta["chain_step"] == 2]
    assert all(k.text.count("+") == 2 for k in level2)


def test_tree_bon_all_unusable_returns_first_and_stops() -> None:
    gen = FakeCreator(lambda given, i: ("", "stop"))
    kids = evolve_prompts(file_prompts(1), ["tree-bon"], ctx(gen, chain_depth=3, tree_width=2, judge=Judge()))
    assert len(kids) == 1 and kids[0].text == "" and kids[0].meta["tree_choice"] == 0


# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    "reply, score",
    [
        ("4", 4),
        ("Score: 3", 3),
        ("score is 5.", 5),
        ("I'd rate it 2/5", 2),
        ("[[1]]", 1),
        ("3.0", 3),
        ("The question is moderate (3).", 3),
        ("Score: 7", None),
        ("10", None),
        ("", None),
        ("no idea", None),
        ("2.5 out of 5", None),
    ],
)
def test_parse_score(reply: str, score: int | None) -> None:
    assert parse_score(reply) == score


def test_score_prompts_and_curriculum_stats() -> None:
    class Rater:
        name = "rater"

        def generate(self, conversations, params):
            assert params.temperature == 0.0
            aspect = "complexity" if "difficulty" in conversations[0][-1]["content"] else "quality"
            return [[GenOutput({"complexity": "2", "quality": "oops"}[aspect] if i else "5", 1, "stop")]
                    for i, _ in enumerate(conversations)]  # fmt: skip

    ps = file_prompts(3)
    ps[1] = Prompt(id="e1", messages=ps[1].messages, category="maths", method="persona", depth=2,
                   constraints=[Constraint("punctuation:no_comma")])  # fmt: skip
    scores = score_prompts(ps, Rater(), seed=0)
    assert scores == [
        {"prompt_id": "p0", "complexity": 5, "quality": 5},
        {"prompt_id": "e1", "complexity": 2, "quality": None},
        {"prompt_id": "p2", "complexity": 2, "quality": None},
    ]
    st = curriculum_stats(ps, {"p0": 1.0, "e1": 3.0, "p2": 2.0, "gone": 100.0}, scores)
    assert st["num_prompts"] == 3 and st["info"]["count"] == 3
    assert st["info"]["mean"] == pytest.approx(2.0) and st["info"]["std"] == pytest.approx((2 / 3) ** 0.5)
    assert (st["info"]["min"], st["info"]["max"], st["info"]["q50"]) == (1.0, 3.0, 2.0)
    assert st["complexity_mean"] == pytest.approx(3.0) and st["quality_mean"] == 5.0
    assert st["quality_failed"] == 2 and st["complexity_failed"] == 0 and st["scored"] == 3
    assert st["categories"] == {"maths": 1, "science": 2}
    assert st["methods"] == {"persona": 1, "seed": 2}
    assert st["depth_histogram"] == {"0": 1, "2": 2}
    assert st["num_constraints_mean"] == pytest.approx(1 / 3)
    empty = curriculum_stats([], {}, None)
    assert empty["info"]["count"] == 0 and "complexity_mean" not in empty


def test_context_from_config_reads_every_creator_field() -> None:
    from evarl.config import CreatorConfig

    c = CreatorConfig(temperature=0.3, max_new_tokens=17, num_evolutions=5, chain_depth=4,
                      keep_intermediate=False, tree_width=7, max_constraints=2)  # fmt: skip
    x = EvolveContext.from_config(c, FakeCreator(), round=2, seed=9)
    assert (x.temperature, x.max_new_tokens, x.num_children, x.chain_depth) == (0.3, 17, 5, 4)
    assert (x.keep_intermediate, x.tree_width, x.max_constraints, x.round, x.seed) == (False, 7, 2, 2, 9)
    assert x.judge is None
