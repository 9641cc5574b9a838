"""MT-Bench-style single-answer grading (Zheng et al., 2023, "Judging LLM-as-a-Judge with MT-Bench and
Chatbot Arena"; FastChat `llm_judge`), as used by the eva paper (seed 001, §4, Tables 1-2: avg, turn 1,
turn 2) and seed 003 (§4, appendix A.2: the mean of both turns' 1-10 scores).

The model answers turn 1, then turn 2 with its own first answer in context. A judge `Generator` rates each
turn 1-10 with the templates `evarl/prompts/eval/mtbench_single.txt` (turn 1) and `mtbench_multiturn.txt`
(turn 2, the whole conversation shown, the second answer rated). Questions with `reference` answers (math,
reasoning, coding in MT-Bench) get them in the judge prompt, as FastChat's reference-guided grading does.

The rating is parsed as FastChat does: `[[x]]`, falling back to `[x]`; a reply without one, or a value
outside 1-10, is a parse failure (flagged, counted, excluded from every average; FastChat stores -1).

The shipped templates are evarl's paraphrases, labelled as such in the output. FastChat's own judge prompts are
used when the user gives their copy of `fastchat/llm_judge/data/judge_prompts.jsonl` (`FastChatPrompts`, read in
FastChat's format): `single-v1` for turn 1, `single-v1-multi-turn` for turn 2, and for the categories FastChat
grades against a reference (math, reasoning, coding) `single-math-v1` / `single-math-v1-multi-turn` with the
question's reference answers, each sent as FastChat sends it (its system prompt, then the filled template).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evarl.eval.formats import MTBenchQuestion
from evarl.eval.stats import mean_interval
from evarl.generation.base import Generator, SamplingParams
from evarl.io import DataError, fill_template, iter_jsonl, load_template

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
SINGLE_SLOTS = ("question", "answer")
MULTI_SLOTS = ("question_1", "answer_1", "question_2", "answer_2")


@dataclass
class MTBenchAnswer:
    question_id: str
    category: str
    turns: list[str]  # the model's answer to each user turn


@dataclass
class TurnGrade:
    question_id: str
    category: str
    turn: int  # 1-based
    score: float | None  # None = judge output did not parse
    failed: bool
    judgement: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_rating(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The judge's rating: the last `[[x]]` (else the last `[x]`); None when absent or outside [low, high]."""
    found = _RATING.findall(text) or _RATING_FALLBACK.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return value if low <= value <= high else None


# FastChat's llm_judge: categories graded against reference answers
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
FASTCHAT_NAMES = ("single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn")


@dataclass
class FastChatPrompts:
    """FastChat's single-answer judge prompts, by name: (system_prompt, prompt_template)."""

    prompts: dict[str, tuple[str, str]]
    source: str

    @classmethod
    def from_jsonl(cls, path: str) -> FastChatPrompts:
        """Read FastChat's ``judge_prompts.jsonl`` (rows with name, type, system_prompt, prompt_template)."""
        found: dict[str, tuple[str, str]] = {}
        for line, row in iter_jsonl(path):
            name = row.get("name")
            if name not in FASTCHAT_NAMES:
                continue  # pairwise prompts and others are not used for single-answer grading
            for key in ("system_prompt", "prompt_template"):
                if not isinstance(row.get(key), str):
                    raise DataError(f"{path}:{line}: {key}: expected a string in judge prompt {name!r}")
            found[name] = (row["system_prompt"], row["prompt_template"])
        missing = [n for n in FASTCHAT_NAMES if n not in found]
        if missing:
            raise DataError(f"{path}: FastChat judge prompts {missing} not found (names are matched exactly)")
        return cls(found, f"FastChat judge_prompts.jsonl {path}")

    def conversation(self, name: str, **fields: str) -> list[dict[str, str]]:
        system, template = self.prompts[name]
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": fill_template(template, **fields)},
        ]


def answer_mtbench(
    generator: Generator, questions: Sequence[MTBenchQuestion], params: SamplingParams
) -> list[MTBenchAnswer]:
    """Answer every turn in order; turn k sees the user turns 1..k and the model's own answers 1..k-1.

    One batched `generate` call per turn index. `params.n` must be 1 (one answer per turn is graded).
    """
    if params.n != 1:
        raise ValueError(f"MT-Bench answers one response per turn; got n={params.n}")
    answers = [MTBenchAnswer(q.question_id, q.category, []) for q in questions]
    convs: list[list[dict[str, str]]] = [[] for _ in questions]
    max_turns = max((len(q.turns) for q in questions), default=0)
    for t in range(max_turns):
        active = [i for i, q in enumerate(questions) if len(q.turns) > t]
        batch = []
        for i in active:
            convs[i].append({"role": "user", "content": questions[i].turns[t]})
            batch.append(list(convs[i]))
        outs = generator.generate(batch, params)
        for i, out in zip(active, outs):
            text = out[0].text
            convs[i].append({"role": "assistant", "content": text})
            answers[i].turns.append(text)
    return answers


def _reference(q: MTBenchQuestion, turn: int) -> tuple[str, str]:
    if not q.reference or len(q.reference) < turn:
        return "", ""
    note = " Your evaluation should compare the assistant's answer with the reference answer."
    if turn == 1:
        block = f"\n[The Start of Reference Answer]\n{q.reference[0]}\n[The End of Reference Answer]\n"
    else:
        block = (
            "\n<|The Start of Reference Answer|>\n\n### User:\n"
            f"{q.turns[0]}\n\n### Reference answer:\n{q.reference[0]}\n\n### User:\n{q.turns[1]}\n\n"
            f"### Reference answer:\n{q.reference[1]}\n\n<|The End of Reference Answer|>\n"
        )
    return note, block


def grade_mtbench(
    judge: Generator,
    questions: Sequence[MTBenchQuestion],
    answers: Sequence[MTBenchAnswer],
    params: SamplingParams | None = None,
    single_template: str | None = None,
    multi_template: str | None = None,
    fastchat: FastChatPrompts | None = None,
) -> list[TurnGrade]:
    """Grade turn 1 and turn 2 of every question (questions with one turn get one grade), one batched call.

    With ``fastchat`` the prompts are FastChat's own (see the module docstring); otherwise evarl's templates."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    single = single_template or load_template("mtbench_single", "eval", SINGLE_SLOTS)
    multi = multi_template or load_template("mtbench_multiturn", "eval", MULTI_SLOTS)
    params = params or SamplingParams(n=1, temperature=0.0, max_new_tokens=256)
    convs, keys = [], []
    for q, a in zip(questions, answers):
        if a.question_id != q.question_id:
            raise ValueError(f"answers out of order: question {q.question_id} vs answer {a.question_id}")
        if fastchat is not None:
            ref = q.category in NEED_REF_CATS and bool(q.reference)
            refs = {f"ref_answer_{i + 1}": r for i, r in enumerate(q.reference or [])}
            convs.append(
                fastchat.conversation(
                    "single-math-v1" if ref else "single-v1", question=q.turns[0], answer=a.turns[0], **refs
                )
            )
            keys.append((q, 1))
            if len(q.turns) >= 2 and len(a.turns) >= 2:
                name = "single-math-v1-multi-turn" if ref else "single-v1-multi-turn"
                turns = {"question_1": q.turns[0], "answer_1": a.turns[0]}
                turns.update(question_2=q.turns[1], answer_2=a.turns[1])
                convs.append(fastchat.conversation(name, **turns, **refs))
                keys.append((q, 2))
            continue
        note, block = _reference(q, 1)
        prompt = fill_template(
            single, question=q.turns[0], answer=a.turns[0], reference_note=note, reference_block=block
        )
        convs.append([{"role": "user", "content": prompt}])
        keys.append((q, 1))
        if len(q.turns) >= 2 and len(a.turns) >= 2:
            note, block = _reference(q, 2)
            prompt = fill_template(
                multi,
                question_1=q.turns[0],
                answer_1=a.turns[0],
                question_2=q.turns[1],
                answer_2=a.turns[1],
                reference_note=note,
                reference_block=block,
            )
            convs.append([{"role": "user", "content": prompt}])
            keys.append((q, 2))
    outs = judge.generate(convs, params) if convs else []
    grades = []
    for (q, turn), out in zip(keys, outs):
        text = out[0].text
        score = parse_rating(text)
        grades.append(TurnGrade(q.question_id, q.category, turn, score, score is None, text))
    return grades


def mtbench_metrics(grades: Sequence[TurnGrade]) -> dict[str, Any]:
    """Average score over all graded turns (`avg`), per turn (`turn_1`, `turn_2`) and per category (pure).

    Failed grades are counted (`n_failed`, also per turn) and excluded. An empty group's average is None.
    """

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    ok = [g for g in grades if not g.failed and g.score is not None]
    by_turn: dict[int, list[float]] = defaultdict(list)
    by_cat: dict[str, list[float]] = defaultdict(list)
    for g in ok:
        by_turn[g.turn].append(g.score)  # type: ignore[arg-type]
        by_cat[g.category].append(g.score)  # type: ignore[arg-type]
    turns = sorted({g.turn for g in grades})
    out: dict[str, Any] = {
        "avg": mean([g.score for g in ok]),  # type: ignore[misc]
        "n_graded": len(ok),
        "n_failed": len(grades) - len(ok),
    }
    for t in turns:
        out[f"turn_{t}"] = mean(by_turn[t])
        out[f"n_failed_turn_{t}"] = sum(1 for g in grades if g.turn == t and (g.failed or g.score is None))
    out["categories"] = {c: mean(v) for c, v in sorted(by_cat.items())}
    # 95% bootstrap intervals over graded turns ({"mean", "lo", "hi", "n"})
    out["intervals"] = {"avg": mean_interval([g.score for g in ok])}  # type: ignore[misc]
    for t in turns:
        out["intervals"][f"turn_{t}"] = mean_interval(by_turn[t])
    return out
