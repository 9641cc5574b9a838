"""MT-Bench graded with FastChat's own judge prompts, read from the user's judge_prompts.jsonl in its format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.eval.formats import MTBenchQuestion
from evarl.eval.mtbench import FastChatPrompts, MTBenchAnswer, grade_mtbench, mtbench_metrics
from evarl.generation.base import GenOutput
from evarl.io import DataError

# rows shaped like FastChat's fastchat/llm_judge/data/judge_prompts.jsonl (texts shortened; the user's copy is
# the real one). A pairwise row is present too and must be ignored for single-answer grading.
ROWS = [
    {"name": "pair-v2", "type": "pairwise", "system_prompt": "pairwise", "prompt_template": "{question}",
     "description": "x", "category": "general", "output_format": "[[A]]"},
    {"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nRate.\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n"
     "{answer}\n[The End of Assistant's Answer]", "description": "x", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n"
     "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}", "description": "x",
     "category": "math", "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single",
     "system_prompt": "Please act as an impartial judge ... focus on the second user question.",
     "prompt_template": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
     "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}",
     "description": "x", "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "Judge with the reference.",
     "prompt_template": "{ref_answer_1} {ref_answer_2} ### User:\n{question_1}\n{answer_1}\n{question_2}\n"
     "{answer_2}", "description": "x", "category": "math", "output_format": "[[rating]]"},
]  # fmt: skip


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "judge_prompts.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


class RecordingJudge:
    name = "recording"

    def __init__(self) -> None:
        self.convs: list[list[dict[str, str]]] = []

    def generate(self, convs, params):
        self.convs += convs
        return [[GenOutput("Rating: [[7]]", 3, "stop")] for _ in convs]


def test_fastchat_prompts_pick_the_variant_per_category_and_turn(tmp_path: Path) -> None:
    fc = FastChatPrompts.from_jsonl(str(_write(tmp_path, ROWS)))
    assert "FastChat judge_prompts.jsonl" in fc.source
    qs = [
        MTBenchQuestion("1", "writing", ["W1", "W2"]),
        MTBenchQuestion("2", "math", ["M1", "M2"], reference=["R1", "R2"]),
    ]
    answers = [MTBenchAnswer("1", "writing", ["a1", "a2"]), MTBenchAnswer("2", "math", ["b1", "b2"])]
    judge = RecordingJudge()
    grades = grade_mtbench(judge, qs, answers, fastchat=fc)
    systems = [c[0]["content"] for c in judge.convs]
    users = [c[1]["content"] for c in judge.convs]
    assert systems == [
        "You are a helpful assistant.",
        "Please act as an impartial judge ... focus on the second user question.",
        "You are a helpful assistant.",
        "Judge with the reference.",
    ]
    assert "[Question]\nW1" in users[0] and "a1" in users[0]
    assert "### User:\nW2" in users[1] and "a2" in users[1]
    assert "[The Start of Reference Answer]\nR1" in users[2] and "b1" in users[2]
    assert users[3].startswith("R1 R2 ### User:\nM1")
    m = mtbench_metrics(grades)
    assert m["avg"] == 7.0 and m["intervals"]["avg"]["n"] == 4


@pytest.mark.parametrize(
    "rows, culprit",
    [
        (ROWS[:3], "single-v1-multi-turn"),
        ([{**ROWS[1], "prompt_template": 3}, *ROWS[2:]], "prompt_template: expected a string"),
    ],
)
def test_bad_judge_prompt_files_name_the_problem(tmp_path: Path, rows: list[dict], culprit: str) -> None:
    with pytest.raises(DataError, match=culprit):
        FastChatPrompts.from_jsonl(str(_write(tmp_path, rows)))
