"""Judge score parsing and the judge source with a scripted generator (real SmolLM2 outputs are in
tests/unit/data/judge_smollm2_outputs.jsonl and tests/integration/test_rewards_real.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evarl.config import RewardSourceConfig
from evarl.generation.base import GenOutput, SamplingParams
from evarl.io import DataError, load_template
from evarl.rewards.combine import RewardBuildError
from evarl.rewards.judge import JudgeReward, conversation_text, fill, parse_score
from evarl.types import Prompt

DATA = Path(__file__).parent / "data" / "judge_smollm2_outputs.jsonl"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The response is relevant. Score: 4", 4.0),
        ("Justification ... \n\nScore: 3/5", 3.0),
        ("**Score:** 5", 5.0),
        ("Total score = 2", 2.0),
        ("I award a score of 3 points.", 3.0),
        ("Final Score - 1", 1.0),
        ("Score: four", 4.0),
        ("My rating is 4 out of 5.", 4.0),
        ("Rating: [[2]]", 2.0),
        ("Score: 8/10", 4.0),
        ("Score: 2. Actually, on reflection, Score: 3", 3.0),  # the concluding statement wins
        ("Score: 4.5", 4.5),
        ("Total points: 3", 3.0),
    ],
)
def test_parse_score_accepts(text: str, expected: float) -> None:
    assert parse_score(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The response is good and helpful.",
        'Conclude with the score using the format: "Score: <total points>"',
        "Score: 7",  # out of range is a failure, never clamped
        "Add 1 point if the response is relevant.",  # echoed criteria are not a score
        "There are 3 reasons this is good.",  # a bare number is never taken
        "Score: 3/0",
    ],
)
def test_parse_score_rejects(text: str) -> None:
    assert parse_score(text) is None


def test_real_smollm2_outputs_parse_as_labelled() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    assert len(rows) >= 6
    assert any(r["expected"] is None for r in rows) and any(r["expected"] is not None for r in rows)
    for r in rows:
        assert parse_score(r["output"]) == r["expected"], r["output"][:200]


class Scripted:
    """A Generator that returns scripted texts in order and records what it was asked."""

    name = "scripted"

    def __init__(self, texts: list[str]) -> None:
        self.texts = list(texts)
        self.calls: list[tuple[list, SamplingParams]] = []

    def generate(self, conversations, params):
        self.calls.append((conversations, params))
        out = []
        for _ in conversations:
            row = []
            for _ in range(params.n):
                t = self.texts.pop(0)
                row.append(GenOutput("", 0, "error") if t == "<error>" else GenOutput(t, 5, "stop"))
            out.append(row)
        return out


def _p(text: str = "What is 2+2?") -> Prompt:
    return Prompt(id="p", messages=[{"role": "user", "content": text}])


def test_judge_averages_k_samples_and_flags_failures() -> None:
    gen = Scripted(["Score: 4", "Score: 2", "no idea", "nothing", "Score: 5", "<error>"])
    j = JudgeReward(gen, samples=2)
    out = j.score([_p(), _p(), _p()], ["4", "five", "4"])
    assert out[0].score == pytest.approx(3.0) and not out[0].failed
    assert out[1].failed and math.isnan(out[1].score) and out[1].info["parse_failures"] == 2
    assert out[2].score == 5.0 and out[2].info["errors"] == 1 and out[2].info["parse_failures"] == 0
    assert j.counts == {"items": 3, "failed_items": 1, "samples": 6, "parse_failures": 2, "errors": 1}
    convs, params = gen.calls[0]
    assert params.n == 2 and params.temperature == 0.7
    text = convs[0][0]["content"]
    assert "User: What is 2+2?" in text and "<response>4</response>" in text
    assert "additive 5-point scoring system" in text


def test_judge_min_valid() -> None:
    j = JudgeReward(Scripted(["Score: 4", "junk"]), samples=2, min_valid=2)
    assert j.score([_p()], ["x"])[0].failed


def test_template_fill_is_single_pass_and_checked(tmp_path: Path) -> None:
    assert fill("{instruction}|{response}", instruction="{response}", response="r") == "{response}|r"
    bad = tmp_path / "bad.txt"
    bad.write_text("only {instruction}")
    with pytest.raises(DataError, match="response"):  # evarl.io.TemplateError: the CLI exits 2
        load_template(str(bad), "judge", ("instruction", "response"))
    with pytest.raises(DataError, match="no such template"):
        load_template("nope", "judge", ("instruction",))


def test_from_config_self_reward_uses_policy_and_checks_options() -> None:
    gen = Scripted(["Score: 3"])
    j = JudgeReward.from_config(RewardSourceConfig(name="judge", model="policy"), policy=gen)
    assert j.role == "self" and j.score([_p()], ["x"])[0].score == 3.0
    assert gen.calls[0][1].temperature == 0.0  # one sample: greedy
    with pytest.raises(RewardBuildError, match="unknown option"):
        JudgeReward.from_config(RewardSourceConfig(name="judge", options={"temp": 1}), policy=gen)
    with pytest.raises(RewardBuildError, match="identical"):
        JudgeReward.from_config(
            RewardSourceConfig(name="judge", samples=3, options={"temperature": 0.0}), policy=gen
        )
    with pytest.raises(RewardBuildError, match="need options.endpoint"):
        JudgeReward.from_config(RewardSourceConfig(name="judge", options={"concurrency": 2}), policy=gen)
    with pytest.raises(RewardBuildError, match="teacher model directory only"):
        JudgeReward.from_config(RewardSourceConfig(name="judge", options={"dtype": "bfloat16"}), policy=gen)
    with pytest.raises(RewardBuildError, match="endpoint_model"):
        JudgeReward.from_config(
            RewardSourceConfig(name="judge", options={"endpoint": "http://127.0.0.1:1/v1"})
        )


def test_conversation_text_multi_turn() -> None:
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert conversation_text(msgs) == "User: a\n\nAssistant: b\n\nUser: c"
    assert conversation_text(msgs[1:2]) == "a"
