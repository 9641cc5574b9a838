"""The pieces of the pipeline recipes without models: EFT examples, few-shot self-instruct (a scripted creator),
its filters, teacher-demonstration pairs, historical pairs, best_round, ranking metrics with intervals, and the
recipes' configs (embedded and paper scale, validated offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.config import check_config, load_config
from evarl.creator.evolve.base import EvolveContext
from evarl.creator.evolve.fewshot_selfinstruct import (
    SHOTS,
    FewShotSelfInstruct,
    creation_prompt,
    parse_task,
    pick_examples,
    rouge,
    rouge_l,
    selfinstruct,
    selfinstruct_problem,
    wrap_question,
)
from evarl.creator.filters import FilterContext, apply_filters
from evarl.eft import eft_example_from_row, judge_template, load_eft_examples
from evarl.eval.rm_metrics import ranking_report_with_intervals
from evarl.generation.base import GenOutput, SamplingParams
from evarl.io import DataError
from evarl.loop import best_round, demo_pairs, history_pairs
from evarl.rewards.judge import parse_score
from evarl.types import Completion, Pair, Prompt

ROOT = Path(__file__).parents[2]


def P(pid: str, text: str, **kw) -> Prompt:
    return Prompt(id=pid, messages=[{"role": "user", "content": text}], **kw)


# ---------------------------------------------------------------- EFT


def test_eft_row_becomes_the_judges_prompt_and_a_parsable_judgement() -> None:
    tpl = judge_template()
    ex = eft_example_from_row(
        {"prompt": "What is 2+2?", "response": "4", "score": 4, "rationale": "Correct but terse."}, "f:1", tpl
    )
    body = ex.prompt[0]["content"]
    assert "additive 5-point scoring system" in body and "User: What is 2+2?" in body
    assert "<response>4</response>" in body
    assert ex.completion == "Correct but terse.\n\nScore: 4" and parse_score(ex.completion) == 4.0
    empty = eft_example_from_row({"prompt": "q", "response": "r", "score": 0, "rationale": ""}, "f:2", tpl)
    assert empty.completion == "Score: 0"


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "q", "response": "r", "score": 3}, r"f:7: field 'rationale': missing"),
        ({"prompt": "q", "response": "", "score": 3, "rationale": ""}, r"f:7: field 'response'"),
        (
            {"prompt": "q", "response": "r", "score": 6, "rationale": ""},
            r"f:7: field 'score': must be in \[0, 5\]",
        ),
        (
            {"prompt": "q", "response": "r", "score": "3", "rationale": ""},
            r"f:7: field 'score': expected a number",
        ),
        (
            {"prompt": "q", "response": "r", "score": 3, "rationale": 5},
            r"f:7: field 'rationale': expected a string",
        ),
        (
            {"prompt": [{"role": "user"}], "response": "r", "score": 3, "rationale": ""},
            r"f:7: field 'prompt\[0\]'",
        ),
    ],
)
def test_bad_eft_rows_name_file_line_field(row: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        eft_example_from_row(row, "f:7", judge_template())


def test_shipped_eft_rows_load() -> None:
    exs = load_eft_examples("embedded", judge_template())
    assert len(exs) == 24
    assert {parse_score(e.completion) for e in exs} >= {0.0, 1.0, 5.0}


# ---------------------------------------------------------------- few-shot self-instruct


class Scripted:
    """A creator that answers each conversation with the next scripted reply; records what it was asked."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, str]]] = []

    def generate(self, conversations, params: SamplingParams) -> list[list[GenOutput]]:
        self.seen.extend(conversations)
        return [[GenOutput(self.replies.pop(0), 5, "stop")] for _ in conversations]


def test_creation_prompt_is_figure_2_with_numbered_tasks() -> None:
    text = creation_prompt(["Name a colour.", "What is  2+2?"])
    assert text.startswith("Come up with a series of tasks and questions.")
    assert text.endswith("Task 1: Name a colour.\nTask 2: What is 2+2?\nTask 3:")


@pytest.mark.parametrize(
    ("raw", "task"),
    [
        ("Task 4: Write a haiku about rain.\nTask 5: x", "Write a haiku about rain."),
        ("**Task 4:** Describe the water cycle.", "Describe the water cycle."),
        ("Sure! Here are new tasks:\n1. Explain gravity.", "Explain gravity."),
        ('"Summarize Hamlet."', "Summarize Hamlet."),
        ("Task 4:", ""),
    ],
)
def test_parse_task(raw: str, task: str) -> None:
    assert parse_task(raw) == task


def test_wrap_question_is_figure_3() -> None:
    assert wrap_question("Name a fruit") == (
        "Provide a direct response to the following question in 256 characters or fewer. Keep your answer "
        "concise and do not add additional questions or comments. Stick to the requested format: Name a fruit."
    )
    assert wrap_question("Why?").endswith("format: Why?")


def test_examples_are_seeded_and_include_the_parent() -> None:
    pool = [P(f"p{i}", f"Task number {i} here.") for i in range(8)]
    ctx = EvolveContext(generator=Scripted([]), round=1, seed=3)
    a = pick_examples(pool[2], pool, 0, ctx)
    assert a == pick_examples(pool[2], list(reversed(pool)), 0, ctx)  # order of the pool does not matter
    assert len(a) == SHOTS and "Task number 2 here." in a and len(set(a)) == SHOTS
    assert a != pick_examples(pool[2], pool, 1, ctx)


def test_evolver_makes_fresh_wrapped_tasks_with_lineage() -> None:
    from evarl.types import Constraint

    parent = Prompt(
        id="s1",
        messages=[{"role": "user", "content": "Describe a park. Use no commas."}],
        task="Describe a park.",
        constraints=[Constraint("punctuation:no_comma", {})],
    )
    other = P("s2", "List three fruits.")
    gen = Scripted(["Task 5: Explain how rainbows form.", "I cannot do that:", "Task 5: Name a river.", "x"])
    ctx = EvolveContext(generator=gen, round=2, seed=0, num_children=2)
    kids = FewShotSelfInstruct().evolve([parent, other], ctx)
    assert len(kids) == 4 and all(k.method == "fewshot_selfinstruct" and k.round == 2 for k in kids)
    first = kids[0]
    assert first.parent_id == "s1" and first.constraints == [] and first.task == "Explain how rainbows form."
    assert first.meta["question"] == first.task
    assert first.text == wrap_question("Explain how rainbows form.")
    assert kids[1].text == "" and kids[1].meta["evolve_error"]  # nothing usable: counted by the empty filter
    assert all(c[0]["content"].startswith("Come up with a series") for c in gen.seen)
    kept, dropped = apply_filters(kids, [parent, other], ["empty", "selfinstruct", "rouge"], 2000, 0.95)
    assert [k.task for k in kept] == ["Explain how rainbows form.", "Name a river."]
    assert dropped["empty"] == 1 and dropped["selfinstruct"] == 1  # "x": fewer than 3 words


def test_selfinstruct_rules_and_rouge() -> None:
    assert selfinstruct_problem("Draw a picture of a cat.").startswith("asks for what")
    assert selfinstruct_problem("Hi there") == "fewer than 3 words"
    assert selfinstruct_problem("- Explain gravity to me.") == "starts with punctuation"
    assert (
        selfinstruct_problem("Élucidez la gravité, s'il vous plaît.") == "starts with a non-ASCII character"
    )
    assert selfinstruct_problem("Explain how rain forms.") is None
    assert rouge_l(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == 1.0
    assert rouge_l(["a", "b", "c", "d"], ["a", "b", "c", "e"]) == pytest.approx(0.75)
    parents = [P("p", "Explain how rain forms in clouds.")]
    kids = [
        P("c1", "Explain how rain forms in the clouds.", task="Explain how rain forms in the clouds."),
        P("c2", "Name three large rivers of Europe.", task="Name three large rivers of Europe."),
        P("c3", "Name three large rivers of Asia.", task="Name three large rivers of Asia."),
    ]
    ctx = FilterContext(parents, 2000, 0.95)
    assert rouge(kids, ctx) == [False, True, False]  # c3 is too close to the kept c2
    assert selfinstruct(kids, ctx) == [True, True, True]


# ---------------------------------------------------------------- teacher demonstration, history, best_round


def test_demo_pairs_count_every_prompt_without_a_pair() -> None:
    prompts = {k: P(k, f"q {k}") for k in "abcdef"}
    teacher = [
        Completion("a", 0, "Teacher answer A.", 4, "stop"),
        Completion("b", 0, "", 0, "error"),  # refused / timed out
        Completion("c", 0, "   ", 1, "stop"),
        Completion("d", 0, "Cut off", 8, "length"),
        Completion("e", 0, "Same text.", 3, "stop"),
        Completion("f", 0, "Teacher F.", 3, "stop"),
    ]
    student = [Completion(k, j, f"student {k}{j}", 3, "stop") for k in "abcd" for j in (1, 0)]
    student += [Completion("e", 0, "Same text.", 3, "stop")]
    pairs, skipped = demo_pairs(prompts, teacher, student)
    assert [(p.prompt_id, p.chosen, p.rejected) for p in pairs] == [("a", "Teacher answer A.", "student a0")]
    assert skipped == {
        "teacher_failed": 1,
        "teacher_empty": 1,
        "teacher_truncated": 1,
        "identical": 1,
        "no_student": 1,
    }


def _write_pairs(path: Path, pairs: list[Pair]) -> Path:
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    return path


def test_history_pairs_offline_rounds_and_duplicates(tmp_path: Path) -> None:
    msg = [{"role": "user", "content": "q1"}]
    r1 = _write_pairs(tmp_path / "r1.jsonl", [Pair("x1", msg, "good", "bad", 1.0, 0.0)])
    r2 = _write_pairs(
        tmp_path / "r2.jsonl",
        [Pair("x1", msg, "good", "bad", 0.9, 0.1), Pair("x2", msg, "better", "bad", 1.0, 0.0)],
    )
    off = tmp_path / "off.jsonl"
    off.write_text(
        json.dumps({"prompt": "q1", "chosen": "good", "rejected": "bad"})
        + "\n"
        + json.dumps({"prompt": "q9", "chosen": "same", "rejected": " same "})
        + "\n"
    )
    pairs, counts = history_pairs([r1, r2], str(off))
    assert [(p.prompt_id, p.chosen) for p in pairs] == [("offline-1", "good"), ("x2", "better")]
    assert counts == {
        "pairs_trained": 2,
        "from_rounds": 2,
        "offline_pairs": 2,
        "duplicates_dropped": 2,
        "identical_dropped": 1,
    }
    assert history_pairs([r2], None)[1]["pairs_trained"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q"}\n')
    with pytest.raises(DataError, match="solver.offline_pairs: .*bad.jsonl:1: missing field 'chosen'"):
        history_pairs([], str(bad))


def test_best_round_by_heldout_mean_with_interval(tmp_path: Path) -> None:
    means = {0: 0.4, 1: 0.7, 2: 0.7}
    for t, m in means.items():
        d = tmp_path / f"round-{t:03d}"
        d.mkdir()
        iv = {"mean": m, "lo": m - 0.1, "hi": m + 0.1, "n": 24}
        (d / "eval.json").write_text(
            json.dumps({"heldout": {"mean_reward": m, "intervals": {"mean_reward": iv}}})
        )
    b = best_round(tmp_path, 3)
    assert (b["round"], b["mean"], b["lo"], b["hi"], b["n"]) == (1, 0.7, 0.6, 0.7 + 0.1, 24)  # tie: earlier
    assert [x["round"] for x in b["all"]] == [0, 1, 2]
    assert best_round(tmp_path / "nothing", 2) is None


# ---------------------------------------------------------------- ranking metrics with intervals


def test_ranking_report_with_intervals() -> None:
    pred = [[5, 3, 1], [2, 4, 4], [1, 2, 3]]
    ref = [[3, 2, 1], [1, 2, 3], [3, 2, 1]]
    out = ranking_report_with_intervals(pred, ref, max_score=5, n_boot=200, seed=1)
    pa = out["pairwise_accuracy"]
    assert pa["n"] == 9 and pa["value"] == pytest.approx((3 + 2.5 + 0) / 9)
    assert pa["lo"] <= pa["value"] <= pa["hi"]
    assert out["exact_match"]["value"] == pytest.approx(1 / 3) and out["exact_match"]["n"] == 3
    assert out["five_best"] == {"value": 1.0, "n": 1, "lo": 1.0, "hi": 1.0}
    assert out["spearman"]["n"] == 3 and -1 <= out["kendall_tau"]["value"] <= 1
    assert out == ranking_report_with_intervals(pred, ref, max_score=5, n_boot=200, seed=1)
    assert "five_best" not in ranking_report_with_intervals(pred, ref, n_boot=10)


# ---------------------------------------------------------------- configs


RECIPES = ["self-reward", "teacher-reward", "teacher-demo", "iterative-rlhf"]


@pytest.mark.parametrize("name", RECIPES)
def test_embedded_recipes_validate(name: str) -> None:
    cfg, errors, _ = check_config(ROOT / "configs" / f"{name}.yaml", [])
    assert errors == [] and cfg.model.path == "embedded"


def test_recipes_say_what_the_papers_say() -> None:
    sr = load_config(ROOT / "configs" / "self-reward.yaml")
    assert sr.creator.methods == ["fewshot_selfinstruct"] and sr.generation.n == 4
    assert sr.reward.sources[0].name == "judge" and sr.reward.sources[0].model == "policy"
    assert sr.solver.pair_rule == "best_worst" and sr.solver.eft_data == ["embedded"]
    td = load_config(ROOT / "configs" / "teacher-demo.yaml")
    assert td.solver.pairs == "teacher_demo" and td.solver.teacher
    rl = load_config(ROOT / "configs" / "iterative-rlhf.yaml")
    assert (rl.generation.n, rl.solver.history, rl.solver.reference) == (8, "all", "initial")
    assert rl.reward.length_penalty > 0 and rl.solver.pair_rule == "best_worst"


PAPER = sorted((ROOT / "configs" / "paper" / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_scale_recipes_validate_offline(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    cfg = load_config(path)
    over = []
    if cfg.task.train_file:
        over.append(f"task.train_file={data}")
    over += [f"solver.sft_data=[{data}]"] if cfg.solver.sft_data else []
    over += (
        [f"solver.eft_data=[{data}]"] if cfg.solver.eft_data and cfg.solver.eft_data != ["embedded"] else []
    )
    over += [f"solver.offline_pairs={data}"] if cfg.solver.offline_pairs else []
    cfg, errors, notes = check_config(path, over)
    assert errors == [], errors
    # vLLM is an optional extra: without it `evarl validate` notes the recipe's backend (`evarl run` refuses)
    allowed = ("is not in the local Hugging Face cache", "rows, fewer than", "needs the vllm package")
    assert all(any(a in n for a in allowed) for n in notes), notes
    head = path.read_text().split("\nname:")[0]
    assert "GPUs:" in head and f"configs/paper/pipelines/{path.name}" in head
    assert cfg.solver.param_dtype == "bfloat16" and cfg.device == "auto"
    assert len(PAPER) == 4


# ---------------------------------------------------------------- head-to-head between iterates


class OrderJudge:
    """Prefers the output that contains "GOOD"; with `biased` it always answers "Output (a)" (so the two
    orders disagree: a tie)."""

    name = "order-judge"

    def __init__(self, biased: set[str]) -> None:
        self.biased = biased

    def generate(self, conversations, params):
        outs = []
        for c in conversations:
            text = c[0]["content"]
            a = text.split("## Output (a)")[1].split("## Output (b)")[0]
            ins = text.split("## Instruction")[1].split("## Output (a)")[0].strip()
            verdict = "Output (a)" if ins in self.biased or "GOOD" in a else "Output (b)"
            outs.append([GenOutput(verdict, 3, "stop")])
        return outs


def test_head_to_head_between_iterates(tmp_path: Path) -> None:
    from evarl.eval.head_to_head import head_to_head

    prompts = [P(f"h{i}", f"question {i}") for i in range(4)]
    (tmp_path / "heldout_prompts.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts))
    texts = {0: ["bad"] * 4, 1: ["GOOD", "GOOD", "bad", "GOOD"], 2: ["GOOD"] * 4}
    for t, outs in texts.items():
        d = tmp_path / f"round-{t:03d}"
        d.mkdir()
        rows = [{"prompt_id": f"h{i}", "index": 0, "text": o} for i, o in enumerate(outs)]
        (d / "eval_generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = head_to_head(tmp_path, OrderJudge({"question 3"}), n_boot=100)
    by = {(c["model"], c["baseline"]): c for c in res["comparisons"]}
    assert set(by) == {(1, 0), (2, 0), (2, 1)}
    c10 = by[(1, 0)]  # h0, h1: wins; h2 (neither GOOD: "Output (b)" in both orders) and h3 (biased): ties
    assert (c10["n_wins"], c10["n_ties"], c10["n_losses"], c10["n_total"]) == (2, 2, 0, 4)
    assert c10["win_rate"] == pytest.approx(75.0) and c10["win_rate_ci"][0] <= 75.0 <= c10["win_rate_ci"][1]
    assert c10["tie_rate_ci"][0] <= 0.5 <= c10["tie_rate_ci"][1]
    c21 = by[(2, 1)]  # GOOD vs GOOD: each order prefers (a): ties; h2 GOOD vs bad: a win
    assert (c21["n_wins"], c21["n_ties"]) == (1, 3) and c21["win_rate"] == pytest.approx(62.5)
    assert json.loads((tmp_path / "head_to_head.json").read_text())["comparisons"][0]["items"]


def test_failure_rate_carries_n_and_interval() -> None:
    from evarl.loop import failure_rate

    fr = failure_rate({"scored": 16, "failed": 4})
    assert (fr["mean"], fr["n"]) == (0.25, 16) and fr["lo"] <= 0.25 <= fr["hi"]
    assert failure_rate({"scored": 0, "failed": 0}) is None and failure_rate({}) is None


def test_evaluate_ranking_against_reference_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evarl.reward_training.cli as rc
    from evarl.types import RewardResult

    class LengthJudge:
        """Scores a response by its length in words (max 5); "???" does not parse (a failed item)."""

        def score(self, prompts, responses):
            return [
                RewardResult(float("nan"), failed=True)
                if r == "???"
                else RewardResult(min(5.0, len(r.split())))
                for r in responses
            ]

    monkeypatch.setattr(rc, "ranking_scorer", lambda *a, **k: (LengthJudge(), 5.0))
    data = tmp_path / "rank.jsonl"
    rows = [
        {"prompt": "q1", "responses": ["a b c d e", "a b", "a"], "reference": [3, 2, 1]},
        {"prompt": "q2", "responses": ["a b c", "a b c d e f"], "reference": [2, 1]},
        {"prompt": "q3", "responses": ["???", "a b"], "reference": [1, 2]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = rc.evaluate_ranking("judge-x", data, "judge", n_boot=50)
    assert (out["n_rows"], out["n_responses_failed"], out["n_prompts_dropped"]) == (3, 1, 1)
    assert out["pairwise_accuracy"]["value"] == pytest.approx(3 / 4) and out["pairwise_accuracy"]["n"] == 4
    assert out["exact_match"]["value"] == 0.5 and out["exact_match"]["n"] == 2
    assert out["five_best"]["value"] == 0.5 and out["five_best"]["n"] == 2  # q1's best; q2's perfect is worst
    assert out["spearman"]["n"] == 2 and out["kendall_tau"]["lo"] is not None


class CutReplies(Scripted):
    def generate(self, conversations, params):
        self.seen.extend(conversations)
        return [[GenOutput(self.replies.pop(0), 32, "length")] for _ in conversations]


def test_a_reply_cut_after_the_task_line_keeps_a_whole_task() -> None:
    gen = CutReplies(["Explain how tides work.\n\nTask 6: Describe a", "Describe the colour of the"])
    kids = FewShotSelfInstruct().evolve([P("s1", "Name a fruit.")], EvolveContext(gen, 1, 0, num_children=2))
    assert [k.meta["finish_reason"] for k in kids] == ["stop", "length"]
    assert kids[0].meta["reply_finish_reason"] == "length"
    kept, dropped = apply_filters(kids, [P("s1", "Name a fruit.")], ["empty", "truncated"], 2000, 0.95)
    assert [k.task for k in kept] == ["Explain how tides work."] and dropped["truncated"] == 1
