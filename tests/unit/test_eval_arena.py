"""Arena-Hard-Auto style judging: verdict parsing, both orders, strong-verdict weights, continuation attempts,
the Bradley-Terry score with its bootstrap interval, and the official judge config read in its own format."""

from __future__ import annotations

from pathlib import Path

import pytest

from evarl.config import ConfigError
from evarl.eval.arena import (
    CONTINUE,
    ArenaJudgeConfig,
    arena_score,
    battles_from_verdicts,
    judge_arena,
    parse_verdict,
)
from evarl.generation.base import GenOutput, SamplingParams


@pytest.mark.parametrize(
    "text, label",
    [
        ("My final verdict is tie: [[A=B]]", "A=B"),
        ("... so [[B>>A]]", "B>>A"),
        ("[[A>B]] and again [[A>B]]", "A>B"),  # repeated, consistent
        ("[[A>B]] but also [[B>A]]", None),  # inconsistent labels: no verdict
        ("no label at all", None),
        ("[[C>D]]", None),
        ("[[A>>>B]]", None),
    ],
)
def test_parse_verdict(text: str, label: str | None) -> None:
    assert parse_verdict(text) == label


def test_battles_weight_strong_verdicts_and_read_each_game_in_its_order() -> None:
    # game 1: baseline is A, model is B;  game 2: model is A
    assert battles_from_verdicts("B>>A", "A>>B") == [1.0] * 6  # the model wins strongly in both orders
    assert battles_from_verdicts("A>B", "A>B") == [0.0, 1.0]  # position bias: one win, one loss
    assert battles_from_verdicts("A=B", None) == [0.5]
    assert battles_from_verdicts(None, None) == []


class ScriptedJudge:
    """Prefers the longer answer; replies without a label first when the question asks for it."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate(self, convs, params: SamplingParams):
        self.calls.append(convs)
        out = []
        for conv in convs:
            user = conv[1]["content"]
            if "stubborn" in user and conv[-1]["content"] != CONTINUE:
                out.append([GenOutput("Let me think about it.", 5, "stop")])
                continue
            a = user.split("<|The Start of Assistant A's Answer|>\n")[1].split("\n<|The End")[0]
            b = user.split("<|The Start of Assistant B's Answer|>\n")[1].split("\n<|The End")[0]
            label = "A>>B" if len(a) > len(b) else ("B>>A" if len(b) > len(a) else "A=B")
            out.append([GenOutput(f"verdict: [[{label}]]", 5, "stop")])
        return out


def test_judge_arena_both_orders_continuation_and_score() -> None:
    qs = ["q1", "q2 stubborn", "q3"]
    model = ["a much longer answer", "long answer here", "same"]
    base = ["short", "tiny", "same"]
    judge = ScriptedJudge()
    games = judge_arena(judge, qs, model, base, ids=["1", "2", "3"])
    assert len(judge.calls) == 2  # the stubborn question's two games needed a second turn
    assert [len(c) for c in judge.calls] == [6, 2]
    assert judge.calls[0][0][0]["role"] == "system"
    assert games[0].verdicts == ("B>>A", "A>>B") and games[0].battles == [1.0] * 6
    assert games[1].verdicts == ("B>>A", "A>>B")  # answered on the continuation
    assert games[2].battles == [0.5, 0.5]
    s = arena_score(games, n_boot=200)
    assert s["score"] == pytest.approx(100 * 13 / 14)
    assert s["lo"] <= s["score"] <= s["hi"] and s["n_questions"] == 3 and s["n_failed_games"] == 0
    assert s["verdicts"]["A=B"] == 2


def test_unparsable_games_are_counted_and_excluded_not_losses() -> None:
    class Mute:
        name = "mute"

        def generate(self, convs, params):
            return [[GenOutput("I cannot decide.", 4, "stop")] for _ in convs]

    games = judge_arena(Mute(), ["q"], ["x"], ["y"])
    s = arena_score(games)
    assert s["score"] is None and s["n_failed_games"] == 2 and s["n_excluded_questions"] == 1


OFFICIAL = """\
name: judgment config file for Arena Hard
bench_name: arena-hard-v0.1
judge_model: gpt-4-1106-preview
reference: False
baseline: True
baseline_model: gpt-4-0314
pairwise: True
temperature: 0
max_tokens: 4096
regex_pattern: \\[\\[([AB<>=]+)\\]\\]
number_of_judgment_attempts: 2
system_prompt: "Please act as an impartial judge (the user's copy of the official text). [[A>>B]] ... [[B>>A]]"
prompt_template: ["<|User Prompt|>\\n{question_1}\\n\\n<|The Start of Assistant A's Answer|>\\n{answer_1}\\n<|The End of Assistant A's Answer|>\\n\\n<|The Start of Assistant B's Answer|>\\n{answer_2}\\n<|The End of Assistant B's Answer|>"]
"""


def test_official_judge_config_is_read_in_its_own_format(tmp_path: Path) -> None:
    p = tmp_path / "judge_config.yaml"
    p.write_text(OFFICIAL)
    cfg = ArenaJudgeConfig.from_official(p)
    assert cfg.system_prompt.startswith("Please act as an impartial judge")
    assert "{question_1}" in cfg.prompt_template and cfg.attempts == 2 and cfg.max_tokens == 4096
    assert "official" in cfg.source and str(p) in cfg.source
    assert "not the official" in ArenaJudgeConfig.default().source
    games = judge_arena(ScriptedJudge(), ["q"], ["longer answer"], ["x"], config=cfg)
    assert games[0].battles == [1.0] * 6


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("system_prompt: x\n", "prompt_template: missing"),
        ("system_prompt: x\nprompt_template: ['{question_1} {answer_1}']\n", "missing slots ['{answer_2}']"),
        (
            "system_prompt: x\nprompt_template: '{question_1}{answer_1}{answer_2}'\nregex_pattern: '(unclosed'\n",
            "regex",
        ),
        ("- a list\n", "judge_config.yaml mapping"),
    ],
)
def test_bad_official_configs_name_the_field(tmp_path: Path, text: str, culprit: str) -> None:
    p = tmp_path / "judge_config.yaml"
    p.write_text(text)
    with pytest.raises(
        ConfigError, match=culprit.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")
    ):
        ArenaJudgeConfig.from_official(p)
