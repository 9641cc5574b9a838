"""MT-Bench-style grading: rating parser, two-turn answering with the model's own first answer in context,
grading prompts (incl. reference answers), and per-turn / per-category averages by hand."""

from __future__ import annotations

import pytest

from evarl.eval.formats import MTBenchQuestion
from evarl.eval.mtbench import (
    MTBenchAnswer,
    TurnGrade,
    answer_mtbench,
    grade_mtbench,
    mtbench_metrics,
    parse_rating,
)
from evarl.generation.base import GenOutput, SamplingParams


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Good answer. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("Rating: [9]", 9.0),  # FastChat's fallback
        ("[[3]] at first, on reflection Rating: [[4]]", 4.0),  # the last rating counts
        ("Rating: [[11]]", None),  # out of range
        ("Rating: [[0]]", None),
        ("Rating: seven", None),
        ("", None),
    ],
)
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_mtbench_metrics_hand_computed():
    g = [
        TurnGrade("1", "writing", 1, 8.0, False, ""),
        TurnGrade("1", "writing", 2, 6.0, False, ""),
        TurnGrade("2", "math", 1, 4.0, False, ""),
        TurnGrade("2", "math", 2, None, True, "no rating"),
        TurnGrade("3", "math", 1, 9.0, False, ""),
        TurnGrade("3", "math", 2, 3.0, False, ""),
    ]
    m = mtbench_metrics(g)
    assert m["avg"] == pytest.approx((8 + 6 + 4 + 9 + 3) / 5)
    assert m["turn_1"] == pytest.approx(7.0)
    assert m["turn_2"] == pytest.approx(4.5)
    assert m["n_failed"] == 1 and m["n_failed_turn_2"] == 1 and m["n_failed_turn_1"] == 0
    assert m["categories"] == {"math": pytest.approx((4 + 9 + 3) / 3), "writing": pytest.approx(7.0)}
    assert mtbench_metrics([TurnGrade("1", "x", 1, None, True, "")])["avg"] is None


class EchoModel:
    """Answers with the number of messages it saw and the last user turn."""

    name = "echo"

    def __init__(self) -> None:
        self.calls = []

    def generate(self, conversations, params):
        self.calls.append([list(c) for c in conversations])
        return [[GenOutput(f"ans{len(c)}:{c[-1]['content']}", 2, "stop")] for c in conversations]


def test_answer_mtbench_second_turn_sees_first_answer():
    qs = [
        MTBenchQuestion("1", "writing", ["Write a poem.", "Now shorter."]),
        MTBenchQuestion("2", "math", ["2+2?"]),
    ]
    model = EchoModel()
    answers = answer_mtbench(model, qs, SamplingParams(n=1, temperature=0.0))
    assert [a.turns for a in answers] == [["ans1:Write a poem.", "ans3:Now shorter."], ["ans1:2+2?"]]
    assert len(model.calls) == 2 and len(model.calls[1]) == 1  # turn 2 only for the two-turn question
    assert model.calls[1][0] == [
        {"role": "user", "content": "Write a poem."},
        {"role": "assistant", "content": "ans1:Write a poem."},
        {"role": "user", "content": "Now shorter."},
    ]
    with pytest.raises(ValueError, match="n=2"):
        answer_mtbench(model, qs, SamplingParams(n=2))


class RatingJudge:
    name = "rating-judge"

    def __init__(self, replies):
        self.replies = replies
        self.prompts = []

    def generate(self, conversations, params):
        self.prompts.extend(c[-1]["content"] for c in conversations)
        return [
            [GenOutput(self.replies[i % len(self.replies)], 5, "stop")] for i in range(len(conversations))
        ]


def test_grade_mtbench_prompts_and_reference():
    qs = [
        MTBenchQuestion("1", "writing", ["Q1a", "Q1b"]),
        MTBenchQuestion("2", "math", ["Q2a", "Q2b"], reference=["R2a", "R2b"]),
    ]
    ans = [MTBenchAnswer("1", "writing", ["A1a", "A1b"]), MTBenchAnswer("2", "math", ["A2a", "A2b"])]
    judge = RatingJudge(["Rating: [[9]]", "Rating: [[5]]", "none", "Rating: [[2]]"])
    grades = grade_mtbench(judge, qs, ans)
    assert [(g.question_id, g.turn, g.score, g.failed) for g in grades] == [
        ("1", 1, 9.0, False),
        ("1", 2, 5.0, False),
        ("2", 1, None, True),
        ("2", 2, 2.0, False),
    ]
    p1, p2, p3, p4 = judge.prompts
    assert "Q1a" in p1 and "A1a" in p1 and "Reference" not in p1
    assert all(s in p2 for s in ("Q1a", "A1a", "Q1b", "A1b")) and "second" in p2
    assert "R2a" in p3 and "reference answer" in p3
    assert "R2b" in p4 and "A2b" in p4
    m = mtbench_metrics(grades)
    assert m["turn_1"] == 9.0 and m["turn_2"] == pytest.approx(3.5) and m["n_failed"] == 1
    with pytest.raises(ValueError, match="out of order"):
        grade_mtbench(judge, qs, list(reversed(ans)))


def test_category_radar_renders_png():
    from evarl.eval.report.figures import category_radar, to_png

    fig = category_radar(
        {"m0": {"math": 4.0, "coding": 5.0, "writing": None}, "m1": {"math": 6.0, "coding": 7.0}}
    )
    assert to_png(fig).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="at least 3 categories"):
        category_radar({"m": {"math": 1.0}})
